"""The per-batch flow in process, on the memory store (the same contract as Redis)."""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
import pytest

from stream_app import contract
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record, encode
from stream_app.settings import load_settings
from tests.kafka_helpers import event, label


def rec(offset: int, value: bytes, topic: str = "events", partition: int = 0,
        ts: float | None = None) -> Record:
    return Record(topic, partition, offset, b"k", value, time.time() if ts is None else ts)


@pytest.fixture
async def engine():
    e = Engine(load_settings(environ={}, feature_store_url="memory://"))
    await e.start()
    yield e
    await e.aclose()


def outputs(outs, topic: str) -> list[dict]:
    return [orjson.loads(v) for t, _, v in encode(outs) if t == topic]


async def test_latency_is_reported_in_milliseconds(engine: Engine) -> None:
    outs = await engine.process_events([rec(0, event("e1", v=1.0), ts=time.time() - 1.0)])
    (pred,) = outputs(outs, "predictions")
    assert 990 < pred["latency_ms"] < 1500
    assert 990 < engine.metrics.snapshot()["latency_ms"]["p50"] < 1500


async def test_repeat_in_the_same_batch_and_later_is_a_duplicate(engine: Engine) -> None:
    outs = await engine.process_events([rec(0, event("e1", v=1.0)), rec(1, event("e1", v=2.0))])
    outs += await engine.process_events([rec(2, event("e1", v=3.0))])
    assert [p["event_id"] for p in outputs(outs, "predictions")] == ["e1"]
    assert engine.metrics.duplicate_events == 2


async def test_a_redelivered_record_re_emits_its_prediction_unchanged(engine: Engine) -> None:
    batch = [rec(0, event("e1", v=1.0)), rec(1, event("e2", v=2.0))]
    first = outputs(await engine.process_events(batch), "predictions")
    again = outputs(await engine.process_events(batch), "predictions")
    assert again == first
    assert engine.metrics.redelivered == 2 and engine.metrics.duplicate_events == 0


async def test_early_label_waits_for_its_event_then_goes_back_and_is_learned_once(
        engine: Engine) -> None:
    early = label("e1", True)
    await engine.process_labels([rec(0, early, topic="labels")])
    assert engine.metrics.labels_parked == 1 and engine.metrics.learned == 0
    outs = await engine.process_events([rec(0, event("e1", v=1.0))])
    # taken once the event is scored, and sent back to labels (so it is learned from an offset)
    assert [(t, k, v) for t, k, v in encode(outs) if t == "labels"] == [("labels", b"e1", early)]
    assert engine.metrics.learned == 0 and engine.metrics.labels_forwarded == 1
    await engine.process_labels([rec(1, early, topic="labels")])
    assert engine.metrics.learned == 1
    await engine.process_labels([rec(2, label("e1", True), topic="labels")])
    assert engine.metrics.learned == 1 and engine.metrics.labels_duplicate == 1


async def test_learning_uses_the_features_as_scored(engine: Engine) -> None:
    await engine.process_events([rec(0, event("e1", v=3.0, c="red", flag=True))])
    snap = orjson.loads((await engine.store.get_snapshots(["e1"]))[0])
    assert snap["x"] == {"v": 3.0, "c=red": 1.0, "flag": 1.0}
    assert snap["v"] == engine.model.version


async def test_bad_records_become_dead_letters_with_their_position(engine: Engine) -> None:
    outs = await engine.process_events([rec(7, b"{", partition=3), rec(8, event("ok", v=1.0))])
    (dead,) = outputs(outs, "dead-letters")
    assert (dead["partition"], dead["offset"], dead["reason"]) == (3, 7, "invalid_json")
    assert len(outputs(outs, "predictions")) == 1


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (1, True), (0, False), ("fraud", True), ("FRAUD", True),
    ("legit", False), ("1", True), ("0", False)])
def test_labels_map_to_the_positive_class(value, expected) -> None:
    e = Engine(load_settings(environ={}, feature_store_url="memory://"))
    assert e.to_target(value) is expected


async def test_a_label_just_ahead_of_its_event_is_held_and_learned_without_a_round_trip() -> None:
    engine = Engine(load_settings(environ={}, feature_store_url="memory://", label_wait_s=5.0))
    await engine.start()
    try:
        held = asyncio.create_task(engine.process_labels([rec(0, label("e1", True), "labels")]))
        await asyncio.sleep(0.1)
        assert not held.done()  # waiting for e1 to be scored, nothing parked
        outs = await engine.process_events([rec(0, event("e1", v=1.0))])
        await asyncio.wait_for(held, 1.0)  # woken by the commit, not by the 5 s bound
        assert not [o for o in encode(outs) if o[0] == "labels"]  # nothing sent back
        m = engine.metrics
        assert (m.learned, m.labels_parked, m.labels_forwarded, m.label_batches_held) == (1, 0, 0, 1)
    finally:
        await engine.aclose()


async def test_labels_whose_events_never_come_are_held_three_times_then_park_at_once() -> None:
    engine = Engine(load_settings(environ={}, feature_store_url="memory://", label_wait_s=0.05))
    await engine.start()

    async def score_others() -> None:  # events keep coming, none of them the labels' own
        for i in range(2000):
            await engine.process_events([rec(i, event(f"other-{i}", v=1.0))])
            await asyncio.sleep(0.01)

    others = asyncio.create_task(score_others())
    try:
        holds = []
        for i in range(4):
            t0 = time.monotonic()
            await engine.process_labels([rec(i, label(f"ghost-{i}", True), "labels")])
            holds.append(time.monotonic() - t0)
        # each of the first three is held while events are scored (past 0.05 s without one),
        # up to 20 x 0.05 s; they met nothing, so the fourth parks at once
        assert all(0.8 <= h <= 1.5 for h in holds[:3]) and holds[3] < 0.05, holds
        assert engine.metrics.labels_parked == 4 and engine.metrics.learned == 0
    finally:
        others.cancel()
        await engine.aclose()


async def test_a_label_held_while_no_event_is_scored_here_parks_after_label_wait_s() -> None:
    engine = Engine(load_settings(environ={}, feature_store_url="memory://", label_wait_s=0.2))
    await engine.start()
    try:
        t0 = time.monotonic()
        await engine.process_labels([rec(0, label("later", True), "labels")])
        assert 0.2 <= time.monotonic() - t0 < 0.5
        assert engine.metrics.labels_parked == 1
        outs = await engine.process_events([rec(0, event("later", v=1.0))])
        assert [k for t, k, _ in encode(outs) if t == "labels"] == [b"later"]  # sent back
    finally:
        await engine.aclose()


async def test_a_huge_malformed_event_is_dead_lettered_in_a_record_the_broker_accepts(
        engine: Engine) -> None:
    raw = b"\xff" + b"x" * 899_999  # not UTF-8, not JSON, under max_payload_bytes (1 MiB)
    outs = encode(await engine.process_events([rec(7, raw), rec(8, event("after", v=1.0))]))
    (dead,) = [v for t, _, v in outs if t == "dead-letters"]
    assert len(dead) <= contract.MAX_DEAD_LETTER_BYTES  # the broker's limit is ~1 MB
    d = orjson.loads(dead)
    assert (d["reason"], d["offset"], d["payload_truncated_from"]) == ("invalid_json", 7, 900_000)
    assert base64.b64decode(d["payload"]) == raw[:len(base64.b64decode(d["payload"]))]
    assert [orjson.loads(v)["event_id"] for t, _, v in outs if t == "predictions"] == ["after"]


async def test_a_slow_model_gives_the_loop_back_while_it_learns_a_batch(engine: Engine,
                                                                        monkeypatch) -> None:
    """Scoring shares the event loop with learning: a batch of labels for a slow model yields
    between learns, so the events agent is never held for the whole batch."""
    from stream_app.pipeline.engine import LEARN_SLICE_S

    n = 24
    await engine.process_events([rec(i, event(f"e{i}", v=float(i))) for i in range(n)])
    engine.learning_enabled = True
    trace: list[str] = []
    learn = engine.model.learn_one

    def slow_learn(x, y=None) -> None:
        time.sleep(LEARN_SLICE_S / 4)  # a forest of many trees takes this long per label
        trace.append("learn")
        learn(x, y)

    monkeypatch.setattr(engine.model, "learn_one", slow_learn)
    learning = True

    async def other_work() -> None:  # what the events agent would do meanwhile
        while learning:
            trace.append("other")
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    try:
        await engine.process_labels([rec(i, label(f"e{i}", i % 2 == 0), "labels")
                                     for i in range(n)])
    finally:
        learning = False
        await other
    learns = [i for i, what in enumerate(trace) if what == "learn"]
    assert len(learns) == n and engine.metrics.learned == n
    assert "other" in trace[learns[0]:learns[-1]]  # it ran between two learns of the batch


async def test_a_slow_model_gives_the_loop_back_while_it_scores_a_batch(engine: Engine,
                                                                        monkeypatch) -> None:
    """A batch of events for a slow model yields between scores, so the transactions in
    flight, the fetches and the HTTP requests are not held for the whole batch; the batch is
    still scored in order, by the model it started with, with one prediction per event."""
    from stream_app.pipeline.engine import SCORE_SLICE_S

    n = 24
    trace: list[str] = []
    predict = engine.model.predict_proba_one

    def slow_predict(x):
        time.sleep(SCORE_SLICE_S / 4)  # a forest of many trees takes this long per event
        trace.append("score")
        return predict(x)

    monkeypatch.setattr(engine.model, "predict_proba_one", slow_predict)
    scoring = True

    async def other_work() -> None:  # a transaction's broker round trip, say
        while scoring:
            trace.append("other")
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    try:
        outs = await engine.process_events([rec(i, event(f"e{i}", v=float(i)))
                                            for i in range(n)])
    finally:
        scoring = False
        await other
    scores = [i for i, what in enumerate(trace) if what == "score"]
    assert len(scores) == n
    assert [p["event_id"] for p in outputs(outs, "predictions")] == [f"e{i}" for i in range(n)]
    assert "other" in trace[scores[0]:scores[-1]]  # it ran between two scores of the batch


async def test_learning_waits_for_a_batch_of_events_being_scored(engine: Engine,
                                                                 monkeypatch) -> None:
    """Scoring comes before learning: once an events batch is under way, a slow model's
    labels learn no more until it is done (the labels lag, the predictions do not)."""
    from stream_app.pipeline.engine import LEARN_SLICE_S

    n = 24
    await engine.process_events([rec(i, event(f"e{i}", v=float(i))) for i in range(n)])
    engine.learning_enabled = True
    trace: list[str] = []
    learn = engine.model.learn_one

    begin = engine.store.begin_batch

    async def slow_read(*args, **kwargs):  # a store round trip that takes a while
        trace.append("scoring")
        await asyncio.sleep(0.05)
        return await begin(*args, **kwargs)

    monkeypatch.setattr(engine.store, "begin_batch", slow_read)

    learning = asyncio.Event()

    def slow_learn(x, y=None) -> None:
        time.sleep(LEARN_SLICE_S / 2)
        trace.append("learn")
        learning.set()
        learn(x, y)

    monkeypatch.setattr(engine.model, "learn_one", slow_learn)

    async def score_later() -> list:
        await learning.wait()  # start scoring while the labels learn
        outs = await engine.process_events([rec(100 + i, event(f"x{i}", v=1.0))
                                            for i in range(5)])
        trace.append("scored")
        return outs

    scoring = asyncio.create_task(score_later())
    await engine.process_labels([rec(i, label(f"e{i}", i % 2 == 0), "labels")
                                 for i in range(n)])
    outs = await scoring
    assert len(outputs(outs, "predictions")) == 5 and engine.metrics.learned == n
    start, end = trace.index("scoring"), trace.index("scored")
    assert "learn" not in trace[start:end], trace  # no learn while the batch was scored
    assert trace.count("learn") == n and trace[-1] == "learn"  # the labels went on after it


async def test_the_gil_switch_follows_the_models_own_time_not_the_tasks_it_yields_to(
        engine: Engine, monkeypatch) -> None:
    """``gil_switch_interval_s = "auto"``: a model busy over 1 ms per score or learn gets the
    1 ms switch interval; a fast model keeps 5 ms even when the tasks it yields to are slow."""
    from stream_app.gil import FAST_S, SLOW_S, SwitchInterval

    applied: list[float] = []
    engine.gil = SwitchInterval(apply=applied.append)
    n = 24
    predict, learn = engine.model.predict_proba_one, engine.model.learn_one
    hogging = True

    async def hog() -> None:  # another task that holds the loop 20 ms whenever it runs
        while hogging:
            time.sleep(0.02)  # noqa: ASYNC251 - blocking is the point
            await asyncio.sleep(0)

    def busy_predict(x):  # 0.5 ms: between the bounds, and long enough to yield in a batch
        time.sleep(0.0005)
        return predict(x)

    monkeypatch.setattr(engine.model, "predict_proba_one", busy_predict)
    other = asyncio.create_task(hog())
    try:
        await engine.process_events([rec(i, event(f"f{i}", v=float(i))) for i in range(n)])
    finally:
        hogging = False
        await other
    # counted with the hog's 20 ms per yield it would be over 1 ms an event
    assert applied == [] and engine.gil.current == FAST_S and engine.gil.cost_s < 0.001
    monkeypatch.setattr(engine.model, "predict_proba_one", predict)

    def slow_learn(x, y=None) -> None:
        time.sleep(0.003)
        learn(x, y)

    for k in range(4):
        await engine.process_events([rec(50 + k * n + i, event(f"l{k}-{i}", v=float(i)))
                                     for i in range(n)])
    engine.learning_enabled = True
    monkeypatch.setattr(engine.model, "learn_one", slow_learn)
    for k in range(4):  # the mean moves by batches, not at the first slow one
        await engine.process_labels([rec(k * n + i, label(f"l{k}-{i}", i % 2 == 0), "labels")
                                     for i in range(n)])
    assert applied == [SLOW_S] and engine.metrics.learned == 4 * n

    def slow_predict(x):
        time.sleep(0.002)
        return predict(x)

    monkeypatch.setattr(engine.model, "learn_one", learn)
    for k in range(12):
        await engine.process_events([rec(100 + k * n + i, event(f"g{k}-{i}", v=1.0))
                                     for i in range(n)])
    assert applied == [SLOW_S, FAST_S]
    monkeypatch.setattr(engine.model, "predict_proba_one", slow_predict)
    for k in range(4):
        await engine.process_events([rec(1000 + k * n + i, event(f"h{k}-{i}", v=1.0))
                                     for i in range(n)])
    assert applied == [SLOW_S, FAST_S, SLOW_S]
