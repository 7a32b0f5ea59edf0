"""Logical axis names carried by the model parameters (mapped to mesh axes by a config's rules).

Kernels are created through `nn.with_logical_partitioning`, so `module.init` returns
`nn.LogicallyPartitioned` boxes; `nn.get_partition_spec` reads their names and `nn.unbox` the
plain arrays. The initialisers are flax's defaults, so annotated and plain parameters are equal.

Names:
  embed: a model-width input or output feature of a dense layer (the FSDP axis by default).
  mlp: the hidden width of a feed-forward or embedding MLP.
  heads: the concatenated heads of an attention projection.
  conv_in / conv_out: input and output channels of a convolution.
  vocab: the rows of an embedding table (classes, tokens, codebook entries).
Biases and normalisation scales carry no names and are replicated.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
VOCAB = "vocab"

Initializer = Callable[..., object]
_DEFAULT_KERNEL_INIT = nn.initializers.lecun_normal()


def dense_kernel(
    axes: tuple[str, str] = (EMBED, MLP), init: Initializer = _DEFAULT_KERNEL_INIT
) -> Initializer:
    """A dense kernel [in, out] initialiser named `axes`."""
    return nn.with_logical_partitioning(init, axes)


def conv_kernel(spatial_rank: int = 2, init: Initializer = _DEFAULT_KERNEL_INIT) -> Initializer:
    """A convolution kernel [*window, in, out] initialiser: window axes unnamed."""
    return nn.with_logical_partitioning(init, (None,) * spatial_rank + (CONV_IN, CONV_OUT))


def embedding_table(init: Initializer = nn.linear.default_embed_init) -> Initializer:
    """An embedding table [rows, width] initialiser."""
    return nn.with_logical_partitioning(init, (VOCAB, EMBED))
