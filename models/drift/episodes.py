"""``Hysteresis``: turn a subject's stream of adjusted p-values into drift episodes.

An episode opens at the ``confirm_checks``-th consecutive check whose adjusted p-value is below
``alpha`` (1: at the first such check); while it is open further low p-values raise nothing. It closes after ``recovery_checks`` consecutive checks at or
above ``alpha`` (a low p-value in between restarts the count). ``update`` returns ``"open"`` or
``"close"`` on the checks where that happens, else None.

>>> h = Hysteresis(alpha=0.01, recovery_checks=2)
>>> [h.update(p, index=i) for i, p in enumerate([0.5, 0.001, 0.0001, 0.2, 0.003, 0.4, 0.6, 0.5])]
[None, 'open', None, None, None, None, 'close', None]
>>> h.in_drift, h.since
(False, None)

``low_checks`` counts the consecutive checks below alpha, those that confirmed the episode
included; the retrain policy signals on a lone subject whose episode persists:

>>> h = Hysteresis(alpha=0.01, confirm_checks=2)
>>> [(h.update(p, index=i), h.low_checks) for i, p in enumerate([0.001, 0.002, 0.003, 0.5])]
[(None, 1), ('open', 2), (None, 3), (None, 0)]
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Hysteresis", "Transition"]

Transition = Literal["open", "close"]


class Hysteresis:
    """Open/close state of one subject's drift episode."""

    def __init__(self, alpha: float = 0.01, recovery_checks: int = 3, confirm_checks: int = 1,
                 ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if recovery_checks < 1:
            raise ValueError("recovery_checks must be >= 1")
        if confirm_checks < 1:
            raise ValueError("confirm_checks must be >= 1")
        self.alpha = alpha
        self.recovery_checks = recovery_checks
        self.confirm_checks = confirm_checks
        self.reset()

    def reset(self) -> None:
        self.in_drift = False
        self.since: int | None = None  # index of the check that opened the episode
        self._normal = 0  # consecutive normal checks while in drift
        self._low = 0  # consecutive low checks while not in drift
        #: consecutive checks below alpha, in drift or not (a persistent episode keeps counting)
        self.low_checks = 0

    def update(self, pvalue: float, index: int) -> Transition | None:
        """Record one check's adjusted p-value, made at stream position ``index``."""
        if pvalue < self.alpha:
            self._normal = 0
            self.low_checks += 1
            if self.in_drift:
                return None
            self._low += 1
            if self._low < self.confirm_checks:
                return None
            self.in_drift, self.since, self._low = True, index, 0
            return "open"
        self._low = self.low_checks = 0
        if not self.in_drift:
            return None
        self._normal += 1
        if self._normal < self.recovery_checks:
            return None
        self.reset()
        return "close"
