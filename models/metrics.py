"""Prequential (test-then-train) metrics of a binary classifier, over the label stream.

Each joined label updates River's own metrics twice: once over every label seen (cumulative)
and once over the last ``window`` labels (``river.utils.Rolling``). A score counts as a positive
prediction when it is strictly above the threshold (``decide``), as River's ``predict_one``
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
from typing import Any

from river import metrics, utils

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

    def snapshot(self) -> dict[str, Any]:
        """``{"n", "window", "cumulative": {...}, "rolling": {...}}``, JSON-safe."""
        return {"n": self.n, "window": self.window, "cumulative": self._cumulative.snapshot(),
                "rolling": self._rolling.snapshot()}


class _Metrics:
    """One set of River metrics over all labels (``size=None``) or the last ``size`` labels.

    Accuracy, precision, recall and F1 read one shared confusion matrix, updated once per label.
    """

    def __init__(self, size: int | None, n_thresholds: int) -> None:
        self._cm_updater: Any = _wrap(metrics.ConfusionMatrix, size)
        cm = self._cm_updater.obj if size else self._cm_updater
        self.cm = cm
        self.accuracy = metrics.Accuracy(cm=cm)
        self.precision = metrics.Precision(cm=cm)
        self.recall = metrics.Recall(cm=cm)
        self.f1 = metrics.F1(cm=cm)
        self.auc: Any = _wrap(metrics.ROCAUC, size, n_thresholds=n_thresholds)
        self.log_loss: Any = _wrap(metrics.LogLoss, size)

    def update(self, y: bool, score: float, predicted: bool) -> None:
        self._cm_updater.update(y, predicted)
        self.auc.update(y, score)
        self.log_loss.update(y, score)

    @property
    def n(self) -> int:
        return round(self.cm.total_weight)

    def snapshot(self) -> dict[str, Any]:
        cm = self.cm
        tp, fp = cm.true_positives(True), cm.false_positives(True)
        fn, tn = cm.false_negatives(True), cm.true_negatives(True)
        n = self.n
        return {
            "n": n,
            "accuracy": _defined(self.accuracy, n),
            "roc_auc": _defined(self.auc, (tp + fn) * (tn + fp)),
            "log_loss": _defined(self.log_loss, n),
            "precision": _defined(self.precision, tp + fp),
            "recall": _defined(self.recall, tp + fn),
            "f1": _defined(self.f1, 2 * tp + fp + fn),
        }


def _wrap(cls: type, size: int | None, **kwargs: Any) -> Any:
    return utils.Rolling(cls, window_size=size, **kwargs) if size else cls(**kwargs)


def _defined(metric: Any, denominator: float) -> float | None:
    """The metric's value, or None when its denominator is zero or the value is not finite."""
    if not denominator:
        return None
    value = float(metric.get())
    return value if math.isfinite(value) else None
