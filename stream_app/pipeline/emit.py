"""Emit: the records a batch produced are serialised once and go to Kafka as one record batch per topic-partition.

``producer.send`` costs a future, an accumulator entry and Faust's wrapper per record; here each
topic-partition's records are appended to one aiokafka ``BatchBuilder`` (C-accelerated) and
submitted with ``send_batch``, so the per-record cost is one append. Partitions come from the
producer's own partitioner (murmur2 of the key, as every Kafka client), so a record lands where
``producer.send`` would have put it. :meth:`Emitter.send` returns once every batch is delivered
(``acks`` as configured); a failure raises the producer's ``KafkaError`` for the caller to retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from stream_app.pipeline.records import Output, encode

__all__ = ["Emitter"]


class Emitter:
    """Serialises outputs (``records.encode``) and sends them through an ``AIOKafkaProducer`` given by ``get_producer``."""

    def __init__(self, get_producer: Callable[[], Any]) -> None:
        self._get_producer = get_producer

    async def send(self, outputs: Sequence[Output]) -> None:
        if not outputs:
            return
        outs = encode(outputs)
        producer = self._get_producer()
        by_tp: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        partitioners: dict[str, Callable[[bytes | None], int]] = {}
        for topic, key, value in outs:
            choose = partitioners.get(topic)
            if choose is None:
                choose = partitioners[topic] = await _partitioner(producer, topic)
            by_tp.setdefault((topic, choose(key)), []).append((key, value))
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


async def _partitioner(producer: Any, topic: str) -> Callable[[bytes | None], int]:
    """The producer's partitioner for ``topic``, with its partition lists taken once."""
    await producer.client._wait_on_metadata(topic)  # noqa: SLF001
    metadata = producer.client.cluster
    every = sorted(metadata.partitions_for_topic(topic))
    available = sorted(metadata.available_partitions_for_topic(topic)) or every
    partitioner = producer._partitioner  # noqa: SLF001
    return lambda key: partitioner(key, every, available)
