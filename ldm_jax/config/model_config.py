"""One model schema: an experiment config's networks as the paper schema `config.model`.

Two config styles describe networks:
  * the paper schema (`configs/paper/*.py`, `configs/sd/*.py`, imported workdirs):
    `config.model.{first_stage, unet, cond_stage, conditioning_key}`, built by `models.factory`;
  * the quickstart schema (`configs/quickstart.py` and the workdirs it trains):
    `config.autoencoder`, `config.unet`, `config.conditioning` and `config.data`.
`model_config` returns the first for either, so every builder goes through `models.factory`. The
translation yields exactly the modules (fields, parameter trees, initialisation) the quickstart
has always built: a KL autoencoder, a SpatialTransformer U-Net and, for `conditioning.kind ==
"class"`, a class embedder with a null class that the U-Net cross-attends to. The quickstart's
`autoencoder` and `unet` entries carry the schema's field names (`config.schema`), so every entry
that is a schema field passes through as it is; image sizes and channels come from `data`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from ldm_jax.config import schema


def has_model_section(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` describes its networks in the paper schema (`config.model`)."""
    return "model" in config and config.model is not None


def _fields(section: ml_collections.ConfigDict, schema_section: type) -> dict[str, Any]:
    """The entries of a quickstart section that are fields of `schema_section` (same names)."""
    names = schema_section.field_names()
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k in names}


def _quickstart_model(config: ml_collections.ConfigDict) -> dict[str, Any]:
    ae, u, data = config.autoencoder, config.unet, config.data
    class_conditional = config.conditioning.kind == "class"
    first_stage = dict(
        kind="kl",
        **_fields(ae, schema.KLConfig),
        in_channels=data.channels,
        out_ch=data.channels,
        resolution=data.image_size,
        double_z=True,
    )
    f = schema.downsampling_factor(first_stage)
    unet = dict(
        _fields(u, schema.UNetConfig),
        image_size=data.image_size // f,
        in_channels=ae.embed_dim,
        out_channels=ae.embed_dim,
        use_spatial_transformer=True,
        context_dim=u.context_dim if class_conditional else None,
    )
    if class_conditional:
        cond_stage = dict(
            kind="class",
            n_classes=data.num_classes + 1,  # + the null class of classifier-free guidance
            embed_dim=u.context_dim,
            add_null_class=True,
        )
    else:
        cond_stage = dict(kind="none")
    return dict(
        first_stage=first_stage,
        unet=unet,
        cond_stage=cond_stage,
        conditioning_key="crossattn" if class_conditional else None,
    )


def model_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`config.model` as a plain dict (translated from the quickstart schema when absent).

    Returns:
      {"first_stage": {...}, "unet": {...}, "cond_stage": {...}, "conditioning_key": str|None}.
    """
    if has_model_section(config):
        model = config.model
        return model.to_dict() if isinstance(model, ml_collections.ConfigDict) else dict(model)
    return _quickstart_model(config)
