"""Batch prediction without services: the vectorised scorer equals River's per-row path, bad
rows go to the rejects file with their row numbers, Parquet and JSONL read alike, and the model
never learns."""

from __future__ import annotations

import pickle
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.spec import ModelSettings, build_model
from stream_app.offline.batch import predict_file
from stream_app.offline.vector import LinearScorer
from stream_app.settings import load_settings
from stream_app.tools.datasets import synthetic

FRAUD = Path(__file__).resolve().parents[1] / "configs" / "fraud.toml"


def _trained(steps: list[dict], n: int = 3000, seed: int = 3):
    from stream_app.pipeline.featurize import numeric

    model = build_model(ModelSettings(steps=steps))
    items = list(synthetic(seed=seed, n=n))
    for item in items:
        model.learn_one(numeric(item.event["features"]), item.label)
    return model, [numeric(i.event["features"]) for i in items]


@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "AdaGrad", "RMSProp"])
@pytest.mark.parametrize("scaled", [True, False])
def test_the_vectorised_scores_equal_river_row_by_row(optimizer: str, scaled: bool) -> None:
    steps = ([{"name": "StandardScaler"}] if scaled else []) + [
        {"name": "LogisticRegression", "params": {"optimizer": {"name": optimizer}}}]
    model, xs = _trained(steps)
    # missing features, features the model never saw, a different key order
    xs += [{"f0": 1.0}, {"f3": 2.0, "f0": -1.0, "never_seen": 5.0}, {}, {"f1": 1e6}]
    scorer = LinearScorer.of(model)
    assert scorer is not None
    got = scorer.scores(xs)
    want = [model.predict_proba_one(x) for x in xs]
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-12


def test_other_pipelines_are_scored_row_by_row() -> None:
    model, _ = _trained([{"name": "GaussianNB"}], n=50)
    assert LinearScorer.of(model) is None


def _events(n: int) -> list[dict]:
    return [i.event | {"entity_id": f"u{k % 7}"} for k, i in enumerate(synthetic(seed=5, n=n))]


@pytest.mark.parametrize("config", [None, FRAUD])
def test_predict_file_scores_every_good_row_and_rejects_the_bad_ones(tmp_path: Path,
                                                                    config) -> None:
    settings = load_settings(config, environ={})
    model, _ = _trained([{"name": "StandardScaler"}, {"name": "LogisticRegression"}])
    model.name = settings.model.name
    before = pickle.dumps(model.pipeline)
    events = _events(500)
    lines = [orjson.dumps(e) for e in events]
    lines.insert(10, b'{"event_id": "x",')                                       # row 11
    lines.insert(20, orjson.dumps(events[0] | {"event_id": "big",
                                               "features": {"f0": 1e300}}))      # row 21
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.parquet"
    report = predict_file(settings, model, 4, src, out)
    assert (report.rows, report.predicted, report.rejected) == (502, 500, 2)
    rejects = [orjson.loads(line) for line in (tmp_path / "out.parquet.rejects.jsonl")
               .read_bytes().splitlines()]
    assert [(r["row"], r["reason"]) for r in rejects] == [(11, "invalid_json"),
                                                          (21, "out_of_range")]
    table = pq.read_table(out)
    assert table.column("event_id").to_pylist() == [e["event_id"] for e in events]
    assert set(table.column("model_snapshot").to_pylist()) == {4}
    assert pickle.dumps(model.pipeline) == before  # never learns
    # the same events as Parquet (a features column), and the output as JSONL: same scores
    pq.write_table(pa.Table.from_pylist(events), tmp_path / "in.parquet")
    predict_file(settings, model, 4, tmp_path / "in.parquet", tmp_path / "out.jsonl")
    again = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [r["score"] for r in again] == table.column("score").to_pylist()


def test_flat_parquet_columns_are_the_features(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    model, _ = _trained([{"name": "StandardScaler"}, {"name": "LogisticRegression"}])
    events = _events(50)
    flat = [{"event_id": e["event_id"], "entity_id": e["entity_id"],
             "timestamp": e["timestamp"], **e["features"]} for e in events]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "flat.parquet")
    pq.write_table(pa.Table.from_pylist(events), tmp_path / "nested.parquet")
    for name in ("flat", "nested"):
        predict_file(settings, model, 0, tmp_path / f"{name}.parquet", tmp_path / f"{name}.out.parquet")
    assert pq.read_table(tmp_path / "flat.out.parquet").column("score").to_pylist() == \
        pq.read_table(tmp_path / "nested.out.parquet").column("score").to_pylist()


@pytest.mark.integration
def test_to_redis_keeps_each_entitys_newest_prediction(redis_url: str, tmp_path: Path) -> None:
    import uuid

    import redis

    from stream_app.offline.batch import redis_writer

    settings = load_settings(environ={}, redis_url=redis_url, app_id=f"batch-{uuid.uuid4().hex[:8]}")
    model, _ = _trained([{"name": "StandardScaler"}, {"name": "LogisticRegression"}])
    events = _events(300)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    predict_file(settings, model, 2, src, tmp_path / "out.parquet", to_redis=redis_writer(settings))
    scores = {r["event_id"]: r["score"] for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    newest = {e["entity_id"]: e["event_id"] for e in events}
    client = redis.Redis.from_url(redis_url)
    prefix = f"stream:{settings.feature_store_namespace}:prediction:"
    try:
        for entity, event_id in newest.items():
            got = orjson.loads(client.get(prefix + entity))
            assert got["event_id"] == event_id and got["score"] == scores[event_id]
            assert 0 < client.ttl(prefix + entity) <= settings.label_horizon_s
    finally:
        client.delete(*[prefix + e for e in newest])
