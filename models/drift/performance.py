"""``PerformanceDrift``: ADWIN on the prequential loss of a binary classifier.

Each joined label gives one loss value for the score the model produced before learning it:
``"zero_one"`` (1 when the decision ``score > threshold`` is wrong, as ``models.metrics.decide``)
or ``"log_loss"`` (``-log`` of the probability given to the true class, clipped to
``[1e-15, 1 - 1e-15]``). The values feed ``river.drift.ADWIN``; when it detects a change it has
dropped the older part of its window, and ``update`` returns a ``PerformanceChange`` with the
mean loss of that dropped part (before the cut) and of the part it kept (after the cut; ADWIN's
cut is coarse, so the kept part can still hold some pre-change labels, as below).

>>> import random
>>> rng = random.Random(7)
>>> perf = PerformanceDrift("zero_one")
>>> for i in range(4000):
...     y = rng.random() < 0.5
...     correct = rng.random() < (0.9 if i < 2000 else 0.6)  # accuracy drops at 2000
...     change = perf.update(y, 0.8 if y == correct else 0.2)
...     if change:
...         print(change.index, round(change.mean_before, 3), round(change.mean_after, 3))
2111 0.102 0.169
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from river.drift import ADWIN

from models.metrics import decide

__all__ = ["Loss", "PerformanceChange", "PerformanceDrift"]

Loss = Literal["zero_one", "log_loss"]
_EPS = 1e-15


@dataclass(frozen=True, slots=True)
class PerformanceChange:
    """A change in mean loss found by ADWIN at label ``index`` (0-based)."""

    index: int
    loss: Loss
    mean_before: float  # the window ADWIN dropped
    mean_after: float  # the window ADWIN kept
    n_before: int
    n_after: int


class PerformanceDrift:
    """ADWIN over per-label losses; reports the mean loss on both sides of the cut."""

    def __init__(self, loss: Loss = "zero_one", *, threshold: float = 0.5, delta: float = 0.002,
                 clock: int = 32, grace_period: int = 10) -> None:
        if loss not in ("zero_one", "log_loss"):
            raise ValueError(f"loss must be 'zero_one' or 'log_loss', got {loss!r}")
        self.loss: Loss = loss
        self.threshold = threshold
        self.adwin = ADWIN(delta=delta, clock=clock, grace_period=grace_period)
        self.n = 0
        self.last_change: PerformanceChange | None = None

    def loss_of(self, y_true: bool, score: float) -> float:
        """The loss of one prediction."""
        if self.loss == "zero_one":
            return 0.0 if decide(score, self.threshold) == bool(y_true) else 1.0
        p = min(max(score if y_true else 1.0 - score, _EPS), 1.0 - _EPS)
        return -math.log(p)

    @property
    def drift_detected(self) -> bool:
        """Whether the last ``update`` found a change (River's detector vocabulary)."""
        return bool(self.adwin.drift_detected)

    def update(self, y_true: bool, score: float) -> PerformanceChange | None:
        """Add one labelled prediction; return the change when ADWIN detects one."""
        if not math.isfinite(score):
            raise ValueError(f"score must be finite, got {score!r}")
        value = self.loss_of(y_true, score)
        width, total = int(self.adwin.width), float(self.adwin.total)
        self.adwin.update(value)
        self.n += 1
        if not self.adwin.drift_detected:
            return None
        kept, kept_total = int(self.adwin.width), float(self.adwin.total)
        dropped = width + 1 - kept
        self.last_change = PerformanceChange(
            self.n - 1, self.loss, (total + value - kept_total) / dropped,
            kept_total / kept if kept else math.nan, dropped, kept)
        return self.last_change
