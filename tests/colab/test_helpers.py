"""The notebooks' helpers: config fitting, live loss plot, inline images, Drive outside Colab."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ldm_jax.colab import accelerator, drive, live_plot, show
from ldm_jax.training.logging import MetricWriter

TPU_8 = accelerator.Accelerator("tpu", "TPU v5 lite", devices=8, local_devices=8, processes=1)
CPU_1 = accelerator.Accelerator("cpu", "cpu", devices=1, local_devices=1, processes=1)


def test_detect_sees_the_suite_s_fake_devices():
    found = accelerator.detect()
    assert found.backend == "cpu" and found.devices == 8 and found.processes == 1
    assert "CPU: 8 x" in str(found)


@pytest.mark.parametrize("value, small", [("1", True), ("true", True), ("0", False), ("", False)])
def test_small_mode_switch(monkeypatch, value, small):
    monkeypatch.setenv(accelerator.SMALL_MODE_VARIABLE, value)
    assert accelerator.small_mode() is small


def test_fit_rounds_batches_up_to_the_devices_and_uses_bf16_on_tpu():
    config = accelerator.load_config("quickstart")
    config.train.update(batch_size=100, grad_accum_steps=2)
    config.mesh.update(data=2, fsdp=4)
    fitted = accelerator.fit_to_accelerator(config, TPU_8)
    assert fitted.train.batch_size == 112  # the next multiple of 8 devices x 2 micro-batches
    assert fitted.autoencoder_train.batch_size == 32
    assert (fitted.mesh.data, fitted.mesh.fsdp, fitted.mesh.tensor) == (-1, 1, 1)
    assert fitted.train.compute_dtype == fitted.autoencoder_train.compute_dtype == "bfloat16"
    assert config.train.batch_size == 100, "the input config must stay as it was"
    on_cpu = accelerator.fit_to_accelerator(config, CPU_1)
    assert on_cpu.train.batch_size == 100 and on_cpu.train.compute_dtype == "float32"


def test_repo_path_names_the_fix_when_missing():
    assert accelerator.repo_path("configs", "quickstart.py").is_file()
    with pytest.raises(FileNotFoundError, match="repository checkout"):
        accelerator.repo_path("configs", "no_such_config.py")


def test_live_plot_listens_to_the_metric_writer(tmp_path):
    plot = live_plot.LiveLossPlot(redraw_every=10**6)  # no display in a test
    writer = MetricWriter(str(tmp_path), listeners=[plot])
    writer.scalars(2, {"autoencoder/loss": 3.0, "autoencoder/steps_per_sec": 9.0})
    writer.scalars(4, {"autoencoder/loss": 2.0})
    writer.scalars(2, {"ldm/loss": 0.5, "ldm/scale_factor": 0.9})
    writer.close()
    assert plot.history == {"autoencoder": [(2, 3.0), (4, 2.0)], "ldm": [(2, 0.5)]}
    picture = Image.open(io.BytesIO(plot.png()))
    assert picture.format == "PNG" and picture.width > 400
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3


def test_grid_image_enlarges_small_samples():
    images = np.linspace(-1, 1, 4 * 8 * 8).reshape(4, 8, 8, 1).astype(np.float32)
    picture = show.grid_image(images, columns=2)
    assert picture.mode == "L"
    assert picture.width >= 2 * show.MIN_DISPLAY_SIDE
    assert np.asarray(picture).min() == 0 and np.asarray(picture).max() == 255


def test_decode_upload_reads_images_and_rejects_other_bytes():
    buffer = io.BytesIO()
    Image.new("RGBA", (5, 3), (10, 20, 30, 255)).save(buffer, format="PNG")
    array = show.decode_upload(buffer.getvalue())
    assert array.shape == (3, 5, 3) and tuple(array[0, 0]) == (10, 20, 30)
    with pytest.raises(ValueError, match="not an image Pillow can read"):
        show.decode_upload(b"not an image")


def test_show_panels_checks_its_titles():
    with pytest.raises(ValueError, match="2 pictures but 1 titles"):
        show.show_panels([Image.new("L", (4, 4))] * 2, ["one"])


def test_save_to_drive_outside_colab_says_what_to_do(tmp_path):
    assert not drive.in_colab()
    with pytest.raises(RuntimeError, match="only mounted in Colab"):
        drive.save_to_drive(str(tmp_path))


def test_small_config_puts_the_tiny_networks_on_the_real_data():
    full = accelerator.load_config("tasks/fashion_mnist/inpainting")
    tiny = accelerator.load_config("tasks/fashion_mnist/inpainting", "tiny")
    keep = ("model.unet.in_channels", "model.first_stage.in_channels", "model.no_such.field")
    small = accelerator.small_config("tasks/fashion_mnist/inpainting", keep, ldm_steps=7)
    assert small.data.to_dict() == full.data.to_dict() != tiny.data.to_dict()
    assert small.model.unet.model_channels == tiny.model.unet.model_channels
    assert small.model.unet.in_channels == full.model.unet.in_channels
    assert small.model.first_stage.in_channels == full.model.first_stage.in_channels
    assert (small.train.steps, small.train.checkpoint_every, small.train.log_every) == (7, 7, 4)
    assert small.autoencoder_train.steps == 40
