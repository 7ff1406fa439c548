"""What operators run by hand: the drift state as a table, and a retrain signal.

``drift_state`` reads the ``drift`` topic to its end: each worker's newest ``summary`` record
gives every subject's last check on the partitions it holds, and the episode records say since
when each subject in drift has been so (per worker: each tests its own windows).
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from rich.table import Table

from stream_app import contract
from stream_app.errors import ConfigError, ServiceError
from stream_app.kafka_io import ensure_topics, make_consumer, make_producer
from stream_app.settings import Settings

__all__ = ["drift_state", "drift_table", "send_retrain_signal"]


async def _read_to_end(settings: Settings, topic: str) -> list[dict[str, Any]]:
    name = settings.topic(topic)
    consumer = make_consumer(settings)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(name, p) for p in cluster.partitions_for_topic(name) or ()]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(orjson.loads(r.value) | {"_ts": r.timestamp} for r in records)
    finally:
        await consumer.stop()
    out.sort(key=lambda r: r["_ts"])
    return out


async def drift_state(settings: Settings
                      ) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], float]]:
    """Each worker's newest summary record (by ``scope.worker``), and for each (worker,
    subject) in drift the time its episode opened."""
    await ensure_topics(settings, [settings.topic(contract.DRIFT)])
    summaries: dict[str, dict[str, Any]] = {}
    opened: dict[tuple[str, str], float] = {}
    for rec in await _read_to_end(settings, contract.DRIFT):
        worker = str((rec.get("scope") or {}).get("worker", ""))
        if rec.get("record") == "summary":
            summaries[worker] = rec
        elif rec.get("record") == "quality":  # data quality (stream_app.ops.quality)
            continue
        elif rec.get("drift"):
            opened[(worker, rec["subject"])] = rec["detected_at"]
        else:
            opened.pop((worker, rec.get("subject", "")), None)
    return summaries, opened


def drift_table(summaries: dict[str, dict[str, Any]],
                opened: dict[tuple[str, str], float]) -> Table:
    """One row per subject, and per worker when several workers report."""
    newest = max(summaries.values(), key=lambda r: r["detected_at"], default=None)
    at = "no summary yet" if newest is None else datetime.fromtimestamp(
        newest["detected_at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    table = Table(title=f"drift: {newest['model'] if newest else '?'} (as of {at})")
    several = len(summaries) > 1
    cols = (["worker (partitions)"] if several else []) + [
        "subject", "kind", "test", "statistic", "p-value", "adjusted", "in drift", "since"]
    for col in cols:
        table.add_column(col, justify="right" if col in ("statistic", "p-value", "adjusted")
                         else "left")
    for worker, summary in sorted(summaries.items()):
        parts = (summary.get("scope") or {}).get("partitions")
        who = [f"{worker} ({','.join(map(str, parts)) if parts else '-'})"] if several else []
        for s in summary.get("subjects", []):
            since = opened.get((worker, s["subject"]))
            table.add_row(
                *who, s["subject"], s["kind"], s["test"], _num(s["statistic"]),
                _num(s["p_value"]), _num(s["adjusted_p_value"]),
                "[bold red]yes[/]" if s["drift"] else "no",
                datetime.fromtimestamp(since, UTC).strftime("%H:%M:%S") if since else "")
    return table


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


async def send_retrain_signal(settings: Settings, model: str, reason: str) -> dict[str, Any]:
    """Emit one ``retrain-signals`` record by hand."""
    if reason not in contract.RETRAIN_REASONS:
        raise ConfigError(f"reason must be one of {', '.join(contract.RETRAIN_REASONS)}")
    await ensure_topics(settings, [settings.topic(contract.RETRAIN_SIGNALS)])
    value = contract.retrain_signal(signal_id=uuid.uuid4().hex, model=model,
                                    model_version="", reason=reason, evidence=[],
                                    emitted_at=time.time())
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(contract.RETRAIN_SIGNALS), value,
                                     key=model.encode())
    finally:
        await producer.stop()
    return orjson.loads(value)


# -- model registry ------------------------------------------------------------------------------
async def publish_model_changes(settings: Settings, changes: list[Any]) -> None:
    """Put stage changes made here on the ``models`` topic; a warning (not a failure) when
    Kafka is unreachable: the registry holds the change, and workers follow the registry."""
    if not changes:
        return
    try:
        await ensure_topics(settings, [contract.MODELS])
        producer = make_producer(settings)
        await producer.start()
        try:
            for c in changes:
                await producer.send_and_wait(settings.topic(contract.MODELS), contract.model_change(
                    model=c.model, version=c.version, from_stage=c.from_stage,
                    to_stage=c.to_stage, reason=c.reason, at=c.at), key=c.model.encode())
        finally:
            await producer.stop()
    except (ServiceError, KafkaError, OSError) as exc:
        print(f"warning: stage change saved in the registry but not published to "
              f"{settings.topic(contract.MODELS)}: {exc}", file=sys.stderr)


def _registry(settings: Settings) -> Any:
    from models.registry import open_registry

    # the workers' namespace (stream_app.lifecycle): a Redis registry keeps models per app id
    return open_registry(settings.registry_url, key=settings.registry_key_bytes,
                         namespace=settings.app_id)


async def registry_call(settings: Settings, action: str, *args: str, force: bool = False) -> Any:
    """Run one registry action (``models`` CLI): list, show, promote, rollback, verify.

    ``promote`` of a version trained offline is refused unless it beats production on its
    holdout (``stream_app.offline.promote``), or ``force``."""
    reg = _registry(settings)
    try:
        if action == "list":
            return {name: [v.to_dict() for v in await reg.versions(name)]
                    for name in await reg.models()}
        if action == "show":
            name, _, version = args[0].partition("@")
            versions = [await reg.get_version(name, version)] if version \
                else await reg.versions(name)
            return {"versions": [v.to_dict() for v in versions],
                    "snapshots": {v.version: [s.to_dict() for s in await reg.snapshots(
                        name, v.version)] for v in versions},
                    "history": [h.to_dict() for h in await reg.history(name)]}
        if action in ("promote", "rollback"):
            evidence: dict[str, Any] = {"guard": "forced"} if force else {}
            if action == "promote" and not force:
                from stream_app.offline.promote import check_promotion

                evidence = await check_promotion(reg, args[0], args[1], settings.model)
            before = len(await reg.history(args[0]))
            change = await (reg.promote(args[0], args[1], reason="manual") if action == "promote"
                            else reg.rollback(args[0]))
            await publish_model_changes(settings, (await reg.history(args[0]))[before:])
            return change.to_dict() | ({"evidence": evidence} if action == "promote" else {})
        if action == "challenge":
            return await send_retrain_signal(settings, args[0], "manual")
        if action == "verify":
            return [r.to_dict() for r in await reg.verify()]
        raise ConfigError(f"unknown models action {action!r}")
    finally:
        await reg.aclose()
