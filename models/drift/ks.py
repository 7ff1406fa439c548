"""Two-sample Kolmogorov-Smirnov test on sorted samples, with scipy's p-value.

``ks_test_sorted(ref, cur)`` returns what ``scipy.stats.ks_2samp(ref, cur)`` returns for the
two-sided test with ``method='auto'``, statistic and p-value, for ties too:

- **statistic**: ``F_cur - F_ref`` only peaks at a current value and ``F_ref - F_cur`` only
  just below one (or at the end, where it is 0), so with the current window sorted both peaks
  come from the reference counts at the current values: ``(i + 1) / n2 - #(ref <= cur[i]) / n1``
  and ``#(ref < cur[i]) / n1 - i / n2`` (in a run of tied current values the last, resp. first,
  carries the exact count and the others only lower the candidates). That is one
  ``np.searchsorted`` over the sorted reference, two when the samples share a value (``<`` and
  ``<=`` then differ). Everything is an integer until the final division.
- **p-value** (scipy's ``auto``): exact when ``max(n1, n2) <= 10_000``, asymptotic
  (``scipy.stats.kstwo.sf(d, round(n1 * n2 / (n1 + n2)))``) otherwise. In exact mode scipy rounds
  the statistic to ``h / lcm(n1, n2)``; so do we. For equal sizes (what the monitors compare) the
  exact tail ``P(D >= h/n) = 2 * sum_k (-1)**(k+1) C(2n, n-kh) / C(2n, n)`` is evaluated here
  from one cached cumulative product per ``n``, in a few microseconds. Two cases defer to
  ``scipy.stats.ks_2samp`` itself: unequal sizes in exact mode (slow; the monitors never compare
  unequal windows), and an exact tail above ``1 - 1e-6`` (near-identical samples, frequent for
  low-cardinality features), where scipy's own sum can round above 1 and make scipy fall back to
  the asymptotic value, up to 5e-7 away. There the p-value depends on ``(n, h)`` only, so
  scipy is asked once per pair, on canonical samples, and the answer cached.

>>> ref = np.sort(np.array([0.1, 0.4, 0.4, 0.9]))
>>> cur = np.sort(np.array([0.4, 1.2, 1.5, 2.0]))
>>> res = ks_test_sorted(ref, cur)
>>> float(res.statistic), round(float(res.pvalue), 6)
(0.75, 0.228571)
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = ["KSResult", "ks_equal_from_counts", "ks_from_counts", "ks_pvalue_equal", "ks_test",
           "ks_test_sorted"]

MAX_EXACT_N = 10_000  # scipy's 'auto': exact when both sizes are at most this
_NEAR_ONE = 1.0 - 1e-6  # above this, ask scipy (see the module docstring)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


class KSResult(NamedTuple):
    """The two-sided KS statistic and p-value (field names as in scipy's ``KstestResult``)."""

    statistic: float
    pvalue: float


def ks_test(data1: npt.ArrayLike, data2: npt.ArrayLike) -> KSResult:
    """``ks_test_sorted`` on unsorted samples (sorts copies of both; NaN is an error).

    >>> ks_test([3.0, 1.0, 2.0], [2.0, 1.0, 3.0])
    KSResult(statistic=0.0, pvalue=1.0)
    """
    a, b = np.asarray(data1, dtype=np.float64), np.asarray(data2, dtype=np.float64)
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("samples must not contain NaN")
    return ks_test_sorted(np.sort(a), np.sort(b))


def ks_test_sorted(ref: FloatArray, cur: FloatArray) -> KSResult:
    """Two-sided two-sample KS test of two ascending, NaN-free float arrays."""
    n1, n2 = len(ref), len(cur)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples must be non-empty")
    right = np.searchsorted(ref, cur, side="right")
    if np.any(ref.take(right - 1, mode="wrap") == cur):  # a value shared by both samples
        left = np.searchsorted(ref, cur, side="left")
    else:
        left = right
    return ks_from_counts(ref, cur, left, right)


def ks_from_counts(ref: FloatArray, cur: FloatArray, left: IntArray, right: IntArray,
                   ) -> KSResult:
    """The KS test from reference counts at the current values, in ascending current order.

    ``left[i]`` and ``right[i]`` count the reference values ``<`` and ``<=`` the ``i``-th
    smallest current value. ``ref`` and ``cur`` (any order) are only read when the p-value is
    deferred to scipy (see the module docstring).
    """
    n1, n2 = len(ref), len(cur)
    i = _positions(n2)  # current values < cur[i] (exact for the first of a run of ties)
    if max(n1, n2) > MAX_EXACT_N:
        return _asymptotic(n1, n2, left, right, i)
    if n1 == n2:  # n * ECDF gaps: F_ref - F_cur just below cur[i], F_cur - F_ref at cur[i]
        h = max(int((left - i).max()), int(1 - (right - i).min()), 0)
        lcm = n1
    else:
        up = int((left * n2 - i * n1).max())
        down = int(((i + 1) * n1 - right * n2).max())
        g = math.gcd(n1, n2)
        h, lcm = max(up, down, 0) // g, (n1 // g) * n2
    d = h / lcm
    if h == 0:
        return KSResult(d, 1.0)
    if n1 != n2:
        return KSResult(d, _scipy_pvalue(ref, cur))
    return KSResult(d, _pvalue_equal(n1, h))


def ks_equal_from_counts(left: IntArray, right: IntArray) -> KSResult:
    """The KS test of two samples of one size ``n`` (at most ``MAX_EXACT_N``) from counts.

    ``left[i]`` and ``right[i]`` count the ``n`` reference values ``<`` and ``<=`` the ``i``-th
    current value, the current values in any order: counts are monotone in the value, so
    sorting the counts sorts the current window (``ks_from_counts`` on sorted counts, without
    the samples: equal sizes never defer to scipy with the samples themselves).

    >>> ref, cur = np.array([0.1, 0.4, 0.4, 0.9]), np.array([2.0, 0.4, 1.5, 1.2])
    >>> left, right = np.searchsorted(ref, cur, "left"), np.searchsorted(ref, cur, "right")
    >>> ks_equal_from_counts(left, right) == ks_test(ref, cur)
    True
    """
    n = len(right)
    if n > MAX_EXACT_N or len(left) != n:
        raise ValueError("counts must have one length n <= MAX_EXACT_N")
    gap = np.sort(right) - _positions(n)  # n * (F_ref - F_cur) at each current value
    low = int(gap.min())
    high = int(gap.max()) if left is right else int((np.sort(left) - _positions(n)).max())
    h = max(high, 1 - low, 0)
    return KSResult(h / n, _pvalue_equal(n, h)) if h else KSResult(0.0, 1.0)


@lru_cache(maxsize=4096)
def _pvalue_equal(n: int, h: int) -> float:
    """scipy's exact p-value for sizes ``n, n`` and statistic ``h / n`` (``h >= 1``)."""
    p = ks_pvalue_equal(n, h)
    if p > _NEAR_ONE:  # scipy's own sum may round above 1 here and fall back to asymptotics
        return _scipy_pvalue_equal(n, h)
    return max(p, 0.0)


def ks_pvalue_equal(n: int, h: int) -> float:
    """Exact ``P(D_{n,n} >= h/n)`` for two samples of size ``n`` under the null (``1 <= h``).

    >>> round(ks_pvalue_equal(4, 3), 15) == round(2 * 8 / 70, 15)  # 2 * C(8, 1) / C(8, 4)
    True
    """
    if h <= 0:
        return 1.0
    terms = _binomial_ratios(n)[h - 1::h]  # C(2n, n-kh) / C(2n, n), k = 1 .. n // h
    paired = terms[0::2].copy()
    paired[: len(terms) // 2] -= terms[1::2]
    return float(2.0 * paired.sum())


@lru_cache(maxsize=8)
def _binomial_ratios(n: int) -> FloatArray:
    """``C(2n, n-m) / C(2n, n)`` for ``m = 1 .. n``: a running product of ``(n-j)/(n+1+j)``."""
    j = np.arange(n, dtype=np.float64)
    ratios: FloatArray = np.cumprod((n - j) / (n + 1.0 + j), dtype=np.float64)
    ratios.flags.writeable = False
    return ratios


def _scipy_pvalue(ref: FloatArray, cur: FloatArray) -> float:
    with warnings.catch_warnings():  # "Exact calculation unsuccessful. Switching to asymp"
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ks_2samp(ref, cur).pvalue)


@lru_cache(maxsize=1024)
def _scipy_pvalue_equal(n: int, h: int) -> float:
    """scipy's exact-mode p-value for sizes ``n, n`` and statistic ``h / n`` (a function of
    ``(n, h)`` alone), from a canonical pair of samples: ``0 .. n-1`` and the same shifted by
    ``h - 0.5``, whose statistic is exactly ``h / n``."""
    ref = np.arange(n, dtype=np.float64)
    return _scipy_pvalue(ref, ref + (h - 0.5))


def _kstwo_sf(d: float, n1: int, n2: int) -> float:
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(stats.kstwo.sf(d, np.round(m * n / (m + n))))


def _asymptotic(n1: int, n2: int, left: IntArray, right: IntArray, i: IntArray) -> KSResult:
    """scipy's large-sample path: the statistic as a float ECDF difference, Smirnov's tail."""
    up = (left / n1 - i / n2).max()
    down = ((i + 1) / n2 - right / n1).max()
    d = float(max(up, down, 0.0))
    return KSResult(d, min(max(_kstwo_sf(d, n1, n2), 0.0), 1.0))


@lru_cache(maxsize=8)
def _positions(n: int) -> IntArray:
    out = np.arange(n, dtype=np.intp)
    out.flags.writeable = False
    return out
