"""Vectorised scoring of the linear pipelines, for batch prediction.

``predict_proba_one`` costs River tens of microseconds a row (a dict per step); a linear
pipeline is a few array operations on a whole batch. For ``StandardScaler | LogisticRegression``
(or ``LogisticRegression`` alone) the score of ``x`` is, as River computes it row by row::

    z = intercept + sum over the features k of x:  w[k] * (x[k] - mean[k]) / sqrt(var[k])
                                                   (0 where var[k] == 0, River's rule)
    score = 0 if z < -30, 1 if z > 30, else 1 / (1 + exp(-z))   (river.utils.math.sigmoid)

A feature the model never saw has weight 0 and contributes nothing; one missing from ``x``
contributes nothing either. Rows are grouped by their key tuple (a batch has one or a few), and
each group is one dense matrix. Only the summation order differs from River's, so scores agree
within float rounding (``tests/test_offline_batch.py`` checks it on every allow-listed optimizer).
Any other pipeline gets ``None`` from :meth:`LinearScorer.of`: score it row by row.

>>> from river import linear_model, preprocessing
>>> from models.online import OnlineModel
>>> m = OnlineModel(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
...                 name="m", kind="classifier", spec_hash="0" * 64)
>>> for i in range(200):
...     m.learn_one({"a": float(i % 7), "b": float(i % 3)}, i % 7 > 3)
>>> xs = [{"a": 5.0, "b": 1.0}, {"a": 1.0}, {"b": 2.0, "a": 6.0, "new": 9.0}]
>>> scorer = LinearScorer.of(m)
>>> bool(max(abs(a - b) for a, b in zip(scorer.scores(xs), map(m.predict_proba_one, xs))) < 1e-12)
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from models.online import OnlineModel

__all__ = ["LinearScorer"]


class LinearScorer:
    """A frozen copy of a linear pipeline's parameters, scoring lists of feature dicts."""

    def __init__(self, weights: Mapping[str, float], intercept: float,
                 means: Mapping[str, float] | None, stds: Mapping[str, float] | None) -> None:
        self._w = dict(weights)
        self._b = float(intercept)
        self._m = dict(means or {})
        self._s = dict(stds or {})
        self._scaled = means is not None
        self._cols: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def of(cls, model: OnlineModel) -> LinearScorer | None:
        """The scorer of ``model``, or ``None`` if it is not a linear pipeline we vectorise."""
        from river import linear_model, preprocessing

        if model.kind != "classifier":
            return None
        steps = list(getattr(model.pipeline, "steps", {}).values()) or [model.pipeline]
        *head, last = steps
        if type(last) is not linear_model.LogisticRegression or len(head) > 1:
            return None
        weights = dict(last._weights)  # noqa: SLF001 (River's VectorDict of weights)
        if not head:
            return cls(weights, last.intercept, None, None)
        scaler = head[0]
        if type(scaler) is not preprocessing.StandardScaler or scaler.window_size is not None:
            return None
        if not scaler.with_std:
            return cls(weights, last.intercept, dict(scaler.means), None)
        return cls(weights, last.intercept, dict(scaler.means),
                   {k: v ** 0.5 for k, v in scaler.vars.items()})

    def _coefficients(self, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        got = self._cols.get(keys)
        if got is None:
            w = np.array([self._w.get(k, 0.0) for k in keys])
            if self._scaled:
                m = np.array([self._m.get(k, 0.0) for k in keys])
                if self._s:
                    s = np.array([self._s.get(k, 0.0) for k in keys])
                    w = np.divide(w, s, out=np.zeros_like(w), where=s != 0)  # var 0: term 0
            else:
                m = np.zeros(len(keys))
            got = self._cols[keys] = (w, m)
        return got

    def scores(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Positive-class probabilities of ``xs``, in order."""
        n = len(xs)
        z = np.full(n, self._b)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(tuple(x), []).append(i)
        for keys, idx in groups.items():
            if not keys:
                continue
            w, m = self._coefficients(keys)
            rows = [xs[i] for i in idx]
            X = np.fromiter(chain.from_iterable(x.values() for x in rows), float,
                            count=len(rows) * len(keys)).reshape(len(rows), len(keys))
            z[idx] += (X - m) @ w
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-z))
        return np.where(z < -30, 0.0, np.where(z > 30, 1.0, p))

    def state(self) -> dict[str, Any]:
        return {"weights": len(self._w), "scaled": self._scaled}
