"""Multiple-testing correction of the p-values of one check across many subjects.

- ``"holm"`` (Holm's step-down, the monitor's default: controls the family-wise error rate in
  the strong sense): with the ``m`` p-values in ascending order,
  ``adj[i] = max_{j <= i} min((m - j) * p[j], 1)`` (0-based ``j``), as ``statsmodels``'
  ``multipletests(method="holm")``.
- ``"bh"`` (Benjamini-Hochberg, controls the false discovery rate): with the ``m`` p-values in
  ascending order, ``adj[i] = min_{j >= i} p[j] * m / (j + 1)``, capped at 1; the values of
  ``statsmodels``' ``multipletests(method="fdr_bh")`` and ``scipy.stats.false_discovery_control``
  (computed as scipy does, ``p * (m / rank)``).
- ``"bonferroni"`` (controls the family-wise error rate): ``min(p * m, 1)``.

A subject drifts at level ``alpha`` when its adjusted p-value is below ``alpha``.

Why the monitor defaults to Holm: a drift monitor keeps testing while some subjects are already in drift.
BH bounds the expected *share* of false discoveries among the discoveries, so once one
subject's p-value is tiny it lets the next one through at ``2 * alpha / m``, the third at
``3 * alpha / m``, and so on: one real shift relaxes the threshold of every other subject, and
the unshifted ones open false episodes (issue 10 saw one at an adjusted BH p of 0.002). Holm
bounds the probability of *any* false rejection among the subjects without drift, at every
check and whatever the others do: with one subject in drift the others are tested against
``alpha / (m - 1)``, all but unrelaxed. It is uniformly at least as powerful as Bonferroni and,
on one shifted subject among null ones, as fast as BH (its smallest p-value gets the same
``p * m``).

>>> adjust_pvalues([0.01, 0.04, 0.03, 0.2], "holm")  # ranked: .01*4, .03*3, .04*2, .2*1, max so far
[0.04, 0.09, 0.09, 0.2]
>>> adjust_pvalues([0.01, 0.04, 0.03, 0.2])  # BH: ranked .01*4/1, .03*4/2, .04*4/3, .2*4/4
[0.04, 0.05333333333333333, 0.05333333333333333, 0.2]
>>> adjust_pvalues([0.01, 0.04, 0.03, 0.5], "bonferroni")
[0.04, 0.16, 0.12, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["CORRECTIONS", "Correction", "adjust_pvalues"]

Correction = Literal["holm", "bh", "bonferroni"]
CORRECTIONS: tuple[Correction, ...] = ("holm", "bh", "bonferroni")


def adjust_pvalues(pvalues: Sequence[float], method: Correction = "bh") -> list[float]:
    """Adjusted p-values, in the input order (NaN is not allowed)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("pvalues must be a flat sequence")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    if method not in CORRECTIONS:
        raise ValueError(f"method must be one of {CORRECTIONS}, got {method!r}")
    m = len(p)
    if m == 0:
        return []
    if method == "bonferroni":
        return np.minimum(p * m, 1.0).tolist()
    order = np.argsort(p, kind="stable")
    if method == "holm":
        ranked = np.maximum.accumulate(np.minimum(p[order] * np.arange(m, 0, -1), 1.0))
    else:
        ranked = p[order] * (m / np.arange(1, m + 1))
        ranked = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = ranked
    return out.tolist()
