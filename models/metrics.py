"""Prequential (test-then-train) metrics of a binary classifier, over the label stream.

Each joined label updates two sets of counters: over every label seen (cumulative) and over
the last ``window`` labels (a ring buffer); their values are River's metrics' values (tested
against River). A score counts as a positive prediction when it is strictly above the threshold (``decide``), as River's ``predict_one``
and scikit-learn do at 0.5, so an untrained logistic regression (score exactly 0.5) predicts
negative. Every value in ``snapshot()`` is a finite float or None when undefined (no labels
yet, one class only for ROC AUC, no predicted positives for precision, ...).

>>> m = PrequentialMetrics(window=2)
>>> for y, score in [(True, 0.9), (False, 0.2), (True, 0.4)]:
...     m.update(y, score, threshold=0.5)
>>> snap = m.snapshot()
>>> snap["n"], round(snap["cumulative"]["accuracy"], 4), snap["rolling"]["accuracy"]
(3, 0.6667, 0.5)
>>> snap["cumulative"]["precision"], snap["cumulative"]["recall"], snap["rolling"]["precision"]
(1.0, 0.5, None)
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from typing import Any

from scipy import integrate

from models.percentiles import Percentiles

__all__ = ["Percentiles", "PrequentialMetrics", "decide"]


def decide(score: float, threshold: float) -> bool:
    """The predicted class for a score: positive when strictly above the threshold.

    >>> decide(0.5, 0.5), decide(0.51, 0.5)
    (False, True)
    """
    return score > threshold


class PrequentialMetrics:
    """Accuracy, ROC AUC, log loss, precision, recall and F1, cumulative and rolling.

    ``n_thresholds`` is River's ROC AUC discretisation (its default, 10, is coarse but cheap).
    """

    def __init__(self, window: int = 1000, *, n_thresholds: int = 10) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._cumulative = _Metrics(None, n_thresholds)
        self._rolling = _Metrics(window, n_thresholds)

    def update(self, y_true: bool, score: float, threshold: float) -> None:
        """Record one label against the score the model gave before learning it."""
        if not math.isfinite(score):
            raise ValueError(f"score must be finite, got {score!r}")
        y = bool(y_true)
        predicted = decide(score, threshold)
        self._cumulative.update(y, score, predicted)
        self._rolling.update(y, score, predicted)

    @property
    def n(self) -> int:
        return self._cumulative.n

    def score_histogram(self) -> dict[str, Any]:
        """The rolling window's scores by class, in the ROC AUC's bins: ``edges`` (the
        ``n_thresholds`` thresholds, 0 to 1) and per bin between two edges the ``negative``
        and ``positive`` labels whose score fell there (read from the counters ROC AUC keeps,
        so it costs nothing per label).

        >>> m = PrequentialMetrics(window=3, n_thresholds=3)
        >>> for y, s in [(True, 0.9), (False, 0.2), (False, 0.4), (True, 0.6)]:
        ...     m.update(y, s, 0.5)
        >>> m.score_histogram()
        {'edges': [0.0, 0.5, 1.0], 'negative': [2, 0], 'positive': [0, 1]}
        """
        rolling = self._rolling
        n = len(rolling.thresholds)
        edges = [i / (n - 1) for i in range(n)]
        out: dict[str, Any] = {"edges": edges}
        for name, counts in (("negative", rolling.hist[0]), ("positive", rolling.hist[1])):
            bins = list(counts[1:n])  # k thresholds below the score: between edges k-1 and k
            bins[0] += counts[0]  # below the lowest threshold (never, for a probability)
            bins[-1] += counts[n]  # above the highest
            out[name] = bins
        return out

    def snapshot(self) -> dict[str, Any]:
        """``{"n", "window", "cumulative": {...}, "rolling": {...}}``, JSON-safe."""
        return {"n": self.n, "window": self.window, "cumulative": self._cumulative.snapshot(),
                "rolling": self._rolling.snapshot()}


class _Metrics:
    """Accuracy, ROC AUC, log loss, precision, recall and F1 over all labels (``size=None``) or
    the last ``size`` labels, from plain counters: the values of River's metrics
    (``ConfusionMatrix``, ``ROCAUC(n_thresholds)``, ``LogLoss``; a test checks them against
    River) at a fraction of their cost, which matters because every label updates two sets.

    ROC AUC keeps, per class, how many scores fell between consecutive thresholds; the counts
    above each threshold are summed only when read.
    """

    __slots__ = ("size", "thresholds", "hist", "tp", "fp", "tn", "fn", "loss_n", "loss_mean",
                 "ring")

    def __init__(self, size: int | None, n_thresholds: int) -> None:
        self.size = size
        thresholds = [i / (n_thresholds - 1) for i in range(n_thresholds)]
        thresholds[0] -= 1e-7  # as River's ROCAUC
        thresholds[-1] += 1e-7
        self.thresholds = thresholds
        #: hist[y][k]: labels of class y whose score is above exactly k thresholds
        self.hist = ([0] * (n_thresholds + 1), [0] * (n_thresholds + 1))
        self.tp = self.fp = self.tn = self.fn = 0
        self.loss_n = 0  # River's incremental mean (stats.Mean), for the same bits
        self.loss_mean = 0.0
        self.ring: deque[tuple[bool, bool, int, float]] | None = deque() if size else None

    def update(self, y: bool, score: float, predicted: bool) -> None:
        k = bisect_left(self.thresholds, score)  # thresholds strictly below the score
        p = min(max(score, 1e-15), 1 - 1e-15)
        loss = -math.log(p) if y else -math.log(1 - p)
        ring = self.ring
        if ring is not None:  # as River's Rolling: forget the oldest first, then add
            if len(ring) == self.size:
                self._add(*ring.popleft(), -1)
            ring.append((y, predicted, k, loss))
        self._add(y, predicted, k, loss, 1)

    def _add(self, y: bool, predicted: bool, k: int, loss: float, w: int) -> None:
        if y:
            if predicted:
                self.tp += w
            else:
                self.fn += w
        elif predicted:
            self.fp += w
        else:
            self.tn += w
        self.hist[y][k] += w
        self.loss_n += w
        if w > 0:
            self.loss_mean += (1.0 / self.loss_n) * (loss - self.loss_mean)
        elif self.loss_n == 0:
            self.loss_mean = 0.0
        else:
            self.loss_mean -= (1.0 / self.loss_n) * (loss - self.loss_mean)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def roc_auc(self) -> float:
        """River's ``ROCAUC.get()``: trapezoids over (FPR, TPR) at each threshold."""
        neg, pos = self.hist
        n_pos, n_neg = sum(pos), sum(neg)
        above_pos, above_neg = n_pos, n_neg  # scores above threshold i, walking i upwards
        tprs, fprs = [], []
        for i in range(len(self.thresholds)):
            above_pos -= pos[i]
            above_neg -= neg[i]
            tprs.append(above_pos / n_pos if n_pos else 0.0)
            fprs.append(above_neg / n_neg if n_neg else 0.0)
        return float(-integrate.trapezoid(x=fprs, y=tprs))  # as River: the same bits

    def snapshot(self) -> dict[str, Any]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        n = self.n
        return {
            "n": n,
            "accuracy": _finite((tp + tn) / n) if n else None,
            "roc_auc": _finite(self.roc_auc()) if (tp + fn) * (tn + fp) else None,
            "log_loss": _finite(self.loss_mean) if n else None,
            "precision": _finite(tp / (tp + fp)) if tp + fp else None,
            "recall": _finite(tp / (tp + fn)) if tp + fn else None,
            "f1": _finite(_f1(tp, fp, fn)) if 2 * tp + fp + fn else None,
        }


def _f1(tp: int, fp: int, fn: int) -> float:
    """River's ``F1.get()``, operation for operation."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return (1 + 1) * p * r / (1 * p + r) if p + r else 0.0


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
