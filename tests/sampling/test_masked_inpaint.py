"""Inpainting with models trained without masks (masked sampling), and class-guided inpainting
(`--task edit --mask`), through `sampling.tasks.run` and `make_sampler` on in-memory tiny models:
known pixels come back exactly, the known latents are kept while sampling, the hole is generated
and follows the condition."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.sampling import editing
from ldm_jax.sampling.generate import make_sampler
from ldm_jax.sampling.tasks import SampleRequest, run
from tests.sampling import tiny_models as tm

HOLE = (slice(8, 24), slice(8, 24))  # the box of tm.box_mask(8, 8, 16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inpaint")
    image = tm.smooth_image(3)
    return {
        "image": tm.write_png(d / "x.png", image),
        "grey": tm.write_png(d / "grey.png", image[..., 0]),
        "mask": tm.write_png(d / "mask.png", tm.box_mask(8, 8, 16)),
        "pixels": image.astype(np.float32) / 127.5 - 1.0,  # [32, 32, 3] in [-1, 1]
    }


def test_latent_keep_mask_generates_every_touched_position():
    fill = np.zeros((32, 32, 1), np.float32)
    fill[5, 5] = 1.0  # one pixel of latent position (1, 1) at f = 4
    fill[16:24, 16:24] = 1.0  # latent positions (4..5, 4..5)
    keep = editing.latent_keep_mask(fill, 4)
    assert keep.shape == (1, 8, 8, 1) and keep.dtype == np.float32
    want = np.ones((8, 8), np.float32)
    want[1, 1] = 0.0
    want[4:6, 4:6] = 0.0
    np.testing.assert_array_equal(keep[0, :, :, 0], want)


def test_unconditional_model_inpaints_by_masked_sampling(inputs):
    trained = tm.random_model(tm.tiny_config("paper/lsun_churches_ldm_kl8.py"))  # KL f = 8
    request = dict(task="inpaint", image=inputs["image"], mask=inputs["mask"], num=2, steps=4)
    a = run(trained, SampleRequest(**request, seed=0))
    b = run(trained, SampleRequest(**request, seed=1))
    assert a.images.shape == (2, 32, 32, 3)
    assert a.info["task"] == "inpaint" and a.info["inpainting"] == "masked_sampling"
    known = np.ones((32, 32), bool)
    known[HOLE] = False
    for result in (a, b):  # known pixels pasted back exactly
        np.testing.assert_allclose(
            result.images[:, known],
            np.broadcast_to(inputs["pixels"][known], (2, known.sum(), 3)),
            atol=1e-6,
        )
        assert np.abs(result.images[:, ~known] - inputs["pixels"][~known]).mean() > 0.05
    assert np.abs(a.images[:, ~known] - b.images[:, ~known]).mean() > 0.02  # generated


def test_masked_sampling_keeps_the_known_latents(inputs):
    """In pixel space (LDM-1: the latents are the pixels), the known region of a masked sample
    before the paste-back is the image up to the final step's noise."""
    trained = tm.random_model(tm.tiny_config("autoencoders/emoji/identity_ldm1.py"))
    guide = editing.read_guide(trained, inputs["image"], inputs["mask"])
    np.testing.assert_array_equal(guide.latent[0], inputs["pixels"])
    np.testing.assert_array_equal(guide.keep[0, ..., 0] == 0, guide.fill[..., 0] == 1)
    sample = make_sampler(trained.config, "ddim", 4)
    args = (trained.ae_params, trained.ldm_params, None, None, jax.random.PRNGKey(0))
    args += (jnp.float32(1.0), jnp.float32(0.0), jnp.float32(1.0))
    masked = np.asarray(sample(*args, shape=(2, 32, 32, 3), **guide.sampler_inputs(1.0)))
    free = np.asarray(sample(*args, shape=(2, 32, 32, 3)))
    known = guide.fill[..., 0] == 0
    kept_err = np.abs(masked[:, known] - inputs["pixels"][known]).mean()
    free_err = np.abs(free[:, known] - inputs["pixels"][known]).mean()
    hole_err = np.abs(masked[:, ~known] - inputs["pixels"][~known]).mean()
    print(f"known region |sample - image|: masked {kept_err:.3f}, unmasked {free_err:.3f}")
    # The last paste noises to alphas_cumprod[0]: std sqrt(1 - 0.9985) = 0.04.
    assert kept_err < 0.05 and free_err > 0.2 and hole_err > 0.2


@pytest.fixture(scope="module")
def class_model():
    return tm.random_model(tm.tiny_config("quickstart.py"))  # grey 32x32, 10 classes + null


def _assert_known_pixels_kept(result, pixels):
    known = np.ones((32, 32), bool)
    known[HOLE] = False
    want = np.broadcast_to(pixels[known], (result.images.shape[0], *pixels[known].shape))
    np.testing.assert_allclose(result.images[:, known], want, atol=1e-6)
    return known


def test_class_guided_inpainting(inputs, class_model):
    request = dict(image=inputs["grey"], mask=inputs["mask"], num=2, steps=4, guidance=3.0)
    one = run(class_model, SampleRequest(task="inpaint", class_label=1, **request))
    three = run(class_model, SampleRequest(task="inpaint", class_label=3, **request))
    assert one.info["class"] == 1 and "strength" not in one.info
    for result in (one, three):
        known = _assert_known_pixels_kept(result, inputs["pixels"][..., :1])
    assert np.abs(one.images[:, ~known] - three.images[:, ~known]).mean() > 0.02


def test_masked_edit_keeps_the_known_pixels(inputs, class_model):
    request = dict(image=inputs["grey"], mask=inputs["mask"], num=2, steps=4, guidance=3.0)
    edit = run(class_model, SampleRequest(task="edit", class_label=3, strength=0.5, **request))
    assert edit.info["strength"] == 0.5 and edit.info["mask"] == inputs["mask"]
    known = _assert_known_pixels_kept(edit, inputs["pixels"][..., :1])
    assert np.abs(edit.images[:, ~known] - inputs["pixels"][~known, :1]).mean() > 0.02
