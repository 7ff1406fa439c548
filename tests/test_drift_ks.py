"""models.drift.ks and KSWindow: parity with scipy.stats.ks_2samp, windows, cost."""

from __future__ import annotations

import math
import random
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.drift.ks import ks_equal_from_counts, ks_pvalue_equal, ks_test, ks_test_sorted
from models.drift.subjects import KSWindow
from models.drift.windows import TwoWindows

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
small_ints = st.integers(-3, 3).map(float)  # many ties within and across samples


def scipy_ks(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> tuple[float, float]:
    with warnings.catch_warnings():  # scipy warns when its exact sum falls back to asymptotics
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


def assert_parity(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> None:
    ours = ks_test(a, b)
    statistic, pvalue = scipy_ks(a, b)
    assert abs(ours.statistic - statistic) <= 1e-12
    assert ours.statistic == statistic  # in fact bit-identical: both are h / lcm(n1, n2)
    assert math.isclose(ours.pvalue, pvalue, rel_tol=1e-9, abs_tol=1e-300)


@st.composite
def equal_pairs(draw: st.DrawFn, values: st.SearchStrategy[float]) -> tuple[list[float], list[float]]:
    n = draw(st.integers(1, 80))
    return (draw(st.lists(values, min_size=n, max_size=n)),
            draw(st.lists(values, min_size=n, max_size=n)))


@settings(deadline=None)
@given(equal_pairs(finite))
def test_parity_equal_sizes(pair: tuple[list[float], list[float]]) -> None:
    assert_parity(*pair)


@settings(deadline=None)
@given(equal_pairs(small_ints))
def test_parity_equal_sizes_with_ties(pair: tuple[list[float], list[float]]) -> None:
    assert_parity(*pair)


@settings(deadline=None)
@given(st.lists(small_ints | finite, min_size=1, max_size=60),
       st.lists(small_ints | finite, min_size=1, max_size=60))
def test_parity_unequal_sizes(a: list[float], b: list[float]) -> None:
    assert_parity(a, b)


@settings(deadline=None, max_examples=25)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.05, 0.1, 0.3]), st.booleans())
def test_parity_at_window_size_1000(seed: int, shift: float, rounded: bool) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=1000), rng.normal(shift, size=1000)
    if rounded:  # ties across the samples
        a, b = a.round(1), b.round(1)
    assert_parity(a, b)


@settings(deadline=None)
@given(equal_pairs(small_ints | finite), st.randoms(use_true_random=False))
def test_counts_in_any_order_give_the_same_test(pair: tuple[list[float], list[float]],
                                                rnd: random.Random) -> None:
    ref, cur = np.sort(np.array(pair[0])), np.array(pair[1])
    order = list(range(len(cur)))
    rnd.shuffle(order)
    cur = cur[order]
    left, right = np.searchsorted(ref, cur, "left"), np.searchsorted(ref, cur, "right")
    assert ks_equal_from_counts(left, right) == ks_test(ref, cur)


@pytest.mark.parametrize(("n1", "n2"), [(10_001, 10_001), (12_000, 30)])
def test_parity_asymptotic_sizes(n1: int, n2: int) -> None:
    rng = np.random.default_rng(5)
    assert_parity(rng.normal(size=n1), rng.normal(0.05, size=n2))
    assert_parity(rng.integers(0, 40, n1).astype(float), rng.integers(0, 40, n2).astype(float))


def test_near_identical_samples_take_scipys_fallback() -> None:
    # scipy's exact sum rounds to 1 + 2**-52 here and it switches to the asymptotic p-value
    a, b = [1.0, 3, 5, 7, 9, 11, 13], [2.0, 4, 6, 8, 10, 12, 14]
    assert ks_test(a, b).pvalue == scipy_ks(a, b)[1] < 1.0


@pytest.mark.parametrize("n", [999, 1000, 1001, 5000])
def test_near_one_pvalues_follow_scipys_rounding(n: int) -> None:
    """Binary features give tiny statistics; scipy falls back for some h (e.g. 1, 2, 4, 8 at
    n = 1000) and not for others, up to 5e-7 apart: parity holds for every such h."""
    h = 1
    while ks_pvalue_equal(n, h) > 1 - 1e-6:
        ones = np.zeros(n)
        ones[:h] = 1.0  # statistic h / n against all zeros
        assert_parity(ones, np.zeros(n))
        h += 1
    assert h > 8


def test_exact_tail_by_hand() -> None:
    assert ks_pvalue_equal(4, 3) == pytest.approx(2 * 8 / 70, rel=1e-15)  # 2 C(8,1) / C(8,4)
    assert ks_pvalue_equal(3, 3) == pytest.approx(2 / 20, rel=1e-15)  # 2 C(6,0) / C(6,3)
    assert ks_pvalue_equal(5, 0) == 1.0


def test_identical_and_empty_samples() -> None:
    assert ks_test([1.0, 2.0], [2.0, 1.0]) == (0.0, 1.0)
    with pytest.raises(ValueError):
        ks_test_sorted(np.array([]), np.array([1.0]))


# -- KSWindow ---------------------------------------------------------------------------------

def reference_windows(valid: list[float], size: int, policy: str) -> tuple[list[float], list[float]]:
    ref = valid[:size] if policy == "fixed" else valid[-2 * size:-size]
    return ref, valid[-size:]


@pytest.mark.parametrize("policy", ["fixed", "sliding"])
def test_window_checks_match_scipy_on_the_same_windows(policy: str) -> None:
    rng = np.random.default_rng(11)
    stream = rng.normal(size=700).round(1).tolist()  # ties
    for i in range(0, 700, 7):
        stream[i] = None  # missing: skipped, not counted
    stream[3] = math.nan
    w = KSWindow(size=50, check_every=10, reference=policy)  # type: ignore[arg-type]
    valid: list[float] = []
    checks = 0
    for v in stream:
        result = w.update(v)
        if v is not None and math.isfinite(v):
            valid.append(v)
        if result is not None:
            checks += 1
            assert len(valid) % 10 == 0 and len(valid) >= 100
            ref, cur = reference_windows(valid, 50, policy)
            assert result == pytest.approx(scipy_ks(ref, cur), rel=1e-12)
    assert checks == len(valid) // 10 - 9


@pytest.mark.parametrize("check_every", [7, 13, 60])
def test_fixed_window_counts_wrap_around_the_ring(check_every: int) -> None:
    """Checks that do not divide the window (and batches longer than it) stay exact."""
    stream = np.random.default_rng(5).normal(size=900).round(1)
    w = KSWindow(size=50, check_every=check_every)
    for start in range(0, 900, check_every):
        w.extend(stream[start:start + check_every])
        result = w.test()
        seen = stream[:start + check_every]
        if len(seen) >= 100:
            assert result == pytest.approx(scipy_ks(seen[:50], seen[-50:]), rel=1e-12)
    w.extend(stream[:120])  # more than the window in one batch
    assert w.test() == pytest.approx(scipy_ks(stream[:50], stream[70:120]), rel=1e-12)


@pytest.mark.parametrize("policy", ["fixed", "sliding"])
def test_batches_and_single_values_agree(policy: str) -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(size=3000)
    data[::13] = np.nan
    one, batch = KSWindow(200, 50, policy), KSWindow(200, 50, policy)  # type: ignore[arg-type]
    for start in range(0, 3000, 173):  # irregular batches, as the monitor's missing values make
        chunk = data[start:start + 173]
        for v in chunk:
            one.update(float(v))
        batch.extend(chunk)
        assert one.test() == batch.test()


def test_window_detects_a_one_sigma_shift_at_an_exact_index() -> None:
    rng = np.random.default_rng(42)
    stream = rng.normal(size=6000)
    stream[3000:] += 1.0
    w = KSWindow()  # N = 1000, K = 250, fixed reference
    hits = [i for i, v in enumerate(stream) if (r := w.update(float(v))) and r.pvalue < 0.01]
    assert hits[0] == 3249  # the current window (2250..3249) holds 250 shifted values
    assert hits[0] <= 3000 + 1000 - 1 + 2 * 250


def test_two_windows_fixed_and_sliding() -> None:
    f = TwoWindows(3, "fixed")
    f.extend(np.arange(4.0), np.arange(4.0) + 100)
    assert (f.ready, f.reference_size, f.current_size) == (False, 3, 1)
    for v in (4.0, 5.0, 6.0, 7.0):
        f.append(v, timestamp=100 + v)
    assert f.reference().tolist() == [0.0, 1.0, 2.0] and f.current().tolist() == [5.0, 6.0, 7.0]
    assert f.current_times().tolist() == [105.0, 106.0, 107.0]
    s = TwoWindows(3, "sliding")
    for k in range(40):  # many compactions
        s.append(float(k))
    assert s.reference().tolist() == [34.0, 35.0, 36.0] and s.current().tolist() == [37, 38, 39]
    s.extend(np.arange(100.0))  # longer than the retained span
    assert s.reference().tolist() == [94.0, 95.0, 96.0] and s.current().tolist() == [97, 98, 99]
    s.reset()
    assert (s.ready, s.reference_size, s.current_size) == (False, 0, 0)


def test_check_cost_is_far_below_scipy() -> None:
    """A check at N = 1000 with 250 new values (median of 50) stays well under 50 us."""
    rng = np.random.default_rng(0)
    w = KSWindow(1000, 250)
    w.extend(rng.normal(size=2000))
    w.test()
    times = []
    for _ in range(50):
        w.extend(rng.normal(size=250))
        t = time.perf_counter()
        w.test()
        times.append(time.perf_counter() - t)
    assert float(np.median(times)) < 150e-6  # generous: shared CI machines; ~30 us measured
