"""Inpainting fidelity of a concat inpainting workdir on held-out test images.

`python -m ldm_jax.evaluate --workdir W --what inpaint [--reference_workdir R --num N --steps S]`
runs `evaluate_workdir`. Protocol: the first `num` (default 1000) images x of the workdir
dataset's test split (Fashion-MNIST for `configs/tasks/fashion_mnist/inpainting.py`; never seen
in training) each get one fixed mask m, all drawn by `data.masks.large_masks(PRNGKey(seed),
num, size)`: the distribution the model trains on (2 boxes with sides of 20-60 % of the image, 3
strokes of 4 points, 5-12 % of the side wide; about 47 % of the pixels of a 32x32 image are in
the hole on average, reported as `mean_hole_fraction`). m = 1 marks the hole (pixels to fill).
Every method's output y is pasted onto x, y' = (1 - m) x + m y (as `sampling/tasks.py` does after
decoding), so the known pixels are exactly x's, and scored against x:

  psnr_hole_db  10 log10(4 / MSE) per image, the MSE over the hole's pixels only (every channel
                of every pixel with m = 1; pixels in [-1, 1], peak-to-peak 2; MSE floored at
                1e-12), averaged over the images;
  lpips_vgg     LPIPS v0.1 with the VGG16 backbone (`losses.lpips`; grey images repeated to three
                channels) of the full pasted image y' against x, averaged over images. The known
                pixels are identical, so every difference lies in the hole, but the network's
                receptive fields cover both: it scores how well the completed image matches
                x, seams included, not the hole's pixels in isolation.

Methods, all on the same images and masks:
  ldm             one sample per image from the workdir's model, conditioned as in training
                  (`generate.inpainting_condition`: the first stage's latent of x with the hole
                  black, and m at every f-th pixel), unguided (concat conditions have no
                  unconditional branch), with the workdir config's sampler, steps and eta unless
                  given; batch i draws its noise from fold_in(PRNGKey(seed), i);
  mean_fill       the hole filled with the mean of the image's known pixels (per channel; 0 for
                  an image with no known pixel);
  reconstruction  D(E(x)) of the workdir's first stage pasted into the hole: what a perfect LDM,
                  which can only produce decodable images, would reach (a near-ceiling);
  masked_sampling (with `reference_workdir`) the paper's inpainting with a model trained without
                  masks (an unconditional model, or a class-conditional one through its null
                  class, unguided): every step the latent positions outside the hole are
                  replaced by x's latent noised to that step (`sampling/editing.py`, "repaint"
                  without resampling). A latent position is regenerated when any of its f x f
                  pixels is in the hole, so at f = 4 on 32x32 images the large masks regenerate
                  about 71 % of the positions. Same sampler, steps, eta and noise seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.model_config import model_config
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import masks as mask_lib
from ldm_jax.data import pipeline
from ldm_jax.evaluation.conditioned_samples import sample_per_condition
from ldm_jax.evaluation.editing import encode_latents
from ldm_jax.evaluation.reconstruction import reconstruct_images
from ldm_jax.losses import lpips
from ldm_jax.sampling import editing
from ldm_jax.sampling.generate import (
    inpainting_condition,
    null_label,
)
from ldm_jax.workdir.reader import TrainedLDM, load_trained_ldm

DEFAULT_NUM = 1000
LPIPS_NET = "vgg16"
PSNR_FLOOR = 1e-12  # as `losses.autoencoder_loss.psnr`
# [b, ...] arrays -> [b, ...] array, jitted; applied to padded batches by `_map_batches`.
BatchFn = Callable[..., jax.Array]


def evaluation_masks(seed: int, num: int, size: int) -> np.ndarray:
    """The protocol's masks: float32 [num, size, size, 1] in {0, 1}, 1 = hole
    (`data.masks.large_masks` from PRNGKey(seed), the training distribution)."""
    return np.asarray(mask_lib.large_masks(jax.random.PRNGKey(seed), num, size), np.float32)


def paste(known: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(1 - mask) known + mask generated: [N, H, W, C] images, mask [N, H, W, 1], 1 = hole."""
    return ((1.0 - mask) * known + mask * generated).astype(np.float32)


def mean_fill(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each image [N, H, W, C] with its hole (mask [N, H, W, 1], 1 = hole) set to the per-channel
    mean of its known pixels (0 for an image with no known pixel); known pixels unchanged."""
    known = 1.0 - np.asarray(mask, np.float64)
    count = known.sum(axis=(1, 2))  # [N, 1]
    total = (np.asarray(images, np.float64) * known).sum(axis=(1, 2))  # [N, C]
    mean = np.where(count > 0, total / np.maximum(count, 1.0), 0.0)  # [N, C]
    return paste(images, np.broadcast_to(mean[:, None, None, :], images.shape), mask)


def hole_psnr(references: np.ndarray, outputs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float64 [N]: 10 log10(4 / MSE) with the MSE over the hole's pixels and channels only
    (images [N, H, W, C] in [-1, 1], mask [N, H, W, 1], 1 = hole); NaN for an empty hole."""
    x, y = np.asarray(references, np.float64), np.asarray(outputs, np.float64)
    m = np.asarray(mask, np.float64)
    if x.shape != y.shape or m.shape != x.shape[:-1] + (1,):
        raise ValueError(
            f"hole_psnr needs images [N, H, W, C] and a mask [N, H, W, 1]; got {x.shape}, "
            f"{y.shape} and {m.shape}."
        )
    values = m.sum(axis=(1, 2, 3)) * x.shape[-1]  # [N] hole pixels x channels
    sq = (m * (np.clip(y, -1.0, 1.0) - x) ** 2).sum(axis=(1, 2, 3))  # [N]
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = np.where(values > 0, sq / values, np.nan)
        return 10.0 * np.log10(4.0 / np.maximum(mse, PSNR_FLOOR))


def _map_batches(fn: BatchFn, arrays: tuple[np.ndarray, ...], batch_size: int) -> np.ndarray:
    """fn over rows in batches of exactly min(batch_size, N) (the last one padded by repeating
    its last row, then cut): one compiled shape. Returns the outputs concatenated, float32."""
    n = len(arrays[0])
    b = min(batch_size, n)
    out = []
    for start in range(0, n, b):
        chunk = [a[start : start + b] for a in arrays]
        k = len(chunk[0])
        padded = [np.concatenate([c, np.repeat(c[-1:], b - k, axis=0)]) for c in chunk]
        out.append(np.asarray(fn(*padded), np.float32)[:k])
    return np.concatenate(out)


def make_lpips_fn(batch_size: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(references, outputs) [N, H, W, C] in [-1, 1] -> LPIPS-VGG [N]; compiles once for every
    call (batches of min(batch_size, N) rows)."""
    params = lpips.load_lpips_params(LPIPS_NET)
    fn = jax.jit(lambda x, y: lpips.lpips_distance(params, x, y, LPIPS_NET))
    return lambda references, outputs: _map_batches(fn, (references, outputs), batch_size)


def score(
    references: np.ndarray,
    pasted: np.ndarray,
    mask: np.ndarray,
    lpips_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> dict[str, float]:
    """{"psnr_hole_db", "lpips_vgg"} of pasted outputs (module docstring), means over images."""
    return {
        "psnr_hole_db": float(np.nanmean(hole_psnr(references, pasted, mask))),
        "lpips_vgg": float(np.mean(lpips_fn(references, pasted), dtype=np.float64)),
    }


def check_inpainting(config: Any) -> None:
    """ConfigError unless the workdir holds a concat inpainting model with a dataset."""
    kind = builders.condition_kind(config)
    if kind != "inpaint":
        raise ConfigError(
            f"--what inpaint scores inpainting models (conditioning_key 'concat' with the "
            f"'first_stage' cond stage, e.g. configs/tasks/fashion_mnist/inpainting.py); this "
            f"workdir's model is conditioned on {kind!r}. A model trained without masks "
            "inpaints by masked sampling: pass it as --reference_workdir beside an inpainting "
            "workdir."
        )
    if config.data.name == "imported":
        raise ConfigError(
            "This workdir holds imported weights (config.data.name='imported') and names no "
            "dataset to take test images from; evaluate a workdir trained here."
        )


def inpainting_conditions(
    trained: TrainedLDM, images: np.ndarray, mask: np.ndarray, batch_size: int
) -> np.ndarray:
    """The concat condition [N, h, w, c + 1] of each (image, mask), as in training."""
    ae = builders.build_autoencoder(trained.config)
    f = builders.downsampling_factor(trained.config)
    fn = jax.jit(lambda x, m: inpainting_condition(ae, trained.ae_params, x, m, f))
    return _map_batches(fn, (images, mask), batch_size)


def _unconditional_branch(reference: TrainedLDM, batch: int) -> np.ndarray | None:
    """The y of a reference model's unconditional branch for `batch` rows: None for an
    unconditional model, the null class for a class-conditional one; ConfigError otherwise."""
    kind = builders.condition_kind(reference.config)
    if kind == "none":
        return None
    null = null_label(builders.build_denoiser(reference.config)) if kind == "class" else None
    if null is None:
        lacking = " without a null class" if kind in ("class", "adm") else ""
        raise ConfigError(
            f"--reference_workdir {reference.workdir}: masked sampling needs a model trained "
            "without masks that samples without a condition (unconditional, or "
            f"class-conditional with a null class); this one is conditioned on {kind!r}"
            f"{lacking}."
        )
    return np.full((batch,), null, np.int32)


def check_reference(reference: TrainedLDM, image_shape: tuple[int, int, int]) -> None:
    """ConfigError unless the reference model makes images of `image_shape` (H, W, C)."""
    config = reference.config
    h, w, _ = builders.latent_shape(config)
    f = builders.downsampling_factor(config)
    channels = model_config(config)["first_stage"].get("in_channels", 3)
    if (h * f, w * f, channels) != tuple(image_shape):
        raise ConfigError(
            f"--reference_workdir {reference.workdir} makes {h * f}x{w * f}x{channels} images; "
            f"the inpainting workdir's test images are {'x'.join(map(str, image_shape))}: use a "
            "reference model trained on the same data."
        )


def masked_sampling(
    reference: TrainedLDM,
    images: np.ndarray,
    mask: np.ndarray,
    *,
    sampler: str,
    steps: int,
    eta: float,
    seed: int,
    batch_size: int,
) -> np.ndarray:
    """One masked-sampling inpainting per image [N, H, W, C] by a model trained without masks
    (module docstring), before pasting; batch i draws its noise from fold_in(PRNGKey(seed), i).

    Raises:
      ConfigError: the reference model is not unconditional (or null-class conditional), or
        makes images of another shape.
    """
    config = reference.config
    check_reference(reference, images.shape[1:])
    f = builders.downsampling_factor(config)
    cond = _unconditional_branch(reference, len(images))  # [N] null classes, or None
    keep = np.concatenate([editing.latent_keep_mask(m, f) for m in mask])  # [N, h, w, 1]
    known = encode_latents(reference, images, batch_size)  # [N, h, w, c], scaled
    return sample_per_condition(
        reference, cond, None, sampler=sampler, steps=steps, guidance=1.0, eta=eta, seed=seed,
        batch_size=batch_size, latents={"mask": keep, "x_known": known},
    )  # fmt: skip


def evaluate_workdir(
    workdir: str,
    *,
    num: int | None,
    seed: int,
    sampler: str | None,
    steps: int | None,
    eta: float | None,
    batch_size: int,
    reference_workdir: str | None = None,
) -> dict[str, Any]:
    """Hole PSNR and LPIPS-VGG of an inpainting workdir's samples beside mean filling, the
    first stage's reconstruction and (with `reference_workdir`) masked sampling (module doc).

    Args:
      workdir: a training workdir of a concat inpainting model.
      num: the first `num` test images (None: 1000).
      seed: the seed of the masks and of the sampling noise.
      sampler, steps, eta: the sampler's (None: the workdir config's `sample` section); the
        reference model samples with the same.
      batch_size: images per compiled batch (sampling and scoring).
      reference_workdir: a model trained without masks on the same data (unconditional, or
        class-conditional with a null class), scored by masked sampling.

    Returns:
      JSON-able {"ldm", "mean_fill", "reconstruction"[, "masked_sampling"]: {"psnr_hole_db",
      "lpips_vgg"}, "num_images", "mean_hole_fraction", "protocol", "ldm_step"[,
      "reference_ldm_step"], "seconds"}.

    Raises:
      ConfigError: the workdir does not hold an inpainting model, `num` is not positive, or the
        reference model does not fit (see `masked_sampling`).
    """
    start = time.time()
    trained = load_trained_ldm(workdir)
    config = trained.config
    check_inpainting(config)
    d, s = config.data, config.sample
    num = DEFAULT_NUM if num is None else num
    if num <= 0:
        raise ConfigError(f"--num must be positive, got {num}.")
    reference = None
    if reference_workdir:
        reference = load_trained_ldm(reference_workdir)
        _unconditional_branch(reference, 1)  # Fail before sampling anything.
        check_reference(reference, (d.image_size, d.image_size, d.channels))
    source = builders.build_data_source(config, "test")
    test = pipeline.load_split_dict(source, d.image_size, d.channels, max_examples=num)
    images = np.asarray(test["image"], np.float32)  # [N, H, W, C]
    mask = evaluation_masks(seed, len(images), images.shape[1])  # [N, H, W, 1]

    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = float(s.eta if eta is None else eta)
    cond = inpainting_conditions(trained, images, mask, batch_size)  # [N, h, w, c + 1]
    samples = sample_per_condition(
        trained, cond, None, sampler=sampler, steps=steps, guidance=1.0, eta=eta, seed=seed,
        batch_size=batch_size,
    )  # fmt: skip
    outputs = {
        "ldm": paste(images, samples, mask),
        "mean_fill": mean_fill(images, mask),
        "reconstruction": paste(images, reconstruct_images(trained, images, batch_size), mask),
    }
    if reference is not None:
        repainted = masked_sampling(
            reference, images, mask, sampler=sampler, steps=steps, eta=eta, seed=seed,
            batch_size=batch_size,
        )  # fmt: skip
        outputs["masked_sampling"] = paste(images, repainted, mask)
    lpips_fn = make_lpips_fn(batch_size)
    result: dict[str, Any] = {
        name: score(images, out, mask, lpips_fn) for name, out in outputs.items()
    }
    holes = mask.mean(axis=(1, 2, 3), dtype=np.float64)  # [N]
    result.update(
        num_images=int(len(images)),
        mean_hole_fraction=float(holes.mean()),
        protocol={
            "split": "test",
            "num": int(len(images)),
            "seed": seed,
            "masks": (
                f"data.masks.large_masks(PRNGKey({seed}), {len(images)}, "
                f"{images.shape[1]}), 1 = hole"
            ),
            "images_without_hole": int(np.sum(holes == 0)),
            "sampler": sampler,
            "steps": int(steps),
            "eta": eta,
            "guidance": None,  # concat conditions: unguided; the reference samples unguided too
            "paste": "known pixels copied from the test image after decoding, every method",
            "psnr_hole": "10 log10(4 / MSE over the hole's pixels and channels), mean over images",
            "lpips": "LPIPS v0.1 VGG16 of the full pasted image, grey repeated to 3 channels",
            "mean_fill": "the hole set to the per-channel mean of the image's known pixels",
            "reconstruction": "D(E(x)) of the test image (posterior mean) pasted into the hole",
            "masked_sampling": (
                None
                if reference is None
                else f"{reference_workdir}: known latents noised to each step pasted in, "
                "unconditional branch, unguided"
            ),
        },
        ldm_step=trained.step,
        seconds=round(time.time() - start, 1),
    )
    if reference is not None:
        result["reference_ldm_step"] = reference.step
    return result
