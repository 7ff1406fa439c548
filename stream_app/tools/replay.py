"""Replay a dataset onto ``events``, and its labels onto ``labels`` after a delay.

Events are keyed by ``entity_id`` and labels by ``event_id``. Records are sent without
waiting for each acknowledgement (at most ``max_in_flight`` outstanding), paced at ``rate``
events per second when given. Labels wait in a heap ordered by due time, so a delay costs
no sleep per label; a seeded ``label_fraction`` of labelled events gets a label at all.

>>> str(ReplayReport(events_sent=100, labels_sent=50, bad_lines=1, elapsed_s=0.5))
'sent 100 events and 50 labels in 0.50 s (200 events/s); 1 bad line skipped'
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final, TextIO

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_app.contract import EVENTS, LABELS
from stream_app.errors import ConfigError, ServiceError
from stream_app.kafka_io import ensure_topics, make_producer
from stream_app.settings import Settings
from stream_app.tools.datasets import BadLine, DriftSpec, LabelledEvent, open_dataset

__all__ = ["ReplayReport", "replay"]

#: event-time spacing of generated events when replaying as fast as possible
_BURST_STEP_S: Final = 0.001
#: pacing sends up to this early rather than sleep for less (sleeps are not that precise)
_SLACK_S: Final = 0.001


@dataclass(frozen=True)
class ReplayReport:
    """What a replay sent; ``rate`` is the achieved events per second."""

    events_sent: int
    labels_sent: int
    bad_lines: int
    elapsed_s: float
    bad_line_numbers: tuple[int, ...] = ()

    @property
    def rate(self) -> float:
        return self.events_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rate": round(self.rate, 1)}

    def __str__(self) -> str:
        text = (f"sent {self.events_sent} events and {self.labels_sent} labels in "
                f"{self.elapsed_s:.2f} s ({self.rate:.0f} events/s)")
        if self.bad_lines:
            text += f"; {self.bad_lines} bad line{'s' * (self.bad_lines != 1)} skipped"
        return text


class _Sender:
    """Sends without awaiting each record, keeping at most ``max_in_flight`` unacknowledged."""

    def __init__(self, producer: AIOKafkaProducer, max_in_flight: int) -> None:
        self._producer = producer
        self._max = max_in_flight
        self._pending: deque[asyncio.Future[Any]] = deque()

    async def send(self, topic: str, value: bytes, key: bytes | None) -> None:
        while len(self._pending) >= self._max:
            await self._pending.popleft()
        self._pending.append(await self._producer.send(topic, value, key=key))

    async def drain(self) -> None:
        await self._producer.flush()
        pending, self._pending = list(self._pending), deque()
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:  # raise the first delivery error, if any
            if isinstance(result, BaseException):
                raise result


class _Labels:
    """Labels waiting for their due time (monotonic clock), sent as they fall due."""

    def __init__(self, sender: _Sender, topic: str, clock: Callable[[], float]) -> None:
        self._sender, self._topic, self._clock = sender, topic, clock
        self._heap: list[tuple[float, int, bytes, bytes]] = []
        self._order = itertools.count()  # ties keep arrival order
        self.sent = 0

    def push(self, due: float, key: bytes, value: bytes) -> None:
        heapq.heappush(self._heap, (due, next(self._order), key, value))

    async def send_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            _, _, key, value = heapq.heappop(self._heap)
            await self._sender.send(self._topic, value, key)
            self.sent += 1

    async def wait_until(self, deadline: float | None) -> None:
        """Send labels as they fall due until ``deadline`` (``None``: until none are left)."""
        while True:
            await self.send_due()
            now = self._clock()
            if deadline is None and not self._heap:
                return
            if deadline is not None and now >= deadline - _SLACK_S:
                return  # a little early beats oversleeping: the deadline is absolute
            wake = min(t for t in (deadline, self._heap[0][0] if self._heap else None)
                       if t is not None)
            await asyncio.sleep(max(0.0, wake - now))


async def replay(
    settings: Settings,
    dataset: str,
    *,
    rate: float | None = None,
    limit: int | None = None,
    label_delay_s: float = 0.0,
    label_fraction: float = 1.0,
    seed: int = 42,
    err: TextIO = sys.stderr,
    max_in_flight: int = 5000,
    on_progress: Callable[[int, int], None] | None = None,
    n_features: int | None = None,
    drift: DriftSpec | None = None,
) -> ReplayReport:
    """Publish ``dataset`` (see ``datasets.open_dataset``) and its labels; report what was sent.

    Creates any missing contract topic first. Generated datasets are stamped from now, spaced
    ``1 / rate`` (or 1 ms) apart; JSONL events keep their own fields and bytes. A JSONL line
    that is not a JSON object is reported on ``err`` as ``line N: ...`` and skipped. Labels are
    timestamped ``event timestamp + label_delay_s``. Raises :class:`ConfigError` for bad
    arguments and :class:`ServiceError` when Kafka fails. ``on_progress(events, labels)`` is
    called after each event is handed to the producer. ``n_features`` and ``drift`` shape the
    ``synthetic`` dataset (see ``datasets.DriftSpec``) and are an error with any other.
    """
    _check_arguments(rate, label_delay_s, label_fraction, max_in_flight)
    step_s = 1.0 / rate if rate else _BURST_STEP_S
    items = open_dataset(dataset, seed=seed, limit=limit, start=time.time(), step_s=step_s,
                         n_features=n_features, drift=drift)
    await ensure_topics(settings)
    events_topic = settings.topic(EVENTS)
    producer = make_producer(settings)
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise ServiceError(f"cannot connect to Kafka at {settings.bootstrap_servers}: {exc!r}") from exc

    clock = asyncio.get_running_loop().time
    sender = _Sender(producer, max_in_flight)
    labels = _Labels(sender, settings.topic(LABELS), clock)
    picker = random.Random(seed)
    events_sent, bad = 0, []
    started = clock()
    try:
        for item in items:
            if isinstance(item, BadLine):
                bad.append(item.lineno)
                err.write(f"{item}\n")
                continue
            await labels.wait_until(started + events_sent / rate if rate else clock())
            await sender.send(events_topic, _event_value(item), _key(item.event.get("entity_id")))
            events_sent += 1
            record = _label_record(item, label_delay_s)
            if record is not None and (label_fraction >= 1.0 or picker.random() < label_fraction):
                labels.push(clock() + label_delay_s, *record)
                if label_delay_s == 0:
                    await labels.send_due()
            if on_progress is not None:
                on_progress(events_sent, labels.sent)
        await labels.wait_until(None)
        await sender.drain()
    except KafkaError as exc:
        raise ServiceError(f"replay to {events_topic!r} failed: {exc!r}") from exc
    finally:
        await producer.stop()
    return ReplayReport(events_sent, labels.sent, len(bad), clock() - started, tuple(bad))


def _check_arguments(
    rate: float | None, label_delay_s: float, label_fraction: float, max_in_flight: int
) -> None:
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ConfigError(f"rate must be a positive number of events per second, got {rate}")
    if not (label_delay_s >= 0 and math.isfinite(label_delay_s)):
        raise ConfigError(f"label delay must be >= 0 seconds, got {label_delay_s}")
    if not 0.0 <= label_fraction <= 1.0:
        raise ConfigError(f"label fraction must be between 0 and 1, got {label_fraction}")
    if max_in_flight < 1:
        raise ConfigError(f"max_in_flight must be >= 1, got {max_in_flight}")


def _key(value: Any) -> bytes | None:
    if value is None:
        return None
    return (value if isinstance(value, str) else str(value)).encode()


def _event_value(item: LabelledEvent) -> bytes:
    return item.payload if item.payload is not None else _dumps(item.event)


def _label_record(item: LabelledEvent, delay_s: float) -> tuple[bytes, bytes] | None:
    """``(key, value)`` of the label for ``item``; ``None`` without a label or an event id."""
    event_id = item.event.get("event_id")
    if item.label is None or not isinstance(event_id, str):
        return None
    ts = item.event.get("timestamp")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts):
        base = float(ts)
    else:
        base = time.time()  # a broken event timestamp: the engine dead-letters the event anyway
    record = {"event_id": event_id, "label": item.label, "timestamp": round(base + delay_s, 6)}
    return event_id.encode(), _dumps(record)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: e.g. an integer label wider than 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
