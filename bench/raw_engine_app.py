"""A benchmark-only runner: the same ``Engine`` fed by plain aiokafka instead of Faust.

Not a product: it exists to measure what the engine could do without Faust's per-record
machinery, for the throughput and latency benchmarks (``throughput.py --runner raw``). One
consumer in the app's group reads ``events`` and ``labels``; each ``getmany`` (whatever is
buffered, at most ``batch_max`` per partition fetch, waiting at most ``batch_within_s`` only
when nothing is buffered) is one batch: labels first, then events, through the engine; outputs
are sent without awaiting each record. Deliveries are awaited one batch behind (the next batch
is processed while the previous one is in flight) and only offsets of delivered batches are
committed (every second, as Faust's commit interval), so it stays at-least-once. The engine's metrics snapshot goes to
``metrics`` every ``metrics_interval_s`` as the real worker does.

    STREAM_*=... python bench/raw_engine_app.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.abc import ConsumerRebalanceListener  # noqa: E402
from aiokafka.structs import OffsetAndMetadata  # noqa: E402

from stream_app import contract  # noqa: E402
from stream_app.kafka_io import ensure_topics  # noqa: E402
from stream_app.pipeline.engine import Engine  # noqa: E402
from stream_app.pipeline.records import Record, encode  # noqa: E402
from stream_app.settings import Settings, load_settings  # noqa: E402

log = logging.getLogger("raw-engine")
#: offsets of delivered batches are committed at most this often (as Faust's commit interval)
COMMIT_INTERVAL_S = 1.0


class _Assigned(ConsumerRebalanceListener):
    def __init__(self, engine: Engine, events_topic: str) -> None:
        self.engine, self.events_topic = engine, events_topic

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.engine.metrics.partitions_assigned = sum(
            1 for tp in assigned if tp.topic == self.events_topic)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    await ensure_topics(settings)
    engine = Engine(settings)
    await engine.start()
    t_events, t_labels = settings.topic(contract.EVENTS), settings.topic(contract.LABELS)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                group_id=settings.app_id, client_id=f"{settings.app_id}-raw",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", 100)),
                                max_poll_records=settings.batch_max)
    consumer.subscribe([t_events, t_labels], listener=_Assigned(engine, t_events))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2,
                                acks=1, enable_idempotence=False)
    await consumer.start()
    await producer.start()
    inflight: tuple[list[Any], dict[TopicPartition, OffsetAndMetadata]] | None = None
    delivered: dict[TopicPartition, OffsetAndMetadata] = {}
    next_commit = next_metrics = time.monotonic() + settings.metrics_interval_s
    within_ms = max(1, int(settings.batch_within_s * 1000))
    try:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=within_ms, max_records=settings.batch_max)
            events: list[Record] = []
            labels: list[Record] = []
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, records in got.items():
                target = events if tp.topic == t_events else labels
                for r in records:
                    target.append(Record(r.topic, r.partition, r.offset, r.key, r.value,
                                         (r.timestamp or 0) / 1000.0))
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            outs = []
            if labels:
                outs += await engine.process_labels(labels)
            if events:
                outs += await engine.process_events(events)
            futures = [await producer.send(t, v, key=k) for t, k, v in encode(outs)]
            if inflight is not None:  # the previous batch is delivered: its offsets may commit
                await asyncio.gather(*inflight[0])
                delivered.update(inflight[1])
            inflight = (futures, offsets)
            if delivered and time.monotonic() >= next_commit:  # a commit is a round trip
                next_commit = time.monotonic() + COMMIT_INTERVAL_S
                await consumer.commit(delivered)
                delivered = {}
            if time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + settings.metrics_interval_s
                await producer.send(settings.topic(contract.METRICS),
                                    orjson.dumps(engine.metrics.snapshot()),
                                    key=settings.app_id.encode())
        if inflight is not None:
            await asyncio.gather(*inflight[0])
            delivered.update(inflight[1])
        if delivered:
            await consumer.commit(delivered)
    finally:
        await producer.stop()
        await consumer.stop()
        await engine.aclose()


def main() -> int:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper())
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    import uvloop

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    uvloop.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
