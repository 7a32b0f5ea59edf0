"""Imports released weights into a workdir that `python -m ldm_jax.sample` reads.

The source comes first, then absl-style flags (`--flag value` or `--flag=value`):

  python -m ldm_jax.convert compvis --config cin.yaml --ckpt model.ckpt --out runs/cin
  python -m ldm_jax.convert compvis --config txt2img.yaml --ckpt model.ckpt --vocab vocab.txt \
      --out runs/txt2img
  python -m ldm_jax.convert diffusers --unet ldm/unet --vae ldm/vqvae [--scheduler ldm/scheduler] \
      --out runs/ldm
  python -m ldm_jax.convert diffusers --vae sd/vae --out runs/sd_vae   # stage 1 only

The paper's checkpoints (any model its configs describe: unconditional, class, text with the
BERT encoder, super-resolution, inpainting, semantic synthesis; KL or VQ first stage) become a full
workdir; the `.ckpt` is read without PyTorch and without running code from it. A diffusers
UNet2DModel with an AutoencoderKL or VQModel becomes one too (unconditional, class labels, or
image-concat super-resolution). A diffusers AutoencoderKL alone becomes a stage-1 workdir on which
`python -m ldm_jax.train --config.stage=ldm` trains stage 2. Anything the workdir cannot express
stops with a one-line error naming it. Prints one JSON line: {"out": ..., "source": ...}.

compvis flags: --config --ckpt --out [--vocab] [--no_ema] [--allow_placeholders]
diffusers flags: --vae --out [--unet] [--scheduler]
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from ldm_jax import cli_errors, interop
from ldm_jax.interop.diffusers import read_config
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.training import logging as log
from ldm_jax.workdir import writer as workdir_writer

PROGRAM = "python -m ldm_jax.convert"
SOURCES = ("compvis", "diffusers")
_CLIP_UNET = (
    "{unet} is a UNet2DConditionModel: it cross-attends to the tokens of a pretrained text "
    "encoder (CLIP for Stable Diffusion), which ldm_jax does not implement, so a workdir could "
    "not be sampled. Load it with ldm_jax.interop.load_diffusers_unet and feed precomputed "
    "encoder_hidden_states as `context` instead."
)
_HELP = ("-h", "-help", "--help", "--helpshort", "--helpfull", "-?")
# Per source: the flags it needs, and the flags it accepts besides those.
_REQUIRED = {"compvis": ("config", "ckpt", "out"), "diffusers": ("vae", "out")}
_OPTIONAL = {
    "compvis": ("vocab", "no_ema", "allow_placeholders"),
    "diffusers": ("unet", "scheduler"),
}


def _define_flags() -> flags.FlagValues:
    """convert's flags, in their own FlagValues (parsed afresh by every `main` call, and free
    to share names such as --config and --out with the other entry points)."""
    fv = flags.FlagValues()
    flags.DEFINE_string("config", None, "compvis: the model's YAML config.", flag_values=fv)
    flags.DEFINE_string("ckpt", None, "compvis: the .ckpt (or .safetensors) file.", flag_values=fv)
    flags.DEFINE_string(
        "vocab",
        None,
        "compvis: WordPiece vocab.txt of a text model (bert-base-uncased).",
        flag_values=fv,
    )
    flags.DEFINE_bool("no_ema", False, "compvis: use the raw, not the EMA, U-Net.", flag_values=fv)
    flags.DEFINE_bool(
        "allow_placeholders",
        False,
        "compvis: read Lightning checkpoints that pickle extra objects (kept inert, never run).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "vae", None, "diffusers: the AutoencoderKL or VQModel folder.", flag_values=fv
    )
    flags.DEFINE_string(
        "unet",
        None,
        "diffusers: the UNet2DModel folder (omit for a stage-1-only workdir).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "scheduler",
        None,
        "diffusers: a scheduler folder or scheduler_config.json (default: the paper's LDM "
        "schedule).",
        flag_values=fv,
    )
    flags.DEFINE_string("out", None, "The workdir to write.", flag_values=fv)
    return fv


def _usage() -> str:
    return f"{__doc__}\nflags:\n{_define_flags().get_help()}"


def parse_args(argv: list[str]) -> tuple[str, flags.FlagValues]:
    """(source, parsed flags) from the arguments after the program name.

    Exits with status 2 and a one-line error for a missing or unknown source, an unknown or
    malformed flag, a flag the source does not take, or a missing required flag; prints the
    usage and exits with status 0 for -h/--help.
    """
    if any(a in _HELP for a in argv):
        sys.stdout.write(_usage())
        sys.exit(0)
    if not argv or argv[0].startswith("-"):
        cli_errors.usage_error(
            PROGRAM,
            "give the source first: compvis or diffusers (e.g. python -m ldm_jax.convert "
            "compvis --config model.yaml --ckpt model.ckpt --out runs/imported).",
        )
    source, rest = argv[0], argv[1:]
    if source not in SOURCES:
        cli_errors.usage_error(PROGRAM, f"unknown source {source!r}: compvis or diffusers.")
    # The argparse spellings --no-ema and --allow-placeholders still work.
    rest = [_underscored(a) for a in rest]
    fv = _define_flags()
    try:
        positional = fv([PROGRAM, *rest])[1:]
    except flags.Error as e:
        cli_errors.usage_error(PROGRAM, str(e))
    if positional:
        cli_errors.usage_error(PROGRAM, f"unexpected arguments: {' '.join(positional)}")
    allowed = _REQUIRED[source] + _OPTIONAL[source]
    for name in fv:
        if fv[name].present and name not in allowed:
            flag_list = " ".join(f"--{n}" for n in allowed)
            cli_errors.usage_error(
                PROGRAM, f"{source} does not take --{name} (its flags: {flag_list})."
            )
    missing = [f"--{n}" for n in _REQUIRED[source] if fv[n].value is None]
    if missing:
        cli_errors.usage_error(PROGRAM, f"{source} needs {' '.join(missing)}.")
    return source, fv


def _underscored(arg: str) -> str:
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + eq + value


def _scheduler_config(path: str | None) -> dict | None:
    if path is None:
        return None
    if os.path.isdir(path):
        path = os.path.join(path, "scheduler_config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--scheduler: {path} not found.")
    with open(path) as f:
        return json.load(f)


def _convert(source: str, args: flags.FlagValues) -> None:
    if source == "compvis":
        for flag, path in (
            ("--config", args.config),
            ("--ckpt", args.ckpt),
            ("--vocab", args.vocab),
        ):
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"{flag} {path}: no such file.")
        ldm = interop.load_compvis(
            args.config,
            args.ckpt,
            use_ema=not args.no_ema,
            allow_placeholders=args.allow_placeholders,
            vocab=args.vocab,
        )
        workdir_writer.write_compvis_workdir(ldm, args.out, vocab=args.vocab)
        return
    if args.unet is None:
        ae, params = interop.load_diffusers_autoencoder(args.vae)
        workdir_writer.write_diffusers_autoencoder_workdir(ae, params, args.out)
        return
    unet_cfg = read_config(args.unet)
    if unet_cfg.get("_class_name") == "UNet2DConditionModel":
        raise UnsupportedConfigError(_CLIP_UNET.format(unet=args.unet))
    unet, unet_params = interop.load_diffusers_unet(args.unet)
    ae, ae_params = interop.load_diffusers_autoencoder(args.vae)
    workdir_writer.write_diffusers_workdir(
        unet,
        unet_params,
        unet_cfg,
        ae,
        ae_params,
        read_config(args.vae),
        args.out,
        _scheduler_config(args.scheduler),
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI on `argv` (the arguments after the program name; default `sys.argv[1:]`).

    Returns 0 after printing the JSON line. A bad command line exits with status 2, an expected
    user error (missing file, unsupported model, mismatched weights) with status 1, each with
    one line on stderr.
    """
    source, args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _convert(source, args)
    except (
        UnsupportedConfigError,
        interop.WeightMismatchError,
        interop.UnsafeCheckpointError,
        FileNotFoundError,
    ) as e:
        first, *rest = str(e).splitlines() or [type(e).__name__]
        more = (
            f" (+{len(rest)} more lines: {'; '.join(r.strip() for r in rest[:5])})" if rest else ""
        )
        sys.exit(f"{PROGRAM}: error: {first}{more}")
    print(json.dumps({"out": args.out, "source": source}))
    return 0


def _absl_flags(argv: list[str]) -> list[str]:
    """app.run's flags_parser: absl's own flags (--verbosity, ...) and the rest for `main`."""
    if any(a in _HELP for a in argv[1:]):
        sys.stdout.write(_usage())
        sys.exit(0)
    try:
        return flags.FLAGS(argv, known_only=True)
    except flags.Error as e:
        cli_errors.usage_error(PROGRAM, str(e))


def _app_main(argv: list[str]) -> int:
    log.show_own_status_only()
    return main(argv[1:])


if __name__ == "__main__":
    app.run(_app_main, flags_parser=_absl_flags)
