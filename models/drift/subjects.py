"""One monitored subject: ``KSWindow`` (numeric, KS test) and ``ChiSquareWindow`` (categorical).

Both keep a reference and a current window of ``size`` valid values (``TwoWindows``; policy
``"fixed"`` or ``"sliding"``), skip missing values (None, NaN, infinities), and test every
``check_every`` valid values once both windows are full. ``update(x)`` is the one-value path and
returns a result when it tested; ``extend(values)`` adds a batch without testing and ``test()``
tests now (how ``DriftMonitor`` drives many subjects on its own clock).

>>> rng = np.random.default_rng(7)
>>> ks = KSWindow(size=200, check_every=50)
>>> stream = np.r_[rng.normal(0, 1, 600), rng.normal(1, 1, 200)]  # mean shift at index 600
>>> [(i, r.statistic, r.pvalue < 0.01) for i, v in enumerate(stream)
...  if (r := ks.update(v)) is not None]  # doctest: +NORMALIZE_WHITESPACE
[(399, 0.065, False), (449, 0.075, False), (499, 0.075, False), (549, 0.095, False),
 (599, 0.08, False), (649, 0.14, False), (699, 0.26, True), (749, 0.43, True), (799, 0.49, True)]
>>> cat = ChiSquareWindow(size=4, check_every=4)
>>> [cat.update(c) for c in "abab" "abba"][-1]
Chi2Result(statistic=0.0, pvalue=1.0, dof=1)
>>> [cat.update(c) for c in ("c", None, "c", "c")]  # None is skipped
[None, None, None, None]
>>> r = cat.update("c")  # current window "cccc": a category the reference never saw
>>> r.statistic, round(r.pvalue, 6), r.dof
(8.0, 0.018316, 2)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt

from models.drift.chi2 import Chi2Result, chi2_test
from models.drift.ks import (
    MAX_EXACT_N,
    KSResult,
    ks_equal_from_counts,
    ks_from_counts,
    ks_test_sorted,
)
from models.drift.windows import Policy, TwoWindows

__all__ = ["OTHER", "ChiSquareWindow", "KSWindow"]

OTHER = "__other__"  # the category every value maps to once ``max_categories`` are known


class KSWindow:
    """Two-sample KS between a reference and a current window of one numeric stream.

    With a fixed reference the counts of reference values below each current value are kept
    per value (a ring aligned with the current window, slot = stream position modulo ``size``),
    so a check only searches the values that arrived since the last one and sorts the counts
    (``ks_equal_from_counts``). A sliding reference changes at every check, so it is re-sorted
    and the sorted current window searched in full.
    """

    def __init__(self, size: int = 1000, check_every: int = 250,
                 reference: Policy = "fixed") -> None:
        if check_every < 1:
            raise ValueError("check_every must be >= 1")
        self.windows = TwoWindows(size, reference, np.float64)
        self.check_every = check_every
        self._sorted_ref = np.empty(0)
        self._sorted_version = -1
        self._left = np.zeros(size if reference == "fixed" else 0, dtype=np.intp)
        self._right = np.zeros_like(self._left)
        self._tied = np.zeros(len(self._left), dtype=bool)  # left and right differ
        self._counted = 0  # stream position up to which _left/_right are filled

    def update(self, x: float | None, timestamp: float | None = None) -> KSResult | None:
        """Add one value; return the test result when this value completes a check interval."""
        if x is None or not math.isfinite(x):
            return None
        w = self.windows
        w.append(x, timestamp)
        if w.n_seen % self.check_every == 0 and w.ready:
            return self.test()
        return None

    def extend(self, values: npt.ArrayLike, timestamps: npt.NDArray[np.float64] | None = None,
               ) -> None:
        """Add a batch of values (non-finite ones are skipped, with their timestamps)."""
        arr = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(arr)
        if not ok.all():
            arr = arr[ok]
            timestamps = None if timestamps is None else timestamps[ok]
        self.windows.extend(arr, timestamps)

    def test(self) -> KSResult | None:
        """The KS test of the two windows now, or None until both are full."""
        w = self.windows
        if not w.ready:
            return None
        counts = self.counts()
        if counts is not None:
            return ks_equal_from_counts(*counts)
        if w.policy == "sliding":
            return ks_test_sorted(self._sorted_reference(), np.sort(w.current()))
        self._count_new()  # a fixed reference too large for the exact p-value
        right = np.sort(self._right)
        left = np.sort(self._left) if self._tied.any() else right
        return ks_from_counts(self._sorted_ref, w.current(), left, right)

    def counts(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None:
        """Reference counts ``<`` and ``<=`` each current value (ring order; views), for a
        ready fixed-reference window of at most ``MAX_EXACT_N`` values, else None."""
        w = self.windows
        if w.policy != "fixed" or not w.ready or w.size > MAX_EXACT_N:
            return None
        self._sorted_reference()
        self._count_new()
        return (self._left if self._tied.any() else self._right), self._right

    def _sorted_reference(self) -> npt.NDArray[np.float64]:
        w = self.windows
        if self._sorted_version != w.version:
            self._sorted_ref = np.sort(w.reference())
            self._sorted_version = w.version
            self._counted = w.pushed - w.size  # recount the whole current window
        return self._sorted_ref

    def _count_new(self) -> None:
        """Reference counts for the current values that arrived since the last test."""
        w, ref = self.windows, self._sorted_ref
        new = min(w.pushed - self._counted, w.size)
        if new == 0:
            return
        fresh = w.current()[w.size - new:]
        order = np.argsort(fresh)  # sorted keys halve the search time
        values = fresh[order]
        right = np.empty(new, dtype=np.intp)  # back in arrival order
        right[order] = found = np.searchsorted(ref, values, side="right")
        tied = np.empty(new, dtype=bool)
        tied[order] = ref.take(found - 1, mode="wrap") == values  # a reference value equals it
        if tied.any():
            left = np.empty(new, dtype=np.intp)
            left[order] = np.searchsorted(ref, values, side="left")
        else:
            left = right
        start = (w.pushed - new) % w.size  # ring slot of the oldest fresh value
        head = min(new, w.size - start)
        for ring, got in ((self._right, right), (self._left, left), (self._tied, tied)):
            ring[start:start + head] = got[:head]
            if head < new:  # wrapped around the end of the ring
                ring[:new - head] = got[head:]
        self._counted = w.pushed

    def reset(self) -> None:
        self.windows.reset()


class ChiSquareWindow:
    """Chi-squared test of category frequencies, reference vs current window.

    Categories are coded as integers in order of first appearance; after ``max_categories``
    distinct values every new one is counted as ``OTHER`` (bounded memory).
    """

    def __init__(self, size: int = 1000, check_every: int = 250, reference: Policy = "fixed",
                 max_categories: int = 1000) -> None:
        if check_every < 1:
            raise ValueError("check_every must be >= 1")
        if max_categories < 2:
            raise ValueError("max_categories must be >= 2")
        self.windows = TwoWindows(size, reference, np.int64)
        self.check_every = check_every
        self.max_categories = max_categories
        self._codes: dict[Hashable, int] = {}

    @property
    def categories(self) -> list[Hashable]:
        """Known categories, in code order."""
        return list(self._codes)

    def _code(self, value: Hashable) -> int:
        code = self._codes.get(value)
        if code is None:
            if len(self._codes) >= self.max_categories - 1:
                value = OTHER
            code = self._codes.setdefault(value, len(self._codes))
        return code

    def update(self, x: Hashable | None, timestamp: float | None = None) -> Chi2Result | None:
        """Add one category; return the test result when it completes a check interval."""
        if _missing(x):
            return None
        w = self.windows
        w.append(self._code(x), timestamp)
        if w.n_seen % self.check_every == 0 and w.ready:
            return self.test()
        return None

    def extend(self, values: Sequence[Hashable | None],
               timestamps: npt.NDArray[np.float64] | None = None) -> None:
        """Add a batch of categories in arrival order (missing ones are skipped)."""
        keep = [i for i, v in enumerate(values) if not _missing(v)]
        codes = np.fromiter((self._code(values[i]) for i in keep), np.int64, len(keep))
        if timestamps is not None and len(keep) != len(values):
            timestamps = timestamps[keep]
        self.windows.extend(codes, timestamps)

    def test(self) -> Chi2Result | None:
        """The chi-squared test of the two windows now, or None until both are full."""
        w = self.windows
        if not w.ready:
            return None
        k = len(self._codes)
        return chi2_test(np.bincount(w.reference(), minlength=k),
                         np.bincount(w.current(), minlength=k))

    def reset(self) -> None:
        """Forget both windows (known category codes are kept)."""
        self.windows.reset()


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))
