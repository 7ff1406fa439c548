"""Repeated log lines, rate-limited: an outage is reported, not transcribed.

A 24 s broker outage used to write 60,632 ERROR lines (11 MB): aiokafka logs every failed
fetch, metadata refresh and produce retry, and our own retries log theirs. :class:`RateLimit`
is a handler filter that lets the first ``burst`` records of a *kind* through in each
``window_s`` and drops the rest; the next record of that kind that passes says how many were
dropped. The kind is the logger and the message template (``record.msg``, before its arguments
are merged), so "retrying in 0.4 s" and "retrying in 0.8 s" are one kind while different
errors stay distinct. Records below WARNING pass untouched.

A library that fails in many ways at once (aiokafka, with the broker away: metadata, fetch,
heartbeat, coordinator and produce errors, each its own kind) also shares one budget of
``family_burst`` records per window across all its loggers (``aiokafka.*``); the first record
of a kind always passes. The engine's own loggers (``stream_app.*``) are limited per kind only.

>>> import logging
>>> f = RateLimit(burst=2, window_s=60.0, clock=iter(range(1000)).__next__)
>>> def rec(msg, *args):
...     return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, args, None)
>>> [f.filter(rec("fetch failed: %s", i)) for i in range(5)]
[True, True, False, False, False]
>>> f2 = RateLimit(burst=1, window_s=2.0, clock=iter([0, 1, 5]).__next__)
>>> f2.filter(rec("x")), f2.filter(rec("x"))
(True, False)
>>> r = rec("x"); f2.filter(r), r.getMessage()
(True, 'x [1 more like this in the last 2 s were not logged]')
>>> f3 = RateLimit(burst=5, family_burst=3, window_s=60.0, clock=iter(range(1000)).__next__)
>>> [f3.filter(rec(f"error {k}")) for k in "abab"] + [f3.filter(rec("error a"))]
[True, True, True, False, False]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimit", "install"]


class RateLimit(logging.Filter):
    """Per (logger, template): at most ``burst`` records per ``window_s`` (WARNING and up);
    per library (a logger's top-level name, ``stream_app`` aside): ``family_burst``."""

    def __init__(self, burst: int = 5, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 10_000,
                 family_burst: int = 10) -> None:
        super().__init__()
        self.burst, self.window_s, self._clock, self._max_kinds = burst, window_s, clock, max_kinds
        self.family_burst = family_burst
        #: kind -> [window start, passed in window, dropped since the last one passed]
        self._seen: dict[tuple[str, object], list[float]] = {}
        #: library -> [window start, passed in window]
        self._families: dict[str, list[float]] = {}
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, record.msg)
        now = self._clock()
        state = self._seen.get(kind)
        if state is None:
            if len(self._seen) >= self._max_kinds:
                self._seen.clear()  # bounded memory: forget, at worst a burst more per kind
            self._seen[kind] = [now, 1, 0]
            self._family_allows(record.name, now)  # counted, but a new kind always passes
            return True
        if now - state[0] >= self.window_s:
            state[0], state[1] = now, 0
        if state[1] >= self.burst or not self._family_allows(record.name, now):
            state[2] += 1
            self.dropped += 1
            return False
        state[1] += 1
        if state[2]:
            record.msg = (f"{record.getMessage()} [{int(state[2])} more like this in the last "
                          f"{self.window_s:g} s were not logged]")
            record.args = ()
            state[2] = 0
        return True

    def _family_allows(self, logger: str, now: float) -> bool:
        """Count one record against its library's budget; False once the budget is spent."""
        family = logger.partition(".")[0]
        if family == "stream_app":
            return True
        state = self._families.get(family)
        if state is None or now - state[0] >= self.window_s:
            state = self._families[family] = [now, 0]
        if state[1] >= self.family_burst:
            return False
        state[1] += 1
        return True


def install(logger: logging.Logger | None = None, **options: float) -> RateLimit:
    """Attach one :class:`RateLimit` to every handler of ``logger`` (default: the root)."""
    limit = RateLimit(**options)  # type: ignore[arg-type]
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RateLimit) for f in handler.filters):
            handler.addFilter(limit)
    return limit
