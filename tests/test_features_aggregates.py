"""Per-entity aggregates: unit tests and a brute-force property test.

The reference below recomputes every aggregate from the raw event list, following the
semantics documented in ``features.aggregates`` (point in time, windows read from fixed
tiles, late events, the tiles a ring keeps).
"""

from __future__ import annotations

import copy
import math
import random
import statistics
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.aggregates import STATE_VERSION, compute, fold_events, update
from features.spec import FeatureSpec, RingSpec, compile_spec
from stream_app.settings import AggregateSettings, FeatureSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]

ALL_STATS = ("count", "sum", "mean", "min", "max", "last", "std")
Event = tuple[float, dict[str, Any]]


def make_spec(windows: tuple[str, ...] = ("30s", "2m"), tile_s: float | None = None
              ) -> FeatureSpec:
    """``a``: the given windows (30 tiles each, or tiles of ``tile_s``); ``b``: a minute in
    tiles of 15 s next to 2 min and 30 s on the same ring; ``c``: no windows."""
    return compile_spec(FeatureSettings(
        since_last=True,
        aggregates=(
            AggregateSettings(feature="a", stats=ALL_STATS, windows=windows, tile_s=tile_s),
            AggregateSettings(feature="b", stats=ALL_STATS, windows=("1m", "2m", "30s"),
                              tile_s=15),
            AggregateSettings(feature="c", stats=("count", "last")),
        ),
    ))


def run(spec: FeatureSpec, events: list[Event]) -> list[dict[str, float]]:
    """compute-then-update per event: the state is encoded and decoded between events."""
    rows: list[dict[str, float]] = []
    state: bytes | None = None
    for ts, features in events:
        rows.append(compute(spec, state, ts, features))
        state = update(spec, state, ts, features)
        assert type(state) is bytes and state[:2] == bytes([0xA5, STATE_VERSION])
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
        for w in agg.windows:
            inside = in_window(agg.rings[w.ring], w.tiles, points, t, latest)
            for name, value in ((w.count_name, len(inside)), (w.sum_name, math.fsum(inside)),
                                (w.mean_name, statistics.fmean(inside) if inside else 0.0)):
                if name is not None:
                    out[name] = value
    if spec.since_last:
        out["seconds_since_last_by_entity"] = max(0.0, t - latest)
    return out


def in_window(ring: RingSpec, tiles: int, points: list[tuple[float, int, float]], t: float,
              latest: float) -> list[float]:
    """The values a window of ``tiles`` tiles covers at ``t``, as the module documents."""
    def tile(ts: float) -> int:
        return math.floor(ts / ring.tile_s)
    lo = max(tile(t) - tiles, tile(latest) - ring.size) + 1   # the ring keeps tiles from here
    if t >= latest:   # in order: every earlier event of the covered tiles before t
        return [v for ts, _, v in points if tile(ts) >= lo and ts < t]
    return [v for ts, _, v in points if lo <= tile(ts) < tile(t)]   # late: not its own tile


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

# few distinct integer timestamps give ties; the floats land anywhere in a tile, and any
# unsorted list has late events; a stream over a few seconds puts many events in one tile
timestamps = st.one_of(st.integers(-20, 400).map(float), st.floats(-20, 400, allow_nan=False))
dense_timestamps = st.one_of(st.integers(0, 12).map(float), st.floats(0, 12, allow_nan=False))
values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False), st.integers(-1000, 1000),
    st.sampled_from([None, True, "7", math.nan, math.inf, -math.inf, 1e200]),
)
event = st.tuples(timestamps, st.dictionaries(st.sampled_from("abcz"), values, max_size=4))
dense_event = st.tuples(dense_timestamps, event.map(lambda e: e[1]))


@settings(max_examples=300, deadline=None)
@given(events=st.one_of(st.lists(event, max_size=40), st.lists(dense_event, max_size=40)),
       windows=st.sampled_from([("30s", "2m"), ("10s",), ("1m", "2m", "5m")]),
       tile_s=st.sampled_from([None, 5.0, 10.0]), sorted_ts=st.booleans())
def test_aggregates_equal_brute_force(events: list[Event], windows: tuple[str, ...],
                                      tile_s: float | None, sorted_ts: bool) -> None:
    if sorted_ts:
        events = sorted(events, key=lambda e: e[0])
    spec = make_spec(windows, tile_s)
    rows = run(spec, events)
    assert_matches(spec, events, rows)
    batched, state = fold_events(spec, None, events)
    assert batched == rows
    reused, _ = fold_events(spec, bytes(bytearray(state)), [(500.0, {"a": 1.0})],
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


def test_window_start_is_exact_to_one_tile() -> None:
    spec = make_spec()   # 30s in tiles of 1 s, 2m in tiles of 4 s
    rows = run(spec, [(0.0, {"a": 1.0}), (0.5, {"a": 3.0}), (29.5, {"a": 2.0}), (30.2, {})])
    # at 30.2 the 30 s window is tiles 1..30, i.e. [1, 30.2): 0.5 is 29.7 s old but in tile 0,
    # the tile that straddles the window start, so it is out (as is 0.0, exactly 30.2 s old)
    assert rows[3]["a_count_by_entity_30s"] == 1.0
    assert rows[3]["a_sum_by_entity_30s"] == 2.0
    assert rows[3]["a_count_by_entity_2m"] == 3.0
    # an event is never in a window it is w or more seconds older than, tile or not
    later = run(spec, [(0.0, {"a": 1.0}), (30.0, {})])
    assert later[1]["a_count_by_entity_30s"] == 0.0


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
    events = [(100.0, {"a": 1.0}), (90.0, {"a": 2.0}), (80.5, {"a": 10.0}), (105.0, {})]
    rows = run(spec, events)
    assert rows[1]["seconds_since_last_by_entity"] == 0.0
    # late at 80.5: tiles 51..79 only (its own tile may hold later events), so 90 and 100 are out
    assert rows[2]["a_count_by_entity_30s"] == 0.0
    assert rows[2]["a_count_by_entity"] == 2.0       # cumulative stats count every earlier event
    assert rows[3]["a_sum_by_entity_30s"] == 13.0    # tiles 76..105: the late ones included
    assert rows[3]["a_last_by_entity"] == 1.0        # last = greatest timestamp, not arrival


def test_a_late_event_counts_for_the_next_events_of_the_same_batch() -> None:
    spec = make_spec()   # 30s in tiles of 1 s
    events = [(10.2, {"a": 1.0}), (10.5, {"a": 2.0}), (10.6, {}), (3.5, {"a": 4.0}),
              (10.7, {}), (11.5, {})]
    rows, _ = fold_events(spec, None, events)
    assert [r["a_sum_by_entity_30s"] for r in rows] == [0.0, 1.0, 3.0, 0.0, 7.0, 7.0]
    assert rows == run(spec, events)


def test_a_late_event_older_than_the_kept_tiles_is_in_no_window() -> None:
    spec = make_spec()   # the 2 min ring keeps 30 tiles of 4 s: from 4 * (250 - 29) = 884 s
    rows = run(spec, [(1000.0, {"a": 1.0}), (880.0, {"a": 5.0}), (900.0, {"a": 7.0}),
                      (1001.0, {})])
    assert rows[3]["a_count_by_entity_2m"] == 2.0 and rows[3]["a_sum_by_entity_2m"] == 8.0
    assert rows[3]["a_count_by_entity"] == 3.0


def test_window_state_does_not_grow_with_events() -> None:
    spec = make_spec(windows=("1h",))
    _, state = fold_events(spec, None, [(float(i), {"a": float(i)}) for i in range(10)])
    out = compute(spec, state, 20.0)
    assert out["a_count_by_entity_1h"] == 10.0 and out["a_sum_by_entity_1h"] == 45.0
    size = len(state)
    _, state = fold_events(spec, state, [(10.0 + i / 10, {"a": 1.0}) for i in range(20_000)])
    assert len(state) == size
    out = compute(spec, state, 2100.0)
    assert out["a_count_by_entity_1h"] == 20_010.0 and out["a_count_by_entity"] == 20_010.0


def test_tiles_older_than_the_longest_window_are_cleared() -> None:
    spec = make_spec(windows=("30s",))
    _, state = fold_events(spec, None, [(float(t), {"a": 1.0}) for t in range(0, 1000, 5)])
    # at 1000 the window is tiles 971..999: the events at 975, ..., 995
    assert compute(spec, state, 1000.0)["a_count_by_entity_30s"] == 5.0
    # a minute on, every tile has left the ring, though the counts stay in the state
    assert compute(spec, update(spec, state, 1060.0, {}), 1061.0)["a_count_by_entity_30s"] == 0.0


def test_long_streams_keep_window_sums_precise() -> None:
    spec = make_spec(windows=("1m",))   # tiles of 2 s
    events = [(float(i), {"a": 1e9 + (i % 7) * 0.001}) for i in range(50_000)]
    rows, _ = fold_events(spec, None, events)
    # at 49,999 the minute is tiles 24,970..24,999, i.e. the events at 49,940..49,998
    expected = math.fsum(v["a"] for t, v in events[49_940:49_999])
    assert rows[-1]["a_count_by_entity_1m"] == 59.0
    assert math.isclose(rows[-1]["a_sum_by_entity_1m"], expected, rel_tol=1e-14)


def test_unknown_state_version_counts_as_empty() -> None:
    spec = make_spec()
    state = update(spec, None, 0.0, {"a": 1.0})
    other = state[:1] + bytes([99]) + state[2:]
    assert compute(spec, other, 1.0) == dict.fromkeys(spec.names, 0.0)
    assert compute(spec, update(spec, other, 1.0, {"a": 2.0}), 2.0)["a_count_by_entity"] == 1.0


@pytest.mark.parametrize("blob", [
    b"", b"\xa5", b'{"v": 1, "ts": 1.0, "f": {}}',   # empty, a header cut short, a v1 JSON state
    b"\xa5\x03" + bytes(8) + b"\x01\x00a",          # a feature cut short
    b"\xa5\x03" + bytes(8) + bytes(range(200)),        # garbage after the header
])
def test_undecodable_states_count_as_empty(blob: bytes) -> None:
    spec = make_spec()
    assert compute(spec, blob, 1.0) == dict.fromkeys(spec.names, 0.0)
    assert compute(spec, update(spec, blob, 1.0, {"a": 2.0}), 2.0)["a_count_by_entity"] == 1.0


def test_features_the_spec_dropped_are_dropped_and_the_others_kept() -> None:
    _, state = fold_events(make_spec(), None, [(1.0, {"a": 2.0, "b": 1.0, "c": 5})])
    only_b = compile_spec(FeatureSettings(aggregates=(
        AggregateSettings(feature="b", stats=ALL_STATS, windows=("1m", "2m", "30s"), tile_s=15),)))
    _, kept = fold_events(only_b, state, [])
    assert len(kept) < len(state)
    out = compute(make_spec(), kept, 2.0)
    assert (out["a_count_by_entity"], out["b_count_by_entity"], out["c_count_by_entity"]) == (
        0.0, 1.0, 0.0)
    assert out["b_sum_by_entity_1m"] == 1.0


def test_a_changed_tile_layout_keeps_the_cumulative_stats_and_restarts_the_windows() -> None:
    _, state = fold_events(make_spec(), None, [(1.0, {"a": 2.0, "b": 1.0}), (2.0, {"a": 4.0})])
    out = compute(make_spec(tile_s=10.0), state, 3.0)
    assert (out["a_count_by_entity"], out["a_mean_by_entity"]) == (2.0, 3.0)
    assert out["a_count_by_entity_30s"] == 0.0
    assert out["b_count_by_entity_1m"] == 1.0   # b's layout did not change


@pytest.mark.parametrize("ts", [math.nan, math.inf, None, "1", True])
def test_bad_timestamps_raise(ts: Any) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        compute(make_spec(), None, ts)
    with pytest.raises(ValueError, match="timestamp"):
        update(make_spec(), None, ts, {})


def test_fraud_bench_state_stays_under_4_kib_whatever_the_events() -> None:
    """One busy entity of bench/fraud-bench.toml: 100k events over seven hours, with ties,
    late events and missing values; its state has one size from the first event on."""
    spec = compile_spec(load_settings(ROOT / "bench" / "fraud-bench.toml", environ={}).features)
    rng = random.Random(7)
    ts, events = 1.7e9, []
    for i in range(100_000):
        ts += rng.choice((0.0, 0.25, 0.5))
        late = ts - rng.uniform(0, 3 * 3600) if i % 50 == 0 else ts
        events.append((late, {f"f{k}": rng.gauss(0, 1) for k in range(4) if rng.random() < 0.9}))
    _, first = fold_events(spec, None, events[:1])
    sizes = set()
    state = first
    for k in range(0, len(events), 500):
        _, state = fold_events(spec, state, events[k:k + 500], reuse_state=True)
        sizes.add(len(state))
    assert sizes == {len(first)} and len(first) <= 4096
    out = compute(spec, state, ts + 1)
    assert out["f0_count_by_entity"] > 80_000 and 0 < out["f0_count_by_entity_1h"] < 16_000
