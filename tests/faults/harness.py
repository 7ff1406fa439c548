"""The fault suite's stream: events (a few poisoned, on request) with their labels, published at
a steady rate in the background while a scenario does its damage."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

from stream_app import contract
from stream_app.settings import Settings
from tests.kafka_helpers import collect, event, label, produce

#: poison: every kind of bad input the contract dead-letters, one per 50 events
POISON: tuple[bytes, ...] = (
    b'{"event_id": "p", "entity_id": "a"',                                 # invalid JSON
    b'{"event_id": "p", "entity_id": "a", "timestamp": 1, "features": {"x": NaN}}',
    b'{"event_id": "p", "entity_id": "a", "timestamp": "now", "features": {}}',
    b'{"event_id": "p", "entity_id": "a", "timestamp": 1, "features": {"x": 1e300}}',
    b'{"event_id": "p", "entity_id": ["a"], "timestamp": 1, "features": {}}',
)


def poison(event_id: str, i: int) -> bytes:
    """A bad event that still names ``event_id`` where it parses far enough to."""
    raw = POISON[i % len(POISON)]  # callers pass a running count of their poison
    return raw.replace(b'"p"', orjson.dumps(event_id))


def ids_of(records: list[Any]) -> set[str]:
    return {orjson.loads(r.value)["event_id"] for r in records}


async def predicted(settings: Settings) -> set[str]:
    return ids_of(await collect(settings, contract.PREDICTIONS, until=lambda rs: False,
                                timeout_s=1.0))


async def progress(settings: Settings, more: int = 200, timeout_s: float = 60.0) -> None:
    """Wait until ``more`` new event ids have a prediction."""
    n = len(await predicted(settings))
    await collect(settings, contract.PREDICTIONS, timeout_s=timeout_s,
                  until=lambda rs: len(ids_of(rs)) >= n + more)


async def publish(settings: Settings, n: int, rate: float, prefix: str, *,
                  poison_every: int = 0, oversized: bool = False, label_lag_s: float = 0.0
                  ) -> tuple[set[str], set[str]]:
    """``n`` events over ``n / rate`` s in chunks, each chunk's labels after it (or
    ``label_lag_s`` later, the last ones at the end). Returns the ids of the good events and of
    the poisoned ones (which must be dead-lettered)."""
    good: set[str] = set()
    bad: set[str] = set()
    chunk = max(1, int(rate / 10))
    rng = random.Random(7)
    lagging: list[list[tuple[bytes, bytes]]] = []
    lag = round(label_lag_s * rate / chunk)
    for start in range(0, n, chunk):
        records, labels = [], []
        for i in range(start, min(n, start + chunk)):
            eid, entity = f"{prefix}-{i}", f"e{rng.randrange(20)}"
            if poison_every and i % poison_every == poison_every - 1:
                kind = len(bad)
                value = (b'{"event_id": ' + orjson.dumps(eid) + b', "pad": "'
                         + b"x" * (200 * 1024) + b'"}') if oversized and kind % 2 else \
                    poison(eid, kind // 2 if oversized else kind)
                bad.add(eid)
            else:
                value = event(eid, entity, x=rng.random(), y=rng.gauss(0, 1))
                good.add(eid)
                labels.append((eid.encode(), label(eid, rng.random() < 0.3)))
            records.append((entity.encode(), value))
        await produce(settings, contract.EVENTS, records)
        lagging.append(labels)
        if len(lagging) > lag:
            await produce(settings, contract.LABELS, lagging.pop(0))
        await asyncio.sleep(chunk / rate)
    for labels in lagging:
        await produce(settings, contract.LABELS, labels)
    return good, bad


async def learned_count(settings: Settings, expected: int, timeout_s: float = 90.0) -> int:
    """The learner's learn count once it has caught up with ``expected`` labels (or the last
    one seen when the time is up)."""
    latest = -1

    def caught_up(records: list[Any]) -> bool:
        nonlocal latest
        for r in records:
            m = orjson.loads(r.value)
            if m.get("lifecycle", {}).get("role") == "learner":
                latest = m["labels"]["learned"]
        return latest >= expected

    await collect(settings, contract.METRICS, until=caught_up, timeout_s=timeout_s)
    await asyncio.sleep(3)  # a second learn of anything would show in the next snapshots
    caught_up(await collect(settings, contract.METRICS, until=lambda rs: False, timeout_s=3))
    return latest
