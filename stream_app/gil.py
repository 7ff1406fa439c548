"""The GIL switch interval, chosen by what the served model costs.

``sys.setswitchinterval`` is how long a thread holds the GIL before another thread that asks
for it gets it. The worker's consumer thread (aiokafka's fetches under Faust) asks at each step
of a fetch, so behind a busy event loop each step waits up to the interval. A slow model
(milliseconds per score or learn, such as a 100-tree forest) keeps the loop in pure Python for
long runs, and its predictions queue behind those fetches: at 200 events/s its prediction p99
was 967 ms with the 5 ms interval and 735 ms with 1 ms. A fast model gains nothing from 1 ms
and loses ~10 % of its events/s on the peers work to the extra switches (``bench/RESULTS.md``).

So with ``gil_switch_interval_s = "auto"`` (the default) the worker measures the model's busy
time per item (scores and learns, without the time it yielded to other tasks) and switches
between the two, with hysteresis so that it does not flap:

>>> applied = []
>>> gil = SwitchInterval(apply=applied.append)
>>> gil.current
0.005
>>> gil.observe(0.015, 500)            # a logistic regression: 30 us an event
>>> gil.current, applied
(0.005, [])
>>> for _ in range(5):
...     gil.observe(1.5, 500)          # a forest: 3 ms an event
>>> gil.current, applied
(0.001, [0.001])
>>> gil.observe(0.3, 500)              # 0.6 ms an event: between the two bounds, it stays
>>> gil.current
0.001
>>> for _ in range(20):
...     gil.observe(0.015, 500)
>>> gil.current, applied
(0.005, [0.001, 0.005])
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["FAST_S", "SLOW_S", "SwitchInterval"]

log = logging.getLogger(__name__)

#: the interval for a fast model (CPython's own default)
FAST_S: Final = 0.005
#: the interval for a slow model
SLOW_S: Final = 0.001
#: a model busy at least this long per item is slow
SLOW_ABOVE_S: Final = 0.001
#: and one busy less than this long per item is fast again
FAST_BELOW_S: Final = 0.00025


class SwitchInterval:
    """The process's switch interval, from the model's busy time per item (module docstring).

    The cost is an exponentially weighted mean over batches (weight ``alpha`` for the newest),
    so one slow batch (a cold cache, a GC pass) does not switch.
    """

    def __init__(self, *, alpha: float = 0.3,
                 apply: Callable[[float], None] = sys.setswitchinterval) -> None:
        self.alpha = alpha
        self._apply = apply
        #: the interval in force
        self.current = FAST_S
        #: the model's busy seconds per item, averaged (None until the first batch)
        self.cost_s: float | None = None

    def start(self) -> None:
        """Put :attr:`current` in force (the worker calls it once, before it serves)."""
        self._apply(self.current)

    def observe(self, busy_s: float, items: int) -> None:
        """One batch: ``items`` scored or learned in ``busy_s`` seconds of the model's work."""
        if items <= 0:
            return
        per = busy_s / items
        cost = per if self.cost_s is None else self.cost_s + self.alpha * (per - self.cost_s)
        self.cost_s = cost
        if cost >= SLOW_ABOVE_S:
            want = SLOW_S
        elif cost < FAST_BELOW_S:
            want = FAST_S
        else:
            return
        if want != self.current:
            self.current = want
            self._apply(want)
            log.info("GIL switch interval %.0f ms: the model is busy %.2f ms per item",
                     want * 1000, cost * 1000)
