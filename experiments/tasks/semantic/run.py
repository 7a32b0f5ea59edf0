"""Semantic synthesis on Noto emoji colour maps, trained on this CPU and scored by the mIoU of
the maps re-derived from the samples (`configs/tasks/emoji/semantic.py`).

  python experiments/tasks/semantic/run.py           # train, samples.png, score (see README.md)
  python experiments/tasks/semantic/run.py --quick   # the :tiny config: checks the script

Steps: `python -m ldm_jax.train --config configs/tasks/emoji/semantic.py`, on the first stage of
the text-to-image demo (`runs/tasks/text2img/bert`, the same emoji at the same size) when that
exists (`--config.stage=ldm --config.train.first_stage_workdir=...`), else training its own;
`samples.png`: per row a held-out emoji, its map (display colours), then COLUMNS samples of the
map, then the map re-derived from the first sample; `python -m ldm_jax.evaluate --what semantic`
on all 144 held-out maps.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import task_runner  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = task_runner.ROOT / "configs" / "tasks" / "emoji" / "semantic.py"
FIRST_STAGE = task_runner.ROOT / "runs" / "tasks" / "text2img" / "bert"
ROWS, COLUMNS = 8, 4


def semantic_grid(workdir: pathlib.Path, path: pathlib.Path, quick: bool) -> None:
    """`samples.png` (module doc)."""
    from ldm_jax.config import builders
    from ldm_jax.data import emoji_palette, pipeline
    from ldm_jax.evaluation.semantic import rederived_maps, sample_maps
    from ldm_jax.sampling import images as image_grid
    from ldm_jax.workdir.reader import load_trained_ldm

    trained = load_trained_ldm(str(workdir))
    config, s = trained.config, trained.config.sample
    source = builders.build_data_source(config, "test")
    test = pipeline.load_split_dict(source, 32, 3, max_examples=ROWS)
    maps = np.asarray(test["segmentation"])  # [ROWS, 32, 32]
    samples = sample_maps(
        trained, np.repeat(maps, COLUMNS, axis=0), sampler=s.sampler,
        steps=2 if quick else s.steps, eta=s.eta, seed=0, batch_size=ROWS * COLUMNS,
    ).reshape(ROWS, COLUMNS, 32, 32, 3)  # fmt: skip

    def colours(m: np.ndarray) -> np.ndarray:  # [N, 32, 32] -> [N, 32, 32, 3] in [-1, 1]
        return emoji_palette.colourise(m).astype(np.float32) / 127.5 - 1.0

    rederived = rederived_maps(samples[:, 0])
    rows = [np.asarray(test["image"], np.float32), colours(maps)]
    rows += [samples[:, i] for i in range(COLUMNS)] + [colours(rederived)]
    grid = np.stack(rows, axis=1)  # [ROWS, COLUMNS + 3, 32, 32, 3]
    image_grid.save_png(
        str(path), image_grid.make_grid(grid.reshape(-1, 32, 32, 3), columns=grid.shape[1])
    )


def main() -> None:
    demo, _ = task_runner.start("semantic", __doc__.split("\n")[0], HERE)
    workdir = demo.workdir("ldm")
    borrow = FIRST_STAGE if (FIRST_STAGE / "checkpoints").is_dir() and not demo.quick else None
    demo.results["first_stage_workdir"] = None if borrow is None else str(borrow)
    demo.log("train", task_runner.train(CONFIG, workdir, demo.quick, borrow))
    semantic_grid(workdir, demo.out / "samples.png", demo.quick)
    demo.results["grid"] = "samples.png"
    quick_args = ("--num=4", "--steps=2")
    demo.log("eval", task_runner.evaluate(workdir, "semantic", demo.quick, (), quick_args))
    demo.finish()


if __name__ == "__main__":
    main()
