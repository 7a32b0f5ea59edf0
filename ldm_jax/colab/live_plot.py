"""A live training-loss plot for notebooks: a listener for `trainers.run.run`."""

from __future__ import annotations

import collections
import io

import numpy as np

LOSS_SUFFIX = "/loss"


class LiveLossPlot:
    """Redraws one loss curve per training stage as the trainer logs (`listeners=[plot]`).

    Each stage logs `<stage>/loss` (e.g. `autoencoder/loss`, `ldm/loss`) every
    `config.<section>.log_every` steps; the figure (a PNG, so it works under any matplotlib
    backend and in executed notebooks) is updated in place in the cell's output.
    """

    def __init__(self, redraw_every: int = 1, width: float = 10.0, height: float = 3.2):
        self.history: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
        self._redraw_every = redraw_every
        self._size = (width, height)
        self._calls = 0
        self._handle = None

    def __call__(self, step: int, values: dict[str, float]) -> None:
        """Records the losses among `values` and redraws every `redraw_every` calls."""
        losses = {k[: -len(LOSS_SUFFIX)]: v for k, v in values.items() if k.endswith(LOSS_SUFFIX)}
        for stage, value in losses.items():
            self.history[stage].append((step, value))
        if losses:
            self._calls += 1
            if self._calls % self._redraw_every == 0:
                self.show()

    def png(self) -> bytes:
        """The current figure as PNG bytes (log-scale loss against step, one panel per stage)."""
        from matplotlib.figure import Figure  # A figure without pyplot: no backend state.

        stages = list(self.history) or ["(no loss logged yet)"]
        figure = Figure(figsize=self._size, dpi=80)
        for i, stage in enumerate(stages):
            axes = figure.add_subplot(1, len(stages), i + 1)
            points = np.asarray(self.history.get(stage, []), dtype=np.float64).reshape(-1, 2)
            axes.plot(points[:, 0], points[:, 1], marker="." if len(points) < 30 else None)
            if len(points) and np.all(points[:, 1] > 0):
                axes.set_yscale("log")
            last = f" (last {points[-1, 1]:.4g})" if len(points) else ""
            axes.set(title=f"{stage}{last}", xlabel="step", ylabel="loss")
            axes.grid(alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()

    def show(self) -> None:
        """Shows the figure in the notebook, replacing the previous one."""
        from IPython.display import Image, display

        image = Image(data=self.png())
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
