"""Fault: the worker is killed with -9 during a stream, several times. Exactly once holds.

With ``processing_guarantee = "exactly_once"`` a killed worker's open transaction is aborted by
the next owner of its partitions, and the replayed batch re-emits the predictions stored with
its claims: a ``read_committed`` reader sees one outcome per event, however often the worker
dies. (At least once, the same run shows hundreds of doubled ids.)

``FAULTS_KILLS`` (default 3) sets the number of kills; ``FAULTS_GUARANTEE=at_least_once``
runs the same scenario without transactions (it fails: doubled ids).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import orjson
import pytest

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from tests.conftest import WorkerProcess, make_settings
from tests.faults.checker import read
from tests.kafka_helpers import collect, event, label, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ids(records: list) -> set[str]:
    return {orjson.loads(r.value)["event_id"] for r in records}


async def _predicted(settings) -> list:
    return await collect(settings, contract.PREDICTIONS, until=lambda rs: False, timeout_s=1.0)


async def _publish(settings, n: int, rate: float, prefix: str) -> list[str]:
    """``n`` events over ``n / rate`` s, in chunks, with each chunk's labels after it."""
    ids, chunk = [], max(1, int(rate / 10))
    rng = random.Random(7)
    for start in range(0, n, chunk):
        batch = [f"{prefix}-{i}" for i in range(start, min(n, start + chunk))]
        await produce(settings, contract.EVENTS, [
            (f"e{rng.randrange(20)}".encode(), event(eid, f"e{rng.randrange(20)}",
                                                      x=rng.random(), y=rng.gauss(0, 1)))
            for eid in batch])
        await produce(settings, contract.LABELS, [(eid.encode(), label(eid, rng.random() < 0.3))
                                                  for eid in batch])
        ids.extend(batch)
        await asyncio.sleep(chunk / rate)
    return ids


async def test_kill9_several_times_loses_and_doubles_nothing(_service_urls, tmp_path: Path
                                                            ) -> None:
    kafka, redis, embedded = _service_urls
    if embedded:
        pytest.skip("the embedded broker has no transactions (at least once there)")
    # FAULTS_GUARANTEE=at_least_once shows what this test guards against
    guarantee = os.environ.get("FAULTS_GUARANTEE", "exactly_once")
    settings = make_settings(kafka, redis, embedded, tmp_path, processing_guarantee=guarantee)
    kills = int(os.environ.get("FAULTS_KILLS", "3"))
    await ensure_topics(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = WorkerProcess(settings, logs / "worker-0.log")
    publisher = asyncio.ensure_future(_publish(settings, n=600 * (kills + 1), rate=300.0,
                                               prefix="k"))
    try:
        rng = random.Random(11)
        for k in range(kills):
            # mid-stream: once this worker has emitted, while batches are in flight
            seen = _ids(await _predicted(settings))
            await collect(settings, contract.PREDICTIONS, timeout_s=60,
                          until=lambda rs, n=len(seen): len(_ids(rs)) >= n + 200)
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            worker.kill()
            worker = WorkerProcess(settings, logs / f"worker-{k + 1}.log")
        ids = await publisher
        report = await read(settings, set(ids), timeout_s=180.0)
    finally:
        publisher.cancel()
        code = worker.stop()
    assert not report.missing, report.summary()
    assert not report.duplicates, report.summary()
    assert not report.unexpected, report.summary()
    assert code == 0
