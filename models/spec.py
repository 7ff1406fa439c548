"""Build the served model from config *data*, and encode raw features for it.

A model is a list of steps, each ``{name, params}``. Names come from the allow-lists in
``models.allowlist``; parameters are checked against the class's signature; the steps are
chained with ``|`` into a River pipeline. Every step but the last is a preprocessor; the last is
a classifier (kind ``"classifier"``) or an anomaly detector (kind ``"anomaly"``).

In TOML (HalfSpaceTrees assumes features in [0, 1], so a MinMaxScaler goes first)::

    [model]
    name = "fraud-lr"
    steps = [
      { name = "StandardScaler" },
      { name = "LogisticRegression", params = { l2 = 0.001, optimizer = { name = "Adam", lr = 0.01 } } },
    ]

    [model]                                # or: unsupervised
    name = "hst"
    steps = [{ name = "MinMaxScaler" }, { name = "HalfSpaceTrees", params = { seed = 42 } }]

>>> model = build_model(ModelSettings())
>>> list(model.pipeline.steps)
['StandardScaler', 'LogisticRegression']
>>> model.kind, model.version, len(model.spec_hash)
('classifier', '1', 64)
>>> build_model(ModelSettings(steps=[{"name": "__import__('os')"}]))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream_app.errors.ModelSpecError: unknown class "__import__('os')"; allowed: ALMAClassifier, ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from river import compose

from models.allowlist import (
    ANOMALY_DETECTORS,
    CLASSIFIERS,
    PREPROCESSORS,
    allowed_step_names,
    instantiate,
)
from models.online import Kind, ModelOutputError, OnlineModel
from stream_app.errors import ModelSpecError

__all__ = ["ModelOutputError", "ModelSettings", "OnlineModel", "StepSettings", "build_model",
           "one_hot", "spec_hash"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepSettings(_Frozen):
    """One step of a River pipeline: a class from the allow-list and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSettings(_Frozen):
    """The model to serve, declared as data (see ``models.spec``)."""

    #: a safe path segment and Redis key part (the registry's ``check_name``)
    name: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    steps: tuple[StepSettings, ...] = (
        StepSettings(name="StandardScaler"),
        StepSettings(name="LogisticRegression"),
    )
    #: decision threshold on ``score`` for ``predicted`` (``score > threshold``), in [0, 1]:
    #: a classifier's score is a probability and HalfSpaceTrees' is in [0, 1] (OneClassSVM's
    #: raw margin is not bounded, so it cannot use a threshold above 1)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    #: label values that count as the positive class (``True``, ``1`` and these strings)
    positive_labels: tuple[str, ...] = ("1", "true", "fraud", "anomaly", "positive", "yes")
    #: one-hot encode string features before the first step (on by default)
    one_hot_strings: bool = True


def build_model(settings: ModelSettings) -> OnlineModel:
    """The River pipeline that ``settings.steps`` declares, wrapped in an ``OnlineModel``."""
    steps = settings.steps
    if not steps:
        raise ModelSpecError("a model needs at least one step")
    *head, last = steps
    estimators = [_preprocessor(step) for step in head]
    kind, final = _final(last)
    return OnlineModel(compose.Pipeline(*estimators, final), name=settings.name, kind=kind,
                       spec_hash=spec_hash(steps))


def spec_hash(steps: Sequence[StepSettings]) -> str:
    """sha256 of the steps' canonical JSON (sorted keys, no spaces).

    >>> canonical = b'[{"name":"GaussianNB","params":{}}]'
    >>> spec_hash([StepSettings(name="GaussianNB")]) == hashlib.sha256(canonical).hexdigest()
    True
    """
    doc = [{"name": s.name, "params": s.params} for s in steps]
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _preprocessor(step: StepSettings) -> Any:
    _check_known(step.name)
    if step.name not in PREPROCESSORS:
        raise ModelSpecError(f"{step.name} must be the last step; only preprocessors may precede it "
                             f"({', '.join(sorted(PREPROCESSORS))})")
    return instantiate(step.name, step.params, PREPROCESSORS)


def _final(step: StepSettings) -> tuple[Kind, Any]:
    _check_known(step.name)
    if step.name in CLASSIFIERS:
        return "classifier", instantiate(step.name, step.params, CLASSIFIERS)
    if step.name in ANOMALY_DETECTORS:
        return "anomaly", instantiate(step.name, step.params, ANOMALY_DETECTORS)
    raise ModelSpecError(f"the last step must be a classifier or an anomaly detector, "
                         f"not the preprocessor {step.name}")


def _check_known(name: str) -> None:
    allowed = allowed_step_names()
    if name not in allowed:
        raise ModelSpecError(f"unknown class {name!r}; allowed: {', '.join(allowed)}")


_FLOAT = {float}


def one_hot(x: Mapping[str, float | int | str | bool | None]) -> dict[str, float]:
    """Encode raw features for the model: numbers to float, bools to 1.0/0.0, strings one-hot.

    ``None`` is dropped (River reads a missing key as missing). Idempotent on its own output.

    >>> one_hot({"amount": 12, "card_present": True, "country": "FR", "mcc": None})
    {'amount': 12.0, 'card_present': 1.0, 'country=FR': 1.0}
    """
    if x and {type(v) for v in x.values()} == _FLOAT:  # the common case: a copy is the answer
        return dict(x)  # type: ignore[arg-type]
    out: dict[str, float] = {}
    for k, v in x.items():
        t = type(v)
        if t is float:
            out[k] = v  # type: ignore[assignment]
        elif t is int:
            out[k] = float(v)  # type: ignore[arg-type]
        elif t is str:
            out[f"{k}={v}"] = 1.0
        elif t is bool:
            out[k] = 1.0 if v else 0.0
        elif v is not None:
            out.update(_one_hot_other(k, v))
    return out


def _one_hot_other(k: str, v: Any) -> dict[str, float]:
    """The slow path: subclasses of the plain types (numpy scalars, str enums)."""
    if isinstance(v, bool):
        return {k: 1.0 if v else 0.0}
    if isinstance(v, str):
        return {f"{k}={v}": 1.0}
    try:
        return {k: float(v)}
    except (TypeError, ValueError):
        raise TypeError(f"feature {k!r}: expected number, string, bool or None, "
                        f"got {type(v).__name__}") from None
