"""Replay, tail and the Kafka helpers without a broker: a fake producer records what is sent."""

from __future__ import annotations

import asyncio
import io
import socket
import time

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord

from stream_app.errors import ConfigError, ServiceError
from stream_app.kafka_io import consumer_options, full_topic, producer_options, wait_for_kafka
from stream_app.settings import load_settings
from stream_app.tools import replay as replay_module
from stream_app.tools.replay import ReplayReport, replay
from stream_app.tools.tail import render

SETTINGS = load_settings(environ={}, topic_prefix="p.", kafka_url="kafka://127.0.0.1:1")


class FakeProducer:
    """Acknowledges each record ``ack_after_s`` later (or fails it with ``error``)."""

    def __init__(self, ack_after_s: float = 0.0, error: Exception | None = None) -> None:
        self.sent: list[tuple[float, str, bytes | None, dict]] = []
        self.ack_after_s, self.error = ack_after_s, error
        self.in_flight = self.max_in_flight = 0
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def flush(self) -> None:
        await asyncio.sleep(self.ack_after_s * 2)

    async def send(self, topic, value, key=None):
        loop = asyncio.get_running_loop()
        self.sent.append((loop.time(), topic, key, orjson.loads(value)))
        fut = loop.create_future()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def ack() -> None:
            self.in_flight -= 1
            if self.error is not None:
                fut.set_exception(self.error)
            else:
                fut.set_result(None)

        loop.call_later(self.ack_after_s, ack)
        return fut

    def on(self, topic: str) -> list[tuple[float, str, bytes | None, dict]]:
        return [s for s in self.sent if s[1] == topic]


@pytest.fixture
def producer(monkeypatch):
    fake = FakeProducer()

    async def no_topics(settings, names=None):
        return []

    monkeypatch.setattr(replay_module, "make_producer", lambda settings: fake)
    monkeypatch.setattr(replay_module, "ensure_topics", no_topics)
    return fake


async def test_replay_sends_events_keyed_by_entity_and_labels_right_after(producer):
    report = await replay(SETTINGS, "phishing", limit=20)
    assert (report.events_sent, report.labels_sent, report.bad_lines) == (20, 20, 0)
    events, labels = producer.on("p.events"), producer.on("p.labels")
    assert [e[3]["event_id"] for e in events] == [f"phishing-{i:05d}" for i in range(20)]
    assert all(key == e["entity_id"].encode() for _, _, key, e in events)
    assert all(key == label["event_id"].encode() for _, _, key, label in labels)
    assert [s[1] for s in producer.sent[:4]] == ["p.events", "p.labels", "p.events", "p.labels"]
    assert sorted(labels[0][3]) == ["event_id", "label", "timestamp"]
    assert producer.stopped
    now = time.time()
    assert all(now - 5 < e[3]["timestamp"] <= now + 1 for e in events)  # stamped from now


async def test_label_fraction_is_seeded(producer):
    first = await replay(SETTINGS, "synthetic", limit=400, label_fraction=0.25, seed=3)
    chosen = [s[3]["event_id"] for s in producer.on("p.labels")]
    producer.sent.clear()
    await replay(SETTINGS, "synthetic", limit=400, label_fraction=0.25, seed=3)
    assert [s[3]["event_id"] for s in producer.on("p.labels")] == chosen
    assert 60 < first.labels_sent < 140 and first.labels_sent == len(chosen)
    assert (await replay(SETTINGS, "synthetic", limit=50, label_fraction=0.0)).labels_sent == 0


async def test_labels_wait_for_their_delay_without_blocking_events(producer):
    report = await replay(SETTINGS, "phishing", limit=30, label_delay_s=0.2)
    events, labels = producer.on("p.events"), producer.on("p.labels")
    assert len(labels) == 30 and report.elapsed_s >= 0.2
    assert max(e[0] for e in events) < min(lab[0] for lab in labels)  # events are not held up
    by_id = {e[3]["event_id"]: e for e in events}
    for sent_at, _, _, label in labels:
        event = by_id[label["event_id"]]
        assert sent_at - event[0] >= 0.2 - 0.01
        assert label["timestamp"] == pytest.approx(event[3]["timestamp"] + 0.2)


async def test_rate_paces_events(producer):
    report = await replay(SETTINGS, "synthetic", limit=21, rate=100.0)
    times = [e[0] for e in producer.on("p.events")]
    assert 0.19 <= times[-1] - times[0] < 0.4
    assert 50 < report.rate < 110
    stamps = [e[3]["timestamp"] for e in producer.on("p.events")]
    assert stamps[1] - stamps[0] == pytest.approx(0.01, abs=1e-6)  # event time spaced by 1 / rate


async def test_jsonl_bad_line_is_reported_and_the_rest_published(producer, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"event_id": "e1", "entity_id": "a", "timestamp": 1.0, "features": {}, "label": 1}\n'
        '{"event_id": "e2", "entity_id": 7, "timestamp": 2.0, "features": {}}\n'
        '{"event_id": "e3", oops}\n'
        '{"entity_id": "a", "features": {}, "label": true}\n'
        '{"event_id": "e5", "entity_id": "b", "timestamp": "late", "features": {}, "label": "x"}\n'
    )
    err = io.StringIO()
    report = await replay(SETTINGS, str(path), err=err)
    assert err.getvalue().startswith("line 3: invalid JSON (")
    assert (report.events_sent, report.bad_lines, report.bad_line_numbers) == (4, 1, (3,))
    assert [e[2] for e in producer.on("p.events")] == [b"a", b"7", b"a", b"b"]
    # no event_id, no label record; a bad timestamp falls back to the wall clock
    assert [lab[3]["event_id"] for lab in producer.on("p.labels")] == ["e1", "e5"]
    assert producer.on("p.labels")[0][3]["timestamp"] == 1.0


async def test_in_flight_is_bounded(monkeypatch):
    fake = FakeProducer(ack_after_s=0.002)

    async def no_topics(settings, names=None):
        return []

    monkeypatch.setattr(replay_module, "make_producer", lambda settings: fake)
    monkeypatch.setattr(replay_module, "ensure_topics", no_topics)
    report = await replay(SETTINGS, "synthetic", limit=200, label_fraction=0.0, max_in_flight=8)
    assert report.events_sent == 200 and fake.max_in_flight <= 8


async def test_delivery_failure_is_a_service_error(monkeypatch):
    fake = FakeProducer(error=KafkaTimeoutError("no ack"))

    async def no_topics(settings, names=None):
        return []

    monkeypatch.setattr(replay_module, "make_producer", lambda settings: fake)
    monkeypatch.setattr(replay_module, "ensure_topics", no_topics)
    with pytest.raises(ServiceError, match="replay to 'p.events' failed"):
        await replay(SETTINGS, "phishing", limit=5)
    assert fake.stopped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "nope"}, "unknown dataset 'nope'"),
        ({"rate": 0.0}, "rate must be a positive"),
        ({"label_fraction": 1.5}, "label fraction"),
        ({"label_delay_s": -1.0}, "label delay"),
        ({"limit": -2}, "limit must be >= 0"),
    ],
)
async def test_bad_arguments_fail_before_touching_kafka(kwargs, message):
    kwargs = {"dataset": "phishing"} | kwargs
    with pytest.raises(ConfigError, match=message):
        await replay(SETTINGS, **kwargs)  # the broker at port 1 is never contacted


def test_report_text_and_dict():
    report = ReplayReport(10, 4, 2, 2.0, (3, 9))
    assert str(report) == "sent 10 events and 4 labels in 2.00 s (5 events/s); 2 bad lines skipped"
    assert report.as_dict()["rate"] == 5.0 and report.as_dict()["bad_line_numbers"] == (3, 9)
    assert ReplayReport(0, 0, 0, 0.0).rate == 0.0


# -- kafka_io and tail helpers --------------------------------------------------------


def test_full_topic_accepts_both_forms():
    s = load_settings(environ={}, topic_prefix="ev")
    assert full_topic(s, "events") == "evevents"
    assert full_topic(s, "evevents") == "evevents"
    assert full_topic(s, "some-changelog") == "some-changelog"
    assert full_topic(load_settings(environ={}), "labels") == "labels"


def test_client_options_follow_settings():
    plain = load_settings(environ={}, kafka_url="kafka://h1:9092;kafka://h2:9092")
    embedded = load_settings(environ={}, embedded=True)
    assert producer_options(plain)["bootstrap_servers"] == "h1:9092,h2:9092"
    assert producer_options(plain, acks="all")["acks"] == "all"
    assert producer_options(plain)["enable_idempotence"] is False
    assert "fetch_max_wait_ms" not in consumer_options(plain)
    emb = consumer_options(embedded, group_id="g", from_beginning=True)
    assert emb["fetch_max_wait_ms"] == 20 and emb["session_timeout_ms"] == 6000
    assert emb["heartbeat_interval_ms"] == 1000 and emb["enable_auto_commit"] is True
    assert emb["auto_offset_reset"] == "earliest"
    assert consumer_options(plain)["enable_auto_commit"] is False


async def test_wait_for_kafka_times_out_with_a_clear_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings(environ={}, kafka_url=f"kafka://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ServiceError, match=f"Kafka is not reachable at 127.0.0.1:{port}"):
        await wait_for_kafka(settings, timeout_s=0.5)
    assert time.monotonic() - started < 3


def _record(value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord("t", 1, 5, 0, 0, None, value, None, 0, 0, [])


def test_render_is_always_one_json_line():
    assert render(_record(b'{\n "a": [1, 2]\n}')) == '{"a":[1,2]}'
    assert orjson.loads(render(_record(b"not json"))) == {
        "topic": "t", "partition": 1, "offset": 5, "value_base64": "bm90IGpzb24="}
    assert orjson.loads(render(_record(None)))["value_base64"] is None
    assert render(_record(b'{"x": NaN}')).startswith('{"topic"')
