# %% [markdown]
# # ldm_jax quickstart: a class-conditional latent diffusion model on Fashion-MNIST
#
# The two stages of Rombach et al. (CVPR 2022), trained from scratch: a KL autoencoder
# (f = 4: 32x32 images to 8x8x4 latents), then a U-Net with cross-attention to a class token
# that denoises those latents, sampled with DDIM and classifier-free guidance.
#
# Runs on a TPU, a GPU or the CPU (Runtime > Change runtime type). On an idle 2-core CPU the
# full run took 13-20 minutes (measured, see the README); an accelerator is much faster. With
# `LDM_JAX_NOTEBOOK_SMALL=1` (what CI sets) every cell runs with a tiny model and a few steps.
# %% setup
# %%
from ldm_jax.colab import accelerator

accel = accelerator.detect()
SMALL = accelerator.small_mode()
print(accel, "| small mode (CI)" if SMALL else "")

# %% [markdown]
# ## The config, fitted to the accelerator
# `configs/quickstart.py` is the CPU quickstart. `fit_to_accelerator` puts every device on the
# mesh's data axis and rounds the batch sizes up to a multiple of the device count; the
# networks, schedule and step counts stay as the config says.

# %%
config = accelerator.load_config("quickstart", "tiny" if SMALL else None)
if SMALL:  # a few steps on the real data, logged often enough to draw a curve
    config.autoencoder_train.update(steps=16, log_every=2, checkpoint_every=16)
    config.train.update(steps=24, log_every=2, checkpoint_every=24)
config = accelerator.fit_to_accelerator(config, accel)
WORKDIR = "runs/quickstart_notebook"  # running this notebook again resumes from it
print("autoencoder:", dict(config.autoencoder_train), "\nLDM:", dict(config.train))

# %% [markdown]
# ## Train both stages, with a live loss plot
# The progress bar shows the step, loss and steps/s; the plot below redraws at every logged
# step. Everything also goes to TensorBoard event files and `metrics.jsonl` in the workdir.

# %%
from ldm_jax.colab.live_plot import LiveLossPlot
from ldm_jax.trainers.run import run as train

plot = LiveLossPlot()
seconds = train(config, WORKDIR, listeners=[plot])
print({stage: round(s, 1) for stage, s in seconds.items()})

# %% [markdown]
# ## Samples: one row per class
# DDIM with the config's steps, eta and guidance (`config.sample`). Classes: 0 T-shirt,
# 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot.

# %%
from ldm_jax.colab import show
from ldm_jax.sampling.request import SampleRequest
from ldm_jax.sampling.tasks import run as sample
from ldm_jax.workdir.reader import load_trained_ldm

model = load_trained_ldm(WORKDIR)
STEPS = 5 if SMALL else 50
result = sample(model, SampleRequest(num=2 if SMALL else 8, steps=STEPS, seed=0))
show.show_grid(result.images, result.columns, f"{result.images.shape[0]} samples")
print(result.info)

# %% [markdown]
# ## Sweep the guidance scale
# Classifier-free guidance: eps = eps(z, empty) + s * (eps(z, class) - eps(z, empty)). Scale 1
# is the conditional model alone; larger scales trade diversity for fidelity to the class
# (`experiments/guidance/` measures the trade-off). The compiled sampler is reused: the scale
# is a traced value.

# %%
SNEAKER = 7
scales = [1.0, 2.0, 4.0, 8.0]
grids = []
for scale in scales:
    request = SampleRequest(
        class_label=SNEAKER, num=4 if SMALL else 16, guidance=scale, steps=STEPS
    )
    grids.append(show.grid_image(sample(model, request).images, columns=4))
show.show_panels(grids, [f"guidance {s:g}" for s in scales])

# %% [markdown]
# ## Keep the workdir (Colab)
# A Colab session's disk is deleted when it ends. Set `SAVE_TO_DRIVE = True` to copy the
# workdir to Google Drive; train on from the copy later with `WORKDIR` pointing at it.

# %%
import os

from ldm_jax.colab import drive

SAVE_TO_DRIVE = False
if SAVE_TO_DRIVE:
    print("saved to", drive.save_to_drive(WORKDIR))
else:
    print("workdir:", os.path.abspath(WORKDIR), "| Colab:", drive.in_colab())

# %% [markdown]
# From a shell the same run is `python -m ldm_jax.train --config configs/quickstart.py
# --workdir runs/quickstart`, and `python -m ldm_jax.evaluate --workdir runs/quickstart`
# scores it (class accuracy, diversity, Frechet distance).
