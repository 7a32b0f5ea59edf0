"""Bad config values fail fast, naming the field and the fix."""

from __future__ import annotations

import os

import pytest

from ldm_jax.config.files import load_config_file
from ldm_jax.config.validation import ConfigError, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONE_DEVICE = 1  # `num_devices` of `validate_config`: a one-device run


def quickstart_config(arg=None):
    return load_config_file(os.path.join(ROOT, "configs", "quickstart.py"), arg)


@pytest.mark.parametrize("arg", [None, "tiny"])
def test_shipped_configs_are_valid(arg):
    validate_config(quickstart_config(arg))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("data.image_size", 30, r"config\.data\.image_size: 30 is not divisible .* f=4"),
        ("data.name", "", r"config\.data\.name"),
        ("stage", "pixels", r"config\.stage: 'pixels' is not one of"),
        ("diffusion.schedule", "sigmoid", r"config\.diffusion\.schedule: 'sigmoid'"),
        ("train.steps", 0, r"config\.train\.steps: must be an integer >= 1"),
        ("train.learning_rate", -1.0, r"config\.train\.learning_rate"),
        ("sample.sampler", "euler", r"config\.sample\.sampler: 'euler'"),
        ("diffusion.prediction_type", "score", r"config\.diffusion\.prediction_type: 'score'"),
        ("diffusion.loss_weighting", "p2", r"config\.diffusion\.loss_weighting: 'p2'"),
        ("sample.steps", 5000, r"config\.sample\.steps"),
        ("conditioning.drop_prob", 1.5, r"config\.conditioning\.drop_prob"),
        ("autoencoder.ch", 48, r"config\.autoencoder\.ch: .*num_groups"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    config = quickstart_config()
    section, _, name = field.rpartition(".")
    target = config[section] if section else config
    target[name] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_both_head_settings_is_rejected():
    config = quickstart_config()
    config.unet.num_heads = 4
    with pytest.raises(ConfigError, match="unet.num_heads"):
        validate_config(config)


def test_unknown_dataset_fails_fast_naming_it(tmp_path):
    from ldm_jax.trainers import run as train

    config = quickstart_config("tiny")
    config.data.name = "no_such_dataset_xyz"
    config.data.data_dir = str(tmp_path)
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        train.run(config, str(tmp_path / "run"))


def test_configs_missing_optional_fields_get_defaults():
    from ldm_jax.config.defaults import with_defaults

    config = quickstart_config()
    config.unlock()
    del config.diffusion["prediction_type"]
    del config.data["train_split"]
    filled = with_defaults(config)
    assert filled.diffusion.prediction_type == "epsilon"
    assert filled.data.train_split == "train"
    validate_config(filled)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py not found"):
        load_config_file(tmp_path / "nope.py")


def paper_config(name, arg=None):
    return load_config_file(os.path.join(ROOT, "configs", name), arg)


@pytest.mark.parametrize("arg", [None, "tiny"])
def test_every_paper_config_is_a_valid_experiment(arg):
    """Each paper/SD config finalizes into a valid experiment; the full SD configs say what is
    missing (the frozen text encoder's weights) in one line."""
    from ldm_jax.config.defaults import with_defaults

    names = [f"paper/{n}" for n in sorted(os.listdir(os.path.join(ROOT, "configs", "paper")))]
    names += [f"sd/{n}" for n in sorted(os.listdir(os.path.join(ROOT, "configs", "sd")))]
    for name in (n for n in names if n.endswith(".py")):
        config = with_defaults(paper_config(name, arg))
        if name.startswith("sd/") and arg is None:
            missing = r"text encoder's weights.*configs/finetune.*:tiny"
            with pytest.raises(ConfigError, match=missing) as e:
                validate_config(config, ONE_DEVICE)
            assert "\n" not in str(e.value)
            continue
        # The paper's batch sizes (e.g. 6) fit one device, not the 8 fake devices of the tests.
        validate_config(config, ONE_DEVICE)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model.unet.image_size", 16, r"config\.model\.unet\.image_size: is 16 .*image_size=8"),
        ("diffusion.loss_type", "huber", r"config\.diffusion\.loss_type: 'huber'"),
        ("train.cond_drop_prob", 1.0, r"config\.train\.cond_drop_prob"),
        ("train.latent_cache", "disk", r"config\.train\.latent_cache: 'disk' .*'text'"),
        ("data.image_size", 30, r"config\.data\.image_size: 30 .* f=4"),
    ],
)
def test_bad_experiment_values_name_the_field(field, value, message):
    name = "paper/txt2img_1p4b.py" if "cache" in field else "paper/bsr_sr.py"
    config = paper_config(name, "tiny")
    section, _, name = field.rpartition(".")
    node = config
    for part in section.split("."):
        node = node[part]
    node[name] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_first_stage_only_config_trains_only_stage_one():
    config = paper_config("paper/kl_f8.py")
    assert config.stage == "autoencoder"
    config.stage = "both"
    with pytest.raises(ConfigError, match=r"config\.stage: 'both' needs a U-Net"):
        validate_config(config)


def _autoencoder_configs() -> list[str]:
    folder = os.path.join(ROOT, "configs", "autoencoders")
    return sorted(
        f"autoencoders/{d}/{n}"
        for d in os.listdir(folder)
        for n in os.listdir(os.path.join(folder, d))
        if n.endswith(".py")
    )


@pytest.mark.parametrize("arg", [None, "tiny"])
def test_every_autoencoder_sweep_config_is_valid(arg):
    names = _autoencoder_configs()
    assert len(names) == 14  # KL f2, f4, f8, f16, VQ f4, f8, identity: two datasets
    for name in names:
        validate_config(paper_config(name, arg), ONE_DEVICE)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("perceptual_wieght", 1.0, r"loss: unknown field 'perceptual_wieght'.*'perceptual_weight'"),
        ("disc_loss", "wasserstein", r"loss\.disc_loss: 'wasserstein' is not one of"),
        ("disc_norm", "layer", r"loss\.disc_norm: 'layer' is not one of"),
        ("lpips_net", "vgg19", r"loss\.lpips_net: 'vgg19' .*'vgg16'"),
        ("disc_start", -1, r"loss\.disc_start: must be >= 0"),
        ("disc_num_layers", 0, r"loss\.disc_num_layers: must be >= 1"),
        ("adam_b1", 1.0, r"loss\.adam_b1: must be in \[0, 1\)"),
        ("vq_ema_decay", 1.5, r"loss\.vq_ema_decay: must be in \[0, 1\)"),
        ("vq_restart_threshold", 1.0, r"loss\.vq_restart_threshold: .*set vq_ema_decay"),
    ],
)
def test_bad_first_stage_loss_values_name_the_field(field, value, message):
    config = paper_config("paper/kl_f8.py", "tiny")
    config.autoencoder_train.loss[field] = value
    with pytest.raises(ConfigError, match=r"config\.autoencoder_train\." + message):
        validate_config(config)


def test_ema_codebook_needs_a_vq_first_stage_and_no_accumulation():
    config = paper_config("paper/kl_f8.py", "tiny")
    config.autoencoder_train.loss.vq_ema_decay = 0.99
    with pytest.raises(ConfigError, match=r"vq_ema_decay: the EMA codebook needs a VQ"):
        validate_config(config)
    config = paper_config("paper/vq_f4.py", "tiny")
    config.autoencoder_train.grad_accum_steps = 2
    with pytest.raises(ConfigError, match=r"grad_accum_steps: .* not supported with the paper"):
        validate_config(config)
