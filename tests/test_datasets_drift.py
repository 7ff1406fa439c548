"""Seeded drift of the synthetic stream: the past is untouched, the change is what was asked."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stream_app import cli
from stream_app.errors import ConfigError
from stream_app.tools import replay as replay_module
from stream_app.tools.datasets import (
    NEW_CATEGORY_SHARE,
    Concept,
    DriftSpec,
    drift_schedule,
    drifted,
    open_dataset,
    parse_drift,
    synthetic,
)
from stream_app.tools.replay import ReplayReport

AT, N = 5000, 10_000  # 5,000 events before the drift and 5,000 after
BASE = Concept.default(4)


def stream(seed: int = 11, n: int = N, n_features: int = 4, **drift):
    schedule = drift_schedule(Concept.default(n_features), at=AT, **drift) if drift else None
    return list(synthetic(seed, n, n_features=n_features, schedule=schedule))


def column(items, name):
    return np.array([e.event["features"][name] for e in items])


def halves(items, name):
    values = column(items, name)
    return values[:AT], values[AT:]


def base_rule(items, concept=BASE):
    """P(label | features) under the stationary concept's rule, per event."""
    x = np.array([[e.event["features"][f"f{j}"] for j in range(4)] for e in items])
    channel = [concept.categories.index(e.event["features"]["channel"]) for e in items]
    z = (x - np.asarray(concept.means)) / np.asarray(concept.scales)
    logit = concept.bias + z @ np.asarray(concept.weights)
    logit += np.asarray(concept.category_effects)[channel]
    return 1.0 / (1.0 + np.exp(-logit))


def same_distribution(a, b):
    return stats.ks_2samp(a, b).pvalue > 0.001


# -- the stream before the drift ---------------------------------------------------------


@pytest.mark.parametrize("at", [0, 1, 1023, 1024, 1500, 3001])
def test_a_drifted_stream_equals_the_stationary_one_before_the_drift(at):
    spec = DriftSpec(at, {"f1": 3.0}, {"f0": 2.0}, "kiosk", concept_drift=True)
    plain = [(e.event, e.label) for e in open_dataset("synthetic", seed=3, limit=4000,
                                                          n_features=20)]
    drift = [(e.event, e.label) for e in open_dataset("synthetic", seed=3, limit=4000,
                                                          n_features=20, drift=spec)]
    assert drift[:at] == plain[:at]
    assert drift[at] != plain[at]  # the event ids match, the features do not
    assert drift[at][0]["event_id"] == plain[at][0]["event_id"]


def test_a_drifted_stream_is_deterministic_for_a_seed():
    spec = DriftSpec(100, {"f2": 0.5}, concept_drift=True)
    a = [(e.event, e.label) for e in open_dataset("synthetic", seed=9, limit=500, drift=spec)]
    b = [(e.event, e.label) for e in open_dataset("synthetic", seed=9, limit=500, drift=spec)]
    assert a == b


# -- covariate shift ---------------------------------------------------------------------


def test_a_mean_shift_moves_that_feature_by_the_requested_sigmas_only():
    items = stream(mean_shift={"f2": 0.5})
    before, after = halves(items, "f2")
    assert (after.mean() - before.mean()) / BASE.scales[2] == pytest.approx(0.5, abs=0.08)
    assert after.std() == pytest.approx(before.std(), rel=0.05)
    for name in ("f0", "f1", "f3"):
        assert same_distribution(*halves(items, name)), name
    channel = column(items, "channel")
    assert set(channel[AT:]) == set(channel[:AT]) == set(BASE.categories)


def test_a_negative_shift_and_a_scale_change():
    items = stream(mean_shift={"f0": -1.0}, scale_factor={"f3": 2.5})
    before, after = halves(items, "f0")
    assert (after.mean() - before.mean()) / BASE.scales[0] == pytest.approx(-1.0, abs=0.08)
    before, after = halves(items, "f3")
    assert after.std() / before.std() == pytest.approx(2.5, rel=0.05)
    assert (after.mean() - before.mean()) / BASE.scales[3] == pytest.approx(0.0, abs=0.1)
    for name in ("f1", "f2"):
        assert same_distribution(*halves(items, name)), name


def test_covariate_shift_keeps_the_labelling_rule():
    items = stream(seed=5, mean_shift={"f0": 1.0}, scale_factor={"f1": 2.0})
    labels = np.array([e.label for e in items])
    p = base_rule(items)
    assert labels[AT:].mean() - labels[:AT].mean() > 0.05  # the label rate follows the features
    assert labels[AT:].mean() == pytest.approx(p[AT:].mean(), abs=0.02)  # P(y | x) does not move


def test_a_new_category_appears_only_after_the_drift():
    items = stream(new_category="kiosk")
    channel = column(items, "channel")
    assert "kiosk" not in set(channel[:AT])
    assert (channel[AT:] == "kiosk").mean() == pytest.approx(NEW_CATEGORY_SHARE, abs=0.02)
    for name in ("f0", "f1", "f2", "f3"):
        assert same_distribution(*halves(items, name)), name


# -- concept drift -----------------------------------------------------------------------


def test_concept_drift_changes_the_rule_not_the_features():
    items = stream(seed=7, concept_drift=True)
    labels = np.array([e.label for e in items], dtype=float)
    for name in ("f0", "f1", "f2", "f3"):
        assert same_distribution(*halves(items, name)), name
    channel = column(items, "channel")
    for c in BASE.categories:
        assert (channel[:AT] == c).mean() == pytest.approx((channel[AT:] == c).mean(), abs=0.02)
    assert labels[AT:].mean() == pytest.approx(labels[:AT].mean(), abs=0.03)
    p = base_rule(items)
    assert np.corrcoef(p[:AT], labels[:AT])[0, 1] > 0.3  # the old rule predicts before ...
    assert np.corrcoef(p[AT:], labels[AT:])[0, 1] < -0.1  # ... and is wrong-way round after
    f0 = column(items, "f0")
    high = f0 > np.median(f0)
    rate_before = labels[:AT][high[:AT]].mean() - labels[:AT][~high[:AT]].mean()
    rate_after = labels[AT:][high[AT:]].mean() - labels[AT:][~high[AT:]].mean()
    assert rate_before > 0.1 and rate_after < -0.1


# -- the pure builders -------------------------------------------------------------------


def test_drifted_builds_the_requested_concept():
    d = drifted(BASE, mean_shift={"f1": 0.5}, scale_factor={"f1": 2.0}, concept_drift=True)
    assert d.means[1] == BASE.means[1] + 0.5 * BASE.scales[1]  # in base standard deviations
    assert d.scales[1] == 2.0 * BASE.scales[1]
    assert d.weights == tuple(-w for w in BASE.weights)
    assert (d.rule_means, d.rule_scales) == (BASE.means, BASE.scales)
    assert drifted(BASE) == BASE
    assert drifted(BASE, concept_drift=True).rule_means is None


def test_drifted_twice_keeps_the_original_rule():
    once = drifted(BASE, mean_shift={"f0": 1.0})
    twice = drifted(once, mean_shift={"f0": 1.0})
    assert twice.means[0] == pytest.approx(2.0 * BASE.scales[0])
    assert twice.rule_means == BASE.means


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mean_shift": {"f4": 1.0}}, "unknown feature 'f4' to shift: the stream has f0..f3"),
    ({"mean_shift": {"x": 1.0}}, "unknown feature 'x'"),
    ({"mean_shift": {"f01": 1.0}}, "unknown feature 'f01'"),
    ({"mean_shift": {"f0": math.inf}}, "finite"),
    ({"scale_factor": {"f0": 0.0}}, "positive"),
    ({"new_category": "web"}, "not in"),
    ({"new_category": ""}, "non-empty"),
])
def test_drifted_rejects_bad_requests(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        drifted(BASE, **kwargs)


def test_drift_schedule_rejects_a_negative_index():
    with pytest.raises(ConfigError, match="drift index must be >= 0"):
        drift_schedule(BASE, at=-1, concept_drift=True)


# -- options and flags -------------------------------------------------------------------


def test_open_dataset_features_and_drift_only_for_synthetic():
    assert len(next(open_dataset("synthetic", limit=1, n_features=20)).event["features"]) == 21
    with pytest.raises(ConfigError, match="only to the synthetic dataset, not 'phishing'"):
        open_dataset("phishing", n_features=20)
    with pytest.raises(ConfigError, match="only to the synthetic dataset"):
        open_dataset("phishing", drift=DriftSpec(10, concept_drift=True))
    with pytest.raises(ConfigError, match="at least 1 feature"):
        open_dataset("synthetic", n_features=0)
    with pytest.raises(ConfigError, match="unknown feature 'f4'"):  # checked before any event
        open_dataset("synthetic", drift=DriftSpec(10, {"f4": 1.0}))


def test_parse_drift_reads_the_flags():
    assert parse_drift(None) is None
    spec = parse_drift(10, ["f1=0.5", " f2 = -1e0"], ["f0=3"], "kiosk", True)
    assert spec == DriftSpec(10, {"f1": 0.5, "f2": -1.0}, {"f0": 3.0}, "kiosk", True)


@pytest.mark.parametrize(("args", "message"), [
    ((None, ["f1=0.5"]), "need --drift-at INDEX"),
    ((None, (), (), "kiosk"), "need --drift-at INDEX"),
    ((None, (), (), None, True), "need --drift-at INDEX"),
    ((10,), "--drift-at needs at least one of --shift"),
    ((-1, ["f1=1"]), "--drift-at must be >= 0, got -1"),
    ((10, ["f1"]), r"--shift expects FEATURE=SIGMAS \(e.g. f3=0.5\), got 'f1'"),
    ((10, ["f1=abc"]), "--shift expects FEATURE=SIGMAS"),
    ((10, ["=1"]), "--shift expects FEATURE=SIGMAS"),
    ((10, ["f1=nan"]), "--shift expects FEATURE=SIGMAS"),
    ((10, (), ["f1=2x"]), "--scale expects FEATURE=FACTOR"),
    ((10, ["f1=1", "f1=2"]), "--shift given twice for f1"),
])
def test_parse_drift_errors_are_config_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        parse_drift(*args)


def test_replay_command_passes_the_drift_options(monkeypatch):
    seen = {}

    async def fake_replay(settings, dataset, **kwargs):
        seen.update(kwargs, dataset=dataset)
        return ReplayReport(0, 0, 0, 0.0)

    monkeypatch.setattr(replay_module, "replay", fake_replay)
    code = cli.main(["replay", "synthetic", "--features", "20", "--drift-at", "3000",
                     "--shift", "f3=0.5", "--shift", "f4=-1", "--scale", "f0=2",
                     "--new-category", "kiosk", "--concept-drift"])
    assert code == 0
    assert seen["n_features"] == 20
    assert seen["drift"] == DriftSpec(3000, {"f3": 0.5, "f4": -1.0}, {"f0": 2.0}, "kiosk", True)


@pytest.mark.parametrize(("argv", "message"), [
    (["synthetic", "--shift", "f1=0.5"], "need --drift-at INDEX"),
    (["synthetic", "--drift-at", "5", "--scale", "f1"], "--scale expects FEATURE=FACTOR"),
    (["synthetic", "--drift-at", "5", "--shift", "f9=1"], "unknown feature 'f9'"),
    (["phishing", "--features", "20"], "only to the synthetic dataset, not 'phishing'"),
])
def test_replay_command_reports_bad_flags_in_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(replay_module, "ensure_topics", _no_kafka)
    assert cli.main(["replay", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stream-app: error: ") and message in err
    assert err.count("\n") == 1


async def _no_kafka(settings):  # pragma: no cover - reached only if validation were late
    raise AssertionError("validation must fail before Kafka is touched")
