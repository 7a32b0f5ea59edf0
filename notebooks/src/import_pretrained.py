# %% [markdown]
# # Import released weights and sample them on a TPU
#
# `python -m ldm_jax.convert` turns a checkpoint you supply into a workdir that samples like a
# trained one: the paper's released LDM `.ckpt` files (with their YAML), a diffusers folder
# (Stable Diffusion 1.x/2.x, or a UNet2DModel with its autoencoder), or an original Stable
# Diffusion single file. Nothing is downloaded here: put the files on the runtime (upload them,
# or mount Drive) and set `SOURCE` below. Checkpoints are read without PyTorch, and a `.ckpt`
# pickle goes through an allow-list: nothing in it runs.
#
# With `LDM_JAX_NOTEBOOK_SMALL=1` (CI) a random tiny Stable Diffusion pipeline from the test
# suite's fixtures stands in for the release (it needs `diffusers` and `torch`, which the test
# extras install); its samples are noise.
# %% setup
# %%
import pathlib

from ldm_jax.colab import accelerator

accel = accelerator.detect()
SMALL = accelerator.small_mode()
print(accel, "| small mode (CI)" if SMALL else "")

# %% [markdown]
# ## What to convert
# `KIND` is one of:
# - `"diffusers"`: `SOURCE` is a diffusers Stable Diffusion folder (unet, vae, text_encoder,
#   tokenizer, scheduler), e.g. a `save_pretrained` copy of `stable-diffusion-v1-5`;
# - `"sd-single-file"`: `SOURCE` is `v1-5-pruned-emaonly.safetensors` (or a `.ckpt`), and
#   `TOKENIZER` the CLIP tokenizer folder single files lack (for SD 2.x v-models add
#   `"--prediction_type", "v_prediction"` to `EXTRA`);
# - `"compvis"`: `SOURCE` is the paper's `model.ckpt` and `CONFIG` its YAML (text models also
#   need `"--vocab", "vocab.txt"` in `EXTRA`).

# %%
import sys

KIND = "diffusers"
SOURCE = "/content/drive/MyDrive/stable-diffusion-v1-5"  # your copy of the release
TOKENIZER = ""  # sd-single-file only
CONFIG = ""  # compvis only
EXTRA: list[str] = []
WORKDIR = "runs/imported"
PROMPT = "a photograph of an astronaut riding a horse"

if SMALL:  # a random tiny SD pipeline in diffusers' format stands in for the release
    sys.path.insert(0, str(accelerator.repo_path()))
    from tests.sd_fixtures import save_tiny_sd_folder

    KIND, SOURCE = "diffusers", str(save_tiny_sd_folder("tiny_sd_pipeline"))
    WORKDIR, PROMPT = "runs/imported_tiny", "a red heart"
print(KIND, SOURCE)

# %% [markdown]
# ## Convert
# The same as `python -m ldm_jax.convert <KIND> ... --out WORKDIR` in a shell. Mismatched or
# missing tensors are listed by name; a model the workdir cannot express stops with one line
# saying why.

# %%
from ldm_jax import convert

flags = {"diffusers": ["--dir", SOURCE], "compvis": ["--config", CONFIG, "--ckpt", SOURCE]}
flags["sd-single-file"] = ["--ckpt", SOURCE, "--tokenizer", TOKENIZER]
if not pathlib.Path(WORKDIR, "config.json").exists():  # converted once; delete it to redo
    convert.main([KIND, *flags[KIND], "--out", WORKDIR, *EXTRA])
print(sorted(p.name for p in pathlib.Path(WORKDIR).iterdir()))

# %% [markdown]
# ## Load it and place it on the devices
# Released LDM and Stable Diffusion weights fit one accelerator: SD 1.5's U-Net, VAE and text
# encoder are about 1.07 billion float32 parameters, 4.3 GB, within one TPU v2 core's 8 GB.
# With several devices (a TPU v2-8 or v3-8 has 8 cores, a v5e-1 one) the weights are
# replicated on each (`placement.replicate`) and every batch is split over them, so a batch of
# 8 runs one image per core in one compiled program.

# %%
import jax
import numpy as np

from ldm_jax.sampling import placement
from ldm_jax.workdir.reader import load_trained_ldm

model = load_trained_ldm(WORKDIR)
count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
print(f"denoiser {count(model.ldm_params) / 1e6:.1f}M parameters")
print(f"first stage {count(model.ae_params) / 1e6:.1f}M parameters")
print("sample settings:", model.config.sample.to_dict(), "| scale_factor", model.scale_factor)
if accel.local_devices > 1:
    model = placement.replicate(model)
    print("replicated on", placement.mesh_of(model.ldm_params).size, "devices")

# %% [markdown]
# ## Sample
# Text-to-image with classifier-free guidance and a negative prompt. The first call compiles
# (a minute or more for SD at 512x512); new prompts, seeds and guidance values reuse the program.

# %%
from ldm_jax.colab import show
from ldm_jax.sampling.request import SampleRequest
from ldm_jax.sampling.tasks import run as sample

NUM = max(accel.local_devices, 2 if SMALL else 4)
request = SampleRequest(
    task="text2img",
    prompt=PROMPT,
    negative_prompt="blurry, low quality",
    num=NUM,
    guidance=7.5,
    steps=4 if SMALL else 50,
    seed=0,
)
result = sample(model, request)
show.show_grid(result.images, result.columns, PROMPT)
print(result.info)

# %% [markdown]
# From a shell: `python -m ldm_jax.sample --workdir runs/imported --task text2img --prompt
# "..." --guidance 7.5 --num 4`; `--task img2img` and `--task inpaint` work on the same
# workdir, and `python -m ldm_jax.export` writes it back as a diffusers folder. Fine-tuning (LoRA
# or full) starts from this workdir: see the README's Stable Diffusion section.
