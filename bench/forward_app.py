"""The trivial forward agent: the floor of what a Faust worker configured like ours can do.

Same Faust app class and options as the engine (``stream_app.app.StreamApp`` and
``_app_options``: raw bytes topics, producer linger, commit interval, fetch wait, uvloop), one
agent with concurrency 1 reading ``--source`` and sending every record's key and value to
``--sink`` with ``app.producer.send`` without awaiting delivery per record. Nothing is parsed.

Modes (``--mode``):
  take    ``stream.take_events(batch_max, batch_within_s)`` like our agents; no delivery wait
  gather  as ``take``, then await every delivery of the batch (what ``send_all`` does)
  each    ``async for event in stream.events()``, one record at a time
  raw     no Faust at all: an aiokafka consumer in the same group settings (``getmany`` of up
          to ``batch_max``) and an aiokafka producer with Faust's linger; what Faust costs

Run by ``bench/throughput.py`` with the settings in ``STREAM_*`` variables:
    python bench/forward_app.py --source bench-x.events --sink bench-x.forward --mode take
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust  # noqa: E402

from stream_app.app import StreamApp, _app_options  # noqa: E402
from stream_app.settings import Settings, load_settings  # noqa: E402


def build_app(settings: Settings, source: str, sink: str, mode: str) -> StreamApp:
    app = StreamApp(settings.app_id, **_app_options(settings))
    app.settings = settings
    app.fetch_max_wait_ms = 20 if settings.embedded else 100  # as create_app does

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=settings.partitions)

    src = topic(source)
    topic(sink)

    async def forward(stream: faust.StreamT) -> None:
        producer = app.producer
        if mode == "each":
            async for event in stream.events():
                msg = event.message
                await producer.send(sink, msg.key, msg.value, None, None, None)
            return
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            futures: list[Any] = []
            for event in events:
                msg = event.message
                futures.append(await producer.send(sink, msg.key, msg.value, None, None, None))
            if mode == "gather" and futures:
                await asyncio.gather(*futures)

    forward.__name__ = forward.__qualname__ = "forward"
    app.agent(src, name=f"{settings.app_id}.forward", concurrency=1)(forward)
    return app


async def raw_forward(settings: Settings, source: str, sink: str) -> None:
    """The same job with plain aiokafka: batches from ``getmany``, sends not awaited per record."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(source, bootstrap_servers=settings.bootstrap_servers,
                                group_id=settings.app_id, auto_offset_reset="earliest",
                                enable_auto_commit=True, auto_commit_interval_ms=1000,
                                fetch_max_wait_ms=100)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2,
                                acks=1, enable_idempotence=False)
    await consumer.start()
    await producer.start()
    try:
        while True:
            got = await consumer.getmany(timeout_ms=int(settings.batch_within_s * 1000),
                                         max_records=settings.batch_max)
            for records in got.values():
                for r in records:
                    await producer.send(sink, r.value, key=r.key)
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="full name of the topic to read")
    parser.add_argument("--sink", required=True, help="full name of the topic to write")
    parser.add_argument("--mode", choices=("take", "gather", "each", "raw"), default="take")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # Faust's Worker must not see our flags
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    if args.mode == "raw":
        import uvloop
        uvloop.run(raw_forward(settings, args.source, args.sink))
        return 0
    app = build_app(settings, args.source, args.sink, args.mode)
    faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
