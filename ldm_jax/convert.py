"""Imports released weights into a workdir that `python -m ldm_jax.sample` reads.

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
stops with a one-line error naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ldm_jax import interop
from ldm_jax.interop.diffusers import read_config
from ldm_jax.interop.diffusers_config import UnsupportedConfigError
from ldm_jax.workdir import writer as workdir_writer

PROGRAM = "python -m ldm_jax.convert"
_CLIP_UNET = (
    "{unet} is a UNet2DConditionModel: it cross-attends to the tokens of a pretrained text "
    "encoder (CLIP for Stable Diffusion), which ldm_jax does not implement, so a workdir could "
    "not be sampled. Load it with ldm_jax.interop.load_diffusers_unet and feed precomputed "
    "encoder_hidden_states as `context` instead."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__)
    sub = parser.add_subparsers(dest="source", required=True)
    cv = sub.add_parser("compvis", help="the paper's .ckpt + YAML config")
    cv.add_argument("--config", required=True, help="the model's YAML config")
    cv.add_argument("--ckpt", required=True, help="the .ckpt (or .safetensors) file")
    cv.add_argument("--vocab", help="WordPiece vocab.txt (bert-base-uncased) of a text model")
    cv.add_argument("--no-ema", action="store_true", help="use the raw, not the EMA, U-Net")
    cv.add_argument(
        "--allow-placeholders",
        action="store_true",
        help="read Lightning checkpoints that pickle extra objects (kept inert, never run)",
    )
    df = sub.add_parser("diffusers", help="diffusers save_pretrained folders")
    df.add_argument("--vae", required=True, help="the AutoencoderKL or VQModel folder")
    df.add_argument("--unet", help="the UNet2DModel folder (omit for a stage-1-only workdir)")
    df.add_argument(
        "--scheduler",
        help="a scheduler folder or scheduler_config.json (default: the paper's LDM schedule)",
    )
    for p in (cv, df):
        p.add_argument("--out", required=True, help="workdir to write")
    return parser


def _scheduler_config(path: str | None) -> dict | None:
    if path is None:
        return None
    if os.path.isdir(path):
        path = os.path.join(path, "scheduler_config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--scheduler: {path} not found.")
    with open(path) as f:
        return json.load(f)


def _convert(args: argparse.Namespace) -> None:
    if args.source == "compvis":
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
    """Runs the CLI; expected user errors exit with status 1 and one line on stderr."""
    args = _parser().parse_args(argv)
    try:
        _convert(args)
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
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
