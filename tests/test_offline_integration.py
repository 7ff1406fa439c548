"""The offline half end to end on real Kafka and Redis: 20,000 synthetic events with labels go
through a real worker; the sink writes the feature log to Parquet; the store, ``dataset build``,
the rebuild from the events topic, ``train`` and the promotion guard are checked against it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from stream_app.offline.dataset import read_dataset
from stream_app.offline.rebuild import read_history, rebuild_rows
from stream_app.offline.sink import Sink
from stream_app.offline.store import OfflineStore
from stream_app.settings import Settings, load_settings
from stream_app.tools import services as svc
from stream_app.tools.replay import replay
from tests.conftest import TEST_REGISTRY_KEY, WorkerProcess
from tests.kafka_helpers import collect, latest_metrics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
FRAUD = ROOT / "configs" / "fraud.toml"
N = 20_000


def offline_settings(kafka: str, redis: str, embedded: bool, tmp: Path,
                     **overrides: Any) -> Settings:
    """``configs/fraud.toml`` (aggregates over f0/f1 per entity) on unique topics and keys."""
    import uuid

    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = dict(
        kafka_url=kafka, redis_url=redis, embedded=embedded, topic_prefix=f"t{tag}.",
        app_id=f"test-{tag}", web_enabled=False, data_dir=str(tmp), metrics_interval_s=1.0,
        registry_url=f"file://{tmp}/registry", registry_key=TEST_REGISTRY_KEY,
        offline_url=f"file://{tmp}/offline",
        offline={"sink_batch_max": 4000, "sink_flush_s": 0.5})
    values.update(overrides)
    return load_settings(FRAUD, environ={}, **values)


def cli(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "stream_app", *args], env=svc.worker_env(settings),
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


async def sink_until(settings: Settings, done: Any, timeout_s: float = 120.0) -> dict[str, int]:
    """Run a sink in this process until ``done(store)`` holds (bounded), then stop it."""
    sink, stop = Sink(settings), asyncio.Event()
    task = asyncio.ensure_future(sink.run(stop))
    try:
        deadline = time.monotonic() + timeout_s
        while not done(sink.store) and time.monotonic() < deadline \
                and not task.done():  # noqa: ASYNC110 (polls files on disk, bounded)
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await task
    return sink.written


def events_file(path: Path, n: int = N) -> Path:
    """The synthetic stream stamped one second apart from 2023-11-14T22:13:20Z: 5.5 hours,
    across a midnight (two date partitions)."""
    from stream_app.tools.datasets import synthetic

    with path.open("wb") as f:
        for item in synthetic(seed=7, n=n, step_s=1.0):
            f.write(orjson.dumps(item.event | {"label": item.label}) + b"\n")
    return path


@pytest.fixture(scope="module")
def ran(_service_urls: tuple[str, str, bool],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """20,000 synthetic events and their labels through one real worker, then the sink."""
    kafka, redis, embedded = _service_urls
    tmp = tmp_path_factory.mktemp("offline")
    settings = offline_settings(kafka, redis, embedded, tmp)

    async def run() -> dict[str, Any]:
        await ensure_topics(settings)
        worker = WorkerProcess(settings, tmp / "worker.log")
        try:
            await latest_metrics(settings, until=lambda m: m["learning_enabled"], timeout_s=90)
            await replay(settings, str(events_file(tmp / "events.jsonl")), label_delay_s=0.0)
            metrics = await latest_metrics(
                settings, until=lambda m: m["events"]["predicted"] >= N
                and m["labels"]["joined"] >= N, timeout_s=300)
            preds = await collect(settings, contract.PREDICTIONS,
                                  until=lambda rs: len(rs) >= N, timeout_s=120)
            written = await sink_until(settings, lambda s: s.count("features") >= N
                                       and s.count("labels") >= N)
        finally:
            assert worker.stop() == 0, worker.log()[-3000:]
        return {"settings": settings, "tmp": tmp, "metrics": metrics, "written": written,
                "predictions": {p["event_id"]: p for p in map(orjson.loads,
                                                              (r.value for r in preds))}}

    yield asyncio.run(run())


def test_the_store_holds_every_event_once_with_its_vector_as_scored(ran) -> None:
    settings, preds = ran["settings"], ran["predictions"]
    store = OfflineStore(settings.offline_url)
    features = store.read("features")
    assert features.num_rows == N == len(set(features.column("event_id").to_pylist()))
    assert store.count("labels") == N
    assert len(store.files("features")) > 1  # several batches, several dates
    dates = {p.split("date=")[1].split("/")[0] for p in store.files("features")}
    assert dates == {"2023-11-14", "2023-11-15"}
    for row in features.to_pylist():  # as scored: the prediction's score and version
        p = preds[row["event_id"]]
        assert row["score"] == p["score"] and row["model_version"] == p["model_version"]
        x = dict(row["x"])
        assert {"f0", "f1", "f0_mean_by_entity", "f0_count_by_entity_1h"} <= set(x)


async def test_rebuilt_features_equal_the_online_ones(ran) -> None:
    settings = ran["settings"]
    logged = {r["event_id"]: dict(r["x"]) for r in
              OfflineStore(settings.offline_url).read("features").to_pylist()}
    rebuilt = {r["event_id"]: r["x"] for r in rebuild_rows(settings, await read_history(settings))}
    assert rebuilt.keys() == logged.keys()
    differ = [eid for eid in logged if rebuilt[eid] != logged[eid]]
    assert differ == [], (differ[:3], [(logged[e], rebuilt[e]) for e in differ[:1]])


def test_dataset_build_gives_the_labelled_set(ran) -> None:
    settings, tmp = ran["settings"], ran["tmp"]
    out = tmp / "train.parquet"
    proc = cli(settings, "dataset", "build", "--from", "2023-11-01", "--to", "2023-11-30",
               "--model", "fraud", "--out", str(out))
    report = json.loads(proc.stdout)
    assert report["labelled"] == N and report["unlabelled"] == 0
    table = read_dataset(out)
    assert table.num_rows == N
    ts = table.column("event_timestamp").to_pylist()
    assert ts == sorted(ts)
    ys = table.column("y").to_pylist()
    assert 0 < sum(ys) < N
    # rebuilt from the events topic: the same rows
    rebuilt = tmp / "rebuilt.parquet"
    report2 = json.loads(cli(settings, "dataset", "build", "--from", "2023-11-01", "--to",
                             "2023-11-30", "--model", "fraud", "--rebuild", "--out",
                             str(rebuilt)).stdout)
    assert report2["labelled"] == N
    assert read_dataset(rebuilt).column("event_id").to_pylist() == \
        table.column("event_id").to_pylist()


@pytest.fixture(scope="module")
def dataset(ran) -> Path:
    out = ran["tmp"] / "set.parquet"
    cli(ran["settings"], "dataset", "build", "--from", "2023-11-14", "--to", "2023-11-15",
        "--out", str(out))
    return out


def _spec(lr: float) -> str:
    return json.dumps({"name": "fraud", "steps": [
        {"name": "StandardScaler"},
        {"name": "LogisticRegression", "params": {"optimizer": {"name": "SGD", "lr": lr},
                                                  "l2": 0.0001}}]})


def test_train_registers_a_staging_version_as_good_as_progressive_validation(ran,
                                                                             dataset) -> None:
    from river import evaluate, metrics

    from models.spec import build_model

    settings = ran["settings"]
    registered = json.loads(cli(settings, "train", "--dataset", str(dataset)).stdout)
    assert registered["stage"] == "staging" and registered["model"] == "fraud"
    holdout = registered["holdout"]
    assert {"accuracy", "precision", "recall", "auc", "log_loss", "latency_us"} <= set(holdout)
    table = read_dataset(dataset)
    xs = [dict(x) for x in table.column("x").to_pylist()]
    ys = table.column("y").to_pylist()
    pvs = evaluate.progressive_val_score(dataset=zip(xs, ys, strict=True),
                                         model=build_model(settings.model).pipeline,
                                         metric=metrics.Accuracy())
    print(f"holdout accuracy {holdout['accuracy']:.4f}, progressive {pvs.get():.4f}")
    assert abs(holdout["accuracy"] - pvs.get()) <= 0.01
    shown = json.loads(cli(settings, "models", "show",
                           f"fraud@{registered['version']}").stdout)
    snap = shown["snapshots"][registered["version"]][-1]
    training = snap["metrics"]["training"]
    assert snap["data_hash"] == training["dataset_sha256"] and snap["checkpoint_size"] > 0
    assert snap["dependencies"]["river"] and training["train_rows"] + \
        training["holdout_rows"] == N
    assert shown["versions"][0]["stage"] == "staging"


async def test_a_worse_model_is_not_promoted_and_a_worker_starts_from_a_trained_one(
        ran, dataset) -> None:
    settings = ran["settings"]
    good = json.loads(cli(settings, "train", "--dataset", str(dataset), "--model",
                          _spec(0.01)).stdout)
    bad = json.loads(cli(settings, "train", "--dataset", str(dataset), "--model",
                         _spec(1e-7)).stdout)
    assert bad["holdout"]["accuracy"] < good["holdout"]["accuracy"]
    cli(settings, "models", "promote", "fraud", good["version"], "--force")
    refused = cli(settings, "models", "promote", "fraud", bad["version"], check=False)
    assert refused.returncode == 2 and "not promoted" in refused.stderr, refused.stderr
    prod = [v for v in json.loads(cli(settings, "models", "list").stdout)["fraud"]
            if v["stage"] == "production"]
    assert [v["version"] for v in prod] == [good["version"]]
    # the other way round: the better one beats the worse on the same holdout
    cli(settings, "models", "promote", "fraud", bad["version"], "--force")
    accepted = json.loads(cli(settings, "models", "promote", "fraud", good["version"]).stdout)
    assert accepted["to_stage"] == "production"
    assert accepted["evidence"]["candidate"]["accuracy"] > \
        accepted["evidence"]["production"]["accuracy"]
    # cold start: a worker's model keeper serves the trained snapshot, learned count and all
    from stream_app.lifecycle import ModelKeeper
    from stream_app.pipeline.engine import Engine

    engine = Engine(settings)
    keeper = ModelKeeper(settings, engine)
    await keeper.start()
    try:
        assert engine.model.version == good["version"]
        assert engine.snapshot_id == good["snapshot"]
        assert engine.metrics.learned == N - good["holdout"]["rows"]
    finally:
        await keeper.registry.aclose()


async def test_predict_batch_equals_the_streams_predictions_for_the_same_snapshot(ran) -> None:
    """A worker serving the promoted trained snapshot scores new events of new entities (no
    labels: it learns nothing); predict-batch scores the same file with that version."""
    import pyarrow.parquet as pq

    settings, tmp = ran["settings"], ran["tmp"]
    versions = json.loads(cli(settings, "models", "list").stdout)["fraud"]
    prod = next(v["version"] for v in versions if v["stage"] == "production")
    src = tmp / "batch.jsonl"
    with src.open("wb") as f:
        from stream_app.tools.datasets import synthetic

        for k, item in enumerate(synthetic(seed=99, n=2000, step_s=0.5,
                                           start=1_700_200_000.0)):
            f.write(orjson.dumps(item.event | {"event_id": f"b{k}",
                                               "entity_id": f"fresh-{k % 40}"}) + b"\n")
    worker = WorkerProcess(settings, tmp / "worker-batch.log")
    try:
        await latest_metrics(settings, until=lambda m: m["learning_enabled"]
                             and m["model_version"] == prod, timeout_s=90)
        await replay(settings, str(src))
        records = await collect(settings, contract.PREDICTIONS, timeout_s=120, until=lambda rs:
                                sum(r.key.startswith(b"b") for r in rs) >= 2000)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    stream = {p["event_id"]: p for p in map(orjson.loads, (r.value for r in records))
              if p["event_id"].startswith("b")}
    snapshots = {p["model_snapshot"] for p in stream.values()}
    assert len(snapshots) == 1  # it learned nothing: one snapshot served them all
    out = tmp / "batch.parquet"
    report = json.loads(cli(settings, "predict-batch", "--input", str(src), "--output", str(out),
                            "--model", f"fraud@{prod}#{snapshots.pop()}",
                            "--no-progress").stdout)
    assert report["predicted"] == 2000 and report["rejected"] == 0 and report["vectorised"]
    batch = {r["event_id"]: r for r in pq.read_table(out).to_pylist()}
    assert batch.keys() == stream.keys()
    for eid, b in batch.items():
        s = stream[eid]
        assert (s["model_version"], s["model_snapshot"]) == (b["model_version"],
                                                               b["model_snapshot"])
        assert abs(s["score"] - b["score"]) < 1e-9 and s["predicted"] == b["predicted"]
