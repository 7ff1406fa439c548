"""Small helpers for integration tests: produce raw records, collect a topic, read metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition

from stream_app import contract
from stream_app.kafka_io import make_consumer, make_producer
from stream_app.settings import Settings


async def produce(settings: Settings, topic: str, records: Sequence[tuple[bytes | None, bytes]],
                  *, partition: int | None = None) -> list[tuple[int, int]]:
    """Send raw (key, value) records to a contract topic; return their (partition, offset)."""
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic(topic), value, key=key, partition=partition)
                   for key, value in records]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


def event(event_id: str, entity_id: str = "a", ts: float | None = None, **features: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "entity_id": entity_id,
                         "timestamp": time.time() if ts is None else ts, "features": features})


def label(event_id: str, value: bool | int | str) -> bytes:
    return orjson.dumps({"event_id": event_id, "label": value, "timestamp": time.time()})


async def collect(settings: Settings, topic: str, *, until: Callable[[list[Any]], bool],
                  timeout_s: float = 60.0) -> list[Any]:
    """Read a contract topic from the beginning until ``until(records)`` or the timeout."""
    name = settings.topic(topic)
    consumer = make_consumer(settings)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] | None = None
        while not partitions and time.monotonic() < deadline:
            cluster = await consumer._client.fetch_all_metadata()
            partitions = cluster.partitions_for_topic(name)
            if not partitions:
                await asyncio.sleep(0.2)
        assert partitions, f"topic {name} never appeared"
        tps = [TopicPartition(name, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline and not until(records):
            got = await consumer.getmany(timeout_ms=200)
            for batch in got.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def latest_metrics(settings: Settings, *, until: Callable[[dict[str, Any]], bool],
                         timeout_s: float = 60.0) -> dict[str, Any]:
    """The newest snapshot on the ``metrics`` topic once ``until(snapshot)`` holds."""
    def done(records: list[Any]) -> bool:
        return bool(records) and until(orjson.loads(records[-1].value))

    records = await collect(settings, contract.METRICS, until=done, timeout_s=timeout_s)
    assert records, "no metrics snapshot was published"
    last = orjson.loads(records[-1].value)
    assert until(last), f"metrics never reached the expected state; last: {last}"
    return last
