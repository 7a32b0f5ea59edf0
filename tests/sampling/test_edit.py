"""`--task edit` (img2img) through `sampling.tasks.run` on in-memory tiny models: strength near 0
returns the image's reconstruction, strength 1 ignores the image, the new class or prompt
changes the result, and bad requests fail with one line naming the flag."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from ldm_jax.config import builders
from ldm_jax.sampling import editing
from ldm_jax.sampling.generate import decode_latents
from ldm_jax.sampling.tasks import SampleInputError, SampleRequest, run
from tests.sampling import tiny_models as tm


@pytest.fixture(scope="module")
def class_model():
    """quickstart:tiny (KL f=2, grey 32x32, 10 classes + null) with random parameters."""
    return tm.random_model(tm.tiny_config("quickstart.py"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("edit")
    return {
        "x": tm.write_png(d / "x.png", tm.smooth_image(0)),
        "y": tm.write_png(d / "y.png", tm.smooth_image(1)),
        "small": tm.write_png(d / "small.png", tm.smooth_image(0)[:16, :16]),
        "mask": tm.write_png(d / "mask.png", tm.box_mask(8, 8, 16)),
        "wide_mask": tm.write_png(d / "wide.png", np.full((32, 40), 255, np.uint8)),
        "empty_mask": tm.write_png(d / "empty.png", np.zeros((32, 32), np.uint8)),
    }


def _scaled(trained, image):
    """The model with scale factor 1/std of the image's latent (as scale_by_std sets it), and
    the image's reconstruction (the decoded encoding)."""
    std = float(editing.read_guide(trained, image).latent.std())
    trained = dataclasses.replace(trained, scale_factor=1.0 / std)
    guide = editing.read_guide(trained, image)
    ae = builders.build_autoencoder(trained.config)
    decode = jax.jit(lambda p, z: decode_latents(ae, p, z))
    rec = np.asarray(decode(trained.ae_params, guide.latent / trained.scale_factor))
    return trained, np.clip(rec, -1.0, 1.0)


def _edit(trained, image, **kw):
    kw = {"num": 2, "steps": 10, "eta": 0.0, "class_label": 1, **kw}
    return run(trained, SampleRequest(task="edit", image=image, **kw))


def test_strength_near_zero_keeps_the_image_and_one_ignores_it(class_model, images):
    trained, rec = _scaled(class_model, images["x"])
    near = _edit(trained, images["x"], strength=0.1)  # one DDIM step, from t = 1
    assert near.images.shape == (2, 32, 32, 1)
    assert near.info["task"] == "edit" and near.info["strength"] == 0.1
    far = _edit(trained, images["x"], strength=1.0)
    near_err, far_err = np.abs(near.images - rec).mean(), np.abs(far.images - rec).mean()
    print(f"mean |edit - reconstruction|: strength 0.1 {near_err:.3f}, strength 1 {far_err:.3f}")
    assert near_err < 0.05 and near_err < 0.15 * far_err
    other = _edit(trained, images["y"], strength=1.0)  # same seed, another image
    np.testing.assert_array_equal(far.images, other.images)


def test_the_new_class_changes_the_edit(class_model, images):
    trained, _ = _scaled(class_model, images["x"])
    one = _edit(trained, images["x"], strength=0.6, class_label=1, guidance=3.0)
    three = _edit(trained, images["x"], strength=0.6, class_label=3, guidance=3.0)
    assert one.info["class"] == 1 and three.info["class"] == 3 and one.info["guidance"] == 3.0
    assert np.abs(one.images - three.images).mean() > 0.02
    # Without --class: the null class, unguided.
    null = _edit(trained, images["x"], strength=0.6, class_label=None)
    assert null.info["class"] is None and null.info["guidance"] is None


def test_the_prompt_changes_a_text_model_edit(tmp_path, images):
    trained = tm.text_model(str(tmp_path))  # txt2img:tiny, RGB 32x32, KL f=8
    rgb = tm.write_png(tmp_path / "rgb.png", tm.smooth_image(2))
    red = _edit(trained, rgb, strength=0.8, class_label=None, prompt="a red circle")
    blue = _edit(trained, rgb, strength=0.8, class_label=None, prompt="a blue square")
    assert red.images.shape == (2, 32, 32, 3) and red.info["prompt"] == "a red circle"
    assert np.abs(red.images - blue.images).mean() > 2e-3  # the prompt reaches the U-Net
    with pytest.raises(SampleInputError, match="--class: this model is text-conditioned"):
        _edit(trained, rgb, strength=0.8, class_label=1)


def _error(trained, **request) -> str:
    with pytest.raises(SampleInputError) as e:
        run(trained, SampleRequest(**{"num": 1, "steps": 10, **request}))
    message = str(e.value)
    assert "\n" not in message
    return message


def test_bad_requests_name_the_flag(class_model, images):
    m, x = class_model, images["x"]
    edit = {"task": "edit", "image": x}
    for strength in (0.0, 1.5, -0.2):
        assert _error(m, **edit, strength=strength).startswith("--strength must be in (0, 1]")
    assert "runs no denoising step" in _error(m, **edit, strength=0.05)  # int(10 * 0.05) = 0
    message = _error(m, task="edit", image=images["small"], strength=0.5)
    assert message.startswith(f"--image {images['small']} is 16x16; this model makes 32x32")
    message = _error(m, **edit, mask=images["wide_mask"])
    assert message.startswith(f"--mask {images['wide_mask']} is 40x32, --image {x} is 32x32")
    assert "marks no pixel to fill in" in _error(m, **edit, mask=images["empty_mask"])
    assert _error(m, **edit, prompt="a red fox").startswith(
        "--prompt: this model is class-conditional"
    )
    assert _error(m, **edit, class_label=10) == "--class must be in [0, 10), got 10."
    assert _error(m, task="edit").startswith("--task edit needs --image")
    assert (
        _error(m, task="generate", strength=0.5) == "--strength does not apply to --task generate."
    )
    message = _error(m, task="inpaint", image=x, mask=images["mask"], strength=0.5)
    assert message.startswith("--strength does not apply to --task inpaint")
    sr = tm.random_model(tm.tiny_config("paper/bsr_sr.py"))
    assert _error(sr, **edit).startswith("--task edit: this workdir holds a superres model")
    uncond = tm.random_model(tm.tiny_config("paper/lsun_churches_ldm_kl8.py"))
    assert _error(uncond, **edit, class_label=2) == "--class: this model is unconditional."
    for steps in (0, -3, 1001):  # 0 used to fall back to the config's steps silently
        assert _error(m, steps=steps) == (
            f"--steps must be in [1, 1000] (the model's diffusion has 1000 timesteps), got {steps}."
        )
