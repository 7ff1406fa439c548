"""models.metrics and models.percentiles: prequential metrics and flat-memory percentiles."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.metrics import PrequentialMetrics, decide
from models.percentiles import Percentiles

TINY = [(True, 0.8), (False, 0.6), (True, 0.3), (False, 0.1)]  # predicted at 0.5: T, T, F, F


def feed(m: PrequentialMetrics, seq: list[tuple[bool, float]], threshold: float = 0.5) -> None:
    for y, s in seq:
        m.update(y, s, threshold)


# -- PrequentialMetrics ------------------------------------------------------------------------

def test_against_hand_computed_values() -> None:
    m = PrequentialMetrics(window=100)
    feed(m, TINY)
    c = m.snapshot()["cumulative"]
    # tp=1 (0.8), fp=1 (0.6), fn=1 (0.3), tn=1 (0.1)
    assert (c["n"], c["accuracy"], c["precision"], c["recall"], c["f1"]) == (4, 0.5, 0.5, 0.5, 0.5)
    # positive/negative pairs ranked correctly: (.8>.6) (.8>.1) (.3>.1), not (.3>.6)
    assert c["roc_auc"] == 0.75
    expected_ll = -(math.log(0.8) + math.log(0.4) + math.log(0.3) + math.log(0.9)) / 4
    assert c["log_loss"] == pytest.approx(expected_ll, rel=1e-12)


@given(st.lists(st.tuples(st.booleans(), st.floats(0.0, 1.0)), min_size=1, max_size=300),
       st.integers(1, 50))
def test_values_equal_rivers_metrics_cumulative_and_rolling(
        seq: list[tuple[bool, float]], window: int) -> None:
    from river import metrics, utils

    def river_set(size: int | None) -> dict[str, object]:
        def make(cls: type, **kw: object) -> object:
            return utils.Rolling(cls(**kw), window_size=size) if size else cls(**kw)
        return {"accuracy": make(metrics.Accuracy), "roc_auc": make(metrics.ROCAUC),
                "log_loss": make(metrics.LogLoss), "precision": make(metrics.Precision),
                "recall": make(metrics.Recall), "f1": make(metrics.F1)}

    ours = PrequentialMetrics(window=window)
    theirs = {"cumulative": river_set(None), "rolling": river_set(window)}
    for y, s in seq:
        ours.update(y, s, 0.5)
        for group in theirs.values():
            for name, metric in group.items():
                metric.update(y, s if name in ("roc_auc", "log_loss") else decide(s, 0.5))
    snap = ours.snapshot()
    for which, group in theirs.items():
        for name, metric in group.items():
            got = snap[which][name]
            if got is not None:  # None where undefined; River says 0 there
                assert got == pytest.approx(metric.get(), abs=1e-9), (which, name)


def test_rolling_window_keeps_only_the_last_labels() -> None:
    m = PrequentialMetrics(window=2)
    feed(m, TINY)
    snap = m.snapshot()
    r = snap["rolling"]
    assert (snap["n"], snap["window"], r["n"]) == (4, 2, 2)
    # last two: (True, 0.3) -> predicted False, (False, 0.1) -> predicted False
    assert (r["accuracy"], r["roc_auc"], r["precision"], r["recall"], r["f1"]) == (
        0.5, 1.0, None, 0.0, 0.0)
    assert r["log_loss"] == pytest.approx(-(math.log(0.3) + math.log(0.9)) / 2, rel=1e-12)


def test_rolling_equals_cumulative_over_the_same_tail() -> None:
    rng = random.Random(7)
    seq = [(rng.random() < 0.3, rng.random()) for _ in range(500)]
    m = PrequentialMetrics(window=50)
    feed(m, seq)
    fresh = PrequentialMetrics(window=50)
    feed(fresh, seq[-50:])
    rolling, expected = m.snapshot()["rolling"], fresh.snapshot()["cumulative"]
    assert rolling == pytest.approx(expected, rel=1e-9)


def test_undefined_values_are_none() -> None:
    empty = PrequentialMetrics().snapshot()
    assert empty["n"] == 0
    for part in ("cumulative", "rolling"):
        assert all(v is None for k, v in empty[part].items() if k != "n")
    one_class = PrequentialMetrics()
    feed(one_class, [(False, 0.2), (False, 0.7)])
    c = one_class.snapshot()["cumulative"]
    assert c["roc_auc"] is None and c["recall"] is None
    assert (c["accuracy"], c["precision"], c["f1"]) == (0.5, 0.0, 0.0)


def test_threshold_is_strict() -> None:
    assert decide(0.5, 0.5) is False and decide(0.500001, 0.5) is True
    m = PrequentialMetrics()
    m.update(True, 0.5, 0.5)
    assert m.snapshot()["cumulative"]["accuracy"] == 0.0
    m.update(True, 0.3, 0.2)  # the threshold is per call
    assert m.snapshot()["cumulative"]["accuracy"] == 0.5


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_score_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        PrequentialMetrics().update(True, bad, 0.5)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PrequentialMetrics(window=0)


@given(st.lists(st.tuples(st.booleans(), st.floats(0.0, 1.0)), max_size=60),
       st.integers(1, 20))
def test_snapshot_is_always_json_safe(seq: list[tuple[bool, float]], window: int) -> None:
    m = PrequentialMetrics(window=window)
    feed(m, seq)
    snap = m.snapshot()
    json.dumps(snap, allow_nan=False)
    assert snap["rolling"]["n"] == min(window, len(seq))
    for part in ("cumulative", "rolling"):
        for k in ("accuracy", "roc_auc", "precision", "recall", "f1"):
            v = snap[part][k]
            assert v is None or -1e-9 <= v <= 1.0 + 1e-9


# -- Percentiles -----------------------------------------------------------------------------

def test_percentiles_small_exact_cases() -> None:
    p = Percentiles()
    p.add(5.0)
    assert p.summary() == {"n": 1, "p50": 5.0, "p95": 5.0, "p99": 5.0, "max": 5.0}
    z = Percentiles()
    for v in (0.0, 0.0, -1.0, math.nan, math.inf, 0.0):
        z.add(v)
    assert z.summary() == {"n": 4, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}


@given(st.lists(st.floats(1e-6, 1e9), min_size=1, max_size=300),
       st.sampled_from([0.0, 0.5, 0.9, 0.95, 0.99, 1.0]))
def test_percentiles_relative_error_is_bounded(values: list[float], q: float) -> None:
    p = Percentiles(relative_accuracy=0.01)
    for v in values:
        p.add(v)
    exact = sorted(values)[math.floor(q * (len(values) - 1))]  # the rank the sketch targets
    got = p.quantile(q)
    assert got is not None
    assert abs(got - exact) <= 0.01 * exact * (1 + 1e-9)


def test_percentiles_memory_is_flat() -> None:
    p = Percentiles()
    rng = random.Random(1)
    for _ in range(200_000):
        p.add(rng.lognormvariate(0.0, 3.0))
    used = p.n_buckets
    for _ in range(800_000):
        p.add(rng.lognormvariate(0.0, 3.0))
    assert p.n == 1_000_000 and p.n_buckets < used + 200
    wide = Percentiles()
    for e in range(-300, 300):
        wide.add(10.0 ** e)
    assert wide.n_buckets <= 2500  # clamped to [1e-9, 1e12] whatever the input
    s = wide.summary()
    assert s["max"] == 1e299 and s["p99"] is not None and s["p99"] <= 1e12 * 1.02


def test_percentiles_rejects_bad_accuracy() -> None:
    with pytest.raises(ValueError):
        Percentiles(relative_accuracy=0.0)
