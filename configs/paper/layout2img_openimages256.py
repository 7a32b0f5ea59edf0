"""Layout-to-image LDM-VQ-4 on OpenImages (paper Sec. 4.3.1): box tokens -> 16-layer transformer.

Reference YAMLs (values copied field by field):
  CompVis/latent-diffusion models/ldm/layout2img-openimages256/config.yaml
Parameters: (released model).

Condition: the BERT reads token ids (`use_tokenizer=False`). On a dataset with boxes
(`datasets.num_object_classes`, e.g. `--config.data.name=fashion_mnist_layout`) they are the
paper's layout tokens (condition kind "layout": `max_seq_len` 92 = 30 objects of (class,
top-left, bottom-right) plus the crop window on a 90 x 90 grid of `vocab_size` 8192; the centre
crop is required); on a dataset without boxes (OpenImages' boxes are not read yet, and the
`:tiny` variant's synthetic shapes) the model trains on captions, a stand-in.

  python -m ldm_jax.summary --config configs/paper/layout2img_openimages256.py [--json]

prints the per-module parameter table (shapes only, nothing is allocated; a few seconds on CPU).
The file states the model, diffusion and the paper's data as presets
(`ldm_jax/config/presets.py`) plus differences; `experiment.finalize` completes it into an
experiment config, and the argument `tiny` gives the seconds-long variant for tests.
"""

from __future__ import annotations

import ml_collections

from ldm_jax.config import experiment, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The experiment config; `arg`: None or "tiny" (see `ldm_jax.config.experiment`)."""
    c = ml_collections.ConfigDict()
    c.name = "layout2img_openimages256"
    c.reference = "models/ldm/layout2img-openimages256/config.yaml"
    c.model = dict(
        conditioning_key="crossattn",
        first_stage=presets.first_stage("vq_f4"),
        unet=dict(
            image_size=64,
            in_channels=3,
            out_channels=3,
            model_channels=128,
            attention_resolutions=(8, 4, 2),
            num_res_blocks=2,
            channel_mult=(1, 2, 3, 4),
            num_head_channels=32,
            use_spatial_transformer=True,
            transformer_depth=3,
            context_dim=512,
        ),
        cond_stage=dict(
            kind="bert",
            n_embed=512,
            n_layer=16,
            vocab_size=8192,
            max_seq_len=92,
            use_tokenizer=False,  # box tokens, not text
        ),
    )
    c.diffusion = presets.diffusion("ldm", beta_end=0.0205, loss_type="l1")
    c.latent = dict(image_size=64, channels=3)
    c.data = dict(name="open_images_v4", image_size=256, channels=3)
    return experiment.finalize(c, arg)
