"""The stationary harness in CI: nothing changes, so drift must stay quiet (issue 10).

20 numeric features + ``channel`` + score + loss, a River logistic regression learning from
scratch, 100,000 events per seed, the stage with its defaults, in process (no Kafka). CI runs
the first three seeds (about 4 s each); the done-when of issue 10 is the same budget over ten
seeds: ``python -m stream_app.tools.stationary`` (exit 1 when a run breaks it).
"""

from __future__ import annotations

import pytest

from stream_app.settings import load_settings
from stream_app.tools.stationary import StationaryRun, run_stationary, within_budget

SEEDS = (1, 2, 3)
EVENTS = 100_000


@pytest.fixture(scope="module")
def runs() -> list[StationaryRun]:
    return [run_stationary(seed, EVENTS) for seed in SEEDS]


def test_at_most_one_false_episode_per_100k_events_and_no_retrain_signal(
        runs: list[StationaryRun]) -> None:
    found = {r.seed: (r.episodes, r.signals) for r in runs}
    assert sum(r.false_episodes for r in runs) * 100_000 <= EVENTS * len(SEEDS), found
    assert [r.signals for r in runs] == [[]] * len(SEEDS), found
    assert within_budget(runs)


def test_score_and_loss_were_watched_from_the_warm_point(runs: list[StationaryRun]) -> None:
    """Quiet because nothing changed, not because nothing was tested."""
    for r in runs:
        assert r.subjects == [*(f"f{j}" for j in range(20)), "channel", "__score__"]
        assert r.warm_after_labels is not None and 2000 <= r.warm_after_labels <= 10_000
        assert r.adwin_labels == EVENTS - r.warm_after_labels  # ADWIN from the warm point on


def test_the_old_gate_lets_the_learning_curve_through() -> None:
    """The harness can fail: with the gate of before (a learn count, here warm at the first
    check without an improvement) and a fixed score reference, the same stream opens a
    prediction episode while the model is still learning."""
    old = load_settings(environ={}, drift={"warmup": {"patience": 1},
                                           "prediction_reference": "fixed"})
    r = run_stationary(1, 20_000, settings=old)
    assert r.warm_after_labels == 1500
    assert [(e[1], e[2]) for e in r.episodes] == [("prediction", "score")]
    assert r.episodes[0][0] < 10_000
