"""Evaluate a frozen model on a time-based holdout: pure maths on scores and labels.

``holdout_metrics`` scores each row with ``predict_proba_one`` (the stream's own call, timed
per prediction) and never learns. AUC is the Mann-Whitney statistic (ties count half), log
loss clips the probability to ``[1e-15, 1 - 1e-15]``.

>>> m = classification_metrics([0.9, 0.8, 0.3, 0.1], [True, False, True, False], 0.5)
>>> m["accuracy"], m["precision"], m["recall"], m["auc"]
(0.5, 0.5, 0.5, 0.75)
>>> split_at([1.0, 2.0, 3.0, 4.0, 5.0], fraction=0.4)
4.0
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from models.metrics import decide
from models.online import ModelOutputError, OnlineModel

__all__ = ["classification_metrics", "holdout_metrics", "split_at"]

_EPS = 1e-15


def split_at(timestamps: Sequence[float], *, fraction: float) -> float:
    """The first holdout timestamp: the last ``fraction`` of the (sorted) rows by event time.
    Rows at that timestamp or later are the holdout."""
    if not timestamps:
        raise ValueError("an empty data set has no holdout")
    return float(timestamps[min(len(timestamps) - 1, int(len(timestamps) * (1 - fraction)))])


def classification_metrics(scores: Sequence[float], ys: Sequence[bool],
                           threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, AUC and log loss of positive-class scores."""
    n = len(ys)
    if n == 0:
        return {"rows": 0}
    s = np.asarray(scores, dtype=float)
    y = np.asarray(ys, dtype=bool)
    pred = np.array([decide(v, threshold) for v in scores], dtype=bool)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    pos, neg = int(y.sum()), int((~y).sum())
    if pos and neg:
        ranks = rankdata(s)
        auc = (float(ranks[y].sum()) - pos * (pos + 1) / 2) / (pos * neg)
    else:
        auc = math.nan
    p = np.clip(s, _EPS, 1 - _EPS)
    log_loss = float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))
    return {"rows": n, "accuracy": float(np.mean(pred == y)),
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "auc": auc, "log_loss": log_loss}


def holdout_metrics(model: OnlineModel, xs: Sequence[Mapping[str, float]], ys: Sequence[bool],
                    threshold: float) -> dict[str, Any]:
    """Score every holdout row (no learning); the metrics and the latency per prediction."""
    scores: list[float] = []
    kept: list[bool] = []
    lat: list[float] = []
    failed = 0
    clock = time.perf_counter
    for x, y in zip(xs, ys, strict=True):
        t0 = clock()
        try:
            score = model.predict_proba_one(x)
        except ModelOutputError:
            failed += 1
            continue
        lat.append(clock() - t0)
        scores.append(score)
        kept.append(y)
    out: dict[str, Any] = classification_metrics(scores, kept, threshold)
    if lat:
        us = np.asarray(lat) * 1e6
        out["latency_us"] = {"mean": float(us.mean()), "p50": float(np.percentile(us, 50)),
                             "p99": float(np.percentile(us, 99))}
    out["non_finite_scores"] = failed
    return out
