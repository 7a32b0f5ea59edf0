"""Editing (img2img, SDEdit) with the class-conditional quickstart model, trained on this CPU:
how far `strength` moves an image and whether the new class wins, by strength.

  python experiments/tasks/edit/run.py           # train, edits.png, score (see README.md)
  python experiments/tasks/edit/run.py --quick   # the :tiny config: checks the script

Steps: `python -m ldm_jax.train --config configs/quickstart.py` (the KL f=4 autoencoder, then the
class-conditional LDM); `edits.png`: per row a held-out test image, then its edits to the row's
target class at each strength of STRENGTHS (the same noise in a row); `python -m ldm_jax.evaluate
--what edit` on the first 200 test images (`ldm_jax/evaluation/editing.py`).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import task_runner  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = task_runner.ROOT / "configs" / "quickstart.py"
STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
ROWS = 8


def edit_grid(workdir: pathlib.Path, path: pathlib.Path, quick: bool) -> dict:
    """`edits.png` (module doc); returns the rows' source and target classes."""
    from ldm_jax.config import builders
    from ldm_jax.data import pipeline
    from ldm_jax.evaluation import editing
    from ldm_jax.sampling import images as image_grid
    from ldm_jax.workdir.reader import load_trained_ldm

    trained = load_trained_ldm(str(workdir))
    config, s = trained.config, trained.config.sample
    source = builders.build_data_source(config, "test")
    images, labels = pipeline.load_split_arrays(source, config.data.image_size, max_examples=ROWS)
    images = np.asarray(images, np.float32)
    targets = editing.target_classes(labels, config.data.num_classes, seed=0)
    latents = editing.encode_latents(trained, images)
    steps = 5 if quick else s.steps  # int(5 * 0.2) = 1 step at the smallest strength
    columns = [images]
    for strength in STRENGTHS:
        columns.append(
            editing.edit_images(
                trained,
                latents,
                targets,
                strength,
                sampler=s.sampler,
                steps=steps,
                guidance=s.guidance_scale,
                eta=s.eta,
                seed=0,
                batch_size=ROWS,
            )  # fmt: skip
        )
    rows = np.stack(columns, axis=1)  # [ROWS, 1 + len(STRENGTHS), H, W, C]
    grid = image_grid.make_grid(rows.reshape(-1, *rows.shape[2:]), columns=rows.shape[1])
    image_grid.save_png(str(path), grid)
    return {"sources": labels.tolist(), "targets": targets.tolist(), "strengths": STRENGTHS}


def main() -> None:
    demo, _ = task_runner.start("edit", __doc__.split("\n")[0], HERE)
    workdir = demo.workdir("quickstart")
    demo.log("train", task_runner.train(CONFIG, workdir, demo.quick))
    demo.results["grid"] = {
        "file": "edits.png",
        **edit_grid(workdir, demo.out / "edits.png", demo.quick),
    }
    quick_args = ("--num=4", "--steps=4", "--strengths=0.5,1.0")
    demo.log("eval", task_runner.evaluate(workdir, "edit", demo.quick, (), quick_args))
    demo.finish()


if __name__ == "__main__":
    main()
