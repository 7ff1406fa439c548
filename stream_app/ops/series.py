"""The dashboard's bounded memory: rings of recent samples, and the maths of one sample.

Pure: no I/O and no clock (times are given), so everything here is tested with plain values.
:class:`Rings` keeps the last ``size`` samples of at most ``max_series`` named series on one
time column; :func:`interval_quantiles` turns two reads of a cumulative latency sketch into the
quantiles of what happened between them; :func:`rate` is a counter's rate between two reads.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Mapping, Sequence

__all__ = ["Rings", "interval_quantiles", "rate"]


class Rings:
    """The last ``size`` samples of each series, aligned on one time column.

    A series that appears later is padded with None before its first value, and one that is
    missing from a sample gets None there; a series with no value left in the window is
    forgotten, and at most ``max_series`` are kept (values refused are counted in ``dropped``), so
    the memory is bounded by ``size * (max_series + 1)`` values whatever the names.

    >>> r = Rings(size=3, max_series=2)
    >>> r.add(1.0, {"a": 1.0})
    >>> r.add(2.0, {"a": 2.0, "b": 5.0, "c": 7.0})
    >>> r.add(3.0, {"b": 6.0})
    >>> r.since(None)
    {'t': [1.0, 2.0, 3.0], 'series': {'a': [1.0, 2.0, None], 'b': [None, 5.0, 6.0]}}
    >>> r.dropped, r.since(2.0)
    (1, {'t': [3.0], 'series': {'a': [None], 'b': [6.0]}})
    >>> r.add(4.0, {}); r.add(5.0, {}); r.add(6.0, {})
    >>> r.since(5.0)["series"]
    {}
    """

    def __init__(self, size: int, max_series: int) -> None:
        self.size, self.max_series = size, max_series
        self.t: deque[float] = deque(maxlen=size)
        self._series: dict[str, deque[float | None]] = {}
        self._nones: dict[str, int] = {}  # trailing samples without a value, per series
        self.dropped = 0

    def add(self, t: float, values: Mapping[str, float | None]) -> None:
        """One sample at time ``t`` (times ascending)."""
        self.t.append(t)
        for name, ring in self._series.items():
            v = values.get(name)
            ring.append(v)
            self._nones[name] = 0 if v is not None else self._nones[name] + 1
        for name, v in values.items():
            if name in self._series or v is None:
                continue
            if len(self._series) >= self.max_series:
                self.dropped += 1
                continue
            ring = deque([None] * (len(self.t) - 1), maxlen=self.size)
            ring.append(v)
            self._series[name], self._nones[name] = ring, 0
        for name in [n for n, k in self._nones.items() if k >= self.size]:
            del self._series[name], self._nones[name]

    def since(self, t: float | None) -> dict[str, object]:
        """The samples after time ``t`` (all of them for None), as JSON-ready columns."""
        times = list(self.t)
        start = 0 if t is None else bisect_right(times, t)
        return {"t": times[start:],
                "series": {n: list(r)[start:] for n, r in self._series.items()}}


def rate(before: tuple[float, float] | None, now: tuple[float, float]) -> float | None:
    """Per second between two ``(time, counter)`` reads; None without an earlier read, and 0
    when the counter went back (a restarted count).

    >>> rate(None, (1.0, 5)), rate((1.0, 5), (3.0, 45)), rate((1.0, 5), (2.0, 0))
    (None, 20.0, 0.0)
    """
    if before is None or now[0] <= before[0]:
        return None
    return max(0.0, (now[1] - before[1]) / (now[0] - before[0]))


def interval_quantiles(before: Mapping[float, int], now: Sequence[tuple[float, int]],
                       qs: Sequence[float]) -> list[float | None]:
    """Quantiles of the samples a cumulative sketch gained between two reads.

    ``before`` maps each bucket's value to its count at the first read, ``now`` is
    ``Percentiles.buckets()`` at the second (ascending values); bucket counts only grow, so
    their differences are the new samples, whose quantiles come back within the sketch's
    relative error (``qs`` ascending). Nothing new (or a sketch that was replaced: a count went back) gives None.

    >>> first = {1.0: 10, 2.0: 5}
    >>> interval_quantiles(first, [(1.0, 10), (2.0, 6), (8.0, 3)], (0.5, 0.99))
    [8.0, 8.0]
    >>> interval_quantiles(first, [(1.0, 10), (2.0, 5)], (0.5,))
    [None]
    """
    new = [(v, c - before.get(v, 0)) for v, c in now]
    if any(c < 0 for _, c in new):
        return [None] * len(qs)
    n = sum(c for _, c in new)
    if n == 0:
        return [None] * len(qs)
    out: list[float | None] = []
    seen, i = 0, -1
    for q in qs:
        rank = q * (n - 1)
        while seen <= rank:
            i += 1
            seen += new[i][1]
        out.append(new[i][0])
    return out
