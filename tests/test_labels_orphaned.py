"""Parked labels never vanish: past ``labels.park_ttl_s`` they are dead-lettered
``label_orphaned`` with their position, and a lost store state is counted once per loss."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson
import pytest

from features.store.memory import MemoryFeatureStore
from features.store.redis import RedisFeatureStore
from stream_app import contract
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record, encode
from stream_app.settings import load_settings
from tests.kafka_helpers import event, label

TTLS = dict(entity_ttl_s=60, snapshot_ttl_s=60, claim_ttl_s=60)


def rec(offset: int, value: bytes, topic: str = "labels") -> Record:
    return Record(topic, 3, offset, b"k", value, time.time())


async def test_a_label_whose_event_never_comes_is_dead_lettered_at_the_end_of_its_horizon(
        ) -> None:
    now = [1000.0]
    store = MemoryFeatureStore(clock=lambda: now[0])
    settings = load_settings(environ={}, feature_store_url="memory://", label_wait_s=0.0,
                             labels={"park_ttl_s": 30})
    engine = Engine(settings, store=store)
    await engine.process_labels([rec(7, label("never", True)), rec(8, label("later", False))])
    assert engine.metrics.labels_parked == 2
    assert await engine.sweep_labels(force=True) == []  # within its horizon: still parked
    await engine.process_events([rec(0, event("later", v=1.0), topic="events")])
    now[0] += 31
    outs = await engine.sweep_labels(force=True)
    dead = [orjson.loads(v) for t, _, v in encode(outs) if t == contract.DEAD_LETTERS]
    assert [(d["reason"], d["source_topic"], d["partition"], d["offset"]) for d in dead] == [
        ("label_orphaned", "labels", 3, 7)]
    assert orjson.loads(dead[0]["payload"])["event_id"] == "never"
    assert engine.metrics.labels_orphaned == 1
    assert await engine.sweep_labels(force=True) == []  # each orphan is reported once


async def test_a_label_past_its_ttl_is_not_taken_but_swept_once(redis_url: str) -> None:
    for store in (MemoryFeatureStore(), RedisFeatureStore.from_url(
            redis_url, namespace=f"test-{uuid.uuid4().hex}")):
        try:
            await store.join_labels({"e1": b"L1", "e2": b"L2"}, pending_ttl_s=1,
                                    learned_ttl_s=60, positions={"e1": b"lab:0:5", "e2": b"x"})
            assert await store.sweep_parked() == []
            await asyncio.sleep(1.1)
            assert await store.commit_batch({}, {}, {"e2": b"v"}, **TTLS) == {}
            assert sorted(await store.sweep_parked()) == [("e1", b"L1", b"lab:0:5"),
                                                          ("e2", b"L2", b"x")]
            assert await store.sweep_parked() == []
        finally:
            await store.aclose()


async def test_a_redis_that_lost_its_state_is_counted_once_and_logged_once(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    ns = f"test-{uuid.uuid4().hex}"
    store = RedisFeatureStore.from_url(redis_url, namespace=ns)
    other = RedisFeatureStore.from_url(redis_url, namespace=ns)  # a second worker
    try:
        await store.commit_batch({"a": b"s"}, {"e1": b"p"}, {"e1": b"x"}, **TTLS)
        await other.join_labels({"e1": b"1"}, pending_ttl_s=60, learned_ttl_s=60)
        assert store.state_losses == other.state_losses == 0
        keys = [k async for k in store._r.scan_iter(match=f"{store._prefix}*")]
        await store._r.delete(*keys)  # this namespace's state is gone, as with a restart
        caplog.set_level(logging.ERROR, logger="features.store.redis")
        for i in range(3):
            await store.commit_batch({"a": b"s"}, {f"n{i}": b"p"}, {f"n{i}": b"x"}, **TTLS)
            await other.join_labels({f"n{i}": b"1"}, pending_ttl_s=60, learned_ttl_s=60)
        assert store.state_losses == other.state_losses == 1
        lost = [r for r in caplog.records if "state lost" in r.getMessage()]
        assert len(lost) == 2  # one line per store (worker) per loss, not per batch
    finally:
        await store.aclose()
        await other.aclose()
