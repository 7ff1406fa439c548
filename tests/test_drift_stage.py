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


def _bursts(stage: DriftStage, subjects: dict[str, int], n: int = 2000, seed: int = 1) -> list:
    """Standard normals; each subject in ``subjects`` moves by 3 sd for that many events from
    event 1000 on (a huge number: for good)."""
    rng = random.Random(seed)
    outs: list = []
    for i in range(n):
        x = {s: rng.gauss(0, 1) + (3.0 if 1000 <= i < 1000 + d else 0.0)
             for s, d in subjects.items()}
        outs += [(i, o) for o in stage.observe(x, x, score=None, timestamp=float(i))]
    return outs


def _opened(outs: list) -> list[tuple[int, str, bool]]:
    return [(i, r["subject"], r["drift"]) for i, o in outs if isinstance(o, tuple)
            for r in [orjson.loads(o[2])] if r["record"] == "episode"]


def _signals(outs: list) -> list[tuple[int, str, int]]:
    return [(i, o.reason, len(o.evidence)) for i, o in outs if isinstance(o, RetrainSignal)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_lone_brief_episode_raises_no_signal_and_raised_one_before(seed: int) -> None:
    """50 events 3 sd off: the episode opens at the 2nd failing check and closes 3 checks
    after the burst has left the window, without the 5 consecutive failing checks (window
    200 / check 50, + 1) a lone subject needs. ``min_feature_subjects = 1`` (the policy
    before issue 10) signals at the open."""
    quiet = _stage(window=200, check_every=50, prediction=False)
    outs = _bursts(quiet, {"v": 50}, seed=seed)
    assert _opened(outs) == [(1099, "v", True), (1349, "v", False)]
    assert _signals(outs) == [] and quiet.signals_suppressed == 0
    old = _stage(window=200, check_every=50, prediction=False,
                 retrain={"min_feature_subjects": 1})
    assert _signals(_bursts(old, {"v": 50}, seed=seed)) == [(1099, "feature_drift", 1)]


def test_a_lone_persistent_shift_signals_once_after_a_window_of_failing_checks() -> None:
    stage = _stage(window=200, check_every=50, prediction=False)
    outs = _bursts(stage, {"v": 10**9})
    assert _opened(outs) == [(1099, "v", True)]  # open for good: the reference is fixed
    # the 5th consecutive failing check (1049 was the 1st); one signal, nothing held back
    assert _signals(outs) == [(1249, "feature_drift", 1)] and stage.signals_suppressed == 0
    assert stage.monitor.persisting() == {"v": 20}  # checks 1049..1999, all below alpha
    longer = _stage(window=200, check_every=50, prediction=False, retrain={"persist_checks": 8})
    assert _signals(_bursts(longer, {"v": 10**9})) == [(1399, "feature_drift", 1)]
    never = _stage(window=200, check_every=50, prediction=False, retrain={"persist_checks": 0})
    assert _signals(_bursts(never, {"v": 10**9})) == []


def test_two_subjects_in_drift_at_once_signal_at_the_second_open() -> None:
    """Two brief bursts at once: neither persists, but two subjects in drift is the signal."""
    stage = _stage(window=200, check_every=50, prediction=False)
    outs = _bursts(stage, {"u": 50, "v": 50, "w": 0})
    assert {(i, d) for i, _, d in _opened(outs)} == {(1099, True), (1349, False)}
    assert _signals(outs) == [(1099, "feature_drift", 2)]
    off = _stage(window=200, check_every=50, prediction=False,
                 retrain={"min_feature_subjects": 0})  # no feature-drift signal at all
    assert _signals(_bursts(off, {"u": 50, "v": 10**9})) == []


def test_an_adwin_rise_back_to_the_usual_loss_is_not_confirmed() -> None:
    """Error 0.25, with 600 labels at 0.1 from label 1000: ADWIN finds the rise at the end of
    the good spell (its cut leaves it 0.167 before, 0.241 after), but the next window of labels
    (0.25) is not 20 % above the mean of ADWIN's whole window: no signal. The control, error
    0.05 during the spell then 0.25: ADWIN finds the dip, then the rise, which is confirmed."""
    def run(dip: float) -> tuple[DriftStage, list]:
        stage = _stage(window=200, check_every=50)
        rng = random.Random(4)
        outs: list = []
        for i in range(8000):
            err = dip if 1000 <= i < 1600 else 0.25
            y = rng.random() < 0.5
            correct = rng.random() >= err
            outs += [(i, o) for o in stage.observe_label(y, 0.8 if y == correct else 0.2)]
        return stage, outs

    stage, outs = run(0.1)
    perf = [(i, r["drift"]) for i, o in outs if isinstance(o, tuple)
            for r in [orjson.loads(o[2])]]
    assert perf == [(4069, True)]
    assert _signals(outs) == [] and stage.unconfirmed == 1
    stage, outs = run(0.05)
    assert _signals(outs) == [(1851, "performance_drift", 1)] and stage.unconfirmed == 0


def test_the_retrain_policy_settings_are_validated_and_default_to_the_quiet_policy() -> None:
    d = load_settings(environ={}).drift
    assert (d.retrain.min_feature_subjects, d.retrain.persist_checks) == (2, None)
    assert (d.performance.confirm_labels, d.performance.min_increase,
            d.performance.min_relative_increase) == (None, 0.02, 0.2)
    assert _stage()._persist == 5  # ceil(1000 / 250) + 1
    assert _stage(window=200, check_every=60)._persist == 5  # ceil(200 / 60) + 1
    env = load_settings(environ={"STREAM_DRIFT__RETRAIN__PERSIST_CHECKS": "7",
                                 "STREAM_DRIFT__PERFORMANCE__MIN_INCREASE": "0.05"}).drift
    assert (env.retrain.persist_checks, env.performance.min_increase) == (7, 0.05)
    for bad in ({"retrain": {"persist_checks": -1}}, {"performance": {"confirm_labels": 0}},
                {"performance": {"min_increase": 1.5}},
                {"performance": {"min_relative_increase": -0.1}}):
        with pytest.raises(ConfigError):
            load_settings(environ={}, drift=bad)


def test_after_a_reset_a_forgotten_episode_does_not_count_towards_two_subjects() -> None:
    stage = _stage(window=200, check_every=50, prediction=False)
    assert _signals(_bursts(stage, {"u": 10**9, "v": 0}, n=1300)) == [(1249, "feature_drift", 1)]
    stage.reset()  # u's episode is forgotten with its reference
    rng = random.Random(5)
    outs = []
    for i in range(1300, 3000):  # u stays where it moved; v bursts for 50 events at 2300
        x = {"u": rng.gauss(3, 1), "v": rng.gauss(0, 1) + (3.0 if 2300 <= i < 2350 else 0.0)}
        outs += [(i, o) for o in stage.observe(x, x, score=None, timestamp=float(i))]
    assert [(s, d) for _, s, d in _opened(outs)] == [("v", True), ("v", False)]
    assert _signals(outs) == [] and stage.signals_suppressed == 0  # none tried, not even held


def test_an_unconfirmed_rise_is_counted_in_the_summary_and_survives_a_promotion() -> None:
    stage = _stage(window=200, check_every=50)
    rng = random.Random(4)
    for i in range(8000):  # the unconfirmed rise of the test above, at 4069
        err = 0.1 if 1000 <= i < 1600 else 0.25
        y = rng.random() < 0.5
        stage.observe_label(y, 0.8 if y == (rng.random() >= err) else 0.2)
        if i == 4100:
            stage.observe({"v": 0.0}, {"v": 0.0}, score=None, timestamp=0.0)
            assert orjson.loads(stage.summary()[2])["performance_confirming"] is True
    summary = orjson.loads(stage.summary()[2])
    assert (summary["performance_confirming"], summary["performance_unconfirmed"]) == (False, 1)
    promoted = _stage(window=200, check_every=50)
    promoted.continue_cooldown(stage)
    assert promoted.unconfirmed == 1
