"""Encodes a workdir's training split once with its trained first stage into a latent cache.

  python -m ldm_jax.cache_latents --workdir runs/quickstart [--out runs/quickstart/latents] \
      [--overwrite] [--config configs/quickstart.py --config.data.data_dir=...]

Writes posterior mean/log-variance and labels as a tfds array_record dataset (default
`<workdir>/latents`). An up-to-date cache is kept; a cache written from other first-stage weights
or data is an error unless `--overwrite`. Prints one JSON line.
"""

from __future__ import annotations

from ldm_jax.training import host_memory

# First, before the heavy imports: glibc reads its tunables only when a process starts.
host_memory.rerun_with_huge_pages("ldm_jax.cache_latents")

import json
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from ldm_jax import cli_errors
from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.validation import validate_config
from ldm_jax.training import logging as log
from ldm_jax.workdir.latent_cache import cache_workdir_latents

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir with a stage-1 checkpoint.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config to use instead of the workdir's config.json.", lock_config=True
)
_OUT = flags.DEFINE_string("out", None, "Cache folder (default: <workdir>/latents).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rewrite an existing (even stale) cache.")
flags.mark_flags_as_required(["workdir"])

PROGRAM = "python -m ldm_jax.cache_latents"


def _cache() -> dict:
    """Writes (or keeps) the cache; returns the JSON report."""
    config = _CONFIG.value
    if config is not None:
        config = with_defaults(config)
        validate_config(config)
    start = time.perf_counter()
    store, written = cache_workdir_latents(
        _WORKDIR.value, config, directory=_OUT.value, overwrite=_OVERWRITE.value
    )
    return {
        "cache": store.directory,
        "status": "written" if written else "up to date",
        "num_examples": store.num_examples,
        "latent_shape": list(store.latent_shape),
        "first_stage_step": store.metadata.get("first_stage_step"),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv):
    log.show_own_status_only()
    with cli_errors.user_errors_as_exit(PROGRAM):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            report = _cache()
        except FileExistsError as e:  # --out names a folder that is not a cache.
            sys.exit(f"{PROGRAM}: error: {e}")
        print(json.dumps(report))


if __name__ == "__main__":
    cli_errors.run(main, PROGRAM)
