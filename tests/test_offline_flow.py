"""The feature log in the per-batch flow, in process on the memory store: one record per scored
event with the vector as scored, one per joined label, again on a redelivery, none when off."""

from __future__ import annotations

import time

import orjson

from stream_app.offline.sink import to_rows
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record, encode
from stream_app.settings import load_settings
from tests.kafka_helpers import event, label


def rec(offset: int, value: bytes, topic: str = "events") -> Record:
    return Record(topic, 0, offset, b"k", value, time.time())


def _logged(outs) -> list[Record]:
    return [Record("feature-log", 0, i, k, v, 0.0)
            for i, (t, k, v) in enumerate(encode(outs)) if t == "feature-log"]


async def _engine(enabled: bool) -> Engine:
    e = Engine(load_settings(environ={}, feature_store_url="memory://",
                             offline={"enabled": enabled}, features={"aggregates": [
                                 {"feature": "v", "stats": ["count", "mean"], "windows": []}]}))
    await e.start()
    e.learning_enabled = True
    return e


async def test_every_scored_event_and_joined_label_is_logged_as_scored() -> None:
    engine = await _engine(True)
    try:
        batch = [rec(0, event("e1", "a", v=1.0)), rec(1, event("e2", "a", v=3.0)),
                 rec(2, b"{oops")]
        outs = await engine.process_events(batch)
        preds = {p["event_id"]: p for t, _, v in encode(outs) if t == "predictions"
                 for p in [orjson.loads(v)]}
        rows = to_rows(_logged(outs))
        assert [r["event_id"] for r in rows.features] == ["e1", "e2"] and not rows.dead
        assert rows.features[1]["x"] == {"v": 3.0, "v_count_by_entity": 1.0,
                                         "v_mean_by_entity": 1.0}
        assert all(r["score"] == preds[r["event_id"]]["score"] for r in rows.features)
        # a redelivered batch (processed, not acked) logs its events again, from the snapshots
        again = to_rows(_logged(await engine.process_events(batch[:2])))
        assert again.features == rows.features
        learned = to_rows(_logged(await engine.process_labels(
            [rec(0, label("e2", True), topic="labels")])))
        assert [(r["event_id"], r["y"]) for r in learned.labels] == [("e2", True)]
    finally:
        await engine.aclose()


async def test_nothing_is_logged_when_the_feature_log_is_off() -> None:
    engine = await _engine(False)
    try:
        outs = await engine.process_events([rec(0, event("e1", "a", v=1.0))])
        outs += await engine.process_labels([rec(0, label("e1", False), topic="labels")])
        assert _logged(outs) == []
    finally:
        await engine.aclose()
