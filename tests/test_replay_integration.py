"""Replay and tail against a real broker (``kafka_settings`` comes from ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import io
import uuid

import orjson
import pytest

from stream_app.contract import EVENT_FIELDS, LABEL_FIELDS, TOPICS
from stream_app.errors import ConfigError
from stream_app.kafka_io import ensure_topics, make_admin, make_consumer, make_producer
from stream_app.tools.replay import replay
from stream_app.tools.tail import tail

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_settings):
    """The session's settings with a topic prefix of this test's own."""
    prefix = f"{kafka_settings.topic_prefix}r{uuid.uuid4().hex[:8]}."
    return kafka_settings.model_copy(update={"topic_prefix": prefix})


async def tail_lines(settings, topic, **kwargs) -> list[dict]:
    out = io.StringIO()
    await asyncio.wait_for(tail(settings, topic, out=out, **kwargs), timeout=30)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


async def test_replay_phishing_then_tail_from_beginning(settings):
    report = await replay(settings, "phishing", limit=100)
    assert (report.events_sent, report.labels_sent, report.bad_lines) == (100, 100, 0)

    events = await tail_lines(settings, "events", from_beginning=True, limit=100)
    assert len(events) == 100
    assert {e["event_id"] for e in events} == {f"phishing-{i:05d}" for i in range(100)}
    for e in events:
        assert tuple(e) == EVENT_FIELDS
        assert isinstance(e["entity_id"], str) and isinstance(e["timestamp"], float)
        assert len(e["features"]) == 9

    labels = await tail_lines(settings, settings.topic("labels"), from_beginning=True, limit=100)
    assert {tuple(lab) for lab in labels} == {LABEL_FIELDS}
    assert {lab["event_id"] for lab in labels} == {e["event_id"] for e in events}


async def test_jsonl_with_a_malformed_line_publishes_all_the_others(settings, tmp_path):
    lines = [
        {"event_id": "e1", "entity_id": "a", "timestamp": 1.0, "features": {"x": 1.0}, "label": 1},
        {"event_id": "e2", "entity_id": "b", "timestamp": 2.0, "features": {"x": 2.0}},
        None,  # line 3: not JSON
        {"event_id": "e4", "features": "breaks the contract"},
        {"event_id": "e5", "entity_id": "a", "timestamp": 5.0, "features": {}, "label": False},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join("{broken" if x is None else orjson.dumps(x).decode() for x in lines))
    err = io.StringIO()

    report = await replay(settings, str(path), err=err)

    assert err.getvalue().startswith("line 3: invalid JSON")
    assert (report.events_sent, report.labels_sent, report.bad_line_numbers) == (4, 2, (3,))
    # everything else arrived, and nothing more (stop after a second of silence)
    events = await tail_lines(settings, "events", from_beginning=True, idle_timeout_s=1.0)
    assert sorted(e["event_id"] for e in events) == ["e1", "e2", "e4", "e5"]
    assert {e["event_id"]: e for e in events}["e4"] == lines[3]
    assert all("label" not in e for e in events)


async def test_tail_from_the_end_sees_only_new_records(settings):
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("drift"), b'{"old": true}', partition=0)
        out = io.StringIO()
        task = asyncio.create_task(tail(settings, "drift", limit=2, out=out))
        await asyncio.sleep(1.0)  # tail is positioned once it polls
        await producer.send_and_wait(settings.topic("drift"), b'{"new": 1}', partition=1)
        await producer.send_and_wait(settings.topic("drift"), b"\x00raw", partition=1)
        assert await asyncio.wait_for(task, timeout=20) == 2
    finally:
        await producer.stop()
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first == {"new": 1}
    assert second["value_base64"] == "AHJhdw==" and second["partition"] == 1


async def test_tail_stops_when_idle_and_rejects_unknown_topics(settings):
    assert await tail_lines(settings, "metrics", from_beginning=True, idle_timeout_s=0.3) == []
    with pytest.raises(ConfigError, match="does not exist"):
        await tail(settings, f"{settings.topic_prefix}no-such-topic", from_beginning=True, limit=1)


async def test_ensure_topics_is_idempotent_and_uses_the_partition_count(settings):
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(settings.topic(t) for t in TOPICS)
    assert await asyncio.gather(ensure_topics(settings), ensure_topics(settings)) == [[], []]
    admin = make_admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.topic("events")])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == settings.partitions


async def test_replay_paced_with_delayed_partial_labels(settings):
    report = await replay(settings, "synthetic", limit=40, rate=200.0, label_delay_s=0.3,
                          label_fraction=0.5, seed=11)
    assert report.events_sent == 40 and 0 < report.labels_sent < 40
    assert report.elapsed_s >= 0.3
    consumer = make_consumer(settings, "labels", group_id=f"g-{uuid.uuid4().hex[:6]}",
                             from_beginning=True)
    got: list[dict] = []

    async def read_all() -> None:
        while len(got) < report.labels_sent:
            batch = await consumer.getmany(timeout_ms=200)
            got.extend(orjson.loads(r.value) for rs in batch.values() for r in rs)

    await consumer.start()
    try:
        await asyncio.wait_for(read_all(), timeout=30)  # a group join included
    finally:
        await consumer.stop()
    assert len({lab["event_id"] for lab in got}) == report.labels_sent
