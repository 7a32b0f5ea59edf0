"""Stage 1 with the paper's full loss: LPIPS, the PatchGAN with its adaptive weight, a learned
log-variance and the EMA codebook, in one compiled step with two optimizers.

The step (see `ldm_jax.losses.first_stage_loss` for the loss) runs, per batch:
1. the autoencoder forward under `jax.vjp`, capturing the decoder's last-layer input;
2. the nll (pixel + LPIPS terms) and its gradient w.r.t. the reconstruction x~ (and logvar);
3. once `step >= disc_start`: the generator loss g = -mean(D(x~)) and its gradient w.r.t. x~,
   then the adaptive weight from both gradients' last-layer kernel gradients;
4. one backward through the autoencoder with the summed cotangents, the autoencoder update;
5. once `step >= disc_start`: the discriminator's update on D(x) against D(sg(x~)).
Before `disc_start` the discriminator is neither run nor updated (the reference runs it with a
zero weight; skipping saves its cost and leaves its Adam moments untouched until it starts).
The discriminator sees the reconstructions of step 1 (the reference recomputes them after the
autoencoder's update, one more forward pass). With `vq_ema_decay`, the codebook follows the
EMA of its assigned encoder outputs instead of its gradient, updated after the optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ldm_jax.config.options import train_options
from ldm_jax.losses import adversarial, vq_codebook
from ldm_jax.losses.autoencoder_loss import psnr
from ldm_jax.losses.first_stage_loss import (
    FirstStageLossConfig,
    kl_nll,
    pixel_reconstruction,
    vq_nll,
)
from ldm_jax.losses.lpips import LPIPS, load_lpips_params
from ldm_jax.models.autoencoder import AutoencoderKL
from ldm_jax.models.discriminator import NLayerDiscriminator
from ldm_jax.models.vq_autoencoder import VQModel
from ldm_jax.trainers.last_layer import (
    capture_last_layer_input,
    kernel_gradient,
    last_layer_kernel,
)
from ldm_jax.training.finite_guard import NONFINITE_METRIC, first_nonfinite, guard, tensor_names
from ldm_jax.training.optimizer import optimizer_for

CODEBOOK_PATH = ("quantize", "embedding", "embedding")


@flax.struct.dataclass
class FirstStageState:
    """The train state of stage 1 with the paper's loss.

    Attributes:
      step, params, opt_state, ema_params, rng: as `TrainState` (`params` are the autoencoder's
        alone, so workdir readers find them where the plain stage puts them).
      loss_params: {"logvar": []} for a KL first stage, {} for VQ.
      disc_params / disc_state / disc_opt_state: the PatchGAN's parameters, its normalisation
        statistics (BatchNorm or ActNorm collections) and its optimizer state ({} without GAN).
      codebook_ema: the VQ codebook's EMA statistics ({} without `vq_ema_decay`).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array
    loss_params: Any
    disc_params: Any
    disc_state: Any
    disc_opt_state: Any
    codebook_ema: Any


def loss_config(section: ml_collections.ConfigDict) -> FirstStageLossConfig:
    """The typed `autoencoder_train.loss` section (defaults when the config has none)."""
    loss = section.get("loss")
    return FirstStageLossConfig.from_dict(dict(loss or {}))


def optimizers(
    section: ml_collections.ConfigDict, loss_cfg: FirstStageLossConfig
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(autoencoder optimizer, discriminator optimizer): the section's AdamW and schedule, with
    the loss section's betas; the discriminator's peak rate is `disc_learning_rate` (0: the
    autoencoder's)."""
    betas = (loss_cfg.adam_b1, loss_cfg.adam_b2)
    ae_tx = optimizer_for(section, betas=betas)
    disc_lr = loss_cfg.disc_learning_rate or section.learning_rate
    return ae_tx, optimizer_for(section, betas=betas, learning_rate=disc_lr)


def build_discriminator(
    config: ml_collections.ConfigDict, loss_cfg: FirstStageLossConfig
) -> NLayerDiscriminator:
    """The PatchGAN on the config's image channels."""
    return NLayerDiscriminator(
        input_nc=config.data.channels,
        ndf=loss_cfg.disc_ndf,
        n_layers=loss_cfg.disc_num_layers,
        norm=loss_cfg.disc_norm,
    )


def _trains_logvar(ae: nn.Module, loss_cfg: FirstStageLossConfig) -> bool:
    return loss_cfg.learn_logvar and not isinstance(ae, VQModel)


def _ae_opt_target(params: Any, loss_params: Any, train_logvar: bool) -> Any:
    return (params, loss_params) if train_logvar else params


def _checked_tree(params: Any, logvar: Any, train_logvar: bool) -> dict[str, Any]:
    """The trees whose finiteness a step reports: the autoencoder's parameters (or gradients),
    and the learnt log-variance when it trains."""
    return {"autoencoder": params} | ({"logvar": logvar} if train_logvar else {})


def gradient_names(ae: nn.Module, loss_cfg: FirstStageLossConfig, state: Any) -> tuple[str, ...]:
    """The tensor names of the step's `nonfinite` report (`finite_guard.tensor_names`)."""
    logvar = state.loss_params.get("logvar")
    return tensor_names(_checked_tree(state.params, logvar, _trains_logvar(ae, loss_cfg)))


def state_init_fn(
    ae: AutoencoderKL | VQModel,
    config: ml_collections.ConfigDict,
    loss_cfg: FirstStageLossConfig,
    ae_tx: optax.GradientTransformation,
    disc_tx: optax.GradientTransformation,
) -> Callable[[jax.Array], FirstStageState]:
    """rng -> a fresh `FirstStageState` (autoencoder kernels boxed with logical axis names)."""
    size, ch = config.data.image_size, config.data.channels
    is_vq = isinstance(ae, VQModel)
    train_logvar = _trains_logvar(ae, loss_cfg)

    def init(rng):
        ae_rng, disc_rng, state_rng = jax.random.split(rng, 3)
        images = jnp.zeros((1, size, size, ch))
        params = ae.init(ae_rng, images)["params"]
        loss_params = {} if is_vq else {"logvar": jnp.asarray(loss_cfg.logvar_init, jnp.float32)}
        disc_params, disc_state, disc_opt = {}, {}, {}
        if loss_cfg.uses_discriminator:
            variables = build_discriminator(config, loss_cfg).init(disc_rng, images, train=False)
            variables = dict(variables)
            disc_params = variables.pop("params")
            disc_state = variables
            disc_opt = disc_tx.init(disc_params)
        codebook_ema = {}
        if is_vq and loss_cfg.uses_vq_ema:
            codebook = nn.unbox(params)
            for key in CODEBOOK_PATH:
                codebook = codebook[key]
            codebook_ema = vq_codebook.init_ema_state(codebook)
        return FirstStageState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=ae_tx.init(_ae_opt_target(params, loss_params, train_logvar)),
            ema_params={},
            rng=state_rng,
            loss_params=loss_params,
            disc_params=disc_params,
            disc_state=disc_state,
            disc_opt_state=disc_opt,
            codebook_ema=codebook_ema,
        )

    return init


def _disc_apply(
    disc: NLayerDiscriminator, params: Any, state: Any, x: jax.Array
) -> tuple[jax.Array, Any]:
    """Patch logits of `x` in train mode, and the discriminator's updated statistics."""
    logits, new_state = disc.apply(
        {"params": params, **state}, x, train=True, mutable=list(state.keys())
    )
    return logits.astype(jnp.float32), dict(new_state)


def _replace_codebook(params: Any, codebook: jax.Array) -> Any:
    """A copy of the autoencoder params with the VQ codebook replaced (nothing mutated)."""
    quantize = dict(params["quantize"])
    quantize["embedding"] = {**quantize["embedding"], "embedding": codebook}
    return {**params, "quantize": quantize}


def make_train_step(
    ae: AutoencoderKL | VQModel,
    config: ml_collections.ConfigDict,
    loss_cfg: FirstStageLossConfig,
    ae_tx: optax.GradientTransformation,
    disc_tx: optax.GradientTransformation,
) -> Callable[[FirstStageState, dict[str, jax.Array]], tuple[FirstStageState, dict]]:
    """The (state, batch) -> (state, metrics) update of stage 1 with the paper's loss."""
    tcfg = config.autoencoder_train
    is_vq = isinstance(ae, VQModel)
    train_logvar = _trains_logvar(ae, loss_cfg)
    l2_weight = float(tcfg.l2_weight)
    reg_weight = float(tcfg.get("codebook_weight", 1.0) if is_vq else tcfg.kl_weight)
    disc = build_discriminator(config, loss_cfg) if loss_cfg.uses_discriminator else None
    d_loss_fn = adversarial.D_LOSSES[loss_cfg.disc_loss]
    if loss_cfg.uses_lpips:
        lpips_net = LPIPS(net=loss_cfg.lpips_net)
        lpips_params = load_lpips_params(loss_cfg.lpips_net)
    vq_ema = is_vq and loss_cfg.uses_vq_ema
    skip_nonfinite = train_options(tcfg).skip_nonfinite

    def forward(params, x, rng):
        """x -> ((x~, regulariser), aux) for `jax.vjp` (aux: last-layer input, VQ codes)."""
        store: dict[str, jax.Array] = {}
        with nn.intercept_methods(capture_last_layer_input(store)):
            if is_vq:
                x_rec, qloss, indices, h = ae.apply(
                    {"params": params}, x, ema=vq_ema, method=ae.forward_with_codes
                )
                reg, aux = qloss, {"indices": indices, "prequant": h}
            else:
                x_rec, posterior = ae.apply({"params": params}, x, rng)
                reg, aux = jnp.mean(posterior.kl()), {}
        aux["last_input"] = store["input"]
        return (x_rec.astype(jnp.float32), reg.astype(jnp.float32)), aux

    def nll_fn(x_rec, logvar, x):
        perceptual = None
        if loss_cfg.uses_lpips:
            perceptual = lpips_net.apply({"params": lpips_params}, x, x_rec)  # [B]
        rec = pixel_reconstruction(x, x_rec, perceptual, l2_weight, loss_cfg.perceptual_weight)
        nll = vq_nll(rec) if is_vq else kl_nll(rec, logvar)
        terms = {"rec_loss": jnp.mean(rec)}
        if perceptual is not None:
            terms["lpips"] = jnp.mean(perceptual)
        return nll, terms

    def train_step(state: FirstStageState, batch):
        rng, step_rng = jax.random.split(state.rng)
        x = batch["image"].astype(jnp.float32)  # [B, H, W, C]
        (x_rec, reg), ae_vjp, aux = jax.vjp(
            lambda p: forward(p, x, step_rng), state.params, has_aux=True
        )
        logvar = state.loss_params.get("logvar", jnp.zeros((), jnp.float32))
        (nll, terms), (ct_nll, g_logvar) = jax.value_and_grad(nll_fn, argnums=(0, 1), has_aux=True)(
            x_rec, logvar, x
        )
        metrics = {"nll": nll, **terms, "psnr": jnp.mean(psnr(x, x_rec))}
        metrics["codebook" if is_vq else "kl"] = reg
        ct_x = ct_nll
        loss = nll + reg_weight * reg
        disc_params, disc_state, disc_opt = (
            state.disc_params,
            state.disc_state,
            (state.disc_opt_state),
        )
        if disc is not None:
            active = state.step >= loss_cfg.disc_start
            disc_factor = adversarial.adopt_weight(
                loss_cfg.disc_factor, state.step, loss_cfg.disc_start
            )
            kernel = nn.unbox(last_layer_kernel(state.params))

            def generator_terms(dstate):
                def g_fn(xr):
                    logits, new_state = _disc_apply(disc, disc_params, dstate, xr)
                    return jnp.mean(adversarial.generator_loss(logits)), new_state

                (g_loss, new_state), ct_g = jax.value_and_grad(g_fn, has_aux=True)(x_rec)
                grad_nll = kernel_gradient(aux["last_input"], kernel, ct_nll)
                grad_g = kernel_gradient(aux["last_input"], kernel, ct_g)
                d_weight = adversarial.adaptive_weight(grad_nll, grad_g, loss_cfg.disc_weight)
                return g_loss, ct_g, d_weight, new_state

            def no_generator_terms(dstate):
                return jnp.zeros(()), jnp.zeros_like(x_rec), jnp.zeros(()), dstate

            g_loss, ct_g, d_weight, disc_state = jax.lax.cond(
                active, generator_terms, no_generator_terms, disc_state
            )
            ct_x = ct_x + d_weight * disc_factor * ct_g
            loss = loss + d_weight * disc_factor * g_loss
            fake = jax.lax.stop_gradient(x_rec)

            def disc_update(carry):
                dparams, dstate, dopt = carry

                def d_fn(p):
                    real_logits, s1 = _disc_apply(disc, p, dstate, x)
                    fake_logits, s2 = _disc_apply(disc, p, s1, fake)
                    d_loss = disc_factor * jnp.mean(d_loss_fn(real_logits, fake_logits))
                    return d_loss, (s2, jnp.mean(real_logits), jnp.mean(fake_logits))

                (d_loss, (s2, real, fake_mean)), grads = jax.value_and_grad(d_fn, has_aux=True)(
                    dparams
                )
                updates, dopt = disc_tx.update(grads, dopt, dparams)
                return (optax.apply_updates(dparams, updates), s2, dopt), (d_loss, real, fake_mean)

            def no_disc_update(carry):
                return carry, (jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))

            (disc_params, disc_state, disc_opt), (d_loss, real, fake_mean) = jax.lax.cond(
                active, disc_update, no_disc_update, (disc_params, disc_state, disc_opt)
            )
            metrics.update(
                g_loss=g_loss,
                d_weight=d_weight,
                disc_factor=disc_factor,
                disc_loss=d_loss,
                logits_real=real,
                logits_fake=fake_mean,
            )
        (grads,) = ae_vjp((ct_x, jnp.asarray(reg_weight, jnp.float32)))
        loss_params = state.loss_params
        target = _ae_opt_target(state.params, loss_params, train_logvar)
        grad_target = _ae_opt_target(grads, {"logvar": g_logvar}, train_logvar)
        updates, opt_state = ae_tx.update(grad_target, state.opt_state, target)
        new_target = optax.apply_updates(target, updates)
        params, loss_params = new_target if train_logvar else (new_target, loss_params)
        codebook_ema = state.codebook_ema
        if is_vq:
            usage, perplexity = vq_codebook.codebook_usage(aux["indices"], ae.n_embed)
            metrics.update(codebook_usage=usage, perplexity=perplexity)
            if vq_ema:
                params, codebook_ema = _ema_codebook(params, codebook_ema, aux, rng)
        if not is_vq:
            metrics["logvar"] = logvar
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            rng=rng,
            loss_params=loss_params,
            disc_params=disc_params,
            disc_state=disc_state,
            disc_opt_state=disc_opt,
            codebook_ema=codebook_ema,
        )
        report = first_nonfinite(loss, _checked_tree(grads, g_logvar, train_logvar))
        new_state = guard(state, new_state, report, skip_nonfinite)
        return new_state, {"loss": loss, **metrics, NONFINITE_METRIC: report}

    def _ema_codebook(params, ema_state, aux, rng):
        codebook = params
        for key in CODEBOOK_PATH:
            codebook = codebook[key]
        z_flat = aux["prequant"].reshape(-1, ae.embed_dim).astype(jnp.float32)
        indices = aux["indices"].reshape(-1)
        codebook, ema_state = vq_codebook.ema_update(
            codebook, ema_state, z_flat, indices, loss_cfg.vq_ema_decay
        )
        if loss_cfg.vq_restart_threshold > 0:
            codebook, ema_state = vq_codebook.restart_dead_codes(
                codebook,
                ema_state,
                z_flat,
                jax.random.fold_in(rng, 1),
                loss_cfg.vq_restart_threshold,
            )
        return _replace_codebook(params, codebook), ema_state

    return train_step


def uses_paper_loss(config: ml_collections.ConfigDict) -> bool:
    """True when `autoencoder_train.loss` asks for more than the plain L1 + L2 + KL/VQ loss."""
    return not loss_config(config.autoencoder_train).is_plain
