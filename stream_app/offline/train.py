"""The training pipeline: features (a data set), train, evaluate, register.

``stream-app train --dataset FILE --model SPEC [--holdout-from DATE]``:

1. **features**: a point-in-time set from ``dataset build`` (rows in event-time order);
2. **train**: a River model from the spec learns the training period with ``learn_one``, row
   by row in event-time order, exactly as the learner does on the stream;
3. **evaluate**: the frozen model scores the holdout, every row on or after ``--holdout-from``
   (UTC midnight), or by default the last ``offline.holdout_fraction`` of the rows by event
   time (``evaluate.holdout_metrics``: accuracy, precision, recall, AUC, log loss, latency);
4. **register**: a new ``staging`` version of the model, with one signed snapshot whose record
   is the lineage: ``data_hash`` (the data set file's SHA-256), ``metrics`` (the holdout's, and
   ``training``: the data set's path, rows, holdout split, the spec and parameters),
   ``dependencies`` and ``checkpoint_size`` (the model's size), as every snapshot records.

A worker serves it once it is promoted (``stream-app models promote``; see
``offline.promote`` for the guard): it starts from that snapshot and keeps learning, the
cold-start case.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from models.metrics import PrequentialMetrics
from models.online import OnlineModel
from models.spec import ModelSettings, build_model
from stream_app.errors import ConfigError
from stream_app.offline.dataset import dataset_hash, read_dataset
from stream_app.offline.evaluate import holdout_metrics, split_at
from stream_app.settings import Settings

__all__ = ["Split", "TrainResult", "load_split", "model_settings", "register", "train"]


@dataclass(frozen=True)
class Split:
    """A data set's rows, split by event time at ``holdout_ts``."""

    path: str
    sha256: str
    holdout_ts: float
    train_x: list[dict[str, float]]
    train_y: list[bool]
    test_x: list[dict[str, float]]
    test_y: list[bool]


@dataclass(frozen=True)
class TrainResult:
    model: OnlineModel
    split: Split
    metrics: dict[str, Any]


def model_settings(spec: str | None, default: ModelSettings) -> ModelSettings:
    """``--model``: a TOML file (its ``[model]`` table), inline JSON, or the configured one.

    >>> model_settings('{"name": "m2", "steps": [{"name": "GaussianNB"}]}',
    ...                ModelSettings()).steps[0].name
    'GaussianNB'
    """
    if not spec:
        return default
    try:
        if spec.lstrip().startswith("{"):
            doc = orjson.loads(spec)
        else:
            doc = tomllib.loads(Path(spec).read_text()).get("model", {})
        base = default.model_dump()
        return ModelSettings(**{**base, **doc})
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"--model {spec!r}: {' '.join(str(exc).split())[:300]}") from exc


def load_split(path: str | Path, *, holdout_from: str | None = None,
               holdout_ts: float | None = None, fraction: float = 0.2) -> Split:
    """Read a data set and split it by event time (``holdout_ts`` wins, then the date)."""
    try:
        table = read_dataset(path)
    except OSError as exc:
        raise ConfigError(f"cannot read data set {str(path)!r}: {exc}") from exc
    missing = {"event_timestamp", "x", "y"} - set(table.column_names)
    if missing:
        raise ConfigError(f"data set {str(path)!r} lacks columns {sorted(missing)}")
    ts = table.column("event_timestamp").to_pylist()
    if not ts:
        raise ConfigError(f"data set {str(path)!r} is empty")
    if holdout_ts is None:
        holdout_ts = (dt.datetime.fromisoformat(holdout_from).replace(tzinfo=dt.UTC).timestamp()
                      if holdout_from else split_at(ts, fraction=fraction))
    xs = [dict(x) for x in table.column("x").to_pylist()]
    ys = table.column("y").to_pylist()
    train = [i for i, t in enumerate(ts) if t < holdout_ts]
    test = [i for i, t in enumerate(ts) if t >= holdout_ts]
    if not train or not test:
        raise ConfigError(f"holdout split at {holdout_ts} leaves {len(train)} rows to train on "
                          f"and {len(test)} to evaluate: both must be non-empty")
    return Split(str(Path(path).resolve()), dataset_hash(path), float(holdout_ts),
                 [xs[i] for i in train], [ys[i] for i in train],
                 [xs[i] for i in test], [ys[i] for i in test])


def train(split: Split, conf: ModelSettings) -> TrainResult:
    """A fresh model learns the training rows in order; the holdout measures it, frozen."""
    model = build_model(conf)
    if model.kind != "classifier":
        raise ConfigError(f"train needs a classifier; {conf.steps[-1].name} is {model.kind}")
    for x, y in zip(split.train_x, split.train_y, strict=True):
        model.learn_one(x, y)
    return TrainResult(model, split, holdout_metrics(model, split.test_x, split.test_y,
                                                     conf.threshold))


def lineage(result: TrainResult, conf: ModelSettings) -> dict[str, Any]:
    s = result.split
    return {"holdout": result.metrics, "training": {
        "dataset": s.path, "dataset_sha256": s.sha256, "holdout_ts": s.holdout_ts,
        "train_rows": len(s.train_y), "holdout_rows": len(s.test_y),
        "steps": [st.model_dump() for st in conf.steps], "threshold": conf.threshold,
        "params": _plain(result.model.params())}}


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(params, default=repr))


async def register(settings: Settings, result: TrainResult, conf: ModelSettings
                   ) -> dict[str, Any]:
    """A new ``staging`` version with one signed snapshot holding the lineage."""
    from models.registry import open_registry
    from stream_app.lifecycle import model_spec

    if settings.registry_key_bytes is None:
        raise ConfigError("STREAM_REGISTRY_KEY is not set: a registered model is a signed "
                          "snapshot (at least 16 bytes)")
    reg = open_registry(settings.registry_url, key=settings.registry_key_bytes,
                        namespace=settings.app_id)
    try:
        model = result.model
        info = await reg.create_version(
            conf.name, spec=model_spec(conf.steps), params=_plain(model.params()), parent=None,
            stage="staging", reason=f"trained offline on {Path(result.split.path).name} "
                                    f"({result.split.sha256[:12]})")
        snap = await reg.save_snapshot(
            conf.name, info.version,
            {"pipeline": model.pipeline, "prequential": PrequentialMetrics(), "label_ahead": {}},
            learn_count=len(result.split.train_y), label_offsets={},
            data_hash=result.split.sha256, metrics=lineage(result, conf))
    finally:
        await reg.aclose()
    return {"model": conf.name, "version": info.version, "stage": "staging",
            "snapshot": snap.snapshot_id, "checkpoint_size": snap.checkpoint_size,
            "holdout": result.metrics}
