"""``Percentiles``: p50/p95/p99 of a stream of non-negative floats in flat memory.

Samples fall in logarithmic buckets (the DDSketch layout): bucket ``i`` holds values in
``(gamma**(i-1), gamma**i]`` with ``gamma = (1 + a) / (1 - a)``, so every quantile comes back
within relative error ``a`` (1 % by default). Bucket indices are clamped to the range
``[1e-9, 1e12]``, which caps the sketch at about 2,400 counters however many samples arrive.
Values at or below ``1e-9`` (zero, negatives) share one bucket and report as 0.0; NaN and infinities are ignored.

>>> p = Percentiles()
>>> for v in range(1, 1001):
...     p.add(float(v))
>>> s = p.summary()
>>> s["n"], s["max"]
(1000, 1000.0)
>>> [abs(s[k] - want) / want < 0.01 for k, want in (("p50", 500), ("p95", 950), ("p99", 990))]
[True, True, True]
>>> Percentiles().summary()
{'n': 0, 'p50': None, 'p95': None, 'p99': None, 'max': None}
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["Percentiles"]

_LOW = 1e-9
_HIGH = 1e12


class Percentiles:
    """Streaming quantiles with bounded relative error and a bounded number of buckets."""

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError("relative_accuracy must be in (0, 1)")
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        self._lo = self._index(_LOW)
        self._hi = self._index(_HIGH)
        self._buckets: dict[int, int] = {}
        self._zeros = 0
        self.n = 0
        self.max: float | None = None

    def _index(self, v: float) -> int:
        return math.ceil(math.log(v) * self._inv_log_gamma)

    def add(self, v: float) -> None:
        """Record one sample."""
        self.add_many((v,))

    def add_many(self, values: Iterable[float]) -> None:
        """Record several samples (a batch's latencies) in one call.

        NaN and infinities are skipped; zero and negatives share one bucket; values beyond
        ``1e12`` land in the top bucket but still count for ``max``:

        >>> p = Percentiles()
        >>> p.add_many([0.0, 0.5, 3.0, 3.0, float("nan"), 1e15, -2.0])
        >>> p.n, p.max, p.n_buckets, p._zeros
        (6, 1000000000000000.0, 4, 2)
        """
        buckets, index, lo, hi = self._buckets, self._index, self._lo, self._hi
        isfinite = math.isfinite
        top = self.max
        for v in values:
            if not isfinite(v):
                continue
            self.n += 1
            if top is None or v > top:
                top = v
            if v <= _LOW:
                self._zeros += 1
                continue
            i = index(v)
            i = lo if i < lo else hi if i > hi else i
            buckets[i] = buckets.get(i, 0) + 1
        self.max = top

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0 <= q <= 1), or None before the first sample."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Several quantiles in one pass over the buckets (``qs`` ascending)."""
        if self.n == 0:
            return [None] * len(qs)
        ranks = [q * (self.n - 1) for q in qs]
        out: list[float | None] = []
        seen = self._zeros
        ordered = iter(sorted(self._buckets.items()))
        value = 0.0
        for rank in ranks:
            while seen <= rank:
                i, count = next(ordered)
                seen += count
                value = 2.0 * self._gamma ** i / (self._gamma + 1.0)
            out.append(min(value, self.max) if self.max is not None else value)
        return out

    def summary(self) -> dict[str, float | int | None]:
        """``n``, ``p50``, ``p95``, ``p99`` and ``max``: JSON-ready, None when empty."""
        p50, p95, p99 = self.quantiles((0.5, 0.95, 0.99))
        return {"n": self.n, "p50": p50, "p95": p95, "p99": p99, "max": self.max}

    def buckets(self) -> list[tuple[float, int]]:
        """``(value, count)`` of every bucket in use, ascending; ``value`` is the one the
        quantiles report for it (0.0 for the zeros). A bucket's count never decreases, so
        cumulative counts below any bound only grow (a Prometheus histogram, read at scrape).

        >>> p = Percentiles()
        >>> p.add_many([0.0, 1.0, 1.0, 100.0])
        >>> [(round(v), c) for v, c in p.buckets()]  # within 1 %
        [(0, 1), (1, 2), (100, 1)]
        """
        g = self._gamma
        out = [(0.0, self._zeros)] if self._zeros else []
        out += [(2.0 * g ** i / (g + 1.0), c) for i, c in sorted(self._buckets.items())]
        return out

    @property
    def n_buckets(self) -> int:
        """The number of buckets in use (bounded; see the module docstring)."""
        return len(self._buckets) + (1 if self._zeros else 0)
