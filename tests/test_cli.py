"""The command-line conventions shared by every entry point (in-process, fast).

One-line errors with exit status 2 for bad command lines (an unknown `--config.x` key with the
closest valid key, a value of the wrong type, a missing config file, convert's flags), and status
lines through absl that name their real caller. `assert_quiet_stderr` is the check the CLI runs
of `test_end_to_end.py` and `test_install.py` apply to a real training run's stderr.
"""

from __future__ import annotations

import ast
import collections
import importlib
import logging as logging_std
import os
import re
import subprocess
import sys

import pytest
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from ldm_jax import cli_errors, convert
from ldm_jax.training import logging as log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")
PROGRAM = "python -m ldm_jax.train"

# An absl log line: "I1129 09:41:40.336591 140317867760512 ldm.py:191] message".
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ ([^:\s]+):\d+\] (.*)$")
_BAR = re.compile(r"^(autoencoder|ldm): +\d+%\|")


def assert_quiet_stderr(stderr: str) -> None:
    """A training run's stderr holds only progress bars and ldm_jax's INFO status lines, each
    once, each naming its real caller: no jax/orbax INFO, no warnings, no tracebacks."""
    status = []
    for line in filter(None, (s.strip() for s in re.split(r"[\r\n]", stderr))):
        if _BAR.match(line):
            continue
        match = _ABSL_LINE.match(line)
        assert match, f"unexpected stderr line: {line!r}"
        level, caller, message = match.groups()
        assert level == "I", f"unexpected warning or error: {line!r}"
        assert caller != "logging.py", f"the wrapper, not the caller, is named: {line!r}"
        status.append(message)
    assert any(m.startswith("ldm: scale_by_std") for m in status), status
    repeated = [m for m, n in collections.Counter(status).items() if n > 1]
    assert not repeated, repeated


def _config_flag_values(argv: list[str]) -> flags.FlagValues:
    """A train-like --config and --workdir (the config flag reads its overrides from `argv`,
    as it reads them from sys.argv under app.run)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=fv, lock_config=True, sys_argv=argv
    )
    flags.DEFINE_string("workdir", None, "workdir", flag_values=fv)
    return fv


def _parse_error(capsys, *args: str) -> str:
    """The one stderr line of a command line that `cli_errors.parse_flags` rejects."""
    with pytest.raises(SystemExit) as e:
        argv = [PROGRAM, *args]
        cli_errors.parse_flags(PROGRAM, argv, _config_flag_values(argv))
    assert e.value.code == cli_errors.USAGE_STATUS
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{PROGRAM}: error: ")
    return lines[0][len(f"{PROGRAM}: error: ") :]


def test_valid_overrides_parse():
    argv = [PROGRAM, f"--config={CONFIG}:tiny", "--config.train.steps=10", "--workdir=w"]
    fv = _config_flag_values(argv)
    rest = cli_errors.parse_flags(PROGRAM, argv, fv)
    assert rest == [PROGRAM] and fv.config.train.steps == 10 and fv.workdir == "w"


@pytest.mark.parametrize(
    "override, suggestion",
    [
        ("train.stesp=10", "Did you mean --config.train.steps?"),
        ("trian.steps=10", "Did you mean --config.train.steps?"),
        (
            "autoencoder_train.learning_rat=0.1",
            "Did you mean --config.autoencoder_train.learning_rate?",
        ),
    ],
)
def test_unknown_config_key_names_the_closest_key(capsys, override, suggestion):
    message = _parse_error(capsys, f"--config={CONFIG}:tiny", f"--config.{override}")
    key = override.split("=")[0]
    assert message == f"unknown config key --config.{key} (not in {CONFIG}:tiny). {suggestion}"


def test_unknown_config_key_without_a_close_match_lists_the_section(capsys):
    message = _parse_error(capsys, f"--config={CONFIG}", "--config.train.zzzzzzzz=1")
    assert message.startswith("unknown config key --config.train.zzzzzzzz")
    keys = message.split("Keys of config.train: ")[1].rstrip(".").split(", ")
    assert "steps" in keys and "batch_size" in keys


def test_bad_value_type_and_missing_file_are_one_line(capsys):
    message = _parse_error(capsys, f"--config={CONFIG}", "--config.train.steps=abc")
    assert "--config.train.steps=abc" in message and "invalid literal for int()" in message
    assert _parse_error(capsys, "--config=nope.py") == "--config=nope.py: no such config file."
    assert "Did you mean: workdir" in _parse_error(capsys, f"--config={CONFIG}", "--wrkdir=x")


def test_usage_errors_raised_while_running_are_one_line(capsys):
    with pytest.raises(SystemExit) as e, cli_errors.user_errors_as_exit(PROGRAM):
        raise app.UsageError("unexpected arguments: extra")
    assert e.value.code == 2
    assert capsys.readouterr().err == f"{PROGRAM}: error: unexpected arguments: extra\n"


@pytest.mark.parametrize(
    "error",
    [
        "ldm_jax.data.datasets.UnknownDatasetError",
        "ldm_jax.data.errors.DataError",
        "ldm_jax.interop.torch_pickle.CheckpointFormatError",
        "ldm_jax.interop.torch_pickle.UnsafeCheckpointError",
        "ldm_jax.training.checkpoint.CorruptCheckpointError",
        "ldm_jax.training.checkpoint.IncompatibleCheckpointError",
        "ldm_jax.training.checkpoint.CheckpointSaveError",
        "ldm_jax.workdir.reader.WorkdirError",
        "ldm_jax.sampling.request.SampleInputError",
        "ldm_jax.sampling.image_inputs.ImageInputError",
        "ldm_jax.config.validation.ConfigError",
        "ldm_jax.training.checkpoint.MissingCheckpointError",
        "ldm_jax.training.loop.TrainingDivergedError",
        "ldm_jax.training.loop.PreemptedError",
    ],
)
def test_library_errors_that_name_their_fix_are_one_line(error):
    module, _, name = error.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    with pytest.raises(SystemExit) as e, cli_errors.user_errors_as_exit(PROGRAM):
        raise cls("what went wrong; the fix.")
    assert e.value.code == f"{PROGRAM}: error: what went wrong; the fix."


def test_user_error_table_names_exception_classes_and_other_errors_propagate():
    for module_name, names in cli_errors.USER_ERROR_TYPES.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert issubclass(getattr(module, name), Exception), (module_name, name)
    assert len(cli_errors.user_errors()) == sum(map(len, cli_errors.USER_ERROR_TYPES.values()))
    with pytest.raises(RuntimeError, match="a bug"), cli_errors.user_errors_as_exit(PROGRAM):
        raise RuntimeError("a bug")


def test_bench_command_does_not_import_orbax_or_tensorflow_datasets():
    """The benchmark CLI's peak memory leaves out what it does not use (cli_errors looks its
    error types up lazily)."""
    heavy = "{'orbax', 'tensorflow_datasets', 'grain'}"
    code = f"import sys, ldm_jax.bench; print(sorted(set(sys.modules) & {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give the source first: compvis, diffusers or sd-single-file"),
        (["--out", "w"], "give the source first"),
        (
            ["tensorflow", "--out", "w"],
            "unknown source 'tensorflow': compvis, diffusers or sd-single-file.",
        ),
        (["compvis", "--out", "w"], "compvis needs --config --ckpt."),
        (["diffusers", "--unet", "u"], "diffusers needs --out."),
        (["diffusers", "--unet", "u", "--out", "w"], "needs --dir SD_FOLDER"),
        (["diffusers", "--dir", "d", "--vae", "v", "--out", "w"], "not both"),
        (["diffusers", "--dir", "d", "--unet", "u", "--out", "w"], "--dir takes the pipeline"),
        (["sd-single-file", "--ckpt", "m.ckpt", "--out", "w"], "needs --tokenizer."),
        (
            ["sd-single-file", "--ckpt=m", "--tokenizer=t", "--out=w", "--prediction_type=x0"],
            "prediction_type",
        ),
        (["diffusers", "--dir=d", "--out=w", "--workdir=v"], "not both"),
        (
            ["compvis", "--config=c", "--ckpt=k", "--out=w", "--vae=v"],
            "compvis does not take --vae",
        ),
        (["diffusers", "--vae=v", "--out=w", "--no-ema"], "diffusers does not take --no_ema"),
        (["compvis", "--config=c", "--cpkt=k", "--out=w"], "Did you mean: ckpt"),
        (["compvis", "--config=c", "--ckpt=k", "--out=w", "extra"], "unexpected arguments: extra"),
    ],
)
def test_convert_flag_errors_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        convert.parse_args(argv)
    assert e.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m ldm_jax.convert: error: ")
    assert message in lines[0]


def test_convert_keeps_its_command_lines():
    source, args = convert.parse_args(
        ["compvis", "--config", "m.yaml", "--ckpt=m.ckpt", "--vocab", "v.txt", "--out", "w"]
    )
    assert (source, args.config, args.ckpt, args.vocab, args.out) == (
        "compvis",
        "m.yaml",
        "m.ckpt",
        "v.txt",
        "w",
    )
    assert not args.no_ema and not args.allow_placeholders
    _, args = convert.parse_args(
        ["compvis", "--config=c", "--ckpt=k", "--out=w", "--no-ema", "--allow-placeholders"]
    )
    assert args.no_ema and args.allow_placeholders  # the former argparse spellings
    source, args = convert.parse_args(["diffusers", "--unet", "u", "--vae", "v", "--out", "w"])
    assert (source, args.unet, args.vae, args.scheduler) == ("diffusers", "u", "v", None)
    again = convert.parse_args(["diffusers", "--vae", "v2", "--out", "w"])[1]
    assert again.unet is None and again.vae == "v2"  # every call parses afresh
    source, args = convert.parse_args(["diffusers", "--dir", "sd", "--workdir", "w"])
    assert (source, args.dir, args.out, args.vae) == ("diffusers", "sd", "w", None)
    source, args = convert.parse_args(
        ["sd-single-file", "--ckpt=m.safetensors", "--tokenizer=t", "--out=w"]
        + ["--prediction_type=v_prediction", "--no_ema"]
    )
    assert (source, args.ckpt, args.tokenizer, args.prediction_type, args.no_ema) == (
        "sd-single-file",
        "m.safetensors",
        "t",
        "v_prediction",
        True,
    )
    _, args = convert.parse_args(
        ["sd-single-file", "--ckpt=m.ckpt", "--tokenizer=t", "--config=v2.yaml", "--out=w"]
    )
    assert (args.config, args.prediction_type) == ("v2.yaml", None)  # a non-standard model


def test_status_lines_name_their_caller():
    records = []
    handler = logging_std.Handler()
    handler.emit = records.append
    absl_logger = logging_std.getLogger("absl")
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logger.addHandler(handler)
    try:
        log.info("status %d", 3)
        log.warning("careful %s", "now")
    finally:
        absl_logger.removeHandler(handler)
        absl_logging.set_verbosity(verbosity)
    assert [r.getMessage() for r in records] == ["status 3", "careful now"]
    assert {r.pathname for r in records} == {os.path.abspath(__file__)}
    line = absl_logging.PythonFormatter().format(records[0])
    assert " test_cli.py:" in line and line.endswith("] status 3")


# Modules that print their results (output, not status): the entry points, and the benchmark
# runner that streams one JSON line per benchmark for `python -m ldm_jax.bench`.
_PRINTS_OUTPUT = {"train", "sample", "evaluate", "convert", "export", "summary", "cache_latents"}
_PRINTS_OUTPUT |= {"bench"}
_PRINTS_OUTPUT |= {"benchmarks.train_steps", "benchmarks.timing"}


def test_library_code_has_no_bare_print():
    package = os.path.join(ROOT, "ldm_jax")
    found = []
    for folder, _, files in os.walk(package):
        for name in (f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            module = os.path.relpath(path, package)[:-3].replace(os.sep, ".")
            if module in _PRINTS_OUTPUT:
                continue
            with open(path) as f:
                tree = ast.parse(f.read())
            found += [
                f"{module}:{node.lineno}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
            ]
    assert not found, f"print() in library code (use ldm_jax.training.logging.info): {found}"
