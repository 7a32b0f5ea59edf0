"""Writes `docs/configuration.md`, the configuration reference generated from the typed schema.

  python scripts/write_config_reference.py          # (re)write the file
  python scripts/write_config_reference.py --check  # exit 1 when the committed file is stale

The page is `ldm_jax.config.reference.config_reference_markdown()`; a config field without a
description in its dataclass docstring stops the script with the field's name.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from ldm_jax.config import reference

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Writes (or with `--check`, compares) the reference; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from the generated text"
    )
    parser.add_argument("--out", default=str(ROOT / reference.OUTPUT), help="the file to write")
    args = parser.parse_args(argv)
    path = pathlib.Path(args.out)
    if args.check:
        message = reference.stale_message(path)
        if message is not None:
            print(message, file=sys.stderr)
            return 1
        return 0
    text = reference.config_reference_markdown()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
