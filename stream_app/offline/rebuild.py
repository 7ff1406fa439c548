"""Rebuild feature vectors from the ``events`` topic's history, through the stream's own code.

Each partition is read from its beginning in offset order, the order its worker scored it in
(events are keyed by ``entity_id``, so one entity's events are all in one partition), and
every record goes through the stages the engine runs: ``validate.parse_event``, the input
schema (``pipeline.schema``), first sighting of its ``event_id``, then
``pipeline.featurize.Featurizer`` (``features.aggregates`` over ``features.state``) with the
entity states kept in memory instead of Redis. So a rebuilt vector equals the one the stream
scored (``tests/test_offline_integration.py`` checks every one of them), and a new aggregate
declared in the config can be computed over the past.

The limits: an ``event_id`` repeated in two partitions is taken from the first partition here,
while the stream took whichever it scored first; an entity state that expired from Redis
(``features.entity_ttl_s`` of wall-clock idleness) restarted online but not here.

>>> from stream_app.settings import load_settings
>>> ev = lambda i, t, v: Record("events", 0, i, b"a", orjson.dumps(
...     {"event_id": f"e{i}", "entity_id": "a", "timestamp": t, "features": {"f0": v}}), 0.0)
>>> settings = load_settings(environ={}, features={"aggregates": [
...     {"feature": "f0", "stats": ["count", "mean"], "windows": []}]})
>>> rows = rebuild_rows(settings, {0: [ev(0, 1.0, 2.0), ev(1, 2.0, 4.0), ev(2, 3.0, 6.0)]})
>>> [(r["event_id"], r["x"]["f0_mean_by_entity"]) for r in rows[1:]]
[('e1', 2.0), ('e2', 3.0)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson  # noqa: F401 (the doctest)
import pyarrow as pa
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from features.spec import compile_spec
from stream_app import contract
from stream_app.errors import ServiceError
from stream_app.kafka_io import make_consumer
from stream_app.offline.dataset import join
from stream_app.offline.store import OfflineStore, day
from stream_app.pipeline.featurize import Featurizer
from stream_app.pipeline.records import Record
from stream_app.pipeline.schema import Schema
from stream_app.settings import Settings
from stream_app.validate import Event, Limits, Rejection, parse_event

__all__ = ["read_history", "rebuild_dataset", "rebuild_rows"]

_CHUNK = 500  # events featurized at once: the engine's batch size


async def read_history(settings: Settings) -> dict[int, list[Record]]:
    """Every record of the events topic, per partition, in offset order (to the end now)."""
    try:
        return await _read_history(settings)
    except KafkaError as exc:
        raise ServiceError(f"cannot read the events topic at {settings.bootstrap_servers}: "
                           f"{exc!r}") from exc


async def _read_history(settings: Settings) -> dict[int, list[Record]]:
    name = settings.topic(contract.EVENTS)
    consumer = make_consumer(settings, isolation_level="read_committed")
    await consumer.start()
    out: dict[int, list[Record]] = {}
    try:
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
        tps = [TopicPartition(name, p) for p in sorted(cluster.partitions_for_topic(name) or ())]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        while pending:
            got = await consumer.getmany(*pending, timeout_ms=500)
            for tp, msgs in got.items():
                out.setdefault(tp.partition, []).extend(
                    Record(m.topic, m.partition, m.offset, m.key, m.value,
                           (m.timestamp or 0) / 1000.0) for m in msgs if m.offset < ends[tp])
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return out


def rebuild_rows(settings: Settings, history: Mapping[int, Sequence[Record]]
                 ) -> list[dict[str, Any]]:
    """Pure: the model input of every event the stream would have scored, in partition and
    offset order: ``{"event_id", "entity_id", "event_timestamp", "x"}``."""
    limits = Limits(settings.max_payload_bytes, settings.max_abs_value)
    schema = Schema(settings.features, one_hot=settings.model.one_hot_strings)
    featurizer = Featurizer(compile_spec(settings.features),
                            one_hot=settings.model.one_hot_strings)
    states: dict[str, Any] = {}
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for partition in sorted(history):
        admitted: list[Event] = []
        for rec in history[partition]:
            ev = parse_event(rec.value, limits)
            if isinstance(ev, Rejection) or schema.check(ev.features) is not None \
                    or ev.event_id in seen:
                continue
            seen.add(ev.event_id)
            admitted.append(ev)
        for i in range(0, len(admitted), _CHUNK):
            chunk = admitted[i:i + _CHUNK]
            xs = featurizer.inputs([(e.entity_id, e.timestamp, e.features) for e in chunk],
                                   states)
            rows.extend({"event_id": e.event_id, "entity_id": e.entity_id,
                         "event_timestamp": e.timestamp, "x": x}
                        for e, x in zip(chunk, xs, strict=True))
    return rows


async def rebuild_dataset(settings: Settings, *, from_date: str, to_date: str,
                          model: str | None) -> tuple[pa.Table, dict[str, int]]:
    """The training set with features rebuilt from history, joined with the logged labels."""
    import datetime as dt
    import math

    rows = [r for r in rebuild_rows(settings, await read_history(settings))
            if from_date <= day(r["event_timestamp"]) <= to_date]
    name = model or settings.model.name
    features = pa.Table.from_pylist(
        [r | {"model": name} for r in rows],
        pa.schema([("event_id", pa.string()), ("entity_id", pa.string()),
                   ("event_timestamp", pa.float64()),
                   ("x", pa.map_(pa.string(), pa.float64())), ("model", pa.string())]))
    last = dt.date.fromisoformat(to_date) + dt.timedelta(
        days=math.ceil(settings.label_horizon_s / 86400))
    labels = OfflineStore(settings.offline_url).read(
        "labels", from_date=from_date, to_date=last.isoformat(), model=model)
    return join(features, labels, horizon_s=settings.label_horizon_s)
