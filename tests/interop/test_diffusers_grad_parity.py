"""Training gradients of an imported diffusers U-Net against PyTorch autograd on diffusers.

Covers the backward pass as training runs it: the blocked attention kernel's custom VJP (16x16
latents, 256 tokens), the rematerialised GEGLU and `gradient_order.early_param_grads`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax import interop
from ldm_jax.interop.diffusers import to_diffusers_state_dict
from ldm_jax.models import attention_kernels
from tests.interop import reference as ref
from tests.interop.reference import max_err


def _inputs(cfg: dict, size: int = 16) -> dict[str, np.ndarray]:
    inputs = ref.unet_inputs(cfg)
    rng = np.random.default_rng(7)
    inputs["x"] = rng.standard_normal((2, size, size, cfg["in_channels"])).astype(np.float32)
    return inputs


def _torch_grads(model, inputs) -> tuple[dict[str, np.ndarray], np.ndarray]:
    x = ref.nchw(inputs["x"]).requires_grad_(True)
    ref.torch_unet_output(model, inputs, x).square().mean().backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    return grads, ref.nhwc(x.grad)


@pytest.mark.parametrize("name", sorted(ref.UNET_CONFIGS))
def test_unet_gradients_match_pytorch_autograd(name, tmp_path):
    model = ref.make_unet(name)
    model.save_pretrained(tmp_path / "src")
    unet, params = interop.load_diffusers_unet(str(tmp_path / "src"))
    inputs = _inputs(ref.UNET_CONFIGS[name])
    assert attention_kernels.choose_implementation("cpu", 256, 256, 8, jnp.float32) == "blocked"

    def loss(p, x):
        eps = unet.apply({"params": p}, x, inputs["t"], inputs["context"], y=inputs.get("y"))
        return jnp.mean(jnp.square(eps))

    param_grads, x_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, inputs["x"])
    got = to_diffusers_state_dict(unet, param_grads)
    want, want_x = _torch_grads(model, inputs)

    assert sorted(got) == sorted(want)
    scale = max(float(np.abs(g).max()) for g in want.values())
    worst = max(max_err(got[k], want[k]) for k in want)
    print(f"unet {name}: max abs gradient error {worst:.2e} (largest gradient {scale:.2e})")
    assert worst < 1e-5 * scale, worst
    assert max_err(x_grad, want_x) < 1e-5 * float(np.abs(want_x).max())
    assert np.abs(want_x).max() > 0
