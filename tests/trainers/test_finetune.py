"""Fine-tuning an imported Stable Diffusion workdir (`trainers/finetune.py`): LoRA (on the U-Net,
and on the text encoder too, `trainers/finetune_text.py`) and full.

The base is the tiny random diffusers pipeline of `tests/sd_fixtures.py`, converted; the data
the first 64 training emoji at its 16x16 image size.
"""

from __future__ import annotations

import os
import shutil

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ldm_jax.config import builders
from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.files import load_config_file
from ldm_jax.config.options import lora_config, text_encoder_lora_config, unet_lora
from ldm_jax.config.validation import ConfigError, validate_config
from ldm_jax.interop.clip_weights import load_clip_text
from ldm_jax.interop.lora_diffusers import LORA_WEIGHTS_NAME, load_diffusers_lora
from ldm_jax.models.lora import CLIP_ATTENTION_TARGETS, merge_lora
from ldm_jax.trainers import finetune, finetune_base, finetune_data
from ldm_jax.trainers import ldm as stage2
from ldm_jax.trainers.conditions import make_conditions, text_context
from ldm_jax.trainers.run import first_stage_params, run
from ldm_jax.training.logging import MetricWriter
from ldm_jax.workdir import layout
from ldm_jax.workdir.reader import load_config, load_trained_ldm, restore_state
from ldm_jax.workdir.text_encoder import prompt_encoder
from tests.cli_runner import ROOT, run_cli
from tests.sd_fixtures import tiny_sd_workdir

CONFIGS = os.path.join(ROOT, "configs", "finetune")


def tiny_config(method: str = "lora", text_encoder=False, **train) -> ml_collections.ConfigDict:
    c = load_config_file(os.path.join(CONFIGS, f"sd_{method}.py"), "tiny")
    c.finetune.base_workdir = tiny_sd_workdir()
    c.finetune.lora.text_encoder = text_encoder
    c.train.update(train)
    return c


def resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = with_defaults(finetune_base.resolve_config(with_defaults(config)))
    validate_config(config)
    return config


def flat(tree) -> dict[str, np.ndarray]:
    tree = flax.core.unfreeze(tree)
    return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}


def base_params() -> dict[str, np.ndarray]:
    state, _, _ = restore_state(layout.checkpoint_dir(tiny_sd_workdir(), "ldm"))
    return state["ema_params"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> str:
    """A 3-step LoRA fine-tune (checkpoints at steps 2 and 3)."""
    workdir = str(tmp_path_factory.mktemp("ft") / "lora")
    run(tiny_config(), workdir)
    return workdir


def test_lora_trains_only_the_lora_and_keeps_the_base(lora_run):
    state, meta, step = restore_state(stage2.checkpoint_dir(lora_run))
    assert step == 3 and meta["scale_factor"] == 0.5  # the tiny VAE's scaling_factor
    lora = flat(state["params"])
    assert lora and all(k.endswith(("/down", "/up")) for k in lora)
    assert {k.split("/")[-2] for k in lora} == {"to_q", "to_k", "to_v", "to_out_0"}
    assert all(v.shape[-1] == 2 or v.shape[0] == 2 for v in lora.values())  # rank 2
    ups = [v for k, v in lora.items() if k.endswith("/up")]
    assert any(np.abs(u).max() > 0 for u in ups)  # up starts at zero: the LoRA trained
    saved_base, _, _ = restore_state(layout.checkpoint_dir(lora_run, "base"))
    want, got = flat(base_params()), flat(saved_base["params"])
    assert want.keys() == got.keys()
    assert all(np.array_equal(want[k], got[k]) for k in want)  # the base is untouched
    for folder in ("text_encoder", "tokenizer"):  # self-contained for sampling and export
        assert os.listdir(os.path.join(lora_run, folder))
    assert restore_state(layout.checkpoint_dir(lora_run, "autoencoder"))[2] == 0


def test_lora_workdir_reads_merged_and_the_diffusers_file_matches(lora_run):
    trained = load_trained_ldm(lora_run)
    config = trained.config
    base = base_params()
    ema, _, _ = restore_state(stage2.checkpoint_dir(lora_run))
    want = flat(merge_lora(base, ema["ema_params"], lora_config(config)))
    got = flat(trained.ldm_params)
    changed = [k for k in want if not np.array_equal(flat(base)[k], got[k])]
    assert changed and all(
        k.split("/")[-2] in ("to_q", "to_k", "to_v", "to_out_0") for k in changed
    )
    assert all(np.allclose(want[k], got[k], atol=1e-6) for k in want)
    path = os.path.join(lora_run, "lora", LORA_WEIGHTS_NAME)
    unet = base["diffusion_model"]
    loaded, cfg, te = load_diffusers_lora(path, unet, config.model.unet.num_res_blocks)
    assert te is None and cfg.scale == pytest.approx(lora_config(config).scale)
    from_file = flat({"diffusion_model": merge_lora(unet, loaded, cfg)})
    assert all(np.allclose(from_file[k], got[k], atol=1e-5) for k in got)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> str:
    """A 3-step LoRA fine-tune of the U-Net and the text encoder, with its final sample grid."""
    workdir = str(tmp_path_factory.mktemp("ft") / "text")
    run(tiny_config(text_encoder=True, final_samples=True), workdir)
    return workdir


def _clip(folder: str) -> dict[str, np.ndarray]:
    return flat(load_clip_text(folder)[1])


def test_text_encoder_lora_trains_both_trees_and_writes_the_merged_encoder(text_run):
    state, _, step = restore_state(stage2.checkpoint_dir(text_run))
    assert step == 3 and set(state["params"]) == {"unet", "text_encoder"}
    text = flat(state["params"]["text_encoder"])
    assert {k.split("/")[-2] for k in text} == set(CLIP_ATTENTION_TARGETS)
    assert {k.split("/")[0] for k in text} == {"layers_0", "layers_1", "layers_2"}  # 3 layers
    for part in ("unet", "text_encoder"):  # up starts at zero: both LoRA trees trained
        ups = [v for k, v in flat(state["params"][part]).items() if k.endswith("/up")]
        assert ups and all(np.abs(u).max() > 0 for u in ups)
    base = _clip(os.path.join(tiny_sd_workdir(), "text_encoder"))
    kept = _clip(os.path.join(text_run, "text_encoder_base"))
    assert all(np.array_equal(base[k], kept[k]) for k in base)  # the base CLIP is untouched
    config = load_config(text_run)
    ema = flat(state["ema_params"]["text_encoder"])
    merged = _clip(os.path.join(text_run, "text_encoder"))
    for k, v in base.items():  # text_encoder/: kernel + scale * down @ up of the EMA LoRA
        module = k.rsplit("/", 1)[0]
        if k.endswith("/kernel") and f"{module}/down" in ema:
            delta = ema[f"{module}/down"] @ ema[f"{module}/up"]
            v = v + text_encoder_lora_config(config).scale * delta
            assert not np.allclose(merged[k], base[k], atol=1e-7)
        np.testing.assert_allclose(merged[k], v, atol=1e-6)
    assert os.path.isfile(layout.sample_path(text_run, 3))  # the grid of the CLIP with LoRA


def test_text_encoder_lora_file_gives_diffusers_our_embeddings_and_unet(text_run):
    """diffusers' `load_lora_weights` + `fuse_lora` on the base pipeline: the same text
    embeddings as the workdir's prompt encoder and the same U-Net output as our merged U-Net."""
    import diffusers
    import torch

    config = load_config(text_run)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        os.path.join(tiny_sd_workdir(), "..", "src")
    )
    prompts = ["red heart", "a smiling face with sunglasses", ""]
    ids = pipe.tokenizer(
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        before = pipe.text_encoder(ids).last_hidden_state.numpy()
    pipe.load_lora_weights(os.path.join(text_run, "lora"))
    pipe.fuse_lora()
    with torch.no_grad():
        want = pipe.text_encoder(ids).last_hidden_state.numpy()  # [3, 77, 32]
    got = prompt_encoder(text_run, config.model.cond_stage)(prompts)
    assert np.abs(want - before).max() > 1e-4  # the LoRA changed the embeddings
    assert np.abs(want - got).max() <= 1e-5  # measured 1.3e-6

    ema, _, _ = restore_state(stage2.checkpoint_dir(text_run))
    unet = merge_lora(base_params(), unet_lora(config, ema["ema_params"]), lora_config(config))
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)  # [B, h, w, c]
    t = np.asarray([10, 600], np.int32)
    ours = builders.build_denoiser(config).apply(
        {"params": unet}, jnp.asarray(z), jnp.asarray(t), jnp.asarray(got[:2]), deterministic=True
    )
    with torch.no_grad():
        theirs = pipe.unet(
            torch.from_numpy(z.transpose(0, 3, 1, 2)),
            torch.from_numpy(t).long(),
            encoder_hidden_states=torch.from_numpy(want[:2]),
        ).sample.numpy()
    assert np.abs(np.asarray(ours) - theirs.transpose(0, 2, 3, 1)).max() <= 2e-5  # 2.7e-6


def test_text_encoder_lora_rerun_merges_from_the_base(text_run):
    """A rerun at the last step writes the same merged encoder (from text_encoder_base/, not
    from the merged text_encoder/)."""
    before = _clip(os.path.join(text_run, "text_encoder"))
    run(tiny_config(text_encoder=True), text_run)
    after = _clip(os.path.join(text_run, "text_encoder"))
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_lora_resume_continues_bitwise(lora_run, tmp_path):
    workdir = str(tmp_path / "resumed")
    run(tiny_config(steps=2), workdir)
    assert restore_state(stage2.checkpoint_dir(workdir))[2] == 2
    run(tiny_config(steps=3), workdir)  # resumes at 2 from this workdir's own checkpoint
    a, _, _ = restore_state(stage2.checkpoint_dir(lora_run))
    b, _, step = restore_state(stage2.checkpoint_dir(workdir))
    assert step == 3
    fa, fb = flat(a["ema_params"]), flat(b["ema_params"])
    assert all(np.array_equal(fa[k], fb[k]) for k in fa)


@pytest.mark.slow  # about 170 s on 2 cores: compiling the bf16 + remat + accumulation step
def test_full_finetune_bf16_remat_accumulation_fsdp(tmp_path):
    config = resolved(tiny_config("full", steps=2))
    assert config.train.compute_dtype == "bfloat16" and config.train.remat == "full"
    assert config.train.grad_accum_steps == 2 and config.mesh.fsdp == -1
    workdir = str(tmp_path / "full")
    ae_params = first_stage_params(config, workdir)
    state = finetune.train_finetune(config, workdir, ae_params, MetricWriter(workdir))
    assert int(state.step) == 2
    kernel = state.params["diffusion_model"]["input_blocks_1_1"]["proj_in"]["kernel"]
    assert "fsdp" in str(kernel.sharding.spec) and kernel.dtype == jnp.float32
    base = flat(base_params())
    after = flat(jax.tree.map(np.asarray, state.params))
    assert base.keys() == after.keys()
    moved = sum(not np.array_equal(base[k], after[k]) for k in base)
    assert moved > len(base) // 2  # every parameter trains, from the base's values
    assert max(np.abs(base[k] - after[k]).max() for k in base) < 0.05  # 2 steps of lr 1e-4


def _loss(config, batch, rng=0):
    conditions = make_conditions(config, None, 0.5, None, tiny_sd_workdir())
    loss_fn = stage2.make_loss_fn(config, 0.5, conditions)
    params = base_params()
    rngs = (jax.random.PRNGKey(rng), jax.random.PRNGKey(rng + 1))
    return float(jax.jit(loss_fn)(params, batch, rngs)[0])


def _batch(config, n: int) -> dict[str, jnp.ndarray]:
    rng = np.random.default_rng(0)
    side = config.model.unet.image_size
    return {
        "mean": jnp.asarray(rng.standard_normal((n, side, side, 4)), jnp.float32),
        "logvar": jnp.full((n, side, side, 4), -8.0),
        "context": jnp.asarray(rng.standard_normal((n, 77, 32)), jnp.float32),
    }


def test_prior_weights_add_the_class_loss_linearly():
    """loss(w_inst=1, w_prior=lam) - loss(1, 0) = lam * loss(0, 1): the class term enters with its
    weight, per example."""
    config = resolved(tiny_config())
    config.train.cond_drop_prob = 0.0
    batch = _batch(config, 2)
    loss = lambda w: _loss(config, batch | {"weight": jnp.asarray(w, jnp.float32)})  # noqa: E731
    prior_only = loss([0.0, 1.0])
    assert prior_only > 0
    assert loss([1.0, 3.0]) - loss([1.0, 0.0]) == pytest.approx(3.0 * prior_only, rel=1e-4)
    assert loss([1.0, 1.0]) == pytest.approx(_loss(config, batch), rel=1e-6)


def test_min_snr_weights_each_example_by_its_timestep():
    """min-SNR-gamma over the plain loss is min(SNR(t), gamma) / SNR(t) for eps (closed form
    from the schedule's alpha-bar)."""
    config = resolved(tiny_config())
    config.train.cond_drop_prob = 0.0
    batch = _batch(config, 1)
    config.diffusion.loss_weighting = "simple"
    plain = _loss(config, batch)
    config.diffusion.update(loss_weighting="min_snr", min_snr_gamma=0.5)
    weighted = _loss(config, batch)
    # The step's t: the first of the 4 keys split from the step key (`ldm.make_loss_fn`).
    t_rng = jax.random.split(jax.random.PRNGKey(1), 4)[0]
    t = int(jax.random.randint(t_rng, (1,), 0, 1000, jnp.int32)[0])
    alpha_bar = np.asarray(builders.build_schedule(config).alphas_cumprod, np.float64)[t]
    snr = alpha_bar / (1 - alpha_bar)
    assert weighted / plain == pytest.approx(min(snr, 0.5) / snr, rel=1e-4)


def test_offset_noise_shifts_each_example_and_channel():
    shape = (512, 8, 8, 4)
    rng = jax.random.PRNGKey(3)
    assert np.array_equal(stage2.offset_noise(rng, shape, 0.0), jax.random.normal(rng, shape))
    for offset in (0.0, 0.5):
        noise = np.asarray(stage2.offset_noise(rng, shape, offset))
        means = noise.mean(axis=(1, 2))  # [B, C]: var = 1/64 + offset^2
        assert means.var() == pytest.approx(1 / 64 + offset**2, rel=0.15)
    config = resolved(tiny_config())
    config.train.cond_drop_prob = 0.0
    batch = _batch(config, 4)
    config.diffusion.offset_noise = 0.0
    plain = _loss(config, batch)
    config.diffusion.offset_noise = 0.5
    assert _loss(config, batch) != pytest.approx(plain, rel=1e-3)


def test_prior_preservation_samples_class_images_and_weights_them(tmp_path):
    config = tiny_config()
    config.finetune.prior_preservation.update(
        enabled=True, class_prompt="a smiling face", num_class_images=4, weight=0.5
    )
    config = resolved(config)
    workdir = str(tmp_path / "prior")
    os.makedirs(workdir)
    finetune_base.copy_text_encoder(config, workdir)
    ae_params = first_stage_params(config, workdir)
    base = finetune_base.load_base(config)
    arrays = finetune_data.training_arrays(config, workdir, ae_params, base)
    n = len(arrays["mean"])
    assert n == 64 + 4 and set(arrays) == {"mean", "logvar", "context", "weight"}
    np.testing.assert_array_equal(arrays["weight"][:64], 1.0)
    np.testing.assert_allclose(arrays["weight"][64:], 0.5 * 64 / 4)
    class_ctx = text_context(config, ["a smiling face"], workdir)
    np.testing.assert_allclose(arrays["context"][64:], np.repeat(class_ctx, 4, axis=0))
    assert os.path.isfile(os.path.join(workdir, "samples", "class_images.png"))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(base_workdir=""), r"config\.finetune\.base_workdir: is empty"),
        (dict(base_workdir="/nonexistent"), r"config\.finetune\.base_workdir: .* no config"),
        (dict(method="prefix"), r"config\.finetune\.method: 'prefix' is not one of"),
        (dict(lora=dict(rank=0)), r"config\.finetune\.lora\.rank: must be an integer >= 1"),
        (
            dict(method="full", lora=dict(text_encoder=True)),
            r"config\.finetune\.lora\.text_encoder: .* needs finetune\.method='lora'",
        ),
        (
            dict(prior_preservation=dict(enabled=True, class_prompt="")),
            r"config\.finetune\.prior_preservation\.class_prompt: is empty",
        ),
    ],
)
def test_config_errors_name_the_field(change, message):
    config = tiny_config()
    for key, value in change.items():
        if isinstance(value, dict):
            config.finetune[key].update(value)
        else:
            config.finetune[key] = value
    with pytest.raises(ConfigError, match=message) as e:
        resolved(config)
    assert "\n" not in str(e.value)


def test_text_encoder_lora_is_accepted_with_method_lora():
    config = resolved(tiny_config(text_encoder=True))
    assert config.finetune.lora.text_encoder and config.finetune.method == "lora"


def test_image_size_must_match_the_base():
    config = tiny_config()
    config.data.image_size = 32
    with pytest.raises(ConfigError, match=r"config\.data\.image_size: is 32 .* 16x16"):
        resolved(config)


@pytest.mark.slow
def test_cli_train_sample_export_and_diffusers_loads_the_lora(tmp_path):
    """The CLIs end to end; diffusers' own `load_lora_weights` + `fuse_lora` on the base
    pipeline gives the U-Net weights that `python -m ldm_jax.export` writes (merged EMA)."""
    import diffusers
    import torch

    workdir, out = tmp_path / "ft", tmp_path / "exported"
    base = tiny_sd_workdir()
    run_cli(
        "ldm_jax.train",
        f"--config={os.path.join(CONFIGS, 'sd_lora.py')}:tiny",
        f"--workdir={workdir}",
        f"--config.finetune.base_workdir={base}",
    )
    png = tmp_path / "x.png"
    run_cli(
        "ldm_jax.sample", f"--workdir={workdir}", "--task=text2img", "--prompt=red heart",
        "--steps=3", f"--out={png}",
    )  # fmt: skip
    assert png.stat().st_size > 0
    run_cli("ldm_jax.export", f"--workdir={workdir}", f"--out={out}")
    exported = diffusers.StableDiffusionPipeline.from_pretrained(str(out))
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(os.path.join(base, "..", "src"))
    pipe.load_lora_weights(str(workdir / "lora"))
    pipe.fuse_lora()
    fused = pipe.unet.state_dict()  # peft keeps the fused kernel as `<module>.base_layer.weight`
    want = {k.replace(".base_layer", ""): v for k, v in fused.items() if "lora_" not in k}
    got = exported.unet.state_dict()
    with torch.no_grad():
        worst = max((want[k].float() - got[k].float()).abs().max().item() for k in got)
    assert worst < 1e-5
    changed = [
        k for k, v in diffusers.StableDiffusionPipeline.from_pretrained(
            os.path.join(base, "..", "src")).unet.state_dict().items()
        if not torch.equal(v, got[k])
    ]  # fmt: skip
    assert changed and all(".attn" in k for k in changed)
    shutil.rmtree(out)


def test_text_encoder_lora_workdir_reads_merged_for_sampling(text_run):
    """`load_trained_ldm` (sample, evaluate, export) merges the U-Net part of the two-tree
    LoRA state into the base; the text encoder comes merged from text_encoder/."""
    config = load_config(text_run)
    ema, _, _ = restore_state(stage2.checkpoint_dir(text_run))
    want = merge_lora(base_params(), unet_lora(config, ema["ema_params"]), lora_config(config))
    got = load_trained_ldm(text_run).ldm_params
    assert flat(got).keys() == flat(want).keys()
    for k, v in flat(want).items():
        np.testing.assert_allclose(flat(got)[k], v, atol=1e-6)
