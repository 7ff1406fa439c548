"""The offline store's contract, on a local directory and on fsspec's in-memory file system
(the path an object store takes: ``pyarrow.fs`` over an ``fsspec`` protocol)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from stream_app.offline.dataset import join
from stream_app.offline.sink import FEATURES_SCHEMA, LABELS_SCHEMA
from stream_app.offline.store import OfflineStore

DAY = 86400.0


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> OfflineStore:
    if request.param == "file":
        return OfflineStore(f"file://{tmp_path}/offline")
    return OfflineStore(f"memory://offline-{uuid.uuid4().hex[:8]}")


def _features(ids: list[int], model: str = "m") -> pa.Table:
    return pa.Table.from_pylist([
        {"event_id": f"e{i}", "entity_id": "u", "model": model, "model_version": "1",
         "model_snapshot": 0, "event_timestamp": i * DAY / 2, "scored_at": 0.0, "score": 0.5,
         "latency_ms": 1.0, "x": {"f": float(i)}} for i in ids], FEATURES_SCHEMA)


def test_files_are_partitioned_by_date_and_model_and_read_once_per_event(store) -> None:
    store.write("features", _features([0, 1, 2, 3]), "p0-0-3")
    store.write("features", _features([2, 3]), "p0-2-3b")  # a replayed batch
    store.write("features", _features([9], model="other"), "p1-0-0")
    dates = sorted({p.split("date=")[1].split("/")[0] for p in store.files("features")})
    assert dates == ["1970-01-01", "1970-01-02", "1970-01-05"]
    assert store.count("features") == 5
    only_m = store.read("features", model="m")
    assert sorted(only_m.column("event_id").to_pylist()) == ["e0", "e1", "e2", "e3"]
    ranged = store.read("features", from_date="1970-01-02", to_date="1970-01-02")
    assert sorted(ranged.column("event_id").to_pylist()) == ["e2", "e3"]
    assert store.read("labels").num_rows == 0  # nothing written yet: empty, not an error


def test_labels_join_point_in_time_and_late_or_missing_are_counted(store) -> None:
    store.write("features", _features([0, 1, 2]), "p0-0-2")
    labels = pa.Table.from_pylist([
        {"event_id": "e0", "model": "m", "model_version": "1", "label": "true", "y": True,
         "label_timestamp": 10.0, "joined_at": 10.0},
        {"event_id": "e1", "model": "m", "model_version": "1", "label": "false", "y": False,
         "label_timestamp": DAY / 2 + 5 * DAY, "joined_at": 0.0}], LABELS_SCHEMA)
    store.write("labels", labels, "p0-0-1")
    table, counts = join(store.read("features"), store.read("labels"), horizon_s=DAY)
    assert table.column("event_id").to_pylist() == ["e0"]
    assert counts == {"events": 3, "labelled": 1, "unlabelled": 1, "late_label": 1}
