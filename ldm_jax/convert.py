"""Imports released weights into a workdir that `python -m ldm_jax.sample` reads.

  python -m ldm_jax.convert compvis --config cin.yaml --ckpt model.ckpt --out runs/cin
  python -m ldm_jax.convert diffusers --vae sd/vae --out runs/sd_vae   # stage 1 only

The paper's checkpoints become a full workdir when the format can express them (KL first stage;
unconditional or class-token cross-attention U-Net); the `.ckpt` is read without PyTorch and
without running code from it. A diffusers AutoencoderKL becomes a stage-1 workdir on which
`python -m ldm_jax.train --config.stage=ldm` trains stage 2. Anything the workdir format cannot
express stops with an error naming it (use `ldm_jax.interop` directly for those models).
"""

from __future__ import annotations

import argparse
import sys

from ldm_jax import interop
from ldm_jax.interop import workdir_writer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldm_jax.convert", description=__doc__)
    sub = parser.add_subparsers(dest="source", required=True)
    cv = sub.add_parser("compvis", help="the paper's .ckpt + YAML config")
    cv.add_argument("--config", required=True, help="the model's YAML config")
    cv.add_argument("--ckpt", required=True, help="the .ckpt (or .safetensors) file")
    cv.add_argument("--no-ema", action="store_true", help="use the raw, not the EMA, U-Net")
    cv.add_argument(
        "--allow-placeholders",
        action="store_true",
        help="read Lightning checkpoints that pickle extra objects (kept inert, never run)",
    )
    df = sub.add_parser("diffusers", help="a diffusers save_pretrained AutoencoderKL folder")
    df.add_argument("--vae", required=True, help="the AutoencoderKL folder")
    df.add_argument("--unet", help="not expressible in a workdir (kept for a clear error)")
    for p in (cv, df):
        p.add_argument("--out", required=True, help="workdir to write")
    args = parser.parse_args(argv)
    if args.source == "compvis":
        ldm = interop.load_compvis(
            args.config,
            args.ckpt,
            use_ema=not args.no_ema,
            allow_placeholders=args.allow_placeholders,
        )
        workdir_writer.write_compvis_workdir(ldm, args.out)
    else:
        if args.unet:
            raise SystemExit(
                "A diffusers UNet2DConditionModel cross-attends to text-encoder tokens, which the "
                "workdir format (class token or unconditional) cannot hold; load it with "
                "ldm_jax.interop.load_diffusers_unet instead."
            )
        ae, params = interop.load_diffusers_autoencoder(args.vae)
        workdir_writer.write_diffusers_autoencoder_workdir(ae, params, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
