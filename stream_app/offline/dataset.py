"""Point-in-time training sets: the logged feature vectors joined with their labels.

The vectors in the store are the ones each event was scored with: the entity's aggregates as
they stood *before* the event (``stream_app.pipeline.featurize``). Joining them with their
labels by ``event_id`` gives a leakage-free set without any "as of" logic: nothing after an
event can be in its row. An event whose label is missing, or came more than the horizon
(``label_horizon_s``, in event time: label timestamp minus event timestamp) after it, is left
out and counted.

>>> feats = pa.table({"event_id": ["a", "b", "c"], "event_timestamp": [3.0, 1.0, 2.0],
...                   "x": [{"f": 1.0}, {"f": 2.0}, {"f": 3.0}]})
>>> labels = pa.table({"event_id": ["a", "b", "z"], "y": [True, False, True],
...                    "label_timestamp": [4.0, 100.0, 0.0]})
>>> table, counts = join(feats, labels, horizon_s=10)
>>> table.column("event_id").to_pylist(), counts
(['a'], {'events': 3, 'labelled': 1, 'unlabelled': 1, 'late_label': 1})
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stream_app.offline.store import OfflineStore

__all__ = ["build", "dataset_hash", "join", "read_dataset", "write_dataset"]


def join(features: pa.Table, labels: pa.Table, *, horizon_s: float) -> tuple[pa.Table,
                                                                             dict[str, int]]:
    """Labelled rows in event-time order (ties by ``event_id``), and what was left out."""
    counts = {"events": features.num_rows, "labelled": 0, "unlabelled": 0, "late_label": 0}
    if features.num_rows == 0:
        return features, counts
    by_id: dict[str, tuple[bool, float]] = {}
    if labels.num_rows:
        for eid, y, ts in zip(labels.column("event_id").to_pylist(),
                              labels.column("y").to_pylist(),
                              labels.column("label_timestamp").to_pylist(), strict=True):
            by_id.setdefault(eid, (y, ts))
    keep, ys, label_ts = [], [], []
    for i, (eid, ts) in enumerate(zip(features.column("event_id").to_pylist(),
                                      features.column("event_timestamp").to_pylist(),
                                      strict=True)):
        got = by_id.get(eid)
        if got is None:
            counts["unlabelled"] += 1
        elif got[1] - ts > horizon_s:
            counts["late_label"] += 1
        else:
            keep.append(i)
            ys.append(got[0])
            label_ts.append(got[1])
    counts["labelled"] = len(keep)
    table = features.take(pa.array(keep, pa.int64()))
    table = table.append_column("y", pa.array(ys, pa.bool_()))
    table = table.append_column("label_timestamp", pa.array(label_ts, pa.float64()))
    return table.take(pa.array(_order(table), pa.int64())), counts


def _order(table: pa.Table) -> list[int]:
    ts = table.column("event_timestamp").to_pylist()
    ids = table.column("event_id").to_pylist()
    return sorted(range(len(ts)), key=lambda i: (ts[i], ids[i]))


def build(store: OfflineStore, *, from_date: str, to_date: str, model: str | None,
          horizon_s: float) -> tuple[pa.Table, dict[str, int]]:
    """The labelled set of the events dated ``from_date`` to ``to_date`` (UTC, inclusive).

    Labels are read up to the horizon past ``to_date`` (a label is dated by its own time).
    """
    features = store.read("features", from_date=from_date, to_date=to_date, model=model)
    last = dt.date.fromisoformat(to_date) + dt.timedelta(days=math.ceil(horizon_s / 86400))
    labels = store.read("labels", from_date=from_date, to_date=last.isoformat(), model=model)
    return join(features, labels, horizon_s=horizon_s)


def write_dataset(table: pa.Table, path: str | Path, meta: dict[str, Any] | None = None) -> str:
    """Write atomically (temp name, then rename); returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if meta:
        import orjson

        table = table.replace_schema_metadata({b"stream_app": orjson.dumps(meta)})
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return dataset_hash(path)


def dataset_hash(path: str | Path) -> str:
    """SHA-256 of the file's bytes: the dataset's identity in a model's lineage."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_dataset(path: str | Path) -> pa.Table:
    return pq.read_table(path)
