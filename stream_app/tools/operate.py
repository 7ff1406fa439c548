"""What operators run by hand: the drift state as a table, and a retrain signal.

``drift_state`` (``stream_app.inspection``, shared with the HTTP API) reads the ``drift``
topic to its end.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from rich.table import Table

from stream_app import contract
from stream_app.errors import ConfigError, ServiceError
from stream_app.inspection import drift_state, model_view, models_view, open_registry
from stream_app.kafka_io import ensure_topics, make_producer
from stream_app.settings import Settings

__all__ = ["drift_state", "drift_table", "send_retrain_signal"]


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


async def registry_call(settings: Settings, action: str, *args: str, force: bool = False) -> Any:
    """Run one registry action (``models`` CLI): list, show, promote, rollback, verify.

    ``promote`` of a version trained offline is refused unless it beats production on its
    holdout (``stream_app.offline.promote``), or ``force``."""
    if action == "list":
        return await models_view(settings)
    if action == "show":
        return await model_view(settings, args[0])
    reg = open_registry(settings)
    try:
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
