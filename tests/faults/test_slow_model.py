"""A model slower than the input rate (issue 10): River's adaptive random forest, whose learning
costs milliseconds a label, gets a burst of labels it needs many seconds to learn while events
keep coming.

What must hold: the labels wait (visibly: the labels topic's lag in the metrics), scoring does
not wait behind them (every event sent while the backlog is being learned is predicted before
the backlog is done), every event gets one outcome, every label is learned exactly once, and
no checkpoint goes backwards. The learner's first checkpoint of the forest is pickled by a
forked child (its size is not known yet), which must not fail.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.registry import open_registry
from stream_app import contract
from stream_app.kafka_io import ensure_topics, make_producer
from tests.conftest import WorkerProcess, make_settings
from tests.faults.checker import read
from tests.faults.harness import learned_count
from tests.kafka_helpers import collect, event, label, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FOREST = {"name": "slow", "threshold": 0.5, "steps": [
    {"name": "StandardScaler"}, {"name": "ARFClassifier", "params": {"n_models": 100, "seed": 1}}]}
BURST = 4000  # labels learned at a few ms each: many seconds of backlog
RATE = 100.0  # events/s while the backlog is learned
DURING_S = 12.0
#: an event sent this long before the backlog was learned must have been scored before then
MARGIN_S = 3.0


def _events(prefix: str, n: int, first: int = 0) -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for i in range(first, first + n):
        eid, entity = f"{prefix}-{i}", f"e{i % 20}"
        x, y = (i * 7919 % 1000) / 1000, (i * 104729 % 1000) / 1000
        out.append((entity.encode(), event(eid, entity, x=x, y=y), label(eid, x + y > 1.0)))
    return out


async def test_a_slow_model_lags_its_labels_not_its_predictions(_service_urls, tmp_path: Path
                                                                ) -> None:
    kafka, redis, embedded = _service_urls
    settings = make_settings(kafka, redis, embedded, tmp_path, model=FOREST)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    before = _events("before", BURST)
    during = _events("during", int(RATE * DURING_S), first=BURST)
    try:
        await produce(settings, contract.EVENTS, [(k, v) for k, v, _ in before])
        await collect(settings, contract.PREDICTIONS, timeout_s=120.0,
                      until=lambda rs: len(rs) >= BURST)
        burst_at = time.time()
        await produce(settings, contract.LABELS, [(_id(v), lb) for _, v, lb in before])
        sent = await _paced(settings, during)  # events go on while the burst is learned
        await produce(settings, contract.LABELS, [(_id(v), lb) for _, v, lb in during])
        expected = {orjson.loads(v)["event_id"] for _, v, _ in before + during}
        report = await read(settings, expected, timeout_s=180.0)
        learned = await learned_count(settings, len(expected), timeout_s=180.0)
        metrics = [orjson.loads(r.value) for r in await collect(
            settings, contract.METRICS, until=lambda rs: False, timeout_s=3.0)]
        scored = {p["event_id"]: p["scored_at"] for p in (orjson.loads(r.value) for r in
                  await collect(settings, contract.PREDICTIONS, until=lambda rs: False,
                                timeout_s=3.0))}
    finally:
        code = worker.stop()
    assert report.ok, report.summary()
    assert learned == len(expected)  # every label once, none twice
    learner = [m for m in metrics if m.get("lifecycle", {}).get("role") == "learner"]
    # the burst was learned when the learner's count first reached it
    done_at = min(m["at"] for m in learner if m["labels"]["learned"] >= BURST)
    assert done_at - burst_at > 2 * MARGIN_S, \
        f"the backlog took {done_at - burst_at:.1f} s: too short to prove anything"
    lag = max(_labels_lag(m, settings) for m in learner if burst_at <= m["at"] <= done_at)
    assert lag >= BURST // 4, f"the labels never lagged in the metrics (at most {lag})"
    waited = {eid: scored[eid] - at for eid, at in sent.items() if at < done_at - MARGIN_S}
    assert len(waited) >= 100, f"{len(waited)} events sent during the backlog: too few"
    ordered = sorted(waited.values())
    report.record("slow model", kills=0,
                  guarantee="exactly_once" if settings.exactly_once else "at_least_once",
                  backlog_s=round(done_at - burst_at, 1), max_labels_lag=lag,
                  scored_during_backlog=len(waited),
                  wait_p50_s=round(ordered[len(ordered) // 2], 3),
                  wait_p99_s=round(ordered[int(len(ordered) * 0.99)], 3),
                  wait_max_s=round(ordered[-1], 3))
    late = {eid: round(w, 2) for eid, w in waited.items() if scored[eid] >= done_at}
    assert not late, f"{len(late)} events waited for the labels' backlog: {sorted(late.items())[:5]}"
    registry = open_registry(settings.registry_url, key=settings.registry_key_bytes,
                             namespace=settings.app_id)
    try:
        prod = await registry.production(settings.model.name)
        counts = [s.learn_count for s in await registry.snapshots(settings.model.name,
                                                                  prod.version)]
    finally:
        await registry.aclose()
    assert counts and counts == sorted(counts), counts
    log = worker.log()
    assert "forked checkpoint failed" not in log and "cannot fork" not in log
    assert code == 0


async def _paced(settings: Any, events: list[tuple[bytes, bytes, bytes]]) -> dict[str, float]:
    """Send ``events`` at :data:`RATE` a second on one producer, ten at a time on a fixed
    schedule (a loaded machine slows the sends, not the rate); when each id was sent."""
    producer = make_producer(settings)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        for start in range(0, len(events), 10):
            await asyncio.sleep(max(0.0, t0 + start / RATE - time.monotonic()))
            chunk = events[start:start + 10]
            futures = [await producer.send(settings.topic(contract.EVENTS), v, key=k)
                       for k, v, _ in chunk]
            await asyncio.gather(*futures)
            now = time.time()
            sent.update((orjson.loads(v)["event_id"], now) for _, v, _ in chunk)
    finally:
        await producer.stop()
    return sent


def _id(value: bytes) -> bytes:
    return orjson.loads(value)["event_id"].encode()


def _labels_lag(metrics: dict[str, Any], settings: Any) -> int:
    topic = settings.topic(contract.LABELS)
    return max(metrics.get("consumer_lag", {}).get(topic, 0),
               metrics.get("committed_lag", {}).get(topic, 0))
