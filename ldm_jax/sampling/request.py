"""What the sample CLI asks for (`SampleRequest`), what it gets back, and its input errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class SampleInputError(ValueError):
    """A sampling request that does not fit the model; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """What to sample; None fields take the workdir config's `sample` defaults.

    `strength` is the img2img strength of `--task edit` (None: `DEFAULT_STRENGTH`); `layout` the
    `--layout` of `--task layout` (a JSON file or test:INDEX; `layout_input.py`);
    `negative_prompt` the caption of guidance's unconditional branch (default: the empty one);
    `guidance_rescale` Lin et al.'s rescale in [0, 1] of the guided output (default 0: none).
    """

    task: str = "generate"
    num: int = 16
    class_label: int | None = None
    prompt: str | None = None
    image: str | None = None
    mask: str | None = None
    guidance: float | None = None
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    seed: int = 0
    strength: float | None = None
    layout: str | None = None
    negative_prompt: str | None = None
    guidance_rescale: float | None = None


@dataclasses.dataclass(frozen=True)
class SampleResult:
    """images [N, H, W, C] float32 in [-1, 1], grid columns, and the JSON summary."""

    images: np.ndarray
    columns: int
    info: dict[str, Any]


def reject(request: SampleRequest, task: str, *flags: str) -> None:
    """Raises `SampleInputError` for the first of `flags` that the request sets."""
    given = {"--class": request.class_label, "--prompt": request.prompt}
    given["--negative_prompt"] = request.negative_prompt
    given.update({"--image": request.image, "--mask": request.mask})
    given.update({"--strength": request.strength, "--layout": request.layout})
    for flag in flags:
        if given[flag] is not None:
            raise SampleInputError(f"{flag} does not apply to --task {task}.")


def check_divisible(h: int, w: int, by: int, what: str) -> None:
    """Raises `SampleInputError` unless both sides of `what` are multiples of `by`."""
    if h % by or w % by:
        raise SampleInputError(f"{what} is {h}x{w}; both sides must be multiples of {by}.")
