"""Loss spikes: a step whose loss jumps far above the recent typical loss is worth a log line.

Diffusion losses are noisy (each step draws its own timesteps), so a spike is judged against the
median of the last `window` finite step losses: a loss above `factor` times that median (once
`min_history` steps have been seen) is a spike. The spike is reported, not acted on: it often
precedes a divergence, and the log line says at which step to look.
"""

from __future__ import annotations

import collections
import math

import numpy as np


class LossSpikeDetector:
    """Flags step losses above `factor` x the median of the previous `window` losses.

    Attributes:
      count: spikes seen so far.
    """

    def __init__(self, factor: float = 5.0, window: int = 100, min_history: int = 20):
        if factor <= 1 or window < 1 or not 1 <= min_history <= window:
            raise ValueError(
                f"LossSpikeDetector(factor={factor}, window={window}, min_history={min_history})"
                ": needs factor > 1 and 1 <= min_history <= window."
            )
        self.factor = factor
        self.min_history = min_history
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self.count = 0

    def observe(self, step: int, loss: float) -> str | None:
        """Records one step's loss; returns a message when it is a spike, else None.

        Non-finite losses are ignored here (the non-finite guard reports them). A spike joins
        the history like any other loss, so a lasting shift in level stops being reported once
        it dominates the window.
        """
        if not math.isfinite(loss):
            return None
        message = None
        if len(self._recent) >= self.min_history:
            median = float(np.median(self._recent))
            if median > 0 and loss > self.factor * median:
                self.count += 1
                message = (
                    f"loss spike at step {step}: {loss:.4g} is {loss / median:.1f}x the median "
                    f"{median:.4g} of the previous {len(self._recent)} steps"
                )
        self._recent.append(loss)
        return message
