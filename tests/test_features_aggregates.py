"""Per-entity aggregates: unit tests and a brute-force property test.

The reference below recomputes every aggregate from the raw event list, following the
semantics documented in ``features.aggregates`` (point in time, open windows, retention).
"""

from __future__ import annotations

import copy
import math
import statistics
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.aggregates import compute, fold_events, update
from features.spec import FeatureSpec, compile_spec
from stream_app.settings import AggregateSettings, FeatureSettings

ALL_STATS = ("count", "sum", "mean", "min", "max", "last", "std")
Event = tuple[float, dict[str, Any]]


def make_spec(windows: tuple[str, ...] = ("30s", "2m"), cap: int = 10_000) -> FeatureSpec:
    return compile_spec(FeatureSettings(
        since_last=True,
        max_window_points=cap,
        aggregates=(
            AggregateSettings(feature="a", stats=ALL_STATS, windows=windows),
            AggregateSettings(feature="b", stats=ALL_STATS, windows=("1m",)),
            AggregateSettings(feature="c", stats=("count", "last")),
        ),
    ))


def run(spec: FeatureSpec, events: list[Event], *, via_json: bool = False) -> list[dict[str, float]]:
    """compute-then-update per event, optionally storing the state as JSON in between."""
    rows, state = [], None
    for ts, features in events:
        rows.append(compute(spec, state, ts, features))
        state = update(spec, state, ts, features)
        if via_json:
            state = orjson.loads(orjson.dumps(state))
    return rows


# -- the brute-force reference ------------------------------------------------------


def numeric(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) and abs(value) <= 1e100 else None


def reference(spec: FeatureSpec, events: list[Event], i: int) -> dict[str, float]:
    prior, t = events[:i], events[i][0]
    out: dict[str, float] = dict.fromkeys(spec.names, 0.0)
    if not prior:
        return out
    latest = max(ts for ts, _ in prior)
    for agg in spec.aggregates:
        points = [(ts, j, v) for j, (ts, f) in enumerate(prior)
                  if (v := numeric(f.get(agg.feature))) is not None]
        if not points:
            continue
        values = [v for _, _, v in points]
        cumulative = {
            "count": len(values), "sum": math.fsum(values), "mean": statistics.fmean(values),
            "min": min(values), "max": max(values), "last": max(points)[2],
            "std": statistics.pstdev(values),
        }
        for cum_name, index in agg.cumulative:
            out[cum_name] = cumulative[ALL_STATS[index]]
        kept = sorted(points)[-spec.max_window_points:]   # the cap drops the oldest
        kept = [p for p in kept if p[0] > latest - agg.horizon_s]   # retention horizon
        for w in agg.windows:
            inside = [v for ts, _, v in kept if t - w.seconds < ts < t]
            for name, value in ((w.count_name, len(inside)), (w.sum_name, math.fsum(inside)),
                                (w.mean_name, statistics.fmean(inside) if inside else 0.0)):
                if name is not None:
                    out[name] = value
    if spec.since_last:
        out["seconds_since_last_by_entity"] = max(0.0, t - latest)
    return out


def assert_matches(spec: FeatureSpec, events: list[Event], rows: list[dict[str, float]]) -> None:
    scale = 1.0 + max((abs(v) for _, f in events for x in f.values()
                       if (v := numeric(x)) is not None), default=0.0)
    tol = 1e-9 * scale * (1 + len(events))
    for i, row in enumerate(rows):
        expected = reference(spec, events, i)
        assert list(row) == list(spec.names)
        for name, want in expected.items():
            got = row[name]
            assert type(got) is float and math.isfinite(got), (i, name, got)
            if name.endswith("_std_by_entity"):   # compare variances: sqrt amplifies rounding
                assert math.isclose(got**2, want**2, rel_tol=1e-7, abs_tol=tol * scale), (i, name)
            else:
                assert math.isclose(got, want, rel_tol=1e-9, abs_tol=tol), (i, name, got, want)


# -- the property -------------------------------------------------------------------

timestamps = st.one_of(st.integers(0, 400).map(float), st.floats(0, 400, allow_nan=False))
values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False), st.integers(-1000, 1000),
    st.sampled_from([None, True, "7", math.nan, math.inf, -math.inf, 1e200]),
)
event = st.tuples(timestamps, st.dictionaries(st.sampled_from("abcz"), values, max_size=4))


@settings(max_examples=300, deadline=None)
@given(events=st.lists(event, max_size=40), cap=st.sampled_from([1, 3, 8, 10_000]),
       sorted_ts=st.booleans())
def test_aggregates_equal_brute_force(events: list[Event], cap: int, sorted_ts: bool) -> None:
    if sorted_ts:
        events = sorted(events, key=lambda e: e[0])
    spec = make_spec(cap=cap)
    rows = run(spec, events)
    assert_matches(spec, events, rows)
    assert run(spec, events, via_json=True) == rows
    batched, state = fold_events(spec, None, events)
    assert batched == rows
    reused, _ = fold_events(spec, orjson.loads(orjson.dumps(state)), [(500.0, {"a": 1.0})],
                            reuse_state=True)
    assert reused == fold_events(spec, state, [(500.0, {"a": 1.0})])[0]


@given(events=st.lists(event, min_size=1, max_size=20))
def test_update_and_fold_events_leave_their_input_alone(events: list[Event]) -> None:
    spec = make_spec()
    _, state = fold_events(spec, None, events)
    before = copy.deepcopy(state)
    update(spec, state, 100.0, {"a": 5.0, "b": 1.0})
    fold_events(spec, state, events)
    assert state == before


# -- unit tests ---------------------------------------------------------------------


def test_empty_history_is_all_zero_floats() -> None:
    spec = make_spec()
    out = compute(spec, None, 10.0, {"a": 1.0})
    assert out == dict.fromkeys(spec.names, 0.0)
    assert list(out) == list(spec.names)


def test_point_in_time_excludes_the_event_and_same_timestamp_events() -> None:
    spec = make_spec()
    rows = run(spec, [(10.0, {"a": 1.0}), (10.0, {"a": 2.0}), (10.0, {"a": 4.0})])
    assert [r["a_count_by_entity"] for r in rows] == [0.0, 1.0, 2.0]   # arrival order
    assert [r["a_count_by_entity_30s"] for r in rows] == [0.0, 0.0, 0.0]  # ts < t only
    assert rows[2]["a_sum_by_entity"] == 3.0
    assert rows[2]["seconds_since_last_by_entity"] == 0.0


def test_window_lower_bound_is_open() -> None:
    spec = make_spec()
    rows = run(spec, [(0.0, {"a": 1.0}), (29.5, {"a": 2.0}), (30.0, {})])
    assert rows[2]["a_count_by_entity_30s"] == 1.0   # the event exactly 30 s old is out
    assert rows[2]["a_sum_by_entity_30s"] == 2.0
    assert rows[2]["a_count_by_entity_2m"] == 2.0


def test_population_std_and_cumulative_stats() -> None:
    spec = make_spec()
    xs = [2, 4, 4, 4, 5, 5, 7, 9]
    _, state = fold_events(spec, None, [(float(i), {"a": x}) for i, x in enumerate(xs)])
    out = compute(spec, state, 100.0)
    assert out["a_std_by_entity"] == 2.0
    assert (out["a_count_by_entity"], out["a_sum_by_entity"], out["a_mean_by_entity"]) == (8.0, 40.0, 5.0)
    assert (out["a_min_by_entity"], out["a_max_by_entity"], out["a_last_by_entity"]) == (2.0, 9.0, 9.0)
    assert compute(spec, update(spec, None, 0.0, {"a": 3}), 1.0)["a_std_by_entity"] == 0.0


@pytest.mark.parametrize("bad", [None, True, False, "1.0", math.nan, math.inf, 1e101, [1], {"x": 1}])
def test_non_numeric_values_are_skipped_for_that_feature_only(bad: Any) -> None:
    spec = make_spec()
    state = update(spec, None, 0.0, {"a": bad, "b": 2})
    out = compute(spec, state, 1.0)
    assert out["a_count_by_entity"] == 0.0 and out["a_mean_by_entity"] == 0.0
    assert out["b_count_by_entity"] == 1.0 and out["seconds_since_last_by_entity"] == 1.0


def test_late_event_counts_in_later_windows_and_clamps_since_last() -> None:
    spec = make_spec()
    events = [(100.0, {"a": 1.0}), (80.0, {"a": 10.0}), (105.0, {})]
    rows = run(spec, events)
    assert rows[1]["seconds_since_last_by_entity"] == 0.0
    assert rows[2]["a_sum_by_entity_30s"] == 11.0   # (75, 105): both, the late one included
    assert rows[2]["a_last_by_entity"] == 1.0        # last = greatest timestamp, not arrival


def test_cap_drops_the_oldest_points() -> None:
    spec = make_spec(windows=("1h",), cap=3)
    _, state = fold_events(spec, None, [(float(i), {"a": float(i)}) for i in range(10)])
    out = compute(spec, state, 20.0)
    assert out["a_count_by_entity_1h"] == 3.0 and out["a_sum_by_entity_1h"] == 7.0 + 8.0 + 9.0
    assert out["a_count_by_entity"] == 10.0   # cumulative stats are not capped


def test_points_beyond_the_longest_window_are_pruned() -> None:
    spec = make_spec(windows=("30s",))
    _, state = fold_events(spec, None, [(float(t), {"a": 1.0}) for t in range(0, 1000, 5)])
    assert len(state["f"]["a"]["t"]) == 6   # 970..995: ts > 995 - 30


def test_long_streams_keep_window_sums_precise() -> None:
    spec = make_spec(windows=("1m",))
    events = [(float(i), {"a": 1e9 + (i % 7) * 0.001}) for i in range(50_000)]
    rows, _ = fold_events(spec, None, events)
    expected = math.fsum(v["a"] for t, v in events[-61:-1] if t > events[-1][0] - 60)
    assert math.isclose(rows[-1]["a_sum_by_entity_1m"], expected, rel_tol=1e-14)


def test_unknown_state_version_counts_as_empty() -> None:
    spec = make_spec()
    state = update(spec, None, 0.0, {"a": 1.0})
    state["v"] = 999
    assert compute(spec, state, 1.0) == dict.fromkeys(spec.names, 0.0)
    assert update(spec, state, 1.0, {"a": 2.0})["f"]["a"]["n"] == 1


@pytest.mark.parametrize("ts", [math.nan, math.inf, None, "1", True])
def test_bad_timestamps_raise(ts: Any) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        compute(make_spec(), None, ts)
    with pytest.raises(ValueError, match="timestamp"):
        update(make_spec(), None, ts, {})
