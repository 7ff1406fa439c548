"""Bounded abuse: the input schema (declared and learned features, caps on names and categories)
and the limit on parked labels, in the flow."""

from __future__ import annotations

import time

import orjson
import pytest

from features.spec import FeatureSettings
from stream_app import contract
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record, encode
from stream_app.pipeline.schema import Schema
from stream_app.settings import load_settings
from stream_app.validate import Rejection
from tests.kafka_helpers import event
from tests.kafka_helpers import label as label_for


def reason(r: Rejection | None) -> str | None:
    return None if r is None else r.reason


def test_the_first_names_fill_the_set_then_a_new_name_is_schema_drift() -> None:
    schema = Schema(FeatureSettings(max_feature_names=3))
    assert schema.check({"a": 1, "b": 2.5}) is None
    # all or nothing: two new names with one place left teach nothing
    assert reason(schema.check({"a": 1, "c": 1, "d": 1})) == "schema_drift"
    assert schema.names_learned == 2
    assert schema.check({"c": True}) is None           # the third, a bool: a number
    assert reason(schema.check({"e": 1})) == "schema_drift"
    assert schema.check({"a": 0, "b": 0, "c": 1}) is None  # known names go on as before
    assert schema.check({"e": None}) is None and schema.names_learned == 3  # null learns nothing


def test_a_learned_type_is_kept() -> None:
    schema = Schema(FeatureSettings())
    assert schema.check({"n": 1.0, "s": "x"}) is None
    assert schema.check({"n": False}) is None            # bools and numbers are one input
    assert schema.check({"n": "1.0"}) == Rejection(
        "schema_drift", "features.n: expected number, got string")
    assert reason(schema.check({"s": 2})) == "schema_drift"


def test_categories_are_capped_per_string_feature() -> None:
    schema = Schema(FeatureSettings(max_categories=2))
    assert schema.check({"c": "a", "d": "a"}) is None
    assert schema.check({"c": "b"}) is None
    assert reason(schema.check({"c": "z", "d": "b"})) == "cardinality"
    assert schema.check({"d": "b"}) is None             # the refused event taught nothing
    assert schema.check({"c": "a", "d": "a"}) is None and schema.categories_learned == 4
    # without one-hot encoding, strings never reach the model: no cap
    free = Schema(FeatureSettings(max_categories=2), one_hot=False)
    assert all(free.check({"c": str(i)}) is None for i in range(10))


def test_model_inputs_are_capped_in_all() -> None:
    schema = Schema(FeatureSettings(max_inputs=3, max_categories=10))
    assert schema.check({"n": 1, "c": "a"}) is None             # n and c=a
    assert reason(schema.check({"c": "b", "d": "a"})) == "cardinality"  # 4 > 3
    assert schema.check({"c": "b"}) is None and schema.inputs_learned == 3
    assert reason(schema.check({"c": "z"})) == "cardinality"
    assert reason(schema.check({"m": 1.0})) == "schema_drift"
    assert schema.check({"n": 2, "c": "a", "s": None}) is None
    free = Schema(FeatureSettings(max_inputs=1), one_hot=False)   # strings are no input then
    assert free.check({"c": "x", "d": "y", "n": 1}) is None and free.inputs_learned == 1


def test_declared_inputs_types_and_ranges() -> None:
    schema = Schema(FeatureSettings(
        inputs={"amount": {"type": "number", "min": 0, "max": 100}, "ok": {"type": "bool"},
                "channel": {"type": "string"}},
        learn_undeclared=False))
    assert schema.check({"amount": 100, "ok": True, "channel": "web"}) is None
    assert schema.check({"amount": 0.0}) is None                        # the fast path
    assert schema.check({"amount": 100.5}) == Rejection(
        "out_of_range", "features.amount: 100.5 is above max 100")
    assert reason(schema.check({"amount": -1, "channel": "web"})) == "out_of_range"
    assert reason(schema.check({"ok": 1})) == "schema_drift"           # declared bool: bools
    assert reason(schema.check({"amount": True})) == "schema_drift"    # declared number: numbers
    assert reason(schema.check({"extra": 1})) == "schema_drift"        # not declared
    assert schema.check({"amount": None, "extra": None}) is None


def test_declared_inputs_do_not_count_against_the_learned_names() -> None:
    schema = Schema(FeatureSettings(inputs={"a": {}, "b": {}}, max_feature_names=1))
    assert schema.check({"a": 1, "b": 2, "x": 3}) is None
    assert reason(schema.check({"y": 3})) == "schema_drift"


def test_long_names_and_long_new_strings_are_refused() -> None:
    schema = Schema(FeatureSettings(max_name_chars=8, max_category_chars=4))
    assert reason(schema.check({"n" * 9: 1})) == "schema"
    assert reason(schema.check({"c": "abcde"})) == "schema"
    assert schema.check({"c": "abcd"}) is None


def test_the_numeric_fast_path_costs_about_a_microsecond() -> None:
    import timeit

    schema = Schema(FeatureSettings())
    x = {f"f{i}": float(i) for i in range(10)}
    assert schema.check(x) is None
    best = min(timeit.repeat(lambda: schema.check(x), number=20_000, repeat=5)) / 20_000
    assert best < 3e-6, best  # ~0.4 us on a laptop; slack for a loaded CI machine


# -- in the flow -------------------------------------------------------------------------------

def rec(offset: int, value: bytes, partition: int = 2) -> Record:
    return Record("events", partition, offset, b"k", value, time.time())


@pytest.fixture
async def engine():
    e = Engine(load_settings(environ={}, feature_store_url="memory://",
                             features={"max_feature_names": 3, "max_categories": 2}))
    await e.start()
    yield e
    await e.aclose()


async def test_events_past_the_caps_are_dead_lettered_with_their_position_never_scored(
        engine: Engine) -> None:
    ok = [event("e0", v=1.0, c="a"), event("e1", v=2.0, c="b", w=1), event("e2", v=0.5)]
    bad = [event("e3", v=1.0, c="z"), event("e4", v=1.0, q=2), event("e5", v="now a string")]
    batch = [rec(10 + i, v) for i, v in enumerate(ok + bad)]
    outs = encode(await engine.process_events(batch))
    preds = [orjson.loads(v) for t, _, v in outs if t == "predictions"]
    dead = [orjson.loads(v) for t, _, v in outs if t == "dead-letters"]
    assert [p["event_id"] for p in preds] == ["e0", "e1", "e2"]
    expected = ["cardinality", "schema_drift", "schema_drift"]
    assert [(d["reason"], d["source_topic"], d["partition"], d["offset"]) for d in dead] == [
        (r, "events", 2, 13 + i) for i, r in enumerate(expected)]
    assert all(r in contract.DEAD_LETTER_REASONS for r in expected)
    # never scored: no snapshot to learn from, no claim (the id may come again, within caps)
    assert await engine.store.get_snapshots(["e3", "e4", "e5"]) == [None, None, None]
    assert (await engine.store.begin_batch([], ["e3", "e4"])).seen == [None, None]
    assert engine.metrics.dead_letters == {"cardinality": 1, "schema_drift": 2}
    snap = orjson.loads((await engine.store.get_snapshots(["e1"]))[0])
    assert set(snap["x"]) == {"v", "c=b", "w"}


async def test_fresh_names_and_categories_never_reach_the_model(engine: Engine) -> None:
    batch = [rec(i, event(f"e{i}", **{f"n{i}": 1.0, "c": f"v{i}"})) for i in range(50)]
    outs = encode(await engine.process_events(batch))
    assert sum(t == "predictions" for t, _, _ in outs) == 2   # n0/v0 and n1/v1 fit (c is one)
    scaler = engine.model.pipeline.steps["StandardScaler"]
    assert set(scaler.counts) <= {"n0", "n1", "c=v0", "c=v1"}
    assert engine.schema.names_learned == 3 and engine.schema.categories_learned == 2


async def test_labels_past_the_parked_limit_are_dead_lettered_with_their_position() -> None:
    e = Engine(load_settings(environ={}, feature_store_url="memory://", label_wait_s=0,
                             labels={"max_parked": 2}))
    await e.start()
    try:
        batch = [Record("labels", 0, 40 + i, f"u{i}".encode(), label_for(f"u{i}", True), time.time())
                 for i in range(5)]
        dead = [orjson.loads(v) for t, _, v in encode(await e.process_labels(batch))
                if t == "dead-letters"]
        assert [(d["reason"], d["source_topic"], d["partition"], d["offset"]) for d in dead] == [
            ("label_flood", "labels", 0, 42 + i) for i in range(3)]
        assert orjson.loads(dead[0]["payload"])["event_id"] == "u2"
        assert e.metrics.labels_parked == 2 and e.metrics.dead_letters == {"label_flood": 3}
        # the parked ones still meet their events
        outs = encode(await e.process_events([rec(0, event("u1", v=1.0))]))
        assert [k for t, k, _ in outs if t == "labels"] == [b"u1"]
    finally:
        await e.aclose()
