"""``OnlineModel``: one River pipeline behind River's own two verbs, returning plain floats.

A classifier's score is the probability of the positive class (``proba.get(True, 0.0)``); an
anomaly detector's score is its ``score_one`` (higher is more anomalous). The model is fed
numeric dicts: string features are encoded beforehand by the pure stage ``models.spec.one_hot``.

A non-finite score is never returned: ``predict_proba_one`` raises ``ModelOutputError`` (carrying
the value) so the caller dead-letters that event instead of publishing a made-up number.

>>> from river import linear_model, preprocessing
>>> m = OnlineModel(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
...                 name="demo", kind="classifier", spec_hash="0" * 64)
>>> m.predict_proba_one({"amount": 10.0})
0.5
>>> m.learn_one({"amount": 10.0}, True)
>>> m.learn_one({"amount": 1.0}, False)
>>> m.predict_proba_one({"amount": 10.0}) > 0.5
True
>>> m.version, m.kind
('1', 'classifier')
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from stream_app.errors import StreamAppError

__all__ = ["Kind", "ModelOutputError", "OnlineModel"]

Kind = Literal["classifier", "anomaly"]


class ModelOutputError(StreamAppError):
    """The model produced a non-finite score (NaN or inf); ``value`` holds it.

    Not retriable: the same input gives the same output. Dead-letter the event (reason
    ``model_output``); a burst of these means the model diverged and should be replaced.
    """

    def __init__(self, value: float, model: str) -> None:
        super().__init__(f"model {model!r} produced a non-finite score: {value!r}")
        self.value = value


class OnlineModel:
    """A River pipeline with a name, a version, a kind and the hash of the spec it came from."""

    def __init__(self, pipeline: Any, *, name: str, kind: Kind, spec_hash: str,
                 version: str = "1") -> None:
        if kind not in ("classifier", "anomaly"):
            raise ValueError(f"kind must be 'classifier' or 'anomaly', got {kind!r}")
        self.pipeline = pipeline
        self.name = name
        self.kind: Kind = kind
        self.spec_hash = spec_hash
        self.version = version

    def __repr__(self) -> str:
        return (f"OnlineModel(name={self.name!r}, version={self.version!r}, kind={self.kind!r}, "
                f"pipeline={self.pipeline!r})")

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        """The score of one event: P(positive) for a classifier, the anomaly score otherwise."""
        if self.kind == "classifier":
            score = self.pipeline.predict_proba_one(x).get(True, 0.0)
        else:
            score = self.pipeline.score_one(x)
        score = float(score)
        if not math.isfinite(score):
            raise ModelOutputError(score, self.name)
        return score

    def learn_one(self, x: Mapping[str, float], y: bool | None = None) -> None:
        """Learn one event; a classifier needs ``y``, an anomaly detector ignores it."""
        if self.kind == "anomaly":
            self.pipeline.learn_one(x)
        elif y is None:
            raise ValueError(f"classifier {self.name!r} needs a label to learn")
        else:
            self.pipeline.learn_one(x, bool(y))

    def predict_proba_many(self, xs: Iterable[Mapping[str, float]]) -> list[float]:
        """``predict_proba_one`` over a batch, in order."""
        return [self.predict_proba_one(x) for x in xs]

    def learn_many(self, xs: Sequence[Mapping[str, float]],
                   ys: Sequence[bool | None] | None = None) -> None:
        """``learn_one`` over a batch, in order (``ys`` may be omitted for anomaly detectors)."""
        if ys is None:
            ys = [None] * len(xs)
        if len(ys) != len(xs):
            raise ValueError(f"{len(xs)} events but {len(ys)} labels")
        for x, y in zip(xs, ys, strict=True):
            self.learn_one(x, y)

    def params(self) -> dict[str, Any]:
        """The pipeline's parameters, by River's own introspection (``_get_params``)."""
        return dict(self.pipeline._get_params())
