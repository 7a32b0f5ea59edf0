"""Test-side: sampleable tiny models with random parameters, built in memory in about a second.

Parameters are drawn with numpy over the abstract trees (`jax.eval_shape`; no flax init, which
runs op by op for tens of seconds on these networks): kernels N(0, 1 / fan_in), norm scales 1,
biases 0, embeddings N(0, 1). The U-Net's output layer is random too (flax zero-initialises it),
so the model's output depends on its input and its condition.
"""

from __future__ import annotations

import json
import os

import flax
import ml_collections
import numpy as np
from PIL import Image

from ldm_jax.config import builders
from ldm_jax.config.files import load_config_file
from ldm_jax.config.model_config import model_config
from ldm_jax.trainers import captions
from ldm_jax.workdir.reader import TrainedLDM
from ldm_jax.workdir.writer import write_workdir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 32  # the :tiny configs' image side


def tiny_config(name: str) -> ml_collections.ConfigDict:
    """`configs/<name>:tiny`, e.g. "paper/cin256_v2.py"."""
    return load_config_file(os.path.join(ROOT, "configs", name), "tiny")


def random_params(abstract, seed: int):
    """A parameter tree of `abstract`'s shapes drawn as the module docstring says."""
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in flax.traverse_util.flatten_dict(abstract).items():
        shape = tuple(leaf.shape)
        if path[-1] == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            flat[path] = rng.standard_normal(shape).astype(np.float32) / np.sqrt(fan_in)
        elif path[-1] == "scale":
            flat[path] = np.ones(shape, np.float32)
        elif path[-1] == "bias":
            flat[path] = np.zeros(shape, np.float32)
        else:
            flat[path] = rng.standard_normal(shape).astype(np.float32)
    return flax.traverse_util.unflatten_dict(flat)


def random_model(config: ml_collections.ConfigDict, seed: int = 0, workdir: str = "") -> TrainedLDM:
    """A `TrainedLDM` of `config` with random parameters (scale factor 1)."""
    ae = random_params(builders.abstract_autoencoder_params(config), seed)
    ldm = random_params(builders.abstract_denoiser_params(config), seed + 1)
    return TrainedLDM(config, ae, ldm, 1.0, 0, workdir)


def text_model(directory: str, seed: int = 0) -> TrainedLDM:
    """The txt2img :tiny model (BERT, KL f=8) with a vocabulary file in `directory`."""
    config = tiny_config("paper/txt2img_1p4b.py")
    vocab = captions.build_vocab(["a red circle", "a blue square", "a green heart"])
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    config.model.cond_stage.vocab = "vocab.txt"
    return random_model(config, seed, directory)


def write_png(path, pixels: np.ndarray) -> str:
    """Writes uint8 [H, W] or [H, W, 3]; returns the path as a string."""
    Image.fromarray(pixels).save(path)
    return str(path)


def smooth_image(seed: int = 0) -> np.ndarray:
    """A smooth RGB test image uint8 [SIZE, SIZE, 3] (gradients with a random tilt)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    a = rng.uniform(0.2, 1.0, 3)
    channels = [a[0] * yy, a[1] * xx, a[2] * (1 - yy) * xx]
    return np.round(np.stack(channels, axis=-1) * 255).astype(np.uint8)


def box_mask(top: int, left: int, side: int) -> np.ndarray:
    """uint8 [SIZE, SIZE]: white (fill in) in a side x side box, black elsewhere."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[top : top + side, left : left + side] = 255
    return mask


def fashion_mnist_workdir(path: str, tfds_dir: str) -> str:
    """quickstart:tiny (grey 32x32, 10 classes) with random weights, written as a workdir at
    `path` whose config names the Fashion-MNIST prepared in `tfds_dir` (for evaluate)."""
    trained = random_model(tiny_config("quickstart.py"))
    d = trained.config.diffusion
    schedule = {k: d[k] for k in ("schedule", "num_timesteps", "beta_start", "beta_end")}
    schedule["prediction_type"] = d.prediction_type
    model = model_config(trained.config)
    write_workdir(path, model, trained.ae_params, trained.ldm_params, 1.0, schedule, {})
    config_file = os.path.join(path, "config.json")
    with open(config_file) as f:
        config = json.load(f)
    config["data"].update(name="fashion_mnist", data_dir=tfds_dir)
    with open(config_file, "w") as f:
        json.dump(config, f)
    return path
