"""The agent loop in process, without a broker (Faust's ``agent.test_context()``): retries on
infrastructure errors, one-at-a-time isolation of a record that fails, and a sink that fails.

The sink is a list (in the manner of Bytewax's ``TestingSink``); the engine is the real one on
the memory store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson
from aiokafka.errors import KafkaConnectionError

from stream_app.app import StreamApp, _register_batch_agent
from stream_app.errors import ServiceError
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Output, Record, encode
from stream_app.settings import load_settings
from tests.kafka_helpers import event


class ListSink:
    """Collects what the agent sends; fails the first ``fail`` sends with a Kafka error."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.fail = fail
        self.calls = 0

    async def send(self, outputs: Sequence[Output]) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise KafkaConnectionError("broker away")
        self.sent.extend(encode(outputs))


def _app() -> tuple[StreamApp, Engine]:
    settings = load_settings(environ={}, feature_store_url="memory://", app_id="loop-test")
    # test_context() never connects: the broker URL is only there to build the app
    app = StreamApp("loop-test", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
                    autodiscover=False)
    app.settings = settings
    app.engine = Engine(settings)
    return app, app.engine


def _batch(*event_ids: str) -> list[Record]:
    return [Record("events", 0, i, b"k", event(eid, v=float(i)), time.time())
            for i, eid in enumerate(event_ids)]


async def _run(app: StreamApp, process, sink: ListSink, batch: list[Record],
               want: int) -> None:
    engine = app.engine

    async def ready() -> None:
        await engine.start()

    agent = _register_batch_agent(app, app.topic("events"), "score", process, sink.send, ready)
    async with agent.test_context() as ctx:
        await ctx.put(batch)
        deadline = time.monotonic() + 10
        while len(sink.sent) < want:
            assert time.monotonic() < deadline, sink.sent
            await asyncio.sleep(0.01)
    await engine.aclose()


def _topics(sink: ListSink) -> list[str]:
    """The topics sent to, but the feature log (one record per scored event, beside its
    prediction: ``stream_app.offline``)."""
    return [t for t, _, _ in sink.sent if t != "feature-log"]


async def test_an_infrastructure_error_is_retried_until_it_passes() -> None:
    app, engine = _app()
    calls = 0

    async def flaky(batch: list[Record]) -> list[Output]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ServiceError("redis away")
        return await engine.process_events(batch)

    sink = ListSink()
    await _run(app, flaky, sink, _batch("a", "b"), want=2)
    assert calls == 3  # two failures, then the batch as a whole
    assert _topics(sink) == ["predictions", "predictions"]
    assert engine.metrics.dead_letters == {}


async def test_a_record_that_fails_is_dead_lettered_alone_and_the_rest_go_on() -> None:
    app, engine = _app()

    async def poisoned(batch: list[Record]) -> list[Output]:
        if any(orjson.loads(r.value)["event_id"] == "poison" for r in batch):
            raise ZeroDivisionError("a bug that only this record finds")
        return await engine.process_events(batch)

    sink = ListSink()
    await _run(app, poisoned, sink, _batch("a", "poison", "c"), want=3)
    got = {t: [orjson.loads(v) for tt, _, v in sink.sent if tt == t] for t in _topics(sink)}
    assert sorted(p["event_id"] for p in got["predictions"]) == ["a", "c"]
    (dead,) = got["dead-letters"]
    assert dead["reason"] == "processing_error" and dead["offset"] == 1
    assert "ZeroDivisionError" in dead["error"] and orjson.loads(dead["payload"])["event_id"] == "poison"
    assert engine.metrics.dead_letters == {"processing_error": 1}


async def test_a_failed_send_is_sent_again_and_nothing_is_scored_twice() -> None:
    app, engine = _app()
    sink = ListSink(fail=2)
    await _run(app, engine.process_events, sink, _batch("a", "b"), want=2)
    assert sink.calls == 3 and _topics(sink) == ["predictions", "predictions"]
    assert engine.metrics.predictions == 2


class RecordingTransactions:
    """Stands in for ``stream_app.transactions.Transactions``: records what is submitted."""

    def __init__(self) -> None:
        self.submitted: list[tuple[tuple[str, int], list[Output], int]] = []

    async def submit(self, tp, outputs: Sequence[Output], next_offset: int) -> None:
        self.submitted.append(((tp.topic, tp.partition), list(outputs), next_offset))


async def test_exactly_once_parts_a_batch_of_several_partitions_into_their_transactions() -> None:
    """One engine call for the whole fetch; each partition's outputs go with its own offset."""
    app, engine = _app()
    txn = app.transactions = RecordingTransactions()

    def rec(partition: int, offset: int, value: bytes) -> Record:
        return Record("events", partition, offset, b"k", value, time.time())

    batch = [rec(2, 40, event("a", v=1.0)), rec(0, 7, event("b", v=2.0)), rec(2, 41, b"{"),
             rec(0, 8, event("c", v=3.0)), rec(2, 42, event("b", v=4.0))]  # "b" again: a repeat
    await engine.start()
    agent = _register_batch_agent(app, app.topic("events"), "score", engine.process_events,
                                  ListSink().send, engine.start)
    async with agent.test_context() as ctx:
        await ctx.put(batch)
        deadline = time.monotonic() + 10
        while not txn.submitted:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    await engine.aclose()
    assert [(tp, offset) for tp, _, offset in txn.submitted] == [(("events", 2), 43),
                                                                 (("events", 0), 9)]
    parts = {tp[1]: encode(outs) for tp, outs, _ in txn.submitted}
    predicted = {p: sorted(orjson.loads(v)["event_id"] for t, _, v in outs if t == "predictions")
                 for p, outs in parts.items()}
    assert predicted == {2: ["a"], 0: ["b", "c"]}
    dead = [orjson.loads(v) for t, _, v in parts[2] if t == "dead-letters"]
    assert [(d["partition"], d["offset"], d["reason"]) for d in dead] == [(2, 41, "invalid_json")]
    assert not any(t == "dead-letters" for t, _, _ in parts[0])
