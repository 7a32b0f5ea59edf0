# %% [markdown]
# # The f study: how much should the autoencoder compress? (the paper's Figs. 6-7)
#
# Rombach et al. train LDM-f for downsampling factors f = 1 (pixel space), 2, 4, 8, 16, 32 and
# find that small f trains slowly, too large an f caps quality, and f = 4-16 balance the two.
# `experiments/f_study/` repeats this at CPU scale on 32x32 Fashion-MNIST (class-conditional)
# and Noto emoji (unconditional), with the training compute of every f matched in FLOPs.
#
# This notebook loads the committed results and draws the paper-style plots, or runs the study
# again (`RUN_STUDY = True`: about an hour on a 2-core CPU at the committed budget, much less on
# an accelerator; a larger budget gives later-stage curves). In small mode (CI) it redraws the
# report from the committed results only.
# %% setup
# %%
import json
import pathlib
import shutil
import subprocess
import sys

from ldm_jax.colab import accelerator

accel = accelerator.detect()
SMALL = accelerator.small_mode()
STUDY = accelerator.repo_path("experiments", "f_study")
print(accel, "| small mode (CI)" if SMALL else "")

# %% [markdown]
# ## Run or load
# The study writes `results.json` (timings, FLOPs, scores at each quarter of every run), the
# plots and `table.md` into `OUT`. A finished run is skipped when the same `OUT` is used again.
# `BUDGET` is the training compute per dataset in LDM-1 steps (16 and 12 were committed).

# %%
RUN_STUDY = False
BUDGET = "fashion_mnist=16,emoji=12"
OUT = pathlib.Path("runs/f_study_notebook")
OUT.mkdir(parents=True, exist_ok=True)

if RUN_STUDY and not SMALL:
    phases = "train,score,report"
else:  # redraw the report from the committed measurements
    shutil.copy(STUDY / "results.json", OUT / "results.json")
    phases = "report"
command = [sys.executable, str(STUDY / "run.py"), f"--phase={phases}", f"--budget={BUDGET}"]
command += [f"--out={OUT}", f"--runs={OUT / 'runs'}"]
subprocess.run(command, check=True)
results = json.loads((OUT / "results.json").read_text())
print(sorted(results["runs"]), "| machine:", results["machine"])

# %% [markdown]
# ## Quality against training compute, one line per f
# The Frechet distance (in the project classifier's features for Fashion-MNIST, in LPIPS-VGG
# features for emoji) as a ratio to the distance between two real sets of the same size (1 is
# as close as real data), against training steps, training FLOPs and wall-clock seconds.

# %%
from IPython.display import Image, Markdown, display

for name in ("fashion_mnist_fd", "fashion_mnist_accuracy", "emoji_fd"):
    path = OUT / f"{name}.png"
    if path.exists():
        display(Image(filename=str(path)))

# %% [markdown]
# ## The table (scores at the matched FLOP budget) and the samples
# One row of samples per f, from f = 1 at the top (sample grids need the runs' workdirs, so
# they are drawn after a local run; the committed grids are shown otherwise).

# %%
display(Markdown((OUT / "table.md").read_text()))
for dataset in ("fashion_mnist", "emoji"):
    grid = OUT / f"samples_{dataset}.png"
    grid = grid if grid.exists() else STUDY / f"samples_{dataset}.png"
    print(dataset, "samples, rows f = 1, 2, 4, 8, 16:")
    display(Image(filename=str(grid)))

# %% [markdown]
# What the committed run shows and where it falls short of the paper (an early-training
# snapshot: tiny budgets, LDM-8/16 capped below matched FLOPs) is in
# `experiments/f_study/README.md`; the paper's claims are indexed in `experiments/README.md`.
