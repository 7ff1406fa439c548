"""Pearson's chi-squared test of category counts in a reference vs a current window.

``chi2_test(ref_counts, cur_counts)`` builds the 2 x k contingency table (row 0 the reference,
row 1 the current window, one column per category) and returns what
``scipy.stats.chi2_contingency(table, correction=False)`` returns for it: same expected
frequencies, same sum, p-value from the same ``scipy.special.chdtrc``.

Categories absent from *both* windows are dropped (scipy refuses a zero expected frequency).
A category seen only in the current window stays in the table with a reference count of 0:
that is the point, a new category is evidence of drift. With one category left (or none) the
table has no degrees of freedom: statistic 0, p-value 1, as in scipy.

>>> chi2_test([50, 50, 0], [50, 40, 10])
Chi2Result(statistic=11.11111111111111, pvalue=0.0038659201394728067, dof=2)
>>> chi2_test([7, 0], [3, 0])
Chi2Result(statistic=0.0, pvalue=1.0, dof=0)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import special

__all__ = ["Chi2Result", "chi2_test"]


class Chi2Result(NamedTuple):
    statistic: float
    pvalue: float
    dof: int


def chi2_test(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> Chi2Result:
    """Chi-squared test of homogeneity of two count vectors over the same categories."""
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim != 1:
        raise ValueError("ref_counts and cur_counts must be 1-d and of equal length")
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    if ref.sum() == 0 or cur.sum() == 0:
        raise ValueError("both windows need at least one observation")
    seen = (ref + cur) > 0
    observed = np.stack([ref[seen], cur[seen]])
    dof = observed.shape[1] - 1
    if dof == 0:
        return Chi2Result(0.0, 1.0, 0)
    expected = np.multiply(observed.sum(axis=1, keepdims=True),
                           observed.sum(axis=0, keepdims=True)) / observed.sum()
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return Chi2Result(statistic, float(special.chdtrc(dof, statistic)), dof)
