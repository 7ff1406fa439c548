"""The fault suite's checker: read the output topics from offset 0 and judge every event.

What a consumer with ``isolation_level="read_committed"`` sees is what counts (aborted
transactions are invisible to it). The rules:

* every expected ``event_id`` has an outcome: a prediction, or a dead letter of an *events*
  record whose payload carries that id (``poisoned`` ids must have the dead letter, not a
  prediction). A dead letter of a label (``label_flood``, ``label_orphaned``) is no event's
  outcome: ``labels_dead`` names the ids whose labels must each have one;
* no ``event_id`` has two predictions, and no source position (topic, partition, offset) has
  two dead letters;
* nothing comes out for an id nobody sent.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_app import contract
from stream_app.settings import Settings
from tests.kafka_helpers import collect


@dataclass
class Report:
    expected: set[str]
    #: predictions per event id; dead letters per source position, and the ids they carry
    predictions: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    dead_ids: set[str] = field(default_factory=set)

    #: ids named by dead letters of label records, and the ids that must have one
    label_dead_ids: set[str] = field(default_factory=set)
    labels_dead: set[str] = field(default_factory=set)

    @property
    def missing(self) -> set[str]:
        """Expected events without an outcome, and ``labels_dead`` without their dead letter."""
        return (self.expected - set(self.predictions) - self.dead_ids) | \
            (self.labels_dead - self.label_dead_ids)

    @property
    def duplicates(self) -> dict[str, int]:
        """Event ids predicted more than once, and positions dead-lettered more than once."""
        return {k: n for c in (self.predictions, self.dead_letters) for k, n in c.items()
                if n > 1}

    @property
    def unexpected(self) -> set[str]:
        """Outcomes for ids nobody sent (a label's dead letter may name any expected id)."""
        return (set(self.predictions) | self.dead_ids) - self.expected | \
            (self.label_dead_ids - self.expected - self.labels_dead)

    poisoned: set[str] = field(default_factory=set)

    @property
    def misrouted(self) -> set[str]:
        """Poisoned ids that were predicted, or not dead-lettered."""
        return (self.poisoned & set(self.predictions)) | (self.poisoned - self.dead_ids)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.unexpected or self.misrouted)

    def record(self, scenario: str, **extra: Any) -> None:
        """Append this report's figures to ``$FAULTS_REPORT`` (JSON lines), when it is set:
        ``bench/chaos.py`` turns them into a table."""
        path = os.environ.get("FAULTS_REPORT")
        if not path:
            return
        line = {"scenario": scenario, "expected": len(self.expected),
                "predicted": len(self.predictions),
                "dead_letters": sum(self.dead_letters.values()),
                "missing": len(self.missing), "duplicates": len(self.duplicates),
                "unexpected": len(self.unexpected), "misrouted": len(self.misrouted),
                "ok": self.ok, **extra}
        with open(path, "ab") as fh:
            fh.write(orjson.dumps(line) + b"\n")

    def summary(self) -> str:
        return (f"expected {len(self.expected)}, predicted {len(self.predictions)}, "
                f"dead letters {sum(self.dead_letters.values())}, missing {len(self.missing)}, "
                f"duplicates {len(self.duplicates)} (copies: "
                f"{dict(sorted(Counter(self.duplicates.values()).items()))}), unexpected "
                f"{len(self.unexpected)}, poisoned {len(self.poisoned)} (misrouted "
                f"{len(self.misrouted)})")


_EVENT_ID = re.compile(r'"event_id":\s*"([^"]+)"')


def _carried_id(dead: dict[str, Any]) -> str | None:
    """The event id a dead letter's payload names (also when the payload is not valid JSON)."""
    text = dead.get("payload") or ""
    try:
        payload = orjson.loads(text)
        if isinstance(payload, dict) and isinstance(payload.get("event_id"), str):
            return payload["event_id"]
    except orjson.JSONDecodeError:
        pass
    found = _EVENT_ID.search(text[:4096])
    return found[1] if found else None


async def read(settings: Settings, expected: set[str], *, poisoned: set[str] = frozenset(),
               labels_dead: set[str] = frozenset(), timeout_s: float = 120.0,
               settle_s: float = 3.0) -> Report:
    """Wait until every expected id has an outcome (or ``timeout_s``), let ``settle_s`` pass
    for anything late (a duplicate), then read everything again and report."""

    events = settings.topic(contract.EVENTS)

    def has_all(rs: list[Any]) -> bool:
        return expected <= {orjson.loads(r.value)["event_id"] for r in rs} | dead_ids and \
            labels_dead <= label_dead_ids

    # dead letters come late too (a parked label's at the end of its ttl): both topics are
    # read again until every id has its outcome
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        dead = await collect(settings, contract.DEAD_LETTERS, until=lambda rs: False,
                             timeout_s=1.0)
        dead_ids, label_dead_ids = _dead_ids([orjson.loads(r.value) for r in dead], events)
        left = deadline - asyncio.get_running_loop().time()
        got = await collect(settings, contract.PREDICTIONS, until=has_all,
                            timeout_s=max(1.0, min(10.0, left)))
        if has_all(got) or left <= 10.0:
            break
    await asyncio.sleep(settle_s)
    report = Report(expected=set(expected), poisoned=set(poisoned),
                    labels_dead=set(labels_dead))
    for r in await collect(settings, contract.PREDICTIONS, until=lambda rs: False,
                           timeout_s=settle_s):
        report.predictions[orjson.loads(r.value)["event_id"]] += 1
    for r in await collect(settings, contract.DEAD_LETTERS, until=lambda rs: False,
                           timeout_s=settle_s):
        d = orjson.loads(r.value)
        report.dead_letters[f"{d['source_topic']}:{d['partition']}:{d['offset']}"] += 1
        if (i := _carried_id(d)) is not None:
            (report.dead_ids if d["source_topic"] == events else report.label_dead_ids).add(i)
    return report


def _dead_ids(dead: list[dict[str, Any]], events: str) -> tuple[set[str], set[str]]:
    """The ids dead letters name: of events records, and of label records."""
    of_events: set[str] = set()
    of_labels: set[str] = set()
    for d in dead:
        if (i := _carried_id(d)) is not None:
            (of_events if d["source_topic"] == events else of_labels).add(i)
    return of_events, of_labels
