"""``TwoWindows``: a reference window and a current window over one stream, in numpy buffers.

Both windows hold ``size`` values. The current window is always the latest ``size`` values.
The reference window depends on the policy:

- ``"fixed"``: the first ``size`` values after construction or ``reset()`` (frozen after that);
  the current window starts after it, so the first comparison needs ``2 * size`` values.
- ``"sliding"``: the ``size`` values just before the current window.

``version`` changes whenever the reference changes, so callers can cache anything derived
from it (a sorted copy, counts); ``pushed`` counts the values that entered the current window's
stream, so the current window holds stream positions ``pushed - current_size .. pushed - 1``. Each value carries a timestamp (``nan`` when unknown).
Values live in one linear buffer of twice the retained length; when it fills, the retained
tail moves to the front (one ``memmove`` per ``size`` values, no per-value shifting).

>>> w = TwoWindows(3, "sliding")
>>> w.extend(np.arange(7.0))
>>> w.ready, w.reference().tolist(), w.current().tolist()
(True, [1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
>>> f = TwoWindows(3, "fixed")
>>> f.extend(np.arange(7.0))
>>> f.reference().tolist(), f.current().tolist()
([0.0, 1.0, 2.0], [4.0, 5.0, 6.0])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Policy", "TwoWindows"]

Policy = Literal["fixed", "sliding"]
_NAN = float("nan")


class TwoWindows:
    """Reference and current windows of ``size`` values each (see the module docstring)."""

    def __init__(self, size: int, policy: Policy = "fixed", dtype: npt.DTypeLike = np.float64,
                 ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        if policy not in ("fixed", "sliding"):
            raise ValueError(f"policy must be 'fixed' or 'sliding', got {policy!r}")
        self.size = size
        self.policy: Policy = policy
        self._keep = size if policy == "fixed" else 2 * size  # values the linear buffer retains
        self._buf = np.zeros(2 * self._keep, dtype=dtype)
        self._ts = np.full(2 * self._keep, _NAN)
        self._ref = np.zeros(size if policy == "fixed" else 0, dtype=dtype)
        self._ref_ts = np.full(len(self._ref), _NAN)
        self.version = 0
        self.reset()

    def reset(self) -> None:
        """Forget every value (a fixed reference is re-learned from the next ``size`` values)."""
        self._end = 0  # values in the linear buffer
        self._ref_n = 0  # values in the fixed reference
        self.n_seen = 0
        self.pushed = 0  # values that entered the linear buffer (the current window's stream)
        self.version += 1

    def append(self, value: float, timestamp: float | None = None) -> None:
        """Add one value (the scalar path of ``extend``)."""
        self.n_seen += 1
        if self._ref_n < len(self._ref):
            self._ref[self._ref_n] = value
            self._ref_ts[self._ref_n] = _NAN if timestamp is None else timestamp
            self._ref_n += 1
            if self._ref_n == self.size:
                self.version += 1
            return
        if self._end == len(self._buf):
            self._compact(self._keep)
        self.pushed += 1
        self._buf[self._end] = value
        self._ts[self._end] = _NAN if timestamp is None else timestamp
        self._end += 1
        if self.policy == "sliding":
            self.version += 1

    def extend(self, values: npt.NDArray[Any],
               timestamps: npt.NDArray[np.float64] | None = None) -> None:
        """Add values in arrival order (``timestamps``: same length, or None)."""
        k = len(values)
        if k == 0:
            return
        if timestamps is None:
            timestamps = np.full(k, _NAN)
        self.n_seen += k
        take = min(k, len(self._ref) - self._ref_n)
        if take:
            self._ref[self._ref_n:self._ref_n + take] = values[:take]
            self._ref_ts[self._ref_n:self._ref_n + take] = timestamps[:take]
            self._ref_n += take
            if self._ref_n == self.size:
                self.version += 1
            values, timestamps, k = values[take:], timestamps[take:], k - take
            if k == 0:
                return
        self.pushed += k
        if k >= self._keep:
            values, timestamps, k = values[-self._keep:], timestamps[-self._keep:], self._keep
            self._end = 0
        elif self._end + k > len(self._buf):
            self._compact(self._keep - k)
        self._buf[self._end:self._end + k] = values
        self._ts[self._end:self._end + k] = timestamps
        self._end += k
        if self.policy == "sliding":
            self.version += 1

    def _compact(self, keep: int) -> None:
        keep = min(keep, self._end)
        start = self._end - keep
        self._buf[:keep] = self._buf[start:self._end]
        self._ts[:keep] = self._ts[start:self._end]
        self._end = keep

    @property
    def ready(self) -> bool:
        """Both windows hold ``size`` values."""
        return self.reference_size == self.size and self.current_size == self.size

    @property
    def current_size(self) -> int:
        return min(self._end, self.size)

    @property
    def reference_size(self) -> int:
        if self.policy == "fixed":
            return self._ref_n
        return min(max(self._end - self.size, 0), self.size)

    def current(self) -> npt.NDArray[Any]:
        """The current window, oldest first (a view: copy before keeping it)."""
        return self._buf[self._end - self.current_size:self._end]

    def reference(self) -> npt.NDArray[Any]:
        """The reference window, oldest first (a view: copy before keeping it)."""
        if self.policy == "fixed":
            return self._ref[:self._ref_n]
        stop = self._end - self.current_size
        return self._buf[stop - self.reference_size:stop]

    def current_times(self) -> npt.NDArray[np.float64]:
        return self._ts[self._end - self.current_size:self._end]

    def reference_times(self) -> npt.NDArray[np.float64]:
        if self.policy == "fixed":
            return self._ref_ts[:self._ref_n]
        stop = self._end - self.current_size
        return self._ts[stop - self.reference_size:stop]
