"""XLA compiler options per backend: on XLA:CPU convolutions leave YNNPACK and the memory-optimised
scheduler orders the program, every other backend keeps XLA's defaults, and an XLA without an
option is detected."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.parallel import compile_options as co


def _conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def test_cpu_options_take_convolutions_out_of_ynnpack():
    """The option is accepted here and changes the compiled program: the default puts the
    convolution in a YNNPACK fusion, ours does not; the values agree. (Both at full backend
    optimisation: the suite's fast-compile XLA_FLAGS use no YNNPACK at all.)"""
    opts = co.compiler_options("cpu")
    assert opts == co.CPU_OPTIONS
    assert opts[co.YNN_OPTION] == co.YNN_FUSION_TYPES
    full = {"xla_backend_optimization_level": 3}
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 32, 32, 64)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 64, 64)), jnp.float32)
    default = jax.jit(_conv, compiler_options=full).lower(x, w).compile()
    ours = jax.jit(_conv, compiler_options={**full, **opts}).lower(x, w).compile()
    assert "__ynn_fusion" in default.as_text()
    assert "__ynn_fusion" not in ours.as_text()
    # sums of 576 products of unit normals (|y| ~ 24): float32 rounding differs by ~1e-5
    np.testing.assert_allclose(ours(x, w), default(x, w), atol=2e-4, rtol=1e-5)


def test_memory_optimised_scheduler_keeps_fewer_temporaries_alive():
    """Eight independent chains of large elementwise work: the default (concurrency-optimised)
    order keeps more of them alive at once than the memory-optimised one; the values agree."""

    def chains(x):  # [8, 512, 512]
        outs = [jnp.tanh(jnp.exp(x[i] * (i + 1)) + x[i]).sum() for i in range(8)]
        return jnp.stack(outs)

    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 512, 512)), jnp.float32)
    scheduler = {co.SCHEDULER_OPTION: co.MEMORY_OPTIMIZED_SCHEDULER}
    default = jax.jit(chains).lower(x).compile()
    ours = jax.jit(chains).lower(x).compile(compiler_options=scheduler)
    temp = lambda c: c.memory_analysis().temp_size_in_bytes
    assert temp(ours) < temp(default), (temp(ours), temp(default))
    np.testing.assert_allclose(ours(x), default(x), rtol=1e-6)


def test_other_backends_and_user_flags_keep_xla_defaults(monkeypatch):
    assert co.compiler_options("gpu") is None
    assert co.compiler_options("tpu") is None
    monkeypatch.setenv("XLA_FLAGS", f"--{co.YNN_OPTION}=LIBRARY_FUSION_TYPE_DOT")
    assert co.compiler_options("cpu") == {co.SCHEDULER_OPTION: co.MEMORY_OPTIMIZED_SCHEDULER}
    both = (
        f"--{co.YNN_OPTION}=LIBRARY_FUSION_TYPE_DOT "
        f"--{co.SCHEDULER_OPTION}=CPU_SCHEDULER_TYPE_DEFAULT"
    )
    monkeypatch.setenv("XLA_FLAGS", both)
    assert co.compiler_options("cpu") is None


def test_an_option_this_xla_refuses_is_detected():
    assert co._accepted(co.YNN_OPTION, co.YNN_FUSION_TYPES)
    assert not co._accepted(co.YNN_OPTION, "LIBRARY_FUSION_TYPE_NO_SUCH_THING")
    assert not co._accepted("xla_cpu_no_such_option", "1")
    assert co._accepted(co.SCHEDULER_OPTION, co.MEMORY_OPTIMIZED_SCHEDULER)
    assert not co._accepted(co.SCHEDULER_OPTION, "CPU_SCHEDULER_TYPE_NO_SUCH_THING")


def test_unaccepted_option_means_no_options(monkeypatch):
    monkeypatch.setattr(co, "_accepted", lambda option, value: False)
    assert co.compiler_options("cpu") is None


def test_top_level_jit_carries_the_options_and_nests():
    """Top-level: the compiled program has the options (no YNNPACK convolution). Inside another
    jit, with traced or with constant arguments, it runs as a plain jit and gives the same
    values (JAX refuses compiler options on nested jits)."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(8, 32, 32, 64)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 64, 64)), jnp.float32)
    conv = co.top_level_jit(_conv)
    assert conv.__wrapped__ is _conv
    assert "__ynn_fusion" not in conv.lower(x, w).compile().as_text()
    want = np.asarray(conv(x, w))
    np.testing.assert_allclose(jax.jit(lambda a, b: conv(a, b))(x, w), want, atol=2e-4)
    np.testing.assert_allclose(jax.jit(lambda: conv(x, w))(), want, atol=2e-4)
    outer = jax.jit(lambda a: conv(a, w) * 2)  # w a constant, x traced
    np.testing.assert_allclose(outer(x), 2 * want, atol=4e-4)
