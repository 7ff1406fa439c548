"""models.drift.chi2 and ChiSquareWindow: parity with scipy.stats.chi2_contingency."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.drift.chi2 import chi2_test
from models.drift.subjects import OTHER, ChiSquareWindow


@st.composite
def count_pairs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    k = draw(st.integers(1, 12))
    counts = st.lists(st.integers(0, 500), min_size=k, max_size=k).filter(lambda c: sum(c) > 0)
    return draw(counts), draw(counts)


@settings(deadline=None)
@given(count_pairs())
def test_parity_with_chi2_contingency(pair: tuple[list[int], list[int]]) -> None:
    ref, cur = np.array(pair[0]), np.array(pair[1])
    seen = (ref + cur) > 0  # scipy refuses all-zero columns; we drop them
    expected = stats.chi2_contingency(np.stack([ref[seen], cur[seen]]), correction=False)
    ours = chi2_test(ref, cur)
    assert ours.dof == expected.dof
    assert math.isclose(ours.statistic, expected.statistic, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(ours.pvalue, expected.pvalue, rel_tol=1e-9, abs_tol=1e-300)


def test_category_only_in_the_current_window_counts_as_evidence() -> None:
    # reference never saw "c": its column is (0, 30); scipy on the same table agrees
    ours = chi2_test([60, 40, 0], [40, 30, 30])
    expected = stats.chi2_contingency([[60, 40, 0], [40, 30, 30]], correction=False)
    assert (ours.statistic, ours.pvalue, ours.dof) == pytest.approx(
        (expected.statistic, expected.pvalue, 2), rel=1e-12)
    assert ours.pvalue < 1e-7


def test_single_category_has_p_one() -> None:
    assert chi2_test([10], [90]) == (0.0, 1.0, 0)
    assert chi2_test([10, 0, 0], [90, 0, 0]) == (0.0, 1.0, 0)  # empty columns dropped


def test_invalid_counts() -> None:
    with pytest.raises(ValueError):
        chi2_test([0, 0], [1, 2])  # empty reference window
    with pytest.raises(ValueError):
        chi2_test([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        chi2_test([1, -2], [1, 2])


def test_window_checks_match_scipy_on_the_same_windows() -> None:
    rng = np.random.default_rng(4)
    cats = rng.choice(["a", "b", "c", "d"], p=[0.4, 0.3, 0.2, 0.1], size=600).tolist()
    cats[400:] = rng.choice(["a", "b", "e"], size=200).tolist()  # "e" is new, "c", "d" vanish
    stream: list[str | float | None] = [*cats]
    stream[5], stream[17] = None, math.nan  # skipped
    w = ChiSquareWindow(size=100, check_every=25, reference="sliding")
    valid: list[str] = []
    for v in stream:
        result = w.update(v)
        if isinstance(v, str):
            valid.append(v)
        if result is not None:
            ref, cur = Counter(valid[-200:-100]), Counter(valid[-100:])
            keys = sorted(set(ref) | set(cur))
            table = [[ref[k] for k in keys], [cur[k] for k in keys]]
            if len(keys) == 1:
                assert result == (0.0, 1.0, 0)
                continue
            expected = stats.chi2_contingency(table, correction=False)
            assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
            assert result.pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert sorted(map(str, w.categories)) == ["a", "b", "c", "d", "e"]  # first-seen order


def test_categories_beyond_the_cap_share_one_code() -> None:
    w = ChiSquareWindow(size=4, check_every=4, max_categories=3)
    for c in "abcdefgh":
        w.update(c)
    assert w.categories == ["a", "b", OTHER]
    assert w.windows.current().tolist() == [2, 2, 2, 2]
