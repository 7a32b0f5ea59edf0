# %% [markdown]
# # ldm_jax inpainting and super-resolution on Fashion-MNIST
#
# Two of the paper's image-conditioned latent diffusion models (Rombach et al., CVPR 2022,
# Sec. 4.4 and 4.5) at a scale that trains in a session, both on one KL autoencoder (f = 4:
# 32x32 grey images to 8x8x3 latents):
# - **super-resolution x4**: the 8x8 low-resolution image is concatenated to the noisy latent
#   z_t (`configs/tasks/fashion_mnist/superres_x4.py`);
# - **inpainting**: the latent of the masked image and the mask, both at 8x8, are concatenated to
#   z_t, trained on random large masks (`configs/tasks/fashion_mnist/inpainting.py`);
# - and, for comparison, **masked sampling** with an unconditional model trained without masks
#   (`unconditional.py`): the known latents, noised to the current step, replace the model's at
#   every step.
#
# Runs on a TPU, a GPU or the CPU (Runtime > Change runtime type). On 2 CPU cores stage 1 took
# 4 minutes and the LDMs 7, 10 and 7 minutes (measured: the configs' docstrings), about half an
# hour in all; an accelerator should take a fraction of that (not measured here). With
# `LDM_JAX_NOTEBOOK_SMALL=1` (what CI sets) every cell runs with the tiny networks and a few
# steps, so the pictures mean nothing.
# %% setup
# %%
from ldm_jax.colab import accelerator

accel = accelerator.detect()
SMALL = accelerator.small_mode()
print(accel, "| small mode (CI)" if SMALL else "")

# %% [markdown]
# ## The configs, fitted to the accelerator
# The three configs share their `model.first_stage` section, so the super-resolution run trains
# the autoencoder (800 steps of batch 16) and the other two borrow it
# (`train.first_stage_workdir`) and train only their LDM (2000 steps of batch 64 each).
# `fit_to_accelerator` puts every device on the mesh's data axis and rounds the batch sizes up to
# a multiple of the device count. In small mode the tiny networks of the `:tiny` variants train a
# few steps on 2,048 real Fashion-MNIST images. Set `MASKED_SAMPLING = False` to skip the
# unconditional model.

# %%
MASKED_SAMPLING = True


def task_config(name: str):
    """configs/tasks/fashion_mnist/<name>.py fitted to the accelerator (small mode: the tiny
    networks on grey Fashion-MNIST, a few steps)."""
    path = f"tasks/fashion_mnist/{name}"
    if not SMALL:
        return accelerator.fit_to_accelerator(accelerator.load_config(path), accel)
    channels = ("model.first_stage.in_channels", "model.first_stage.out_ch")
    config = accelerator.small_config(path, (*channels, "model.unet.in_channels"))
    config.data.train_split = "train[:2048]"  # grey images; unet: z_t + the condition
    return accelerator.fit_to_accelerator(config, accel)


WORKDIRS = {n: f"runs/{n}_notebook" for n in ("superres_x4", "inpainting", "unconditional")}
configs = {"superres_x4": task_config("superres_x4")}
for name in ("inpainting", "unconditional") if MASKED_SAMPLING else ("inpainting",):
    configs[name] = task_config(name)
    configs[name].stage = "ldm"
    configs[name].train.first_stage_workdir = WORKDIRS["superres_x4"]
for name, config in configs.items():
    print(f"{name}: stage {config.stage}, {config.train.steps} x {config.train.batch_size}")

# %% [markdown]
# ## Train, with a live loss plot per run
# The super-resolution run trains both stages; the others start from its autoencoder. Running the
# notebook again resumes each workdir from its checkpoints (a finished run only reloads).

# %%
from ldm_jax.colab.live_plot import LiveLossPlot
from ldm_jax.trainers.run import run as train

for name, config in configs.items():
    print(f"== {name}")
    seconds = train(config, WORKDIRS[name], listeners=[LiveLossPlot()])
    print({stage: round(s, 1) for stage, s in seconds.items()})

# %% [markdown]
# ## Held-out images
# The first test images of Fashion-MNIST, preprocessed as in training (28x28 framed to 32x32,
# values in [-1, 1]), as the task demos in `experiments/tasks/` take them.

# %%
import numpy as np

from ldm_jax.colab import masks, show
from ldm_jax.config import builders
from ldm_jax.data import pipeline
from ldm_jax.sampling.request import SampleRequest
from ldm_jax.sampling.tasks import run as sample
from ldm_jax.workdir.reader import load_trained_ldm

ROWS = 4 if SMALL else 8
STEPS = 5 if SMALL else 50  # DDIM steps
INPUTS = "runs/notebook_inputs"  # the PNGs handed to the sampler (as the CLI's --image/--mask)
sr_config = configs["superres_x4"]
test_source = builders.build_data_source(sr_config, "test")
test_images, _ = pipeline.load_split_arrays(
    test_source, sr_config.data.image_size, max_examples=ROWS
)  # [ROWS, 32, 32, 1] in [-1, 1]
show.show_grid(test_images, ROWS, f"{ROWS} test images")


def column(images: np.ndarray):
    """A column of images [N, H, W, C] in [-1, 1], for show.show_panels."""
    return show.grid_image(images, columns=1)


def psnr_db(images: np.ndarray, references: np.ndarray) -> float:
    """Mean PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = np.mean((images - references) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(4.0 / mse)))


# %% [markdown]
# ## Super-resolution x4: 8x8 -> 32x32
# Each test image is down-sampled by 4 exactly as the training data were (bicubic with
# antialiasing, `train.superres_degradation`), written as an 8x8 PNG, and up-sampled by the
# model (unguided DDIM: a concat condition is never dropped in training). Columns: the low-res
# input (enlarged, nearest), bicubic up-sampling, the model, the original. The PSNR of these few
# images is noisy; on 1,000 test images the full model reached 20.6 dB against bicubic's 16.7
# (`experiments/tasks/superres/`).

# %%
import jax

from ldm_jax.data import degradations
from ldm_jax.evaluation import superres

sr_model = load_trained_ldm(WORKDIRS["superres_x4"])
f = builders.downsampling_factor(sr_config)  # 4: the low-res image is the latent's size
kind = superres.degradation(sr_config)
low = np.asarray(degradations.degrade(test_images, f, kind, jax.random.PRNGKey(0)))  # [N, 8, 8, 1]
upsampled = []
for i, image in enumerate(low):
    path = masks.write_image(image, f"{INPUTS}/low_{i}.png")
    request = SampleRequest(task="superres", image=path, num=1, steps=STEPS, seed=i)
    upsampled.append(sample(sr_model, request).images[0])
upsampled = np.stack(upsampled)  # [N, 32, 32, 1]
bicubic = superres.upsample_bicubic(low, f)
show.show_panels(
    [column(superres.upsample_nearest(low, f)), column(bicubic), column(upsampled)]
    + [column(test_images)],
    ["8x8 input", "bicubic", "LDM", "original"],
    width=8,
)
for label, outputs in (("bicubic", bicubic), ("LDM", upsampled)):
    print(f"{label}: PSNR {psnr_db(outputs, test_images):.1f} dB")

# %% [markdown]
# ## Inpainting: draw a rectangle, or upload a mask
# The mask marks the pixels to fill in (white). Drag the two range sliders (pixel columns and
# rows, both ends included) and the preview follows; or pick *uploaded file* and upload a
# picture: it is made grey, resized to the image (it must have the image's aspect ratio, any
# size) and thresholded at 50% grey. Then press *Inpaint*: the model samples `NUM` fillings, and
# the known pixels are pasted back. `IMAGE_INDEX` picks the test image.

# %%
import itertools

import ipywidgets as widgets
from IPython.display import clear_output, display

inpaint_model = load_trained_ldm(WORKDIRS["inpainting"])
IMAGE_INDEX = 0
NUM = 4 if SMALL else 8  # fillings per press
image = test_images[IMAGE_INDEX]  # [32, 32, 1]
H, W, C = image.shape

x_range = widgets.IntRangeSlider(value=(8, 23), min=0, max=W - 1, description="x (columns)")
y_range = widgets.IntRangeSlider(value=(8, 23), min=0, max=H - 1, description="y (rows)")
mask_source = widgets.ToggleButtons(options=["rectangle", "uploaded file"], description="mask")
upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload mask")


def current_mask() -> np.ndarray:
    """The mask [H, W, 1] the widgets describe (ValueError with the reason if there is none)."""
    if mask_source.value == "uploaded file":
        picture = show.decode_upload(masks.upload_bytes(upload.value))
        return masks.from_picture(picture, H, W)
    mask = masks.rectangle(H, W, x_range.value, y_range.value)
    return mask


def preview(**_):
    try:
        mask = current_mask()
    except ValueError as e:
        print("mask:", e)
        return
    pictures = [image, masks.as_image(mask, C), masks.masked(image, mask)]
    show.show_panels([column(p[None]) for p in pictures], ["image", "mask", "masked"], width=6)


controls = dict(x=x_range, y=y_range, source=mask_source, upload=upload)
live_preview = widgets.interactive_output(preview, controls)
display(widgets.VBox([x_range, y_range, widgets.HBox([mask_source, upload]), live_preview]))

# %% [markdown]
# `inpaint` writes the image and the mask as PNGs and samples as `python -m ldm_jax.sample
# --task inpaint --image x.png --mask m.png` does: on this model (trained for inpainting) the
# masked image's latent and the mask are its condition; on a model trained without masks it is
# masked sampling.


# %%
def inpaint(model, image: np.ndarray, mask: np.ndarray, num: int = NUM, seed: int = 0):
    """`num` inpaintings [num, H, W, C] of `image` [H, W, C] under `mask` [H, W, 1] by `model`;
    returns the SampleResult."""
    masks.check_hole(mask)
    request = SampleRequest(
        task="inpaint",
        image=masks.write_image(image, f"{INPUTS}/image.png"),
        mask=masks.write_mask(mask, f"{INPUTS}/mask.png"),
        num=num,
        steps=STEPS,
        seed=seed,
    )
    return sample(model, request)


def show_inpainting(image: np.ndarray, mask: np.ndarray, seed: int = 0):
    result = inpaint(inpaint_model, image, mask, seed=seed)
    inputs = (image, masks.as_image(mask, C), masks.masked(image, mask))
    pictures = [column(p[None]) for p in inputs] + [show.grid_image(result.images, result.columns)]
    method = result.info["inpainting"]  # "concat" here, "masked_sampling" on other models
    show.show_panels(pictures, ["image", "mask", "masked", f"inpainted ({method})"])
    return result


button = widgets.Button(description="Inpaint", button_style="primary")
output = widgets.Output()
presses = itertools.count(1)


def on_inpaint(_):
    with output:
        clear_output(wait=True)
        try:
            show_inpainting(image, current_mask(), seed=next(presses))
        except ValueError as e:  # no hole, a bad upload, an input the sampler rejects
            print("error:", e)


button.on_click(on_inpaint)
display(widgets.VBox([button, output]))

# %% [markdown]
# Buttons and sliders do nothing in a notebook run from a script (CI), so here is the same
# function on the sliders' default rectangle:

# %%
mask = masks.rectangle(H, W, x_range.value, y_range.value)
result = show_inpainting(image, mask)
print(result.info)

# %% [markdown]
# ## The inpainting model against masked sampling
# Any unconditional, class- or text-conditioned model inpaints too (`--task inpaint` works on
# it): it never sees the mask; the known region's latents, noised to the current step, are pasted
# into z_t at every step (the paper's masked sampling). Per row: a test image with the same
# rectangle, the inpainting model, masked sampling, the original. On 1,000 test images with large
# masks the full models reached 14.6 dB (inpainting model) against 10.9 dB (masked sampling)
# PSNR inside the hole (`experiments/tasks/inpainting/`).

# %%
if MASKED_SAMPLING:
    uncond_model = load_trained_ldm(WORKDIRS["unconditional"])
    concat, repaint = [], []
    for i, test_image in enumerate(test_images):
        concat.append(inpaint(inpaint_model, test_image, mask, num=1, seed=i).images[0])
        result = inpaint(uncond_model, test_image, mask, num=1, seed=i)
        repaint.append(result.images[0])
    print("method:", result.info["inpainting"])
    masked_inputs = np.stack([masks.masked(x, mask) for x in test_images])
    columns = [masked_inputs, np.stack(concat), np.stack(repaint), test_images]
    show.show_panels(
        [column(c) for c in columns],
        ["masked", "inpainting model", "masked sampling", "original"],
        width=8,
    )
    hole = np.broadcast_to(mask > 0, test_images.shape)
    for label, outputs in (("inpainting model", concat), ("masked sampling", repaint)):
        mse = np.mean((np.stack(outputs)[hole] - test_images[hole]) ** 2)
        print(f"{label}: PSNR in the hole {10 * np.log10(4.0 / mse):.1f} dB")

# %% [markdown]
# ## Keep the workdirs (Colab)
# A Colab session's disk is deleted when it ends. Set `SAVE_TO_DRIVE = True` to copy the
# workdirs to Google Drive; train on from the copies later with `WORKDIRS` pointing at them.

# %%
import os

from ldm_jax.colab import drive

SAVE_TO_DRIVE = False
for name in configs:
    if SAVE_TO_DRIVE:
        print("saved to", drive.save_to_drive(WORKDIRS[name]))
    else:
        print(f"{name}: {os.path.abspath(WORKDIRS[name])} | Colab: {drive.in_colab()}")

# %% [markdown]
# From a shell: `python -m ldm_jax.train --config configs/tasks/fashion_mnist/superres_x4.py
# --workdir runs/sr`, then `python -m ldm_jax.sample --workdir runs/sr --task superres --image
# low_8x8.png --out sr.png`; `python -m ldm_jax.train --config
# configs/tasks/fashion_mnist/inpainting.py --workdir runs/inp --config.stage=ldm
# --config.train.first_stage_workdir=runs/sr`, then `python -m ldm_jax.sample --workdir runs/inp
# --task inpaint --image x.png --mask m.png`. `python -m ldm_jax.evaluate --what superres` and
# `--what inpaint --reference_workdir runs/uncond` score them on 1,000 test images.
