"""Text-to-image on Noto emoji, trained on this CPU: the paper's jointly trained BERT and the
frozen MiniLM, sampled for fixed prompts and scored by caption retrieval on held-out captions.

  python experiments/tasks/text2img/run.py                 # both models (see README.md)
  python experiments/tasks/text2img/run.py --models bert   # one of them
  python experiments/tasks/text2img/run.py --quick         # the `:tiny` configs: checks the script

Steps, each a CLI run whose JSON line is kept:
  1. `python -m ldm_jax.train --config configs/tasks/emoji/text2img_bert.py` (stage 1, the KL f=4
     autoencoder, then the LDM); the MiniLM model trains only its LDM, on the BERT run's first
     stage (`--config.stage=ldm --config.train.first_stage_workdir=...`), so both see the same
     latents and differ only in tau_theta.
  2. `samples.png`: one row per prompt in PROMPTS, COLUMNS samples of each model side by side
     (BERT left, MiniLM right, a black column between), the same noise for both (the configs'
     sampler, steps and guidance).
  3. `python -m ldm_jax.evaluate --what text2img --candidates 10`: caption retrieval accuracy of
     one sample per held-out caption (chance 0.1), with the first-stage and nearest-training-
     caption references (`ldm_jax/evaluation/text2img.py`).
`results.json` holds the timings, the evaluation JSON of each model and the machine (CPUs, load
average, XLA float32 matmul rate). Workdirs go to `runs/tasks/text2img/<model>` (an existing one
resumes; a finished one is only sampled and scored). `--quick` trains the `:tiny` variants on
synthetic shapes with the XLA optimiser off and writes to a temporary folder (about 2.5 minutes
on 2 loaded cores, most of it compiling; the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import task_runner  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = task_runner.ROOT / "configs" / "tasks" / "emoji"
MODELS = ("bert", "minilm")
PROMPTS = (
    "red heart",
    "smiling face",
    "cat",
    "yellow star",
    "green apple",
    "fire",
    "snowman",
    "blue car",
)
COLUMNS = 4
CANDIDATES = 10
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def prompt_grid(workdirs: dict[str, pathlib.Path], path: pathlib.Path, quick: bool) -> None:
    """`samples.png`: a row per prompt, COLUMNS samples per model, models side by side."""
    from ldm_jax.evaluation.text2img import sample_captions
    from ldm_jax.sampling import images as image_grid
    from ldm_jax.workdir.reader import load_trained_ldm

    blocks = []
    for workdir in workdirs.values():
        trained = load_trained_ldm(str(workdir))
        s = trained.config.sample
        captions = [p for p in PROMPTS for _ in range(COLUMNS)]
        images = sample_captions(
            trained, captions, sampler=s.sampler, steps=2 if quick else s.steps,
            guidance=s.guidance_scale, eta=s.eta, seed=0, batch_size=len(captions),
        )  # fmt: skip
        blocks.append(images.reshape(len(PROMPTS), COLUMNS, *images.shape[1:]))
        blocks.append(-np.ones_like(blocks[-1][:, :1]))  # a black column between models
    rows = np.concatenate(blocks[:-1], axis=1)  # [prompts, models * (COLUMNS + 1) - 1, H, W, C]
    grid = image_grid.make_grid(rows.reshape(-1, *rows.shape[2:]), columns=rows.shape[1])
    image_grid.save_png(str(path), grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="bert,minilm or one of them")
    demo, args = task_runner.start("text2img", "", HERE, parser)
    models = [m for m in args.models.split(",") if m]
    if set(models) - set(MODELS) or not models:
        parser.error(f"--models: use some of {MODELS}, got {args.models!r}")
    demo.results["prompts"] = list(PROMPTS)
    workdirs, first_stage = {}, None
    for model in models:
        workdirs[model] = demo.workdir(model)
        config = CONFIGS / f"text2img_{model}.py"
        trained = task_runner.train(config, workdirs[model], demo.quick, first_stage)
        demo.log(f"train_{model}", trained)
        first_stage = first_stage or workdirs[model]  # later models share this first stage
    prompt_grid(workdirs, demo.out / "samples.png", demo.quick)
    demo.results["grid"] = "samples.png"
    args = (f"--candidates={CANDIDATES}",)
    quick_args = ("--num=8", "--candidates=4", "--steps=2")
    for model in models:
        evaluation = task_runner.evaluate(workdirs[model], "text2img", demo.quick, args, quick_args)
        demo.log(f"eval_{model}", evaluation)
    demo.finish()


if __name__ == "__main__":
    main()
