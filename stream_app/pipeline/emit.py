"""Emit: the records a batch produced are serialised once and go to Kafka as one record batch per topic-partition.

``producer.send`` costs a future, an accumulator entry and Faust's wrapper per record; here each
topic-partition's records are appended to one aiokafka ``BatchBuilder`` (C-accelerated) and
submitted with ``send_batch``, so the per-record cost is one append. Partitions are the
producer's partitioner's (murmur2 of the key, as every Kafka client; vectorised in
``pipeline.partition``), so a record lands where ``producer.send`` would have put it.
:func:`send` returns once every batch is delivered (``acks`` as configured); a failure raises
the producer's ``KafkaError`` for the caller to retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from stream_app.pipeline.partition import partitions
from stream_app.pipeline.records import Output, encode

__all__ = ["send"]


async def send(producer: Any, outputs: Sequence[Output]) -> None:
    """Serialise ``outputs`` (``records.encode``), send them with ``producer`` (an aiokafka
    producer) and wait for every batch to be delivered."""
    if not outputs:
        return
    outs = encode(outputs)
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    for topic, key, value in outs:
        by_topic.setdefault(topic, []).append((key, value))
    by_tp: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
    for topic, records in by_topic.items():
        for partition, record in zip(await _partitions(producer, topic, records), records,
                                     strict=True):
            by_tp.setdefault((topic, partition), []).append(record)
    futures = []
    for (topic, partition), records in by_tp.items():
        batch, n = producer.create_batch(), 0
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is not None:
                n += 1
                continue
            if n:  # full: submit it and start the next
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch, n = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is not None:
                    n += 1
                    continue
            # larger than a batch: the plain path, which sends it or raises its KafkaError
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        if n:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)


async def _partitions(producer: Any, topic: str,
                      records: list[tuple[bytes | None, bytes]]) -> list[int]:
    """Each record's partition, as the producer's partitioner would choose it."""
    await producer.client._wait_on_metadata(topic)  # noqa: SLF001
    metadata = producer.client.cluster
    every = sorted(metadata.partitions_for_topic(topic))
    available = sorted(metadata.available_partitions_for_topic(topic)) or every
    partitioner = producer._partitioner  # noqa: SLF001
    if type(partitioner) is not DefaultPartitioner or any(k is None for k, _ in records):
        return [partitioner(k, every, available) for k, _ in records]
    return [every[i] for i in partitions([k for k, _ in records], len(every))]  # type: ignore[misc]
