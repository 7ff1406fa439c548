"""stream_app.pipeline.drift: the stage between the flow and the monitor, in process."""

from __future__ import annotations

import random

import orjson
import pytest

from stream_app.errors import ConfigError
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


def _labels(stage: DriftStage, n: int = 6000, drop_at: int = 3000, seed: int = 7) -> list:
    """Labelled predictions whose accuracy drops from 0.9 to 0.6 at ``drop_at``."""
    rng = random.Random(seed)
    outs: list = []
    for i in range(n):
        y = rng.random() < 0.5
        correct = rng.random() < (0.9 if i < drop_at else 0.6)
        outs += stage.observe_label(y, 0.8 if y == correct else 0.2)
    return outs


def _shifted_events(stage: DriftStage, n: int = 800, seed: int = 1) -> list:
    rng = random.Random(seed)
    outs: list = []
    for i in range(n):
        v = rng.gauss(0, 1) + (3.0 if i >= n // 2 else 0.0)
        outs += stage.observe({"v": v}, {"v": v}, score=rng.random(), timestamp=float(i))
    return outs


def test_drift_disabled_switches_off_every_kind_and_every_signal() -> None:
    on, off = _stage(window=100, check_every=50), _stage(window=100, check_every=50, enabled=False)
    found = _shifted_events(on) + _labels(on)  # the control: both kinds fire when on
    assert {r["kind"] for r in _episodes(found) if r["drift"]} == {"feature", "performance"}
    assert {o.reason for o in found if isinstance(o, RetrainSignal)} == {"feature_drift"}
    assert on.signals_suppressed >= 1  # performance drift came within the cooldown
    assert _shifted_events(off) + _labels(off) == []
    assert (off.monitor, off.performance, off.summary()) == (None, None, None)


def test_performance_switch_alone_keeps_feature_drift() -> None:
    stage = _stage(window=100, check_every=50, performance={"enabled": False})
    outs = _shifted_events(stage) + _labels(stage)
    assert [(r["kind"], r["subject"]) for r in _episodes(outs)] == [("feature", "v")]
    assert stage.performance is None


@pytest.mark.parametrize("environ, enabled", [
    ({"STREAM_DRIFT__PERFORMANCE": "false"}, False),  # the switch from before the section
    ({"STREAM_DRIFT__PERFORMANCE": "off"}, False),
    ({"STREAM_DRIFT__PERFORMANCE": "true"}, True),
    ({"STREAM_DRIFT__PERFORMANCE__ENABLED": "false"}, False),
    ({"STREAM_DRIFT__PERFORMANCE": '{"enabled": false}'}, False),
    ({"STREAM_DRIFT": '{"performance": false}'}, False),
    ({}, True)])
def test_the_performance_switch_from_the_environment(environ: dict, enabled: bool) -> None:
    s = load_settings(environ=environ)
    assert s.drift.performance.enabled is enabled
    assert load_settings(environ=s.to_env()) == s


def test_the_performance_switch_in_toml_both_shapes(tmp_path) -> None:
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text("[drift]\nperformance = false\n")
    new.write_text("[drift.performance]\nenabled = false\n")
    assert load_settings(old, environ={}).drift == load_settings(new, environ={}).drift
    assert load_settings(new, environ={}).drift.performance.enabled is False


def test_a_bad_performance_switch_fails_with_the_setting_named() -> None:
    with pytest.raises(ConfigError, match=r"drift\.performance\.enabled .*valid boolean"):
        load_settings(environ={"STREAM_DRIFT__PERFORMANCE": "maybe"})
    with pytest.raises(ConfigError, match=r"drift\.performance \(STREAM_DRIFT__PERFORMANCE\)"):
        load_settings(environ={"STREAM_DRIFT__PERFORMANCE": "{enabled: no"})
