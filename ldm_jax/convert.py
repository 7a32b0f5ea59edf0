"""Imports released weights into a workdir that `python -m ldm_jax.sample` reads.

The source comes first, then absl-style flags (`--flag value` or `--flag=value`):

  python -m ldm_jax.convert compvis --config cin.yaml --ckpt model.ckpt --out runs/cin
  python -m ldm_jax.convert compvis --config txt2img.yaml --ckpt model.ckpt --vocab vocab.txt \
      --out runs/txt2img
  python -m ldm_jax.convert diffusers --unet ldm/unet --vae ldm/vqvae [--scheduler ldm/scheduler] \
      --out runs/ldm
  python -m ldm_jax.convert diffusers --vae sd/vae --out runs/sd_vae   # stage 1 only
  python -m ldm_jax.convert diffusers --dir stable-diffusion-v1-5 --out runs/sd15
  python -m ldm_jax.convert sd-single-file --ckpt v1-5-pruned-emaonly.safetensors \
      --tokenizer sd15/tokenizer --out runs/sd15          # --prediction_type for SD 2.x

The paper's checkpoints (any model its configs describe: unconditional, class, text with the
BERT encoder, super-resolution, inpainting, semantic synthesis; KL or VQ first stage) become a full
workdir; the `.ckpt` is read without PyTorch and without running code from it. A diffusers
UNet2DModel with an AutoencoderKL or VQModel becomes one too (unconditional, class labels, or
image-concat super-resolution). A diffusers AutoencoderKL alone becomes a stage-1 workdir on which
`python -m ldm_jax.train --config.stage=ldm` trains stage 2. A whole diffusers Stable Diffusion
1.x/2.x folder (`--dir`: unet, vae, text_encoder, tokenizer, scheduler; text-to-image or
inpainting, epsilon or v prediction) and an original Stable Diffusion single file (v1, v2,
v2-v, inpainting; `.safetensors`, or a `.ckpt` read by the restricted unpickler) become a workdir
holding the frozen CLIP/OpenCLIP text encoder and its tokenizer as well: `python -m
ldm_jax.sample --task text2img|img2img|inpaint` samples it and `python -m ldm_jax.export` writes
it back as a diffusers folder. Anything the workdir cannot express stops with a one-line error
naming it. Prints one JSON line: {"out": ..., "source": ...}. `--workdir` is another name for
`--out`.

compvis flags: --config --ckpt --out [--vocab] [--no_ema] [--allow_placeholders]
diffusers flags: --out and --dir, or --vae [--unet] [--scheduler]
sd-single-file flags: --ckpt --tokenizer --out [--config] [--prediction_type] [--no_ema]
                      [--allow_placeholders]
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from ldm_jax import cli_errors, interop
from ldm_jax.interop.diffusers import read_config
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.interop.sd_pipeline import load_sd_folder
from ldm_jax.interop.sd_single_file import load_sd_single_file
from ldm_jax.interop.tensors import one_line_summary
from ldm_jax.training import logging as log
from ldm_jax.workdir import writer as workdir_writer
from ldm_jax.workdir.sd_writer import write_sd_workdir

PROGRAM = "python -m ldm_jax.convert"
SOURCES = ("compvis", "diffusers", "sd-single-file")
_CLIP_UNET = (
    "{unet} is a UNet2DConditionModel (Stable Diffusion): convert the whole pipeline folder "
    "with --dir SD_FOLDER (it holds the text encoder and tokenizer the U-Net needs)."
)
_HELP = ("-h", "-help", "--help", "--helpshort", "--helpfull", "-?")
# Per source: the flags it needs, and the flags it accepts besides those.
_REQUIRED = {
    "compvis": ("config", "ckpt", "out"),
    "diffusers": ("out",),
    "sd-single-file": ("ckpt", "tokenizer", "out"),
}
_OPTIONAL = {
    "compvis": ("vocab", "no_ema", "allow_placeholders", "workdir"),
    "diffusers": ("dir", "vae", "unet", "scheduler", "workdir"),
    "sd-single-file": ("config", "prediction_type", "no_ema", "allow_placeholders", "workdir"),
}


def _define_flags() -> flags.FlagValues:
    """convert's flags, in their own FlagValues (parsed afresh by every `main` call, and free
    to share names such as --config and --out with the other entry points)."""
    fv = flags.FlagValues()
    flags.DEFINE_string(
        "config",
        None,
        "compvis: the model's YAML config. sd-single-file: the original YAML (default: the "
        "standard SD 1.x/2.x architecture; needed for non-standard models).",
        flag_values=fv,
    )
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
    flags.DEFINE_string(
        "dir",
        None,
        "diffusers: a whole Stable Diffusion pipeline folder (model_index.json, unet, vae, "
        "text_encoder, tokenizer, scheduler).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "tokenizer",
        None,
        "sd-single-file: the CLIP tokenizer folder (vocab.json, merges.txt; a diffusers "
        "pipeline's tokenizer/), which single files do not hold.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "prediction_type",
        None,
        ["epsilon", "v_prediction"],
        "sd-single-file: what the U-Net predicts; needed for SD 2.x (768-v models: "
        "v_prediction; 512-base and inpainting: epsilon), whose weights do not say.",
        flag_values=fv,
    )
    flags.DEFINE_string("out", None, "The workdir to write.", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Another name for --out.", flag_values=fv)
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
            "give the source first: compvis, diffusers or sd-single-file (e.g. python -m "
            "ldm_jax.convert "
            "compvis --config model.yaml --ckpt model.ckpt --out runs/imported).",
        )
    source, rest = argv[0], argv[1:]
    if source not in SOURCES:
        cli_errors.usage_error(
            PROGRAM, f"unknown source {source!r}: compvis, diffusers or sd-single-file."
        )
    # The argparse spellings --no-ema and --allow-placeholders still work.
    rest = [_underscored(a) for a in rest]
    fv = _define_flags()
    try:
        positional = fv([PROGRAM, *rest])[1:]
    except flags.Error as e:
        cli_errors.usage_error(PROGRAM, str(e))
    if positional:
        cli_errors.usage_error(PROGRAM, f"unexpected arguments: {' '.join(positional)}")
    if fv["workdir"].present:
        if fv["out"].present and fv.out != fv.workdir:
            cli_errors.usage_error(PROGRAM, "give --out or --workdir (the same flag), not both.")
        fv.out = fv.workdir
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
    if source == "diffusers" and (fv.dir is None) == (fv.vae is None):
        cli_errors.usage_error(
            PROGRAM,
            "diffusers needs --dir SD_FOLDER (a whole Stable Diffusion pipeline) or --vae VAE "
            "[--unet UNET] (separate model folders), not both.",
        )
    if fv.dir is not None and (fv.unet is not None or fv.scheduler is not None):
        cli_errors.usage_error(PROGRAM, "--dir takes the pipeline's own unet and scheduler.")
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


def _check_files(*flag_paths: tuple[str, str | None]) -> None:
    for flag, path in flag_paths:
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {path}: no such file.")


def _convert(source: str, args: flags.FlagValues) -> None:
    if source == "compvis":
        _check_files(("--config", args.config), ("--ckpt", args.ckpt), ("--vocab", args.vocab))
        ldm = interop.load_compvis(
            args.config,
            args.ckpt,
            use_ema=not args.no_ema,
            allow_placeholders=args.allow_placeholders,
            vocab=args.vocab,
        )
        workdir_writer.write_compvis_workdir(ldm, args.out, vocab=args.vocab)
        return
    if source == "sd-single-file":
        _check_files(("--ckpt", args.ckpt), ("--config", args.config))
        parts, cond_kind = load_sd_single_file(
            args.ckpt,
            args.tokenizer,
            prediction_type=args.prediction_type,
            use_ema=not args.no_ema,
            allow_placeholders=args.allow_placeholders,
            config_yaml=args.config,
        )
        write_sd_workdir(parts, args.out, {"source": "sd-single-file"}, cond_kind=cond_kind)
        return
    if args.dir is not None:
        write_sd_workdir(load_sd_folder(args.dir), args.out, {"source": "diffusers"})
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
        interop.CheckpointFormatError,  # unsafe, corrupt or truncated files
        FileNotFoundError,
    ) as e:
        sys.exit(f"{PROGRAM}: error: {one_line_summary(str(e)) or type(e).__name__}")
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
