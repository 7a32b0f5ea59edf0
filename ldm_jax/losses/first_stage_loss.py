"""The paper's first-stage loss: pixel + LPIPS reconstruction, KL or VQ regulariser, PatchGAN.

As the reference `LPIPSWithDiscriminator` (KL, latent-diffusion `contperceptual.py`) and
`VQLPIPSWithDiscriminator` (VQ, taming-transformers `vqperceptual.py`):

  rec  = |x - x~| + l2_weight (x - x~)^2 + perceptual_weight * LPIPS(x, x~)   (per pixel; LPIPS
         is one number per image, broadcast over its pixels as the reference does)
  KL:  nll = sum(rec / exp(logvar) + logvar) / B,   loss = nll + kl_weight * KL + d_weight * g
  VQ:  nll = mean(rec),                             loss = nll + codebook_weight * q + d_weight * g

with g = -mean(D(x~)) the generator loss, d_weight = disc_factor(step) * the adaptive weight
|grad nll| / (|grad g| + 1e-4) on the decoder's last layer (clamped to [0, 1e4], times
disc_weight), and disc_factor(step) = 0 before `disc_start`. The discriminator minimises
disc_factor(step) * hinge (or vanilla) loss of D(x) against D(x~).

`FirstStageLossConfig` is the typed `config.autoencoder_train.loss` section; its defaults switch
LPIPS and the discriminator off (the quickstart's L1 + L2 + KL loss).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from ldm_jax.models.specs import Spec


@dataclasses.dataclass(frozen=True, kw_only=True)
class FirstStageLossConfig(Spec):
    """`config.autoencoder_train.loss`: the perceptual, adversarial and regulariser settings.

    Attributes:
      perceptual_weight: weight of LPIPS in the reconstruction term (1.0 in the paper; 0: off).
      lpips_net: LPIPS backbone, "vgg16" (the paper's) or "alexnet".
      disc_weight: the reference `disc_weight` scaling the adaptive weight (0: no discriminator).
      disc_start: first step at which the adversarial terms count (the reference `disc_start`).
      disc_factor: the reference `disc_factor` once the discriminator is on.
      disc_loss: "hinge" or "vanilla" (the discriminator's loss).
      disc_num_layers: strided conv layers of the PatchGAN (`n_layers`, 3 or 2 in the paper).
      disc_ndf: width of the PatchGAN's first layer.
      disc_norm: "batch" (the reference default) or "actnorm".
      disc_learning_rate: the discriminator's peak learning rate (0: as `learning_rate`).
      logvar_init: initial value of the KL loss's log-variance.
      learn_logvar: train the log-variance with the autoencoder. The reference declares it a
        parameter but leaves it out of its optimizer, so it stays at `logvar_init` there.
      adam_b1, adam_b2: Adam betas of both optimizers (the reference's GAN training: 0.5, 0.9).
      vq_ema_decay: VQ only: update the codebook by exponential moving averages with this decay
        instead of by its loss term (0: off, the reference).
      vq_restart_threshold: VQ with EMA: codes whose EMA cluster size falls below this are
        restarted at encoder outputs of the batch (0: off).
    """

    SECTION = "autoencoder_train.loss"

    perceptual_weight: float = 0.0
    lpips_net: Literal["vgg16", "alexnet"] = "vgg16"
    disc_weight: float = 0.0
    disc_start: int = 0
    disc_factor: float = 1.0
    disc_loss: Literal["hinge", "vanilla"] = "hinge"
    disc_num_layers: int = 3
    disc_ndf: int = 64
    disc_norm: Literal["batch", "actnorm"] = "batch"
    disc_learning_rate: float = 0.0
    logvar_init: float = 0.0
    learn_logvar: bool = False
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    vq_ema_decay: float = 0.0
    vq_restart_threshold: float = 0.0

    def __post_init__(self):
        where = self.SECTION
        checks = (
            (self.perceptual_weight >= 0, "perceptual_weight", "must be >= 0"),
            (self.disc_weight >= 0, "disc_weight", "must be >= 0"),
            (self.disc_start >= 0, "disc_start", "must be >= 0"),
            (self.disc_factor >= 0, "disc_factor", "must be >= 0"),
            (self.disc_num_layers >= 1, "disc_num_layers", "must be >= 1"),
            (self.disc_ndf >= 1, "disc_ndf", "must be >= 1"),
            (self.disc_learning_rate >= 0, "disc_learning_rate", "must be >= 0 (0: as lr)"),
            (0 <= self.adam_b1 < 1, "adam_b1", "must be in [0, 1)"),
            (0 <= self.adam_b2 < 1, "adam_b2", "must be in [0, 1)"),
            (0 <= self.vq_ema_decay < 1, "vq_ema_decay", "must be in [0, 1) (0: off)"),
            (self.vq_restart_threshold >= 0, "vq_restart_threshold", "must be >= 0 (0: off)"),
        )
        for ok, name, message in checks:
            if not ok:
                raise ValueError(f"{where}.{name}: {message}, got {getattr(self, name)!r}.")
        if self.vq_restart_threshold > 0 and self.vq_ema_decay == 0:
            raise ValueError(
                f"{where}.vq_restart_threshold: dead-code restarts follow the EMA cluster sizes; "
                "set vq_ema_decay (e.g. 0.99) too, or vq_restart_threshold=0."
            )

    @property
    def uses_lpips(self) -> bool:
        return self.perceptual_weight > 0

    @property
    def uses_discriminator(self) -> bool:
        return self.disc_weight > 0 and self.disc_factor > 0

    @property
    def uses_vq_ema(self) -> bool:
        return self.vq_ema_decay > 0

    @property
    def is_plain(self) -> bool:
        """True for the quickstart's loss (no LPIPS, GAN, learned log-variance or EMA codebook):
        the autoencoder then trains with the plain one-optimizer step."""
        return (
            not (
                self.uses_lpips or self.uses_discriminator or self.learn_logvar or self.uses_vq_ema
            )
            and self.logvar_init == 0.0
            and (self.adam_b1, self.adam_b2) == (0.9, 0.999)
        )


def pixel_reconstruction(
    x: jax.Array,
    x_rec: jax.Array,
    perceptual: jax.Array | None,
    l2_weight: float,
    perceptual_weight: float,
) -> jax.Array:
    """|x - x~| + l2_weight (x - x~)^2 + perceptual_weight * LPIPS, per pixel.

    Args:
      x, x_rec: [B, H, W, C] images in [-1, 1].
      perceptual: [B] LPIPS distances, or None when `perceptual_weight` is 0.
      l2_weight, perceptual_weight: term weights.

    Returns:
      [B, H, W, C] float32.
    """
    diff = x_rec.astype(jnp.float32) - x.astype(jnp.float32)
    rec = jnp.abs(diff) + l2_weight * diff**2
    if perceptual is not None and perceptual_weight:
        rec = rec + perceptual_weight * perceptual.astype(jnp.float32)[:, None, None, None]
    return rec


def kl_nll(rec: jax.Array, logvar: jax.Array) -> jax.Array:
    """The KL autoencoder's nll: sum(rec / exp(logvar) + logvar) / B (a scalar, float32).

    Args:
      rec: [B, H, W, C] per-pixel reconstruction loss (`pixel_reconstruction`).
      logvar: [] the learned (or fixed) log-variance.
    """
    logvar = logvar.astype(jnp.float32)
    return jnp.sum(rec / jnp.exp(logvar) + logvar) / rec.shape[0]


def vq_nll(rec: jax.Array) -> jax.Array:
    """The VQ autoencoder's nll: mean(rec) (a scalar, float32)."""
    return jnp.mean(rec)
