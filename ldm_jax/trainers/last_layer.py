"""Gradients with respect to the decoder's last layer, for the adaptive GAN weight.

The reference takes |grad_W nll| and |grad_W g| for W the kernel of the decoder's `conv_out`.
Both losses reach W only through the reconstruction x~ = conv_out(a) (a: the layer's input), so
grad_W L = the kernel cotangent of that one convolution at the cotangent dL/dx~. We capture `a`
during the autoencoder's forward (a flax method interceptor, no change to the model) and apply
the convolution's VJP twice: no second pass through the decoder.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LAST_LAYER = ("decoder", "conv_out")


def capture_last_layer_input(store: dict[str, jax.Array]):
    """A `nn.intercept_methods` interceptor that stores the input of the decoder's `conv_out`
    in `store["input"]` (call the autoencoder inside `with nn.intercept_methods(...)`)."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (
            context.method_name == "__call__"
            and isinstance(module, nn.Conv)
            and module.name == LAST_LAYER[1]
            and module.parent is not None
            and getattr(module.parent, "name", None) == LAST_LAYER[0]
        ):
            store["input"] = args[0]
        return next_fun(*args, **kwargs)

    return interceptor


def last_layer_kernel(params: Any) -> jax.Array:
    """The decoder's `conv_out` kernel [3, 3, C_in, C_out] of a KL or VQ autoencoder's params."""
    return params[LAST_LAYER[0]][LAST_LAYER[1]]["kernel"]


def kernel_gradient(
    layer_input: jax.Array, kernel: jax.Array, output_cotangent: jax.Array
) -> jax.Array:
    """grad_W of a loss whose gradient w.r.t. the 3x3 (padding 1) convolution's output is
    `output_cotangent`.

    Args:
      layer_input: a [B, H, W, C_in], the convolution's input.
      kernel: W [3, 3, C_in, C_out].
      output_cotangent: dL/dx~ [B, H, W, C_out].

    Returns:
      dL/dW [3, 3, C_in, C_out] float32.
    """
    a = jax.lax.stop_gradient(layer_input).astype(jnp.float32)

    def conv(w):
        return jax.lax.conv_general_dilated(
            a,
            w,
            window_strides=(1, 1),
            padding=((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    _, vjp = jax.vjp(conv, jax.lax.stop_gradient(kernel).astype(jnp.float32))
    (grad,) = vjp(jax.lax.stop_gradient(output_cotangent).astype(jnp.float32))
    return grad
