"""LoRA over parameter trees: config checks, target selection, init, merge maths and gradients."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.models import lora as L
from ldm_jax.models.unet import UNetModel


def clip_shaped_tree(layers: int = 3, width: int = 8, seed: int = 0) -> dict:
    """A parameter tree shaped like the CLIP text encoder's (`layers_{i}/self_attn/q_proj/...`)."""
    rng = np.random.default_rng(seed)
    dense = lambda i, o: {
        "kernel": rng.standard_normal((i, o)).astype(np.float32),
        "bias": rng.standard_normal((o,)).astype(np.float32),
    }
    tree = {
        "embeddings": {"token_embedding": {"embedding": np.zeros((10, width), np.float32)}},
        "final_layer_norm": {"scale": np.ones((width,), np.float32)},
    }
    for i in range(layers):
        tree[f"layers_{i}"] = {
            "self_attn": {n: dense(width, width) for n in L.CLIP_ATTENTION_TARGETS},
            "mlp": {"fc1": dense(width, 2 * width), "fc2": dense(2 * width, width)},
            "layer_norm1": {"scale": np.ones((width,), np.float32)},
        }
    return tree


def _tiny_unet_params() -> dict:
    """A tiny U-Net's parameter tree with random values (shapes from `eval_shape`, no compile)."""
    unet = UNetModel(
        model_channels=16,
        out_channels=4,
        num_res_blocks=1,
        attention_resolutions=(1, 2),
        channel_mult=(1, 2),
        num_head_channels=8,
        context_dim=12,
        num_groups=8,
    )
    x, t, c = jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,), jnp.int32), jnp.zeros((1, 3, 12))
    init = lambda: nn.unbox(unet.init(jax.random.PRNGKey(0), x, t, c))["params"]
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda s: rng.standard_normal(s.shape).astype(s.dtype), jax.eval_shape(init)
    )


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _random_lora(base, config, seed=1):
    """LoRA params with a non-zero `up`, so that merging changes the kernels."""
    lora = L.init_lora_params(jax.random.PRNGKey(seed), base, config)
    return jax.tree.map(
        lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(seed), x.shape), lora
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rank=0), "rank"),
        (dict(rank=2.5), "rank"),
        (dict(rank=True), "rank"),
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(targets=()), "targets"),
        (dict(targets="to_q"), "targets"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.LoraConfig(**kwargs)


def test_config_scale_and_defaults():
    assert L.LoraConfig().scale == 1.0
    assert L.LoraConfig(rank=4, alpha=8).scale == 2.0
    assert L.LoraConfig(rank=3, alpha=1.5).scale == 0.5
    assert (
        L.LoraConfig().targets == L.UNET_ATTENTION_TARGETS == ("to_q", "to_k", "to_v", "to_out_0")
    )
    assert L.LoraConfig(targets=["q_proj"]).targets == ("q_proj",)  # lists become tuples
    assert L.CLIP_ATTENTION_TARGETS == ("q_proj", "k_proj", "v_proj", "out_proj")


def test_target_paths_clip_tree():
    tree = clip_shaped_tree(layers=3)
    tree["layers_0"]["self_attn"]["conv_like"] = {"q_proj": {"kernel": np.zeros((1, 1, 8, 8))}}
    cfg = L.LoraConfig(targets=L.CLIP_ATTENTION_TARGETS)
    want = sorted(
        (f"layers_{i}", "self_attn", n) for i in range(3) for n in L.CLIP_ATTENTION_TARGETS
    )
    assert L.lora_target_paths(tree, cfg) == want  # the 4-D "q_proj" kernel is not a target
    mlp = L.lora_target_paths(tree, L.LoraConfig(targets=("fc1",)))
    assert mlp == [(f"layers_{i}", "mlp", "fc1") for i in range(3)]
    with pytest.raises(ValueError, match=r"to_q"):
        L.lora_target_paths(tree, L.LoraConfig())  # U-Net targets in a CLIP tree


def test_target_paths_unet():
    params = _tiny_unet_params()
    paths = L.lora_target_paths(params, L.LoraConfig())
    # Transformers at both levels of the encoder (2 blocks), the middle block (1) and the
    # decoder (2 res blocks per level x 2 levels = 4): 7 transformer blocks, 2 attentions, 4 each.
    assert len(paths) == 7 * 2 * 4
    assert all(p[-2] in ("attn1", "attn2") and p[-1] in L.UNET_ATTENTION_TARGETS for p in paths)
    assert ("middle_block_1", "transformer_blocks_0", "attn2", "to_out_0") in paths


def test_init_shapes_and_merge_at_init_is_identity():
    params = _tiny_unet_params()
    cfg = L.LoraConfig(rank=3, alpha=6.0)
    lora = jax.jit(lambda k: L.init_lora_params(k, params, cfg))(jax.random.PRNGKey(0))
    paths = L.lora_target_paths(params, cfg)
    assert L.lora_modules(lora) == paths
    total = 0
    for path in paths:
        fan_in, fan_out = _get(params, path)["kernel"].shape
        node = _get(lora, path)
        assert node["down"].shape == (fan_in, 3) and node["down"].dtype == jnp.float32
        assert node["up"].shape == (3, fan_out)
        assert float(jnp.max(jnp.abs(node["down"]))) <= 1 / np.sqrt(fan_in)  # peft's bound
        assert float(jnp.std(node["down"])) > 0.3 / np.sqrt(fan_in)
        assert not np.any(np.asarray(node["up"]))
        total += 3 * (fan_in + fan_out)
    assert L.lora_param_count(lora) == total
    merged = jax.jit(lambda p, q: L.merge_lora(p, q, cfg))(params, lora)
    assert jax.tree.structure(merged) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Shapes only: works on an abstract tree (memory benchmarks, sharded init).
    abstract = jax.eval_shape(
        lambda: L.init_lora_params(jax.random.PRNGKey(0), jax.eval_shape(lambda: params), cfg)
    )
    assert jax.tree.map(lambda x: x.shape, abstract) == jax.tree.map(lambda x: x.shape, lora)


def test_merged_kernel_is_base_plus_scaled_product():
    tree = clip_shaped_tree()
    cfg = L.LoraConfig(rank=2, alpha=5.0, targets=L.CLIP_ATTENTION_TARGETS)
    lora = _random_lora(tree, cfg)
    merged = jax.jit(lambda p, q: L.merge_lora(p, q, cfg))(tree, lora)
    touched = set(L.lora_target_paths(tree, cfg))
    flat_base = {p: v for p, v in _flatten(tree)}
    for path, value in _flatten(merged):
        base = flat_base[path]
        if path[:-1] in touched and path[-1] == "kernel":
            node = _get(lora, path[:-1])
            down, up = np.asarray(node["down"], np.float64), np.asarray(node["up"], np.float64)
            want = base + 2.5 * down @ up
            assert np.max(np.abs(np.asarray(value) - want)) < 1e-5, path
            assert np.max(np.abs(want - base)) > 0.1
        else:
            np.testing.assert_array_equal(np.asarray(value), base)


def _flatten(tree, path=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flatten(v, (*path, k))
        else:
            yield (*path, k), v


def test_gradients_reach_lora_params_in_closed_form():
    """loss = sum(G * merged_kernel) -> d/d down = scale G up^T, d/d up = scale down^T G."""
    tree = clip_shaped_tree(layers=2)
    cfg = L.LoraConfig(rank=3, alpha=1.5, targets=("q_proj", "fc1"))
    lora = _random_lora(tree, cfg)
    g = {
        p: np.random.default_rng(len(p)).standard_normal(_get(tree, p)["kernel"].shape)
        for p in L.lora_target_paths(tree, cfg)
    }

    def loss(lora_params):
        merged = L.merge_lora(tree, lora_params, cfg)
        return sum(jnp.sum(jnp.asarray(g[p], jnp.float32) * _get(merged, p)["kernel"]) for p in g)

    grads = jax.jit(jax.grad(loss))(lora)
    assert jax.tree.structure(grads) == jax.tree.structure(lora)
    for p, gp in g.items():
        node, grad = _get(lora, p), _get(grads, p)
        down, up = np.asarray(node["down"], np.float64), np.asarray(node["up"], np.float64)
        np.testing.assert_allclose(grad["down"], 0.5 * gp @ up.T, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grad["up"], 0.5 * down.T @ gp, rtol=1e-4, atol=1e-5)


def test_merge_keeps_dtype_and_partitioning_boxes():
    tree = clip_shaped_tree(layers=1)
    cfg = L.LoraConfig(rank=2, targets=("q_proj",))
    lora = _random_lora(tree, cfg)
    q = tree["layers_0"]["self_attn"]["q_proj"]
    boxed = jax.tree.map(lambda x: x, tree)
    boxed["layers_0"]["self_attn"]["q_proj"] = {
        "kernel": nn.LogicallyPartitioned(
            jnp.asarray(q["kernel"], jnp.bfloat16), ("embed", "heads")
        ),
        "bias": q["bias"],
    }
    assert L.lora_target_paths(boxed, cfg) == [("layers_0", "self_attn", "q_proj")]
    merged = L.merge_lora(boxed, lora, cfg)
    kernel = merged["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert isinstance(kernel, nn.LogicallyPartitioned) and kernel.names == ("embed", "heads")
    assert kernel.value.dtype == jnp.bfloat16
    node = lora["layers_0"]["self_attn"]["q_proj"]
    want = q["kernel"] + np.asarray(node["down"]) @ np.asarray(node["up"])
    assert np.max(np.abs(np.asarray(kernel.value, np.float32) - want)) < 0.05  # bf16 rounding


def test_merge_rejects_unknown_module_and_bad_shapes():
    tree = clip_shaped_tree(layers=1)
    cfg = L.LoraConfig(rank=2, targets=("q_proj",))
    lora = _random_lora(tree, cfg)
    with pytest.raises(ValueError, match="layers_5"):
        L.merge_lora(tree, {"layers_5": lora["layers_0"]}, cfg)
    bad = {
        "layers_0": {"self_attn": {"q_proj": {"down": np.zeros((3, 2)), "up": np.zeros((2, 8))}}}
    }
    with pytest.raises(ValueError, match="does not fit"):
        L.merge_lora(tree, bad, cfg)
