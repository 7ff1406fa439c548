"""stream_app.pipeline.drift: the stage between the flow and the monitor, in process."""

from __future__ import annotations

import random

import orjson

from stream_app.pipeline.drift import DriftStage
from stream_app.pipeline.records import RetrainSignal
from stream_app.settings import load_settings


def _stage(**drift: object) -> DriftStage:
    return DriftStage(load_settings(environ={}, drift=drift), model="m", model_version="1")


def _episodes(outs: list) -> list[dict]:
    return [r for t, _, v in (o for o in outs if isinstance(o, tuple)) if t == "drift"
            for r in [orjson.loads(v)] if r["record"] == "episode"]


def test_an_episode_record_spans_the_event_times_its_window_holds() -> None:
    """Four partitions consumed unevenly (partition 3 arrives 300 s late): the check that opens
    the episode runs on a late event, yet its current window holds events from after the shift
    at t = 1000, and the record says so."""
    stage = _stage(window=100, check_every=50, prediction=False)
    rng = random.Random(2)
    outs, times = [], []
    for i in range(1200):
        t = float(i if i % 4 == 3 else i + 300)
        times.append(t)
        v = rng.gauss(0, 1) + (3.0 if t >= 1000 else 0.0)
        outs += stage.observe({"v": v}, {"v": v}, score=None, timestamp=t)
    (ep,) = _episodes(outs)
    index = ep["index"]
    assert times[index] < 1000 <= ep["current"]["last_timestamp"]  # triggered by a late event
    window = times[index - 99:index + 1]
    assert (ep["current"]["first_timestamp"], ep["current"]["last_timestamp"]) == (
        min(window), max(window))
    assert (ep["reference"]["first_timestamp"], ep["reference"]["last_timestamp"]) == (
        min(times[:100]), max(times[:100]))
    assert [o.reason for o in outs if isinstance(o, RetrainSignal)] == ["feature_drift"]
