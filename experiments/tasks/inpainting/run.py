"""Inpainting on Fashion-MNIST, trained on this CPU: the paper's concat inpainting model beside
mean filling and masked sampling of an unconditional model trained without masks, scored by
PSNR and LPIPS inside the hole (`configs/tasks/fashion_mnist/{inpainting,unconditional}.py`).

  python experiments/tasks/inpainting/run.py           # train both, samples.png, score
  python experiments/tasks/inpainting/run.py --quick   # the :tiny configs: checks the script

Steps: both models train their LDM on the first stage of the super-resolution demo
(`runs/tasks/superres/ldm`, the same KL f=4 on the same images) when that exists, else the
inpainting model trains its own and the unconditional model borrows it; `samples.png`: per row a
held-out image, the masked input (hole grey), mean filling, masked sampling of the unconditional
model, the inpainting model, the ground truth; `python -m ldm_jax.evaluate --what inpaint
--reference_workdir <unconditional>` on the first 1,000 test images with the protocol's masks.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import task_runner  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = task_runner.ROOT / "configs" / "tasks" / "fashion_mnist"
FIRST_STAGE = task_runner.ROOT / "runs" / "tasks" / "superres" / "ldm"
ROWS = 8


def inpainting_grid(
    workdir: pathlib.Path, reference: pathlib.Path, path: pathlib.Path, quick: bool
) -> None:
    """`samples.png` (module doc), with the evaluation's masks (seed 0)."""
    from ldm_jax.config import builders
    from ldm_jax.data import pipeline
    from ldm_jax.evaluation import inpainting as ip
    from ldm_jax.evaluation.conditioned_samples import sample_per_condition
    from ldm_jax.sampling import images as image_grid
    from ldm_jax.workdir.reader import load_trained_ldm

    trained, uncond = load_trained_ldm(str(workdir)), load_trained_ldm(str(reference))
    config, s = trained.config, trained.config.sample
    steps = 2 if quick else s.steps
    source = builders.build_data_source(config, "test")
    d = config.data
    images, _ = pipeline.load_split_arrays(source, d.image_size, max_examples=ROWS)
    images = np.asarray(images, np.float32)
    mask = ip.evaluation_masks(0, ROWS, images.shape[1])
    cond = ip.inpainting_conditions(trained, images, mask, ROWS)
    ldm = sample_per_condition(
        trained, cond, None, sampler=s.sampler, steps=steps, guidance=1.0, eta=s.eta, seed=0,
        batch_size=ROWS,
    )  # fmt: skip
    masked = ip.masked_sampling(
        uncond, images, mask, sampler=s.sampler, steps=steps, eta=s.eta, seed=0, batch_size=ROWS
    )
    grey = np.zeros_like(images)
    columns = [images, ip.paste(images, grey, mask), ip.mean_fill(images, mask)]
    columns += [ip.paste(images, masked, mask), ip.paste(images, ldm, mask), images]
    grid = np.stack(columns, axis=1)  # [ROWS, 6, H, W, C]
    image_grid.save_png(
        str(path), image_grid.make_grid(grid.reshape(-1, *grid.shape[2:]), columns=grid.shape[1])
    )


def main() -> None:
    demo, _ = task_runner.start("inpainting", __doc__.split("\n")[0], HERE)
    workdir, reference = demo.workdir("ldm"), demo.workdir("unconditional")
    borrow = FIRST_STAGE if (FIRST_STAGE / "checkpoints").is_dir() and not demo.quick else None
    demo.results["first_stage_workdir"] = None if borrow is None else str(borrow)
    demo.log("train", task_runner.train(CONFIGS / "inpainting.py", workdir, demo.quick, borrow))
    trained = task_runner.train(
        CONFIGS / "unconditional.py", reference, demo.quick, borrow or workdir
    )
    demo.log("train_unconditional", trained)
    inpainting_grid(workdir, reference, demo.out / "samples.png", demo.quick)
    demo.results["grid"] = "samples.png"
    args = (f"--reference_workdir={reference}",)
    quick_args = (*args, "--num=4", "--steps=2")
    demo.log("eval", task_runner.evaluate(workdir, "inpaint", demo.quick, args, quick_args))
    demo.finish()


if __name__ == "__main__":
    main()
