"""models.drift.warmup and the stage's warm-up: prediction and performance drift wait for it."""

from __future__ import annotations

import random

import orjson
import pytest

from models.drift.warmup import WarmUp
from models.spec import ModelSettings, StepSettings, build_model, one_hot
from stream_app.pipeline.drift import DriftStage
from stream_app.pipeline.records import RetrainSignal
from stream_app.settings import load_settings
from stream_app.tools.datasets import DriftSpec, open_dataset


def _curve(warm: WarmUp, losses: list[float]) -> int | None:
    """The number of losses after which ``warm`` turned warm (None: never)."""
    for i, loss in enumerate(losses):
        if warm.update(loss):
            return i + 1
    return None


def test_a_flat_loss_is_warm_after_window_plus_patience() -> None:
    flat = [float(i % 2) for i in range(5000)]  # mean 0.5 in every window, se > 0
    assert _curve(WarmUp(window=200, every=50), flat) == 400  # best at 200, patience 200
    assert _curve(WarmUp(window=200, every=50, patience=500), flat) == 700
    assert _curve(WarmUp(window=200, every=50, min_learned=1000), flat) == 1000


def test_a_loss_still_falling_keeps_the_model_cold() -> None:
    """0/1 losses whose error falls from 0.6 by 0.1 per window (about three standard errors of
    a window's mean): improvements keep coming, so it stays cold; once the error is flat at 0.1
    (from 1000 on) it is warm one window (the patience) after the last improvement."""
    rng = random.Random(3)
    falling = [float(rng.random() < max(0.1, 0.6 - 0.1 * i / 200)) for i in range(3000)]
    warm = WarmUp(window=200, every=50)
    assert _curve(warm, falling[:1000]) is None
    assert _curve(warm, falling[1000:]) is not None
    assert 1000 + 200 <= warm.warm_at <= 1000 + 200 + 400  # the rolling mean lags the curve
    assert warm.warm_at - warm._improved_at == 200


def test_learned_counts_a_restored_model_and_count_only_warms_without_labels() -> None:
    flat = [float(i % 2) for i in range(400)]
    cold = WarmUp(window=200, every=50, min_learned=50_000)
    assert _curve(cold, flat) is None
    restored = WarmUp(window=200, every=50, min_learned=50_000)
    assert [restored.update(v, learned=60_000 + i) for i, v in enumerate(flat)].index(True) == 399
    unsupervised = WarmUp(window=200, every=50)  # min_learned: one window
    assert (unsupervised.count_only(199), unsupervised.count_only(200)) == (False, True)
    assert unsupervised.warm and not unsupervised.count_only(300)
    unsupervised.reset()
    assert (unsupervised.warm, unsupervised.warm_at, unsupervised.n) == (False, None, 0)
    with pytest.raises(ValueError):
        WarmUp(window=1)
    with pytest.raises(ValueError):
        WarmUp(tolerance=-1.0)


# -- the stage ------------------------------------------------------------------------------

def _prequential(stage: DriftStage, model_steps: tuple = (), *, n: int, at: int | None = None,
                 seed: int = 5) -> tuple[list, list[int]]:
    """Test-then-train through the stage, as the engine does; returns outputs and, per event,
    how many labels ADWIN had seen (-1: no ADWIN yet)."""
    model = build_model(ModelSettings(steps=model_steps) if model_steps else ModelSettings())
    drift = DriftSpec(at=at, concept_drift=True) if at is not None else None
    outs, adwin = [], []
    for i, it in enumerate(open_dataset("synthetic", seed=seed, limit=n, drift=drift)):
        features = it.event["features"]
        x = one_hot(features)
        score = model.predict_proba_one(x)
        outs += stage.observe(x, features, score=score, timestamp=float(i))
        model.learn_one(x, it.label)
        outs += stage.observe_label(it.label, score, learned=i + 1)
        adwin.append(-1 if stage.performance is None else stage.performance.n)
    return outs, adwin


def _stage(**drift: object) -> DriftStage:
    return DriftStage(load_settings(environ={}, drift=drift), model="m", model_version="1")


def test_score_windows_and_adwin_start_at_the_warm_point() -> None:
    stage = _stage(window=500, check_every=250, prediction_reference="fixed")
    _, adwin = _prequential(stage, n=2500)
    warm_at = stage.warmup.warm_at
    assert warm_at is not None and 1000 <= warm_at < 1500
    assert set(adwin[:warm_at - 1]) == {-1}  # no ADWIN while learning
    assert adwin[warm_at - 1] == 0 and adwin[-1] == 2500 - warm_at  # fresh from the warm point
    score = {s.subject: s for s in stage.monitor.summary()}["__score__"]
    assert score.reference_first_ts == float(warm_at)  # the first score it was given
    assert (score.reference_size, score.current_size) == (500, 500)
    summary = orjson.loads(stage.summary()[2])
    assert (summary["warm"], summary["warm_after_labels"]) == (True, warm_at)


def test_a_concept_change_after_warm_up_raises_performance_drift() -> None:
    """The rule flips at 3000; the model warmed before: ADWIN sees the loss jump and signals."""
    stage = _stage(window=500, check_every=250)
    outs, _ = _prequential(stage, (StepSettings(name="GaussianNB"),), n=5000, at=3000)
    assert stage.warmup.warm_at < 3000
    perf = [orjson.loads(v) for t, k, v in (o for o in outs if isinstance(o, tuple))
            if k == b"prequential_loss"]
    assert perf and all(p["index"] + stage.warmup.warm_at + 1 >= 3000 for p in perf)
    assert perf[0]["drift"] and perf[0]["current"]["mean_loss"] > perf[0]["reference"]["mean_loss"]
    assert [o.reason for o in outs if isinstance(o, RetrainSignal)] == ["performance_drift"]


def test_without_labels_the_score_waits_for_min_learned_events() -> None:
    stage = _stage(window=50, check_every=25, prediction_reference="fixed")
    rng = random.Random(0)
    for i in range(300):
        v = rng.random()
        stage.observe({"v": v}, {"v": v}, score=v, timestamp=float(i))
        stage.observe_learns(i + 1)  # an anomaly detector learns every event
    assert stage.warm and stage.performance is None  # no labels, no ADWIN
    score = {s.subject: s for s in stage.monitor.summary()}["__score__"]
    assert score.reference_first_ts == 50.0  # min_learned (one window) learned after event 49


def test_prediction_warmup_is_still_read_as_min_learned() -> None:
    assert load_settings(environ={}, drift={"prediction_warmup": 500}).drift.warmup.min_learned == 500
    env = {"STREAM_DRIFT__PREDICTION_WARMUP": "700"}
    assert load_settings(environ=env).drift.warmup.min_learned == 700
