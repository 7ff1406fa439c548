"""Faults with two workers: one killed with -9, and one frozen past its session timeout (a
zombie) that then wakes up. Exactly once holds in both.

The zombie is the case transactions by partition exist for: while it is stopped, the other
worker takes its partitions and starts their transactional producers, which fences it; when
it resumes mid-batch, its transaction fails with ``ProducerFenced`` and its batch is dropped
unseen (the other worker replays it from the committed offset).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from models.registry import open_registry
from stream_app.kafka_io import ensure_topics
from tests.conftest import WorkerProcess, make_settings
from tests.faults.checker import read
from tests.faults.harness import learned_count, progress, publish

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("fault", ["kill", "zombie"])
async def test_two_workers_one_killed_or_frozen(_service_urls, tmp_path: Path, fault: str
                                                ) -> None:
    kafka, redis, embedded = _service_urls
    if embedded:
        pytest.skip("the embedded broker has no transactions (at least once there)")
    guarantee = os.environ.get("FAULTS_GUARANTEE", "exactly_once")
    settings = make_settings(kafka, redis, embedded, tmp_path, processing_guarantee=guarantee)
    await ensure_topics(settings)
    a = WorkerProcess(settings, tmp_path / "a.log")
    b = None
    publisher = asyncio.ensure_future(publish(settings, n=9000, rate=300.0, prefix=fault))
    try:
        await progress(settings)
        b = WorkerProcess(settings, tmp_path / "b.log")
        await asyncio.sleep(12)  # b joins: the partitions are split between a and b
        await progress(settings)
        await asyncio.sleep(random.Random(3).uniform(0.1, 0.5))
        if fault == "kill":
            a.kill()
        else:
            a.proc.send_signal(signal.SIGSTOP)  # past the 10 s session timeout: b takes over
            await asyncio.sleep(15)
            a.proc.send_signal(signal.SIGCONT)  # wakes up mid-batch, a zombie
        good, _ = await publisher
        report = await read(settings, good, timeout_s=180.0)
        report.record(f"two workers, {fault}", guarantee=guarantee, kills=1)
        learned = await learned_count(settings, len(good))
    finally:
        publisher.cancel()
        if fault == "zombie":
            a.proc.send_signal(signal.SIGCONT)
        codes = [w.stop() for w in (a, b) if w is not None and w.alive()]
    assert not report.missing, report.summary()
    assert not report.duplicates, report.summary()
    assert not report.unexpected, report.summary()
    # the production model learned every label once: none lost with the paused or killed
    # learner, none twice (a zombie's learning is discarded, not merged)
    assert learned == len(good)
    # and no checkpoint went backwards (a fenced learner wrote none after its successor)
    registry = open_registry(settings.registry_url, key=settings.registry_key_bytes,
                             namespace=settings.app_id)
    try:
        prod = await registry.production(settings.model.name)
        snaps = await registry.snapshots(settings.model.name, prod.version)
    finally:
        await registry.aclose()
    counts = [s.learn_count for s in snaps]
    assert counts and counts == sorted(counts), counts
    assert counts[-1] == len(good)
    # the ledger kept up: a restore would resume after every label, not relearn from a gap
    # (commit markers in the labels topic once stalled it)
    (resume_at,) = snaps[-1].label_offsets.values()
    assert resume_at >= len(good), snaps[-1].label_offsets
    assert all(c == 0 for c in codes), codes
