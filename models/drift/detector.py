"""``KSDetector``: the two-sample KS window test behind River's drift-detector interface.

``update(x)`` then ``drift_detected``, like ``river.drift.KSWIN``, so the two swap in a
harness. Unlike KSWIN (a random sample of an old window against the last ``stat_size`` values,
tested at every value), this compares a reference window against the current window of
``window_size`` values every ``check_every`` values (``KSWindow``), with scipy's p-value, and
flags drift when the p-value is below ``alpha``. After a drift both windows are emptied, as
KSWIN does, so the next ``window_size`` values become the new reference (the new concept)
instead of firing on every later check. None and non-finite values are ignored.

>>> import random
>>> rng = random.Random(12345)
>>> detector = KSDetector(alpha=0.0001, window_size=100, check_every=10)
>>> data_stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
>>> for i, val in enumerate(data_stream):
...     detector.update(val)
...     if detector.drift_detected:
...         print(f"Change detected at index {i}, input value: {val}")
Change detected at index 1039, input value: 4
"""

from __future__ import annotations

from river.base import DriftDetector

from models.drift.subjects import KSWindow
from models.drift.windows import Policy

__all__ = ["KSDetector"]


class KSDetector(DriftDetector):
    """Windowed two-sample KS drift detector with River's ``update`` / ``drift_detected``."""

    def __init__(self, alpha: float = 0.005, window_size: int = 1000, check_every: int = 250,
                 reference: Policy = "fixed") -> None:
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        self.alpha = alpha
        self.window_size = window_size
        self.check_every = check_every
        self.reference = reference
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._window = KSWindow(self.window_size, self.check_every, self.reference)
        self.statistic: float | None = None  # of the last test
        self.p_value: float | None = None

    def update(self, x: int | float) -> None:  # type: ignore[override]
        """Add one value; ``drift_detected`` tells whether it completed a drifting check."""
        self._drift_detected = False
        result = self._window.update(x)
        if result is None:
            return
        self.statistic, self.p_value = result
        if result.pvalue < self.alpha:
            self._drift_detected = True
            self._window.reset()

    @classmethod
    def _unit_test_params(cls):  # type: ignore[no-untyped-def]
        yield {"window_size": 30, "check_every": 10}
