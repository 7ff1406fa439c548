"""A worker commits the offsets of what it delivered, in both guarantees.

(At least once used to commit nothing at all: Faust's Cython stream iterator acks a message
without calling the consumer's ``ack``, so the batch spans never became committable, and every
restart replayed the topics from the start.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from stream_app import contract
from stream_app.kafka_io import ensure_topics, make_consumer
from tests.conftest import WorkerProcess, make_settings
from tests.kafka_helpers import collect, event, label, latest_metrics, produce

pytestmark = [pytest.mark.integration]


async def _committed(settings, keys) -> dict[tuple[str, int], int]:
    """The worker group's committed offsets (OffsetFetch, which the embedded broker answers
    too; it has no admin ListConsumerGroupOffsets)."""
    consumer = make_consumer(settings, group_id=settings.app_id)
    await consumer.start()
    try:
        got = {k: await consumer.committed(TopicPartition(*k)) for k in keys}
    finally:
        await consumer.stop()
    return {k: o for k, o in got.items() if o is not None and o >= 0}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_the_offsets_of_delivered_batches_are_committed(_service_urls, tmp_path: Path,
                                                              guarantee: str) -> None:
    kafka, redis, embedded = _service_urls
    if embedded and guarantee == "exactly_once":
        pytest.skip("the embedded broker has no transactions")
    settings = make_settings(kafka, redis, embedded, tmp_path, processing_guarantee=guarantee,
                             partitions=2)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        placed = await produce(settings, contract.EVENTS,
                               [(f"k{i % 5}".encode(), event(f"c{i}", f"k{i % 5}", v=i))
                                for i in range(300)])
        placed_labels = await produce(settings, contract.LABELS,
                                      [(f"c{i}".encode(), label(f"c{i}", i % 2 == 0))
                                       for i in range(300)])
        await collect(settings, contract.PREDICTIONS, until=lambda rs: len(rs) >= 300)
        ends = {(settings.topic(contract.EVENTS), p): o + 1 for p, o in placed}
        ends[(settings.topic(contract.LABELS), 0)] = max(o for _, o in placed_labels) + 1
        expected = {}
        for key, end in ends.items():
            expected[key] = max(end, expected.get(key, 0))
        deadline = time.monotonic() + 30
        committed: dict[tuple[str, int], int] = {}
        while time.monotonic() < deadline:
            committed = await _committed(settings, expected)
            if all(committed.get(k, -1) >= v for k, v in expected.items()):
                break
            await asyncio.sleep(0.5)
        # and the worker reports that nothing is left uncommitted (lag from committed offsets)
        metrics = await latest_metrics(settings, until=lambda m: m.get("committed_lag") == {
            settings.topic(contract.EVENTS): 0, settings.topic(contract.LABELS): 0},
            timeout_s=30)
    finally:
        worker.stop()
    assert {k: committed.get(k) for k in expected} == expected
    assert metrics["consumer_lag"] == metrics["committed_lag"]
