"""cond_stage.kind = "frozen_minilm": text-to-image with the frozen pretrained MiniLM encoder.

The denoiser cross-attends to MiniLM's last hidden state of each caption (context [B, L, 384]);
MiniLM runs outside the denoiser, so its weights are neither trained nor checkpointed. Training
computes the contexts of the dataset's captions once, and `python -m ldm_jax.sample --task
text2img --prompt ...` encodes the prompt (and the empty caption for guidance) with the same
encoder. The end-to-end test trains the pixel-space emoji LDM-1 `:tiny` config on 16 captioned
Noto emoji through the CLIs.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from ldm_jax.config import builders
from ldm_jax.config.files import load_config_file
from ldm_jax.config.model_config import model_config
from ldm_jax.config.validation import ConfigError
from ldm_jax.data import datasets
from ldm_jax.models import factory
from ldm_jax.models.cond_specs import CondStageConfig
from ldm_jax.models.minilm import MiniLM
from ldm_jax.models.minilm_encoder import MiniLMTextEncoder, frozen_minilm
from ldm_jax.models.minilm_weights import load_params
from ldm_jax.sampling import tasks
from ldm_jax.trainers import captions, conditions
from ldm_jax.workdir import reader
from tests.cli_runner import run_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMOJI_LDM1 = ROOT / "configs" / "autoencoders" / "emoji" / "identity_ldm1.py"
LENGTH = 16  # tokens per caption in the tiny config (noto_emoji captions: median 8, max 37)

CONFIG_FILE = '''
from ldm_jax.config.files import load_config_file


def get_config(arg=None):
    """The emoji LDM-1 :tiny config, text-conditioned through the frozen MiniLM."""
    c = load_config_file({base!r}, "tiny")
    c.data.update(name="noto_emoji", data_dir={data_dir!r}, train_split="train[:16]")
    c.model.conditioning_key = "crossattn"
    c.model.cond_stage = dict(kind="frozen_minilm", max_length={length})
    c.model.unet.context_dim = 384
    c.train.cond_drop_prob = 0.2
    c.sample.guidance_scale = 3.0
    return c
'''


def minilm_config(data_dir: str = "") -> ml_collections.ConfigDict:
    c = load_config_file(str(EMOJI_LDM1), "tiny")
    c.data.update(name="noto_emoji", data_dir=data_dir, train_split="train[:16]")
    c.model.conditioning_key = "crossattn"
    c.model.cond_stage = dict(kind="frozen_minilm", max_length=LENGTH)
    c.model.unet.context_dim = 384
    return c


def test_the_cond_stage_is_a_context_outside_the_denoiser():
    config = minilm_config()
    assert builders.condition_kind(config) == "context"
    assert tasks.model_task(model_config(config)) == "text2img"
    assert builders.build_denoiser(config).cond_stage_model is None
    assert factory.param_counts(model_config(config))["cond_stage"] is None  # not checkpointed
    assert CondStageConfig.from_dict(dict(kind="frozen_minilm")).max_length == 77
    with pytest.raises(ValueError, match="max_length"):
        CondStageConfig.from_dict(dict(kind="frozen_minilm", max_len=16))


def test_training_contexts_are_minilm_hidden_states(tmp_path):
    config = minilm_config()
    texts = ["red heart", "banana, fruit", ""]
    context = captions.caption_arrays(
        config, {"caption": np.array(texts)}, str(tmp_path), "context"
    )
    assert context.shape == (3, LENGTH, 384) and context.dtype == np.float32
    ids = frozen_minilm(LENGTH).tokenizer(texts)
    want = jax.jit(MiniLM().apply)({"params": load_params()}, ids)
    # Other batch shapes compile to other kernels: float32 rounding up to about 2e-5 (|x| < 6).
    np.testing.assert_allclose(context, want, rtol=0, atol=1e-4)
    null = conditions.make_conditions(config).null  # the empty caption's context, [1, L, 384]
    np.testing.assert_allclose(null[0], context[2], rtol=0, atol=1e-4)


def test_context_dim_must_be_minilm_width():
    config = minilm_config()
    config.model.unet.context_dim = 32
    with pytest.raises(ConfigError, match="context_dim=384"):
        conditions.text_context(config, ["red heart"])


def test_encoder_batches_do_not_change_a_caption_context():
    encoder = MiniLMTextEncoder(max_length=8)
    texts = [f"emoji number {i}" for i in range(70)]  # two chunks: 64, then 6 padded to 8
    batched = encoder(texts)
    alone = np.concatenate([encoder([t]) for t in texts[63:66]])
    np.testing.assert_allclose(batched[63:66], alone, rtol=0, atol=1e-4)
    emb = encoder.sentence_embeddings(["red heart", "a red love heart", "a yellow banana"])
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


@pytest.mark.slow
def test_tiny_text2img_on_noto_emoji_trains_and_samples_a_prompt(tmp_path):
    data_dir = str(tmp_path / "tfds")
    datasets.get_builder("noto_emoji/32px", data_dir)  # about 4 s
    config_path = tmp_path / "minilm_emoji.py"
    config_path.write_text(
        CONFIG_FILE.format(base=str(EMOJI_LDM1), data_dir=data_dir, length=LENGTH)
    )
    workdir = tmp_path / "run"
    run_cli("ldm_jax.train", f"--config={config_path}", f"--workdir={workdir}")
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    losses = [m["ldm/loss"] for m in map(json.loads, lines) if "ldm/loss" in m]
    assert len(losses) == 3 and all(np.isfinite(losses))

    trained = reader.load_trained_ldm(str(workdir))
    assert set(trained.ldm_params) == {"diffusion_model"}  # no MiniLM weights in the checkpoint

    out = workdir / "heart.png"
    info = run_cli(
        "ldm_jax.sample", f"--workdir={workdir}", "--task=text2img", "--prompt=red heart",
        "--num=2", "--steps=2", f"--out={out}",
    )  # fmt: skip
    summary = json.loads(info.strip().splitlines()[-1])
    assert summary["prompt"] == "red heart" and summary["guidance"] == 3.0
    assert np.asarray(Image.open(out)).shape == (2 + 34, 2 + 2 * 34, 3)

    # What the CLI feeds the sampler: the prompt's MiniLM context, guided against the empty one.
    request = tasks.SampleRequest(task="text2img", prompt="red heart", num=2)
    job = tasks._Task(trained, request, steps=2)
    job.text2img()
    encoder = frozen_minilm(LENGTH)
    np.testing.assert_array_equal(job.cond, encoder(["red heart"] * 2))
    np.testing.assert_array_equal(job.uncond, encoder([""]))
