"""Print a topic's records as JSON lines, starting instantly (no consumer group).

A JSON value is printed compact, as one line; anything else as an object carrying the raw
bytes in base64, so the output is always JSON Lines.

>>> from aiokafka.structs import ConsumerRecord
>>> rec = lambda v: ConsumerRecord("events", 0, 7, 0, 0, None, v, None, 0, 0, [])
>>> render(rec(b'{ "event_id" : "e1" }'))
'{"event_id":"e1"}'
>>> render(rec(b"\\xff{oops"))
'{"topic":"events","partition":0,"offset":7,"value_base64":"/3tvb3Bz"}'
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from stream_app.contract import TOPICS
from stream_app.errors import ConfigError, ServiceError
from stream_app.kafka_io import ensure_topics, full_topic, make_consumer, stop_consumer
from stream_app.settings import Settings

__all__ = ["render", "tail"]

_POLL_S = 0.2


def render(record: Any) -> str:
    """One output line (without newline) for a consumer record."""
    if record.value is not None:
        try:
            return orjson.dumps(orjson.loads(record.value)).decode()
        except orjson.JSONDecodeError:
            pass
    raw = None if record.value is None else base64.b64encode(record.value).decode("ascii")
    return orjson.dumps({"topic": record.topic, "partition": record.partition,
                         "offset": record.offset, "value_base64": raw}).decode()


async def tail(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    out: TextIO = sys.stdout,
    idle_timeout_s: float | None = None,
) -> int:
    """Print records of ``topic`` to ``out`` until ``limit`` records or ``idle_timeout_s`` of
    silence (``None``: never); returns how many were printed.

    ``topic`` is a contract name, prefixed or not, or any other topic's full name. A missing
    contract topic is created (as the worker would); any other missing topic is a
    :class:`ConfigError`. Every partition is assigned and positioned before the first poll,
    so, without ``from_beginning``, every record produced after the call is printed.
    """
    if limit is not None and limit <= 0:
        return 0
    name = full_topic(settings, topic)
    contract_topic = name in {settings.topic(t) for t in TOPICS}
    if contract_topic:
        await ensure_topics(settings, [name])
    consumer = make_consumer(settings, from_beginning=from_beginning)
    try:
        started_ms = time.time() * 1000
        await consumer.start()
        await _assign_all(consumer, name, from_beginning, 10.0 if contract_topic else 0.0)
        # tansu answers "latest" with the base offset of the last batch (+1), so a tail from
        # the end would replay the rest of that batch: drop what predates this call.
        skip_before_ms = started_ms if settings.embedded and not from_beginning else None
        return await _print_records(consumer, out, limit, idle_timeout_s, skip_before_ms)
    except KafkaError as exc:
        raise ServiceError(f"tail of {name!r} at {settings.bootstrap_servers} failed: {exc!r}") from exc
    finally:
        await stop_consumer(consumer)


async def _assign_all(consumer: AIOKafkaConsumer, name: str, from_beginning: bool,
                      wait_s: float) -> None:
    # A topic created a moment ago may not be in every broker's metadata yet: ask again.
    deadline = time.monotonic() + wait_s
    while True:
        # the consumer's own metadata cache only learns of topics it subscribes to
        cluster = await consumer._client.fetch_all_metadata()
        known = cluster.topics()
        partitions = cluster.partitions_for_topic(name)
        if partitions or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if not partitions:
        nearby = sorted(t for t in known if not t.startswith("__"))[:20]
        raise ConfigError(f"topic {name!r} does not exist (topics: {', '.join(nearby) or 'none'})")
    tps = [TopicPartition(name, p) for p in sorted(partitions)]
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve the positions now, not lazily at the first fetch
        await consumer.position(tp)


async def _print_records(
    consumer: AIOKafkaConsumer,
    out: TextIO,
    limit: int | None,
    idle_timeout_s: float | None,
    skip_before_ms: float | None,
) -> int:
    clock = asyncio.get_running_loop().time
    printed, last_seen = 0, clock()
    while True:
        wait = _POLL_S
        if idle_timeout_s is not None:
            wait = max(0.0, min(wait, idle_timeout_s - (clock() - last_seen)))
        batch = await consumer.getmany(timeout_ms=int(wait * 1000))
        for records in batch.values():
            if records:
                last_seen = clock()
            for record in records:
                if skip_before_ms is not None and record.timestamp < skip_before_ms:
                    continue
                out.write(render(record) + "\n")
                printed += 1
                if limit is not None and printed >= limit:
                    out.flush()
                    return printed
        out.flush()
        if idle_timeout_s is not None and clock() - last_seen >= idle_timeout_s:
            return printed
