"""One-line CLI errors (no traceback) for bad command lines and the library's expected errors.

Every entry point starts with `run(main, PROGRAM)` instead of `absl.app.run(main)`. Exit status:
2 for a bad command line (an unknown, missing or malformed flag, a `--config.x` key the config
does not have, a value of the wrong type, a config file that does not exist), 1 for a
`USER_ERROR_TYPES` exception raised while running (inside `user_errors_as_exit`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

from absl import app, flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

# Errors whose message already names the problem and the fix, by the module that defines them.
# They are looked up when an error arrives (`user_errors`): an exception of one of these types
# exists only once its module is imported, so a command that never imports orbax or
# tensorflow-datasets (`python -m ldm_jax.bench`) does not load them for this table (about 40 MB
# of resident memory, measured 2026-12-07).
USER_ERROR_TYPES = {
    "builtins": ("FileNotFoundError",),
    "ldm_jax.config.errors": ("ConfigError",),
    "ldm_jax.training.checkpoint": (
        "MissingCheckpointError",
        "CorruptCheckpointError",
        "IncompatibleCheckpointError",
        "CheckpointSaveError",
    ),
    "ldm_jax.training.loop": ("TrainingDivergedError", "PreemptedError"),
    "ldm_jax.data.errors": ("DataError",),  # UnknownDatasetError among them
    "ldm_jax.interop.torch_pickle": ("CheckpointFormatError",),  # UnsafeCheckpointError too
    "ldm_jax.workdir.reader": ("WorkdirError",),
    "ldm_jax.sampling.request": ("SampleInputError",),
    "ldm_jax.sampling.image_inputs": ("ImageInputError",),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """The `USER_ERROR_TYPES` of the modules imported so far."""
    found = []
    for module_name, names in USER_ERROR_TYPES.items():
        module = sys.modules.get(module_name)
        if module is not None:
            found.extend(getattr(module, name) for name in names)
    return tuple(found)


USAGE_STATUS = 2  # a bad command line; 1 is an error found while running

_OVERRIDE = re.compile(r"^--?(\w+)\.([^=\s]+)")


def usage_error(program: str, message: str) -> NoReturn:
    """Writes `program: error: message` (one line) on stderr and exits with status 2."""
    sys.stderr.write(f"{program}: error: {one_line(message)}\n")
    sys.exit(USAGE_STATUS)


def one_line(message: str) -> str:
    """The first line of a message, with its last line when there are several (the last line
    of a traceback quoted in it says what went wrong)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return message
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


@contextlib.contextmanager
def user_errors_as_exit(program: str) -> Iterator[None]:
    """Exits with status 1 and `program: error: message` on stderr for a `USER_ERROR_TYPES`
    exception, and with status 2 for an `absl.app.UsageError`."""
    try:
        yield
    except app.UsageError as e:
        usage_error(program, str(e))
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a user error
        if not isinstance(e, user_errors()):
            raise
        _silence_exit_noise()
        sys.exit(f"{program}: error: {e}")


def _silence_exit_noise() -> None:
    """Keeps the error line last: work a library abandoned when the error struck (e.g. the read
    coroutines of a failed orbax restore) is otherwise reported while Python exits, after it
    ("coroutine ... was never awaited", "Exception ignored in ...", or a background writer
    thread's traceback such as orbax's "Event loop is closed")."""
    warnings.simplefilter("ignore", RuntimeWarning)
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None
    sys.excepthook = lambda *exc_info: None  # tensorstore callbacks print through it
    gc.collect()


def run(main: Callable[[list[str]], Any], program: str) -> None:
    """`absl.app.run(main)` whose flag errors are one line (see `parse_flags`)."""
    app.run(main, flags_parser=functools.partial(parse_flags, program))


def parse_flags(
    program: str, argv: list[str], flag_values: flags.FlagValues = flags.FLAGS
) -> list[str]:
    """Parses `argv` into `flag_values` (as an `app.run` flags_parser: into `absl.flags.FLAGS`);
    exits with a one-line error and status 2 when the command line is wrong. Returns the
    positional arguments, program name first."""
    _check_config_files(program, argv, flag_values)
    try:
        return flag_values(argv)
    except flags.Error as e:
        usage_error(program, str(e))
    except (AttributeError, KeyError, TypeError, ValueError, OSError):
        # An ml_collections config flag applying a `--config.x` override to its config.
        message = unknown_config_key(argv, flag_values)
        if message is None:
            raise
        usage_error(program, message)


def _config_flags(flag_values: flags.FlagValues) -> dict[str, flags.Flag]:
    """The flags defined with `config_flags.DEFINE_config_file`, by name."""
    return {
        name: flag_values[name]
        for name in flag_values
        if isinstance(flag_values[name].parser, ConfigFileFlagParser)
    }


def _flag_argument(argv: list[str], name: str) -> str | None:
    """The value given to `--name` in `argv` (`--name=v` or `--name v`; the last one wins)."""
    found = None
    for i, arg in enumerate(argv[1:], 1):
        for prefix in (f"--{name}", f"-{name}"):
            if arg.startswith(prefix + "="):
                found = arg[len(prefix) + 1 :]
            elif arg == prefix and i + 1 < len(argv):
                found = argv[i + 1]
    return found


def _check_config_files(program: str, argv: list[str], flag_values: flags.FlagValues) -> None:
    """A one-line error for a config flag naming a file that does not exist (ml_collections
    would report it only when the config is first used, as a multi-line IOError)."""
    for name in _config_flags(flag_values):
        value = _flag_argument(argv, name)
        if value is not None and not os.path.isfile(value.split(":", 1)[0]):
            usage_error(program, f"--{name}={value}: no such config file.")


def _key_paths(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every dotted key path of a nested config (sections and fields)."""
    for key, value in config.items():
        yield prefix + key
        if isinstance(value, Mapping) or hasattr(value, "items"):
            yield from _key_paths(value, prefix + key + ".")


def unknown_config_key(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> str | None:
    """A one-line message for the first `--config.x` override naming a key that the config does
    not have, with the closest valid key; None when every override names an existing key."""
    defined = _config_flags(flag_values)
    keys: dict[str, set[str]] = {}
    for arg in argv[1:]:
        match = _OVERRIDE.match(arg)
        if match is None:
            continue
        name, path = match.groups()
        if name not in defined and name.startswith("no") and name[2:] in defined:
            name = name[2:]  # --noconfig.a.b sets a boolean field to False
        value = _flag_argument(argv, name) if name in defined else None
        if value is None:
            continue
        if name not in keys:
            keys[name] = set(_key_paths(defined[name].parser.parse(value)))
        if path not in keys[name]:
            hint = _suggest(name, path, keys[name])
            return f"unknown config key --{name}.{path} (not in {value}). {hint}"
    return None


def _suggest(name: str, path: str, keys: set[str]) -> str:
    """'Did you mean --config.<closest key>?', or the keys of the deepest existing section."""
    close = difflib.get_close_matches(path, sorted(keys), n=1, cutoff=0.6)
    if close:
        return f"Did you mean --{name}.{close[0]}?"
    section = path
    while section and section not in keys:
        section = section.rpartition(".")[0]
    prefix = section + "." if section else ""
    children = sorted(k[len(prefix) :] for k in keys if k.startswith(prefix))
    children = [k for k in children if "." not in k]
    return f"Keys of {name}{'.' + section if section else ''}: {', '.join(children)}."
