"""The sink: ``feature-log`` (Kafka) -> the offline store, in batches, off the hot path.

``stream-app offline-sink`` consumes the ``feature-log`` topic in its own consumer group
(``{app_id}.offline-sink``, ``read_committed``: it sees a worker's batch exactly when its
predictions are visible), buffers records until ``offline.sink_batch_max`` of them or
``offline.sink_flush_s`` seconds, writes each source partition's run as one immutable file per
(kind, date, model) (``stream_app.offline.store``), and only then commits the offsets.

Crash anywhere: a file is visible whole or not at all (written, then renamed); offsets are
committed after the files, so a crash before the commit writes the same records again on
restart, and the reader keeps one row per ``event_id``. Nothing is lost, nothing counted twice.
A record the sink cannot read (not JSON, an unknown ``kind``, a field missing) is a dead letter
with its reason, source topic, partition and offset.

>>> snap = b'{"x":{"a":1.0},"s":0.75,"v":"1","t":5.0,"l":2.0,"n":0}'
>>> rec = Record("feature-log", 0, 7, b"e1", b'{"kind":"features","event_id":"e1",'
...              b'"entity_id":"u","model":"m","event_timestamp":4.0,"snapshot":' + snap + b'}', 0)
>>> rows = to_rows([rec, Record("feature-log", 0, 8, b"e2", b"{oops", 0)])
>>> rows.features[0]["x"], rows.features[0]["score"], [d.reason for d in rows.dead]
({'a': 1.0}, 0.75, ['invalid_json'])
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from stream_app import contract
from stream_app.kafka_io import ensure_topics, make_consumer, make_producer
from stream_app.offline.store import OfflineStore
from stream_app.pipeline.records import DeadLetter, Record, encode
from stream_app.settings import Settings

__all__ = ["FEATURES_SCHEMA", "LABELS_SCHEMA", "Rows", "Sink", "to_rows"]

log = logging.getLogger(__name__)

FEATURES_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("entity_id", pa.string()), ("model", pa.string()),
    ("model_version", pa.string()), ("model_snapshot", pa.int64()),
    ("event_timestamp", pa.float64()), ("scored_at", pa.float64()), ("score", pa.float64()),
    ("latency_ms", pa.float64()), ("x", pa.map_(pa.string(), pa.float64())),
])
LABELS_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("model", pa.string()), ("model_version", pa.string()),
    ("label", pa.string()), ("y", pa.bool_()), ("label_timestamp", pa.float64()),
    ("joined_at", pa.float64()),
])


@dataclass
class Rows:
    """One batch of feature-log records, as store rows, and the records that were not."""

    features: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def _features_row(doc: dict[str, Any]) -> dict[str, Any]:
    s = doc["snapshot"]
    return {"event_id": doc["event_id"], "entity_id": doc["entity_id"], "model": doc["model"],
            "model_version": str(s["v"]), "model_snapshot": int(s.get("n", 0)),
            "event_timestamp": float(doc["event_timestamp"]), "scored_at": float(s["t"]),
            "score": float(s["s"]), "latency_ms": float(s.get("l", 0.0)), "x": s["x"]}


def _label_row(doc: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": doc["event_id"], "model": doc["model"],
            "model_version": str(doc["model_version"]),
            "label": orjson.dumps(doc["label"]).decode(), "y": bool(doc["y"]),
            "label_timestamp": float(doc["label_timestamp"]),
            "joined_at": float(doc["joined_at"])}


def to_rows(records: Sequence[Record], dead_topic: str = "dead-letters") -> Rows:
    """Pure: feature-log records -> store rows (and dead letters for those that are not)."""
    rows = Rows()
    for rec in records:
        try:
            doc = orjson.loads(rec.value or b"")
        except orjson.JSONDecodeError as exc:
            rows.dead.append(DeadLetter.of(dead_topic, rec, "invalid_json", str(exc)))
            continue
        kind = doc.get("kind") if isinstance(doc, dict) else None
        try:
            if kind == "features":
                rows.features.append(_features_row(doc))
            elif kind == "label":
                rows.labels.append(_label_row(doc))
            else:
                rows.dead.append(DeadLetter.of(dead_topic, rec, "schema",
                                               f"kind must be 'features' or 'label', got {kind!r}"))
        except (KeyError, TypeError, ValueError) as exc:
            rows.dead.append(DeadLetter.of(dead_topic, rec, "schema",
                                           f"{kind} record: {type(exc).__name__}: {exc}"))
    return rows


def write_rows(store: OfflineStore, rows: Rows, name: str) -> list[str]:
    """Blocking: write one batch's rows as immutable files named ``name``."""
    paths = store.write("features", pa.Table.from_pylist(rows.features, FEATURES_SCHEMA), name)
    paths += store.write("labels", pa.Table.from_pylist(rows.labels, LABELS_SCHEMA), name)
    return paths


class _Revoked(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:  # not written, not committed: the next owner reads them again
            self.sink.buffer.pop((tp.topic, tp.partition), None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


class Sink:
    """Consume ``feature-log``; write files; commit. ``run`` until ``stop`` is set."""

    def __init__(self, settings: Settings, store: OfflineStore | None = None) -> None:
        self.settings = settings
        self.store = store or OfflineStore(settings.offline_url)
        self.topic = settings.topic(contract.FEATURE_LOG)
        self.buffer: dict[tuple[str, int], list[Record]] = {}
        self.written = {"features": 0, "labels": 0, "dead": 0, "files": 0}
        self._oldest: float | None = None

    def _buffered(self) -> int:
        return sum(len(v) for v in self.buffer.values())

    async def run(self, stop: asyncio.Event, *, idle_exit_s: float | None = None) -> None:
        """Until ``stop`` (or, with ``idle_exit_s``, once nothing came for that long and all
        is written): flushes and commits what it holds before returning."""
        conf = self.settings.offline
        swept = await asyncio.to_thread(self.store.sweep)
        if swept:
            log.info("offline sink: deleted %d temporary files left by a crash", swept)
        await ensure_topics(self.settings, [contract.FEATURE_LOG, contract.DEAD_LETTERS])
        consumer = make_consumer(self.settings, group_id=f"{self.settings.app_id}.offline-sink",
                                 from_beginning=True, enable_auto_commit=False,
                                 isolation_level="read_committed",
                                 max_poll_records=conf.sink_batch_max)
        consumer.subscribe([self.topic], listener=_Revoked(self))
        producer = make_producer(self.settings)
        await consumer.start()
        await producer.start()
        last_record = time.monotonic()
        try:
            while not stop.is_set():
                got = await consumer.getmany(timeout_ms=200)
                for tp, msgs in got.items():
                    self.buffer.setdefault((tp.topic, tp.partition), []).extend(
                        Record(m.topic, m.partition, m.offset, m.key, m.value,
                               (m.timestamp or 0) / 1000.0) for m in msgs)
                now = time.monotonic()
                if got:
                    last_record = now
                    self._oldest = self._oldest or now
                if self._oldest is not None and (self._buffered() >= conf.sink_batch_max
                                                 or now - self._oldest >= conf.sink_flush_s):
                    await self.flush(consumer, producer)
                if idle_exit_s is not None and not self.buffer \
                        and now - last_record >= idle_exit_s:
                    break
            await self.flush(consumer, producer)
        finally:
            await consumer.stop()
            await producer.stop()

    async def flush(self, consumer: Any, producer: Any) -> None:
        """Write every buffered partition's run, then commit their offsets."""
        if not self.buffer:
            self._oldest = None
            return
        buffer, self.buffer, self._oldest = self.buffer, {}, None
        offsets = {}
        dead_topic = self.settings.topic(contract.DEAD_LETTERS)
        for (topic, partition), recs in sorted(buffer.items()):
            name = f"p{partition}-{recs[0].offset:020d}-{recs[-1].offset:020d}"
            rows = to_rows(recs, dead_topic)
            paths = await asyncio.to_thread(write_rows, self.store, rows, name)
            if rows.dead:
                for t, k, v in encode(rows.dead):
                    await producer.send_and_wait(t, v, key=k)
            self.written["features"] += len(rows.features)
            self.written["labels"] += len(rows.labels)
            self.written["dead"] += len(rows.dead)
            self.written["files"] += len(paths)
            offsets[TopicPartition(topic, partition)] = recs[-1].offset + 1
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:  # a rebalance: the files stay, deduped
            log.warning("offline sink: commit failed (%s); those records come again and are "
                        "deduplicated on read", exc)
