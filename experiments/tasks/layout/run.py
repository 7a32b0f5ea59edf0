"""Layout-to-image on Fashion-MNIST canvases, trained on this CPU and scored by the class
accuracy of the item inside each requested box (`configs/tasks/fashion_mnist/layout2img.py`).

  python experiments/tasks/layout/run.py           # train, samples.png, score (see README.md)
  python experiments/tasks/layout/run.py --quick   # the :tiny config: checks the script

Steps: `python -m ldm_jax.train --config configs/tasks/fashion_mnist/layout2img.py` (the KL f=4
first stage, then the LDM with the jointly trained BERT over layout tokens); `samples.png`: for
the first ROWS test canvases, the real canvas with its boxes' layout, then COLUMNS samples of
that layout; `python -m ldm_jax.evaluate --what layout --num 1000` on the first 1,000 test layouts.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import task_runner  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = task_runner.ROOT / "configs" / "tasks" / "fashion_mnist" / "layout2img.py"
ROWS, COLUMNS = 8, 6
NUM_LAYOUTS = 1000  # the first 1,000 of the 10,000 test canvases


def layout_grid(workdir: pathlib.Path, path: pathlib.Path, quick: bool) -> None:
    """`samples.png`: per row a real test canvas, a grey column, COLUMNS samples of its layout."""
    from ldm_jax.config import builders
    from ldm_jax.data import layout_tokens, pipeline
    from ldm_jax.evaluation.layout_accuracy import sample_layouts
    from ldm_jax.sampling import images as image_grid
    from ldm_jax.workdir.reader import load_trained_ldm

    trained = load_trained_ldm(str(workdir))
    config, s = trained.config, trained.config.sample
    source = builders.build_data_source(config, "test")
    test = pipeline.load_split_dict(
        source, config.data.image_size, config.data.channels, max_examples=ROWS
    )
    vocab = builders.layout_vocab(config)
    tokens = layout_tokens.encode(test["classes"], test["boxes"], test["num_objects"], vocab)
    samples = sample_layouts(
        trained, np.repeat(tokens, COLUMNS, axis=0), sampler=s.sampler,
        steps=2 if quick else s.steps, guidance=s.guidance_scale, eta=s.eta, seed=0,
        batch_size=ROWS * COLUMNS,
    ).reshape(ROWS, COLUMNS, *test["image"].shape[1:])  # fmt: skip
    real = np.asarray(test["image"], np.float32)[:, None]
    gap = np.zeros_like(real)
    rows = np.concatenate([real, gap, samples], axis=1)  # [ROWS, COLUMNS + 2, H, W, C]
    grid = image_grid.make_grid(rows.reshape(-1, *rows.shape[2:]), columns=rows.shape[1])
    image_grid.save_png(str(path), grid)


def main() -> None:
    demo, _ = task_runner.start("layout", __doc__.split("\n")[0], HERE)
    workdir = demo.workdir("ldm")
    demo.log("train", task_runner.train(CONFIG, workdir, demo.quick))
    layout_grid(workdir, demo.out / "samples.png", demo.quick)
    demo.results["grid"] = "samples.png"
    quick_args = ("--num=4", "--steps=2")
    args = (f"--num={NUM_LAYOUTS}",)
    demo.log("eval", task_runner.evaluate(workdir, "layout", demo.quick, args, quick_args))
    demo.finish()


if __name__ == "__main__":
    main()
