"""Deployments sharing a Redis and an app id, but not their topics, share no feature state.

Before: two deployments with the default app id and different topic prefixes wrote the same
``event_id`` claims, so the second one dropped the first one's event ids as duplicates.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
import redis.asyncio as aredis

from features.store.base import key_prefix
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record, encode
from stream_app.settings import Settings, load_settings
from tests.kafka_helpers import event


def test_the_namespace_takes_the_topic_prefix_and_keeps_the_old_keys_without_one() -> None:
    plain = load_settings(environ={})
    a = load_settings(environ={"STREAM_TOPIC_PREFIX": "a."})
    b = load_settings(environ={"STREAM_TOPIC_PREFIX": "b."})
    assert key_prefix(plain.feature_store_namespace) == "stream:stream-app:"  # unchanged
    assert key_prefix(a.feature_store_namespace) == "stream:stream-app:a.:"
    assert a.feature_store_namespace != b.feature_store_namespace
    # the app id still scopes every key (``stream:{app_id}:*`` finds them all)
    assert key_prefix(a.feature_store_namespace).startswith(key_prefix(plain.app_id))
    pinned = load_settings(environ={"STREAM_TOPIC_PREFIX": "a.", "STREAM_STORE_NAMESPACE": "x"})
    assert pinned.feature_store_namespace == "x"


async def _predictions(settings: Settings, event_id: str, offset: int = 0
                       ) -> tuple[list[str], int]:
    """The predictions one engine emits for one event, and the duplicates it counted."""
    engine = Engine(settings)
    await engine.start()
    try:
        rec = Record(settings.topic("events"), 0, offset, b"a", event(event_id, v=1.0),
                     time.time())
        outs = encode(await engine.process_events([rec]))
        ids = [orjson.loads(v)["event_id"] for t, _, v in outs if t == settings.topic("predictions")]
        return ids, engine.metrics.duplicate_events
    finally:
        await engine.aclose()


@pytest.mark.integration
async def test_two_prefixes_on_one_redis_both_score_the_same_event_id(redis_url: str) -> None:
    app_id = f"ns-test-{uuid.uuid4().hex[:8]}"  # shared by both deployments, as the default is
    event_id = uuid.uuid4().hex

    def deployment(prefix: str) -> Settings:
        return load_settings(environ={}, redis_url=redis_url, app_id=app_id, topic_prefix=prefix)

    try:
        assert await _predictions(deployment("a."), event_id) == ([event_id], 0)
        assert await _predictions(deployment("b."), event_id) == ([event_id], 0)
        # within one deployment a repeat (another offset) is a duplicate: what claims are for
        assert await _predictions(deployment("a."), event_id, offset=1) == ([], 1)
    finally:
        raw = aredis.Redis.from_url(redis_url)
        keys = [k async for k in raw.scan_iter(match=f"stream:{app_id}:*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()
