"""The PyTorch side of each benchmark: the same work as `benchmarks/model_benches.py` and
`benchmarks/micro_benches.py`, on the same shapes, reported with the same `timing.record` fields.

"compile_s" is the first (warm-up) call's seconds (eager PyTorch compiles nothing); FLOPs are
counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention).
"""

from __future__ import annotations

import time
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ldm_jax.benchmarks.peers import diffusers_models
from ldm_jax.benchmarks.presets import (
    ATTENTION_KEY_LENS,
    ATTENTION_SHAPE,
    GROUPNORM_SHAPE,
    Preset,
)
from ldm_jax.benchmarks.timing import record, time_iterations

FRAMEWORK = f"torch {torch.__version__} + diffusers {diffusers.__version__}"
SCHEDULE = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """The machine's best torch float32 matmul rate (FLOP/s)."""
    a = torch.randn(n, n)
    times = time_iterations(lambda: torch.mm(a, a), repeats, warmup=2)
    return 2.0 * n**3 / min(times)


_PEAK: list[float] = []


def _peak() -> float:
    if not _PEAK:
        _PEAK.append(matmul_peak_flops())
    return _PEAK[0]


def _count_flops(run) -> float:
    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def _timed(
    bench, preset_name, batch, run, repeats, items, item, flops_of=None, **extra
) -> dict[str, Any]:
    """Times `run`; FLOPs counted on `flops_of` = (fn, multiplier), default (run, 1)."""
    start = time.perf_counter()
    run()  # warm-up (allocator, oneDNN primitive caches)
    first_s = time.perf_counter() - start
    times = time_iterations(run, repeats, warmup=0)
    fn, times_over = flops_of or (run, 1)
    flops = _count_flops(fn) * times_over
    return record(
        bench,
        FRAMEWORK,
        preset_name,
        batch,
        "float32",
        times,
        first_s,
        items,
        item,
        flops,
        _peak(),
        torch.get_num_threads(),
        **extra,
    )


def _unet_inputs(preset: Preset, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w, c = preset.latent_shape
    x = torch.randn(batch, c, h, w, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    context = torch.randn(batch, preset.context_len, preset.context_dim, generator=g)
    return x, t, context


def bench_unet_forward(preset: Preset, repeats: int) -> dict[str, Any]:
    unet = diffusers_models.build_unet(preset).eval()
    x, t, context = _unet_inputs(preset, preset.batch)

    def run():
        with torch.inference_mode():
            return unet(x, t, context).sample

    return _timed(
        "unet_forward",
        preset.name,
        preset.batch,
        run,
        repeats,
        preset.batch,
        "latent",
        params=diffusers_models.parameter_count(unet),
    )


def bench_unet_train(preset: Preset, repeats: int) -> dict[str, Any]:
    unet = diffusers_models.build_unet(preset).train()
    z0, t, context = _unet_inputs(preset, preset.batch)
    noise = torch.randn_like(z0)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, **SCHEDULE)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01)

    def run():
        z_t = sched.add_noise(z0, noise, t)
        loss = F.mse_loss(unet(z_t, t, context).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _timed(
        "unet_train", preset.name, preset.batch, run, repeats, preset.batch, "latent", remat="none"
    )


def bench_sample(
    preset: Preset, repeats: int, steps: int = 50, guidance: float = 7.5
) -> dict[str, Any]:
    images = max(1, preset.batch // 2)
    unet = diffusers_models.build_unet(preset).eval()
    x_T, _, context = _unet_inputs(preset, images)
    both = torch.cat([context, torch.zeros_like(context)])
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        **SCHEDULE,
    )
    sched.set_timesteps(steps)

    def run():
        x = x_T
        with torch.inference_mode():
            for t in sched.timesteps:
                eps = unet(torch.cat([x, x]), t, both).sample
                cond, uncond = eps.chunk(2)
                x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample

    def one_call():  # FLOPs of one guided step, counted once and multiplied by the steps
        with torch.inference_mode():
            unet(torch.cat([x_T, x_T]), sched.timesteps[0], both)

    result = _timed(
        "sample",
        preset.name,
        2 * images,
        run,
        repeats,
        images,
        "image",
        flops_of=(one_call, steps),
        sampler="ddim",
        steps=steps,
        images=images,
    )
    result["seconds_per_image"] = round(result["median_s"] / images, 4)
    return result


def bench_autoencoder(preset: Preset, repeats: int) -> dict[str, Any]:
    ae = diffusers_models.build_autoencoder(preset).eval()
    h, w, c = preset.image_shape
    x = torch.rand(preset.ae_batch, c, h, w) * 2 - 1

    def run():
        with torch.inference_mode():
            return ae.decode(ae.encode(x).latent_dist.mean).sample

    return _timed(
        "autoencoder", preset.name, preset.ae_batch, run, repeats, preset.ae_batch, "image"
    )


def bench_attention(repeats: int, batch: int = 0) -> list[dict[str, Any]]:
    """`F.scaled_dot_product_attention`, forward and forward+backward, our shapes."""
    s = ATTENTION_SHAPE
    b, lq, h, d = batch or s["batch"], s["q_len"], s["heads"], s["head_dim"]
    results = []
    for kind, lk in ATTENTION_KEY_LENS.items():
        q = torch.randn(b, h, lq, d, requires_grad=True)
        k, v = (torch.randn(b, h, lk, d, requires_grad=True) for _ in range(2))

        def fwd(q=q, k=k, v=v):
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v)

        def fwd_bwd(q=q, k=k, v=v):
            (F.scaled_dot_product_attention(q, k, v) ** 2).sum().backward()

        for mode, run in (("forward", fwd), ("forward_backward", fwd_bwd)):
            results.append(
                _timed(
                    f"attention_{kind}_{mode}",
                    "micro",
                    b,
                    run,
                    repeats,
                    b,
                    "example",
                    implementation="F.scaled_dot_product_attention",
                    q_len=lq,
                    k_len=lk,
                    heads=h,
                    head_dim=d,
                )
            )
    return results


def bench_groupnorm(repeats: int, batch: int = 0) -> list[dict[str, Any]]:
    """`F.group_norm` + SiLU on the NCHW twin of our NHWC tensor."""
    b, hh, ww, c = (batch or GROUPNORM_SHAPE[0], *GROUPNORM_SHAPE[1:])
    x = torch.randn(b, c, hh, ww, requires_grad=True)
    scale, bias = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)

    def fwd():
        with torch.no_grad():
            F.silu(F.group_norm(x, 32, scale, bias, 1e-5))

    def fwd_bwd():
        (F.silu(F.group_norm(x, 32, scale, bias, 1e-5)) ** 2).sum().backward()

    return [
        _timed(
            f"groupnorm_silu_{mode}",
            "micro",
            b,
            run,
            repeats,
            b,
            "example",
            implementation="F.group_norm",
            shape=[b, hh, ww, c],
        )
        for mode, run in (("forward", fwd), ("forward_backward", fwd_bwd))
    ]
