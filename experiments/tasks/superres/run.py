"""Super-resolution x4 (8x8 -> 32x32) on Fashion-MNIST, trained on this CPU and scored by PSNR and
LPIPS against the ground truth beside bicubic upsampling
(`configs/tasks/fashion_mnist/superres_x4.py`).

  python experiments/tasks/superres/run.py           # train, samples.png, score (see README.md)
  python experiments/tasks/superres/run.py --quick   # the :tiny config: checks the script

Steps: `python -m ldm_jax.train --config configs/tasks/fashion_mnist/superres_x4.py` (the KL
f=4 first stage, then the LDM with the bicubic low-resolution image concatenated to z_t; the
inpainting demo borrows this first stage); `samples.png`: per row the 8x8 input (nearest), its
bicubic upsampling, COLUMNS LDM samples, the ground truth; `python -m ldm_jax.evaluate --what
superres` on the first 1,000 test images.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import task_runner  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = task_runner.ROOT / "configs" / "tasks" / "fashion_mnist" / "superres_x4.py"
ROWS, COLUMNS = 8, 3


def superres_grid(workdir: pathlib.Path, path: pathlib.Path, quick: bool) -> None:
    """`samples.png` (module doc)."""
    import jax

    from ldm_jax.config import builders
    from ldm_jax.data import degradations, pipeline
    from ldm_jax.evaluation import superres as sr
    from ldm_jax.evaluation.conditioned_samples import sample_per_condition
    from ldm_jax.sampling import images as image_grid
    from ldm_jax.workdir.reader import load_trained_ldm

    trained = load_trained_ldm(str(workdir))
    config, s = trained.config, trained.config.sample
    f = builders.downsampling_factor(config)
    source = builders.build_data_source(config, "test")
    d = config.data
    test = pipeline.load_split_dict(source, d.image_size, d.channels, max_examples=ROWS)
    images = np.asarray(test["image"], np.float32)
    low = np.asarray(degradations.degrade(images, f, sr.degradation(config), jax.random.PRNGKey(0)))
    samples = sample_per_condition(
        trained, np.repeat(low, COLUMNS, axis=0), None, sampler=s.sampler,
        steps=2 if quick else s.steps, guidance=1.0, eta=s.eta, seed=0,
        batch_size=ROWS * COLUMNS,
    ).reshape(ROWS, COLUMNS, *images.shape[1:])  # fmt: skip
    columns = [sr.upsample_nearest(low, f)[:, None], sr.upsample_bicubic(low, f)[:, None]]
    columns += [samples, images[:, None]]
    grid = np.concatenate(columns, axis=1)  # [ROWS, COLUMNS + 3, H, W, C]
    image_grid.save_png(
        str(path), image_grid.make_grid(grid.reshape(-1, *grid.shape[2:]), columns=grid.shape[1])
    )


def main() -> None:
    demo, _ = task_runner.start("superres", __doc__.split("\n")[0], HERE)
    workdir = demo.workdir("ldm")
    demo.log("train", task_runner.train(CONFIG, workdir, demo.quick))
    superres_grid(workdir, demo.out / "samples.png", demo.quick)
    demo.results["grid"] = "samples.png"
    quick_args = ("--num=4", "--steps=2")
    demo.log("eval", task_runner.evaluate(workdir, "superres", demo.quick, (), quick_args))
    demo.finish()


if __name__ == "__main__":
    main()
