"""Fault: the broker goes away for 24 s and comes back. Nothing is lost or doubled, and the
worker reports the outage in a bounded number of log lines (``stream_app.logs``).

Restarts the suite's own Apache Kafka (``scripts/kafka-local stop``/``start``, data kept); skipped
when the suite runs on another broker.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from stream_app import contract
from stream_app.kafka_io import ensure_topics, make_consumer
from tests.conftest import WorkerProcess, make_settings
from tests.faults.checker import read
from tests.faults.harness import progress, publish

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"
OUTAGE_S = 24.0


def _kafka_local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KAFKA_LOCAL), *args], capture_output=True, text=True,
                          timeout=180, check=False)


async def _leaders_elected(settings, timeout_s: float = 90.0) -> None:
    """Until every partition of the events and labels topics has a leader again."""
    names = [settings.topic(contract.EVENTS), settings.topic(contract.LABELS)]
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
                parts = [(n, p) for n in names for p in cluster.partitions_for_topic(n) or ()]
                if parts and all((cluster.leader_for_partition(TopicPartition(n, p)) or -1) >= 0
                                 for n, p in parts):
                    return
            except KafkaError:
                pass
            assert time.monotonic() < deadline, "no partition leaders after the restart"
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


async def test_a_24s_broker_outage_loses_nothing_and_logs_little(_service_urls, tmp_path: Path
                                                                 ) -> None:
    kafka, redis, embedded = _service_urls
    status = _kafka_local("status")
    if embedded or status.returncode != 0 or kafka not in status.stdout:
        pytest.skip("needs the suite's own broker from scripts/kafka-local")
    guarantee = os.environ.get("FAULTS_GUARANTEE", "exactly_once")
    settings = make_settings(kafka, redis, embedded, tmp_path, processing_guarantee=guarantee)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    stopped = False
    try:
        good, _ = await publish(settings, n=1500, rate=500.0, prefix="before")
        await progress(settings, more=500)
        lines_before = worker.log().count("\n")
        assert _kafka_local("stop").returncode == 0
        stopped, t0 = True, time.monotonic()
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
        lines_during = worker.log().count("\n") - lines_before
        started = _kafka_local("start")
        assert started.returncode == 0, started.stderr
        stopped = False
        await _leaders_elected(settings)  # else the test's own publishing times out
        after, _ = await publish(settings, n=1500, rate=500.0, prefix="after")
        report = await read(settings, good | after, timeout_s=180.0)
        report.record("broker restart", guarantee=guarantee, kills=1,
                      log_lines_during_outage=lines_during)
        assert worker.alive()
    finally:
        if stopped:
            _kafka_local("start")
        code = worker.stop()
    assert report.ok, report.summary()
    assert lines_during <= 100, f"{lines_during} log lines during a {OUTAGE_S:g} s outage"
    assert code == 0
