"""What the engine can tell about itself, read-only, for the CLI and the HTTP API: every
worker's drift state from the ``drift`` topic, and the registry's models.

``drift_state`` reads the ``drift`` topic to its end: each worker's newest ``summary`` record
gives every subject's last check on the partitions it holds, and the episode records say since
when each subject in drift has been so (per worker: each tests its own windows).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import TopicPartition

from stream_app import contract
from stream_app.kafka_io import ensure_topics, make_consumer
from stream_app.settings import Settings

__all__ = ["drift_state", "model_view", "models_view", "open_registry"]


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


def open_registry(settings: Settings) -> Any:
    from models.registry import open_registry

    # the workers' namespace (stream_app.lifecycle): a Redis registry keeps models per app id
    return open_registry(settings.registry_url, key=settings.registry_key_bytes,
                         namespace=settings.app_id)




async def models_view(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every model's versions (``stream-app models list``, ``GET /v1/models``)."""
    reg = open_registry(settings)
    try:
        return {name: [v.to_dict() for v in await reg.versions(name)]
                for name in await reg.models()}
    finally:
        await reg.aclose()


async def model_view(settings: Settings, name_at: str) -> dict[str, Any]:
    """``NAME`` or ``NAME@VERSION``: versions, snapshots, stage history."""
    reg = open_registry(settings)
    try:
        name, _, version = name_at.partition("@")
        versions = [await reg.get_version(name, version)] if version \
            else await reg.versions(name)
        return {"versions": [v.to_dict() for v in versions],
                "snapshots": {v.version: [s.to_dict() for s in await reg.snapshots(
                    name, v.version)] for v in versions},
                "history": [h.to_dict() for h in await reg.history(name)]}
    finally:
        await reg.aclose()
