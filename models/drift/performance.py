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
from statistics import NormalDist
from typing import Literal

from river.drift import ADWIN

from models.metrics import decide

__all__ = ["Confirmation", "Loss", "PerformanceChange", "PerformanceDrift"]

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
        self.last_loss = math.nan  # the loss of the last ``update``

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
        value = self.last_loss = self.loss_of(y_true, score)
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


class Confirmation:
    """Is a rise of the loss that ADWIN found material, and does it persist on fresh labels?

    ADWIN picks its cut where the two parts of its window differ most, so the part it drops is
    biased low and the part it keeps biased high: on a stationary stream a lucky run of good
    predictions at the start of the window is such a "change". So the rise is tested again on
    the next ``labels`` losses, which the cut never saw, against the mean of ADWIN's whole
    window at the detection (``baseline``; the choice of the cut does not bias it). At every
    ``every`` of those labels the mean so far is a confirmation when it exceeds the baseline by
    ``min_increase`` (absolute) and by ``min_relative_increase`` times the baseline, and a
    one-sided z-test of the two means rejects equality at ``alpha`` divided by the number of
    looks (Bonferroni over the looks, so looking early costs no false-alarm rate). None of the
    looks succeeding refutes it.

    ``update`` returns True on confirmation, False on refutation, None while undecided.

    >>> c = Confirmation(baseline=0.1, n_baseline=2000, labels=500, every=250)
    >>> [c.update(v) for v in [0.0, 1.0] * 125][-1], c.n, round(c.mean, 2)  # 0.5 after 0.1
    (True, 250, 0.5)
    >>> c = Confirmation(baseline=0.25, n_baseline=4992, labels=500, every=250)
    >>> [c.update(v) for v in ([1.0] * 7 + [0.0] * 18) * 20][-1], c.n  # 0.28: under 0.3
    (False, 500)
    """

    def __init__(self, baseline: float, n_baseline: int, *, labels: int = 1000,
                 every: int = 250, alpha: float = 0.01, min_increase: float = 0.02,
                 min_relative_increase: float = 0.2) -> None:
        if labels < 1 or every < 1 or not 0.0 < alpha < 1.0 or n_baseline < 1:
            raise ValueError("labels, every and n_baseline must be >= 1, alpha in (0, 1)")
        self.baseline, self.n_baseline = baseline, n_baseline
        self.labels, self.every = labels, min(every, labels)
        looks = math.ceil(labels / self.every)
        self.z = NormalDist().inv_cdf(1.0 - alpha / looks)
        self.floor = baseline + max(min_increase, min_relative_increase * baseline)
        self.n, self.mean, self._m2 = 0, 0.0, 0.0  # Welford

    def update(self, loss: float) -> bool | None:
        self.n += 1
        d = loss - self.mean
        self.mean += d / self.n
        self._m2 += d * (loss - self.mean)
        if self.n % self.every and self.n < self.labels:
            return None
        if self.mean >= self.floor and self._significant():
            return True
        return False if self.n >= self.labels else None

    def _significant(self) -> bool:
        # the variance of the fresh labels stands for both sides (equal under the null)
        var = self._m2 / (self.n - 1) if self.n > 1 else 0.0
        se = math.sqrt(var * (1.0 / self.n + 1.0 / self.n_baseline))
        return se == 0.0 or (self.mean - self.baseline) / se >= self.z
