"""Fine-tuning demo (issue 13): a small Stable-Diffusion-style workdir fine-tuned on the Noto emoji
captions, caption retrieval before and after (README.md in this folder).

  python experiments/finetune/run.py [--steps 800] [--methods full,lora] [--out runs/finetune]

1. Assembles the base workdir `<out>/base` as `python -m ldm_jax.convert` writes one (config.json,
   checkpoints/autoencoder, checkpoints/ldm, text_encoder/, tokenizer/): cond stage
   "frozen_clip" with CLIP's real BPE tokenizer (49,408 tokens) and a random tiny CLIP text
   encoder (width 32, 3 layers; `tests/clip_fixtures.py`), the emoji KL f=4 first stage trained
   here (`runs/tasks/text2img/bert`, 32x32 -> 8x8x3) and a random-initialised small U-Net
   (`config/small_tasks.unet`, cross-attention to 32-wide contexts). No pretrained SD weights can
   be downloaded here, so the base knows nothing of emoji: its retrieval is chance.
2. Fine-tunes it with `configs/finetune/sd_full.py` (and `sd_lora.py`) through
   `python -m ldm_jax.train`, float32, `--steps` steps of batch 64.
3. Scores `python -m ldm_jax.evaluate --what text2img` (144 held-out captions, K = 10) on the
   base (a copy whose config names the emoji data) and on each fine-tuned workdir.
Writes `results.json` next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import flax.linen as nn
import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from ldm_jax.config import builders, small_tasks  # noqa: E402
from ldm_jax.config.validation import ConfigError  # noqa: E402
from ldm_jax.interop import model_spec  # noqa: E402
from ldm_jax.workdir import layout, reader  # noqa: E402
from ldm_jax.workdir.writer import write_workdir  # noqa: E402
from tests.clip_fixtures import (  # noqa: E402
    EOS,
    clip_vocab,
    random_clip_text_model,
    tiny_clip_config,
    write_clip_tokenizer,
)

FIRST_STAGE_FROM = os.path.join(ROOT, "runs", "tasks", "text2img", "bert")
CONTEXT_DIM = 32
HERE = os.path.dirname(os.path.abspath(__file__))


def write_base(workdir: str, seed: int = 0) -> None:
    """The base workdir of the module docstring."""
    import ml_collections

    ae_config = reader.load_config(FIRST_STAGE_FROM)
    ae_params = reader.load_first_stage_params(FIRST_STAGE_FROM, ae_config)
    _, meta, _ = reader.restore_state(layout.checkpoint_dir(FIRST_STAGE_FROM, "ldm"))
    cond = dict(max_length=77, text_encoder=layout.TEXT_ENCODER_DIR, tokenizer=layout.TOKENIZER_DIR)
    model = dict(
        first_stage=ae_config.model.first_stage.to_dict(),
        unet=small_tasks.unet(3, 3, context_dim=CONTEXT_DIM),
        cond_stage=model_spec.cond_stage_spec(None, "frozen_clip", **cond),
        conditioning_key="crossattn",
    )
    probe = ml_collections.ConfigDict(dict(model=model, data=dict(image_size=32, channels=3)))
    denoiser = builders.build_denoiser(probe)
    inputs = builders.denoiser_example_inputs(probe)
    params = jax.jit(lambda r: denoiser.init(r, *inputs)["params"])(jax.random.PRNGKey(seed))
    params = jax.tree.map(np.asarray, nn.unbox(params))
    d = ae_config.diffusion
    fields = dict(
        schedule=d.schedule, num_timesteps=d.num_timesteps, beta_start=d.beta_start,
        beta_end=d.beta_end, prediction_type=d.prediction_type,
    )  # fmt: skip
    write_workdir(
        workdir, model, ae_params, params, float(meta["scale_factor"]), fields,
        {"source": "experiments/finetune/run.py (random U-Net and CLIP, emoji KL-f4)"},
        sample_settings=dict(sampler="ddim", timestep_spacing="leading", steps_offset=0),
    )  # fmt: skip
    vocab, _ = clip_vocab()
    clip = dict(
        tiny_clip_config(),
        vocab_size=len(vocab),
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )
    random_clip_text_model(clip, seed).save_pretrained(os.path.join(workdir, "text_encoder"))
    write_clip_tokenizer(os.path.join(workdir, "tokenizer"))


def evaluation_copy(base: str, out: str) -> str:
    """The base with config.json naming the emoji data (its own says 'imported'), for scoring."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    path = layout.config_path(out)
    with open(path) as f:
        config = json.load(f)
    config["data"].update(name="noto_emoji", image_size=32, channels=3, train_split="train")
    config["sample"].update(steps=50, eta=1.0, guidance_scale=4.0)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return out


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return proc.stdout


def evaluate(workdir: str) -> dict:
    out = cli("ldm_jax.evaluate", f"--workdir={workdir}", "--what=text2img")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--methods", default="full")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "finetune"))
    args = parser.parse_args()
    base = os.path.join(args.out, "base")
    path = os.path.join(HERE, "results.json")
    results = {"runs": {}}
    if os.path.isfile(path):  # Runs of other methods stay; the base is scored once.
        with open(path) as f:
            results = json.load(f)
    start = time.perf_counter()
    if not os.path.isdir(base):
        write_base(base)
    if "base_eval" not in results:
        results["base_eval"] = evaluate(evaluation_copy(base, os.path.join(args.out, "base_eval")))
        results["base_eval_s"] = round(time.perf_counter() - start, 1)
    for method in args.methods.split(","):
        workdir = os.path.join(args.out, method)
        t0 = time.perf_counter()
        overrides = [
            f"--config.finetune.base_workdir={base}",
            f"--config.train.steps={args.steps}",
            "--config.train.batch_size=64",
            "--config.train.compute_dtype=float32",
            "--config.train.remat=none",
            "--config.train.learning_rate=1e-3",
            "--config.train.warmup_steps=100",
            "--config.train.checkpoint_every=400",
            "--config.train.final_samples=false",
            "--config.sample.steps=50",
            "--config.sample.eta=1.0",
            "--config.sample.guidance_scale=4.0",
        ]
        if method == "lora":
            overrides += ["--config.finetune.lora.rank=16", "--config.finetune.lora.alpha=16.0"]
        train = cli(
            "ldm_jax.train", f"--config=configs/finetune/sd_{method}.py",
            f"--workdir={workdir}", *overrides,
        )  # fmt: skip
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results["runs"][method] = {
            "steps": args.steps,
            "train": json.loads(train.strip().splitlines()[-1]),
            "train_wall_s": round(train_s, 1),
            "overrides": overrides,
            "eval": evaluate(workdir),
            "eval_wall_s": round(time.perf_counter() - t0, 1),
        }
        print(method, results["runs"][method]["eval"]["accuracy"], flush=True)
    results["last_wall_s"] = round(time.perf_counter() - start, 1)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(
        json.dumps(
            {k: v for k, v in results.items() if k != "runs"}
            | {m: r["eval"]["accuracy"] for m, r in results["runs"].items()},
            default=str,
        )[:2000]
    )


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        sys.exit(str(e))
