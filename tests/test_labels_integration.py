"""Label edge cases and the single-learner rule, on real Kafka and Redis with real workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from tests.conftest import WorkerProcess, make_settings
from tests.kafka_helpers import collect, event, label, latest_metrics, produce

pytestmark = pytest.mark.integration


async def test_a_label_after_the_horizon_is_counted_as_expired(_service_urls,
                                                                tmp_path: Path) -> None:
    kafka, redis, embedded = _service_urls
    settings = make_settings(kafka, redis, embedded, tmp_path, label_horizon_s=3)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        await produce(settings, contract.EVENTS, [(b"x", event("late-1", "x", v=1.0)),
                                                  (b"x", event("fresh-1", "x", v=2.0))])
        await produce(settings, contract.LABELS, [(b"fresh-1", label("fresh-1", True))])
        preds = await collect(settings, contract.PREDICTIONS, until=lambda rs: len(rs) >= 2)
        scored_at = max(orjson.loads(r.value)["scored_at"] for r in preds)
        scored = await latest_metrics(settings, until=lambda m: m["labels"]["learned"] >= 1)
        # the snapshot of late-1 expires after 3 s; its claim lives 2 x 3 s
        await asyncio.sleep(max(0.0, scored_at + 3.5 - time.time()))
        await produce(settings, contract.LABELS, [(b"late-1", label("late-1", False))])
        snap = await latest_metrics(settings, until=lambda m: m["labels"]["expired"] >= 1)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert scored["events"]["predicted"] == 2
    assert snap["labels"]["expired"] == 1 and snap["labels"]["learned"] == 1
    assert snap["labels"]["joined"] == 1  # fresh-1, directly or after waiting for its event
