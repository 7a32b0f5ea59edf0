"""Line plots for the experiments' committed PNGs (matplotlib, the `experiments` extra).

An experiment's `run.py` imports this module from the `experiments/` folder:

  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  import line_plots
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def draw_panels(
    path: str,
    panels: Sequence[tuple[str, str, str, Series]],
    log_x: bool = False,
    suptitle: str | None = None,
) -> None:
    """Draws side-by-side panels of labelled lines with markers into a PNG.

    Args:
      path: the PNG to write.
      panels: per panel (title, x label, y label, {line label: (xs, ys)}).
      log_x: logarithmic x axes (e.g. sampler steps).
      suptitle: an optional title over all panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, x_label, y_label, series) in zip(axes[0], panels, strict=True):
        for label, (xs, ys) in series.items():
            ax.plot(list(xs), list(ys), marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        if log_x:  # Plain numbers at 1, 2, 5 x 10^k, no overlapping minor labels.
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
