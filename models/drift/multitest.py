"""Multiple-testing correction of the p-values of one check across many subjects.

- ``"bh"`` (Benjamini-Hochberg, controls the false discovery rate): with the ``m`` p-values in
  ascending order, ``adj[i] = min_{j >= i} p[j] * m / (j + 1)``, capped at 1; the values of
  ``statsmodels``' ``multipletests(method="fdr_bh")`` and ``scipy.stats.false_discovery_control``
  (computed as scipy does, ``p * (m / rank)``).
- ``"bonferroni"`` (controls the family-wise error rate): ``min(p * m, 1)``.

A subject drifts at level ``alpha`` when its adjusted p-value is below ``alpha``.

>>> adjust_pvalues([0.01, 0.04, 0.03, 0.2])  # ranked: .01*4/1, .03*4/2, .04*4/3, .2*4/4
[0.04, 0.05333333333333333, 0.05333333333333333, 0.2]
>>> adjust_pvalues([0.01, 0.04, 0.03, 0.5], "bonferroni")
[0.04, 0.16, 0.12, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["Correction", "adjust_pvalues"]

Correction = Literal["bh", "bonferroni"]


def adjust_pvalues(pvalues: Sequence[float], method: Correction = "bh") -> list[float]:
    """Adjusted p-values, in the input order (NaN is not allowed)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("pvalues must be a flat sequence")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = len(p)
    if m == 0:
        return []
    if method == "bonferroni":
        return np.minimum(p * m, 1.0).tolist()
    if method != "bh":
        raise ValueError(f"method must be 'bh' or 'bonferroni', got {method!r}")
    order = np.argsort(p, kind="stable")
    ranked = p[order] * (m / np.arange(1, m + 1))
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    return out.tolist()
