"""Image-guided sampling with models trained without images or masks: img2img and masked sampling.

  img2img          (`--task edit --image X --strength S`) the image's latent (the first stage's
                   encoding, times the scale factor) is noised to the first timestep of the last
                   int(steps * S) grid steps and denoised from there under the request's
                   condition (SDEdit; `diffusion.sample(x_init=, strength=)`): S near 0 returns
                   the image's reconstruction, S = 1 ignores the image.
  masked sampling  (`--mask M`, white = fill in) every step the latent positions outside the hole
                   are replaced by the image's latent noised to the current timestep (the paper's
                   inpainting with a model trained without masks; `diffusion.sample(mask=,
                   x_known=)`). A latent position is generated when any of its f x f pixels is
                   to be filled; after decoding, the known pixels are pasted back exactly.

`--task inpaint` on an unconditional, class- or text-conditioned model is masked sampling from
pure noise (S = 1); `--task edit --mask` combines both, so the hole starts from the noised image.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.model_config import model_config
from ldm_jax.diffusion.timesteps import img2img_start_index
from ldm_jax.sampling import image_inputs
from ldm_jax.sampling.generate import encode_images
from ldm_jax.sampling.request import SampleInputError
from ldm_jax.workdir.reader import TrainedLDM

DEFAULT_STRENGTH = 0.75  # as the Stable Diffusion img2img script


@dataclasses.dataclass(frozen=True)
class ImageGuide:
    """An input image prepared for image-guided sampling.

    Attributes:
      image: [H, W, C] float32 in [-1, 1].
      fill: [H, W, 1] float32, 1 = pixels to generate; None: no mask (img2img of all pixels).
      latent: [1, h, w, c] float32, the image's latent times the scale factor.
      keep: [1, h, w, 1] float32, 1 = latent positions kept every step; None without a mask.
    """

    image: np.ndarray
    fill: np.ndarray | None
    latent: np.ndarray
    keep: np.ndarray | None

    def paste(self, images: np.ndarray) -> np.ndarray:
        """Decoded samples [N, H, W, C] with the known pixels of the input put back."""
        if self.fill is None:
            return images
        return self.fill * images + (1.0 - self.fill) * self.image

    def sampler_inputs(self, strength: float) -> dict[str, np.ndarray]:
        """The keyword latents of `generate.make_sampler`'s sample function."""
        inputs = {} if strength >= 1.0 else {"x_init": self.latent}
        if self.keep is not None:
            inputs.update(mask=self.keep, x_known=self.latent)
        return inputs


def check_strength(strength: float, steps: int) -> None:
    """Raises `SampleInputError` for a strength outside (0, 1] or one that runs no step."""
    if not 0.0 < strength <= 1.0:
        raise SampleInputError(f"--strength must be in (0, 1], got {strength}.")
    try:
        img2img_start_index(steps, strength)
    except ValueError:
        raise SampleInputError(
            f"--strength {strength} with --steps {steps} runs no denoising step (it runs "
            f"int(steps * strength) of them); raise --strength to at least {1 / steps:.3g} "
            "or --steps."
        ) from None


def latent_keep_mask(fill: np.ndarray, f: int) -> np.ndarray:
    """Pixels to fill [H, W, 1] -> latent positions to keep [1, H/f, W/f, 1] (float32 0/1): a
    position is kept only when none of its f x f pixels is to be filled."""
    h, w = fill.shape[0] // f, fill.shape[1] // f
    blocks = fill[: h * f, : w * f, 0].reshape(h, f, w, f)
    return (1.0 - blocks.max(axis=(1, 3)))[None, :, :, None].astype(np.float32)


def read_guide(trained: TrainedLDM, image: str, mask: str | None = None) -> ImageGuide:
    """Reads `--image` (and `--mask`), checks them against the model and encodes the image.

    Raises:
      SampleInputError: the image is not the model's size, the mask not the image's, or the
        mask marks nothing to fill.
      ImageInputError: a missing or unreadable file.
    """
    config = trained.config
    f = builders.downsampling_factor(config)
    h, w, _ = builders.latent_shape(config)
    channels = model_config(config)["first_stage"].get("in_channels", 3)
    pixels = image_inputs.read_image(image, channels)  # [H, W, C]
    if pixels.shape[:2] != (h * f, w * f):
        raise SampleInputError(
            f"--image {image} is {pixels.shape[1]}x{pixels.shape[0]}; this model makes "
            f"{w * f}x{h * f} images: resize it to {w * f}x{h * f}."
        )
    fill = keep = None
    if mask is not None:
        fill = image_inputs.read_mask(mask)  # [H, W, 1]
        if fill.shape[:2] != pixels.shape[:2]:
            raise SampleInputError(
                f"--mask {mask} is {fill.shape[1]}x{fill.shape[0]}, --image {image} is "
                f"{pixels.shape[1]}x{pixels.shape[0]}; they must be the same size."
            )
        if not fill.any():
            raise SampleInputError(
                f"--mask {mask} marks no pixel to fill in (white = fill in, black = keep)."
            )
        keep = latent_keep_mask(fill, f)
    ae = builders.build_autoencoder(config)
    encode = jax.jit(lambda p, x, s: encode_images(ae, p, x) * s)
    latent = encode(trained.ae_params, pixels[None], np.float32(trained.scale_factor))
    return ImageGuide(pixels, fill, np.asarray(latent, np.float32), keep)
