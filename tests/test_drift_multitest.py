"""models.drift.multitest and models.drift.episodes: corrections by hand, hysteresis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.drift.episodes import Hysteresis
from models.drift.multitest import adjust_pvalues


def test_bh_by_hand() -> None:
    # sorted 0.001 0.008 0.039 0.041 0.042 0.06 (m = 6), p * m / rank:
    #   0.006 0.024 0.078 0.0615 0.0504 0.06 -> running minimum from the top:
    #   0.006 0.024 0.0504 0.0504 0.0504 0.06
    p = [0.041, 0.001, 0.06, 0.039, 0.008, 0.042]
    assert adjust_pvalues(p) == pytest.approx([0.0504, 0.006, 0.06, 0.0504, 0.024, 0.0504],
                                              rel=1e-12)


def test_bh_ties_caps_and_edge_cases() -> None:
    assert adjust_pvalues([0.02, 0.02, 0.02]) == pytest.approx([0.02, 0.02, 0.02])
    assert adjust_pvalues([0.9, 0.8]) == pytest.approx([0.9, 0.9])
    assert adjust_pvalues([0.7]) == [0.7]
    assert adjust_pvalues([]) == []
    assert adjust_pvalues([0.0, 1.0]) == [0.0, 1.0]


def test_bonferroni_by_hand() -> None:
    assert adjust_pvalues([0.001, 0.02, 0.5], "bonferroni") == pytest.approx([0.003, 0.06, 1.0])


def test_holm_by_hand() -> None:
    # sorted 0.005 0.01 0.03 0.04 (m = 4), p * (m - rank + 1): 0.02 0.03 0.06 0.04 -> running max
    assert adjust_pvalues([0.01, 0.04, 0.03, 0.005], "holm") == pytest.approx(
        [0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert adjust_pvalues([0.02, 0.02, 0.9], "holm") == pytest.approx([0.06, 0.06, 0.9])
    assert adjust_pvalues([0.6, 0.7], "holm") == [1.0, 1.0]
    assert adjust_pvalues([], "holm") == []


def test_holm_relaxes_nothing_when_one_subject_is_in_drift() -> None:
    """One subject far in drift, the other 19 null: BH lets the runner-up through at 2 alpha / m,
    Holm only at alpha / (m - 1)."""
    p = [1e-30, 0.0008] + [0.5] * 18
    assert adjust_pvalues(p, "bh")[1] == pytest.approx(0.008)  # < 0.01: a false discovery
    assert adjust_pvalues(p, "holm")[1] == pytest.approx(0.0152)  # 0.0008 * 19: not rejected


def _holm_step_down(p: list[float], alpha: float) -> list[bool]:
    """Holm (1979) as written: reject in ascending order while p_(k) <= alpha / (m - k + 1)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = [False] * len(p)
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected[i] = True
    return rejected


@settings(deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), st.sampled_from([0.001, 0.01, 0.05]))
def test_holm_adjusted_pvalues_decide_as_the_step_down_procedure(p: list[float],
                                                                alpha: float) -> None:
    adjusted = adjust_pvalues(p, "holm")
    expected = _holm_step_down(p, alpha)
    # the same decisions, except where a p-value sits on a boundary (rounding of p * k)
    close = [abs(a - alpha) < 1e-12 for a in adjusted]
    assert [a <= alpha or c for a, c in zip(adjusted, close, strict=True)] == [
        e or c for e, c in zip(expected, close, strict=True)]
    assert all(a >= b for a, b in zip(adjusted, adjust_pvalues(p, "bh"), strict=True))


def test_invalid_input() -> None:
    with pytest.raises(ValueError):
        adjust_pvalues([0.1, float("nan")])
    with pytest.raises(ValueError):
        adjust_pvalues([1.5])
    with pytest.raises(ValueError):
        adjust_pvalues([0.1], "hommel")  # type: ignore[arg-type]


@settings(deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_bh_matches_scipy_false_discovery_control(p: list[float]) -> None:
    expected = stats.false_discovery_control(np.array(p), method="bh")
    assert adjust_pvalues(p) == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-300)


def test_alpha_one_percent_decisions_by_hand() -> None:
    p = [0.0004, 0.003, 0.004, 0.2, 0.9]  # BH: .002 .005 .00667 .25 .9 ; Bonferroni: .002 .015 ...
    assert [a < 0.01 for a in adjust_pvalues(p)] == [True, True, True, False, False]
    assert [a < 0.01 for a in adjust_pvalues(p, "bonferroni")] == [True, False, False, False, False]


# -- Hysteresis -------------------------------------------------------------------------------

def test_episode_opens_once_and_closes_after_three_normal_checks() -> None:
    h = Hysteresis()  # alpha 0.01, recovery_checks 3
    ps = [0.5, 0.004, 0.001, 0.3, 0.2, 0.008, 0.4, 0.5, 0.6, 0.7, 0.001]
    out = [h.update(p, index=10 * i) for i, p in enumerate(ps)]
    assert out == [None, "open", None, None, None, None, None, None, "close", None, "open"]
    assert (h.in_drift, h.since) == (True, 100)


def test_p_equal_to_alpha_is_normal() -> None:
    h = Hysteresis(alpha=0.01, recovery_checks=1)
    assert [h.update(p, i) for i, p in enumerate([0.01, 0.0099, 0.01])] == [None, "open", "close"]


def test_confirmation_needs_consecutive_low_checks() -> None:
    h = Hysteresis(alpha=0.01, recovery_checks=1, confirm_checks=2)
    ps = [0.001, 0.5, 0.002, 0.003, 0.0001, 0.4, 0.001, 0.2]
    out = [h.update(p, index=i) for i, p in enumerate(ps)]
    assert out == [None, None, None, "open", None, "close", None, None]
    assert (h.in_drift, h.since) == (False, None)


def test_invalid_hysteresis() -> None:
    with pytest.raises(ValueError):
        Hysteresis(alpha=0.0)
    with pytest.raises(ValueError):
        Hysteresis(recovery_checks=0)
    with pytest.raises(ValueError):
        Hysteresis(confirm_checks=0)
