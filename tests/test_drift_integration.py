"""Drift end to end on real Kafka and Redis: episodes on the drift topic, retrain signals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest
from rich.console import Console

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from stream_app.tools.operate import drift_state, drift_table
from tests.conftest import WorkerProcess, make_settings
from tests.kafka_helpers import collect, event, label, latest_metrics, produce, values

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURES = [f"f{i}" for i in range(5)]


def _settings(urls, tmp_path: Path, **drift):
    kafka, redis, embedded = urls
    conf = {"window": 200, "check_every": 50, "prediction": False,
            "summary_interval_s": 0.5} | drift
    return make_settings(kafka, redis, embedded, tmp_path, drift=conf,
                         metrics_interval_s=0.5)


async def test_covariate_shift_opens_one_episode_and_one_signal(_service_urls,
                                                                tmp_path: Path) -> None:
    settings = _settings(_service_urls, tmp_path)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    rng = np.random.default_rng(7)
    try:
        await latest_metrics(settings, until=lambda m: m["partitions_assigned"] > 0)
        for start in range(0, 1600, 200):  # in order: f2 moves by 1 sigma from event 800 on
            chunk = []
            for i in range(start, start + 200):
                x = {f: float(rng.normal()) for f in FEATURES}
                if i >= 800:
                    x["f2"] += 1.0
                chunk.append((b"e", event(f"cov-{i}", f"u{i % 7}", **x)))
            await produce(settings, contract.EVENTS, chunk, partition=0)
        await latest_metrics(settings, until=lambda m: m["events"]["predicted"] >= 1600)
        signals = await collect(settings, contract.RETRAIN_SIGNALS, until=lambda rs: len(rs) >= 1)
        drift = await collect(settings, contract.DRIFT, timeout_s=3, until=lambda rs: False)
        summaries, opened = await drift_state(settings)  # what `stream-app drift` prints
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    (summary,) = summaries.values()  # one worker
    assert {subject for _, subject in opened} == {"f2"}
    state = {s["subject"]: s["drift"] for s in summary["subjects"]}
    assert state == {"f0": False, "f1": False, "f2": True, "f3": False, "f4": False}
    episodes = [d for d in values(drift) if d.get("record") == "episode"]
    assert any(d.get("record") == "summary" for d in values(drift))
    assert [(d["subject"], d["drift"], d["kind"], d["test"]) for d in episodes] == [
        ("f2", True, "feature", "ks")]
    ep = episodes[0]
    assert ep["adjusted_p_value"] < ep["alpha"] == 0.01
    assert ep["reference"]["size"] == ep["current"]["size"] == 200
    assert set(contract.DRIFT_FIELDS) <= set(ep)
    (signal,) = values(signals)
    assert signal["reason"] == "feature_drift" and signal["evidence"] == [ep["drift_id"]]
    assert tuple(signal) == contract.RETRAIN_FIELDS


async def test_concept_drift_raises_performance_drift_and_a_signal(_service_urls,
                                                                   tmp_path: Path) -> None:
    settings = _settings(_service_urls, tmp_path)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    rng = np.random.default_rng(11)
    try:
        await latest_metrics(settings, until=lambda m: m["partitions_assigned"] > 0)
        for start in range(0, 3000, 100):  # the rule flips at event 1500; features do not move
            events, labels = [], []
            for i in range(start, start + 100):
                x = {f: float(rng.normal()) for f in FEATURES}
                y = (x["f0"] > 0) if i < 1500 else (x["f0"] <= 0)
                events.append((b"c", event(f"con-{i}", "c", **x)))
                labels.append((f"con-{i}".encode(), label(f"con-{i}", bool(y))))
            await produce(settings, contract.EVENTS, events, partition=0)
            await produce(settings, contract.LABELS, labels)
            await asyncio.sleep(0.05)
        # "learned" counts the served model's learns: a promoted challenger has its own count
        snap = await latest_metrics(settings, until=lambda m: m["labels"]["joined"] >= 3000)
        signals = await collect(settings, contract.RETRAIN_SIGNALS, until=lambda rs: len(rs) >= 1)
        drift = await collect(settings, contract.DRIFT, timeout_s=3, until=lambda rs: False)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    perf = [d for d in values(drift) if d.get("kind") == "performance" and d["drift"]]
    assert perf, [orjson.dumps(d) for d in values(drift)]
    assert perf[0]["test"] == "adwin"
    assert perf[0]["current"]["mean_loss"] > perf[0]["reference"]["mean_loss"]
    assert not [d for d in values(drift) if d.get("kind") == "feature" and d.get("drift")]
    reasons = [s["reason"] for s in values(signals)]
    assert reasons == ["performance_drift"]
    assert snap["labels"]["joined"] == 3000


def _per_worker(records: list) -> dict[str, dict]:
    """The newest record of each worker (``metrics`` snapshots, drift summaries)."""
    latest: dict[str, dict] = {}
    for v in values(records):
        worker = v["worker"] if "worker" in v else v["scope"]["worker"]
        latest[worker] = v
    return latest


async def test_two_workers_each_test_the_partitions_they_hold(_service_urls,
                                                              tmp_path: Path) -> None:
    """Per-worker scope: entities on partition 0 shift, those on partition 1 do not. Only the
    worker holding partition 0 opens an episode, on f2 alone; the other one tests its own full
    windows and finds nothing. Every record names its worker."""
    kafka, redis, embedded = _service_urls
    drift = {"window": 200, "check_every": 50, "prediction": False, "summary_interval_s": 0.5,
             "retrain": {"min_feature_subjects": 0}}  # no signal, no challenger
    settings = make_settings(kafka, redis, embedded, tmp_path, partitions=2, drift=drift,
                             metrics_interval_s=0.5)
    await ensure_topics(settings)
    workers = [WorkerProcess(settings, tmp_path / f"w{k}.log") for k in (1, 2)]
    rng = np.random.default_rng(5)
    try:
        await collect(settings, contract.METRICS, timeout_s=90, until=lambda rs: len(
            [m for m in _per_worker(rs).values() if m["partitions_assigned"] == 1]) == 2)
        for start in range(0, 1600, 200):  # f2 moves by 1 sigma from event 800, partition 0 only
            for partition in (0, 1):
                chunk = []
                for i in range(start, start + 200):
                    x = {f: float(rng.normal()) for f in FEATURES}
                    if partition == 0 and i >= 800:
                        x["f2"] += 1.0
                    chunk.append((b"e", event(f"p{partition}-{i}", f"u{partition}-{i % 7}", **x)))
                await produce(settings, contract.EVENTS, chunk, partition=partition)
        metrics = await collect(settings, contract.METRICS, timeout_s=90, until=lambda rs: len(
            [m for m in _per_worker(rs).values() if m["events"]["predicted"] >= 1600]) == 2)
        await asyncio.sleep(1.5)  # three summary intervals after the last check
        drift = await collect(settings, contract.DRIFT, timeout_s=3, until=lambda rs: False)
    finally:
        codes = [w.stop() for w in workers]
        assert codes == [0, 0], [w.log()[-3000:] for w in workers]
    names = set(_per_worker(metrics))
    assert len(names) == 2
    episodes = [d for d in values(drift) if d.get("record") == "episode"]
    assert [(d["subject"], d["drift"]) for d in episodes] == [("f2", True)]
    shifted = episodes[0]["scope"]["worker"]
    assert shifted in names
    assert episodes[0]["scope"]["partitions"] == [0]  # the shifted events went to partition 0
    summaries = _per_worker([r for r in drift if orjson.loads(r.value).get("record") == "summary"])
    assert set(summaries) == names
    for worker, summary in summaries.items():
        state = {s["subject"]: s["drift"] for s in summary["subjects"]}
        assert state == {f: f == "f2" and worker == shifted for f in FEATURES}
        assert {(s["reference_size"], s["current_size"]) for s in summary["subjects"]} == {
            (200, 200)}
    # `stream-app drift` shows both workers' windows, the episode under the one that saw it
    states, opened = await drift_state(settings)
    assert set(states) == names and set(opened) == {(shifted, "f2")}
    console = Console(width=240, record=True)
    console.print(drift_table(states, opened))
    text = console.export_text()
    assert all(f"{w} (" in text for w in names), text
