"""Per-entity aggregates as pure functions over a JSON-serialisable state.

:func:`compute` gives the aggregates as they stood *before* an event (point in time, no
leakage); :func:`update` folds the event in and returns a new state; :func:`fold_events` does
both for a run of one entity's events. None of them modifies the state it is given (unless
:func:`fold_events` is told it may).

Semantics
---------
* **Values.** A feature value counts when it is an ``int`` or ``float`` (``bool`` is not
  numeric here), finite, and at most ``1e100`` in magnitude (so every sum and square stays
  finite). Anything else, or a missing key, is skipped for that feature only.
* **Timestamps** are seconds (any finite float); windows are in seconds too.
* **Empty history is 0.0.** Every output is a finite float. A stat with nothing behind it
  (an unknown entity, a feature never seen, an empty window) is ``0.0``; the matching
  ``count`` is 0.0 too, which is how a model can tell.
* **Cumulative** stats cover every earlier event of the entity, in arrival order. ``std`` is
  the *population* standard deviation (ddof=0, Welford), so one value gives 0.0. ``last`` is
  the value with the greatest timestamp so far (ties: the later arrival).
* **Windows** of length ``w`` for an event at ``t`` cover the earlier events with
  ``t - w < ts < t``: open at both ends, so an event exactly ``w`` old is out, and events
  sharing the timestamp ``t`` (and the event itself) are out, whatever their arrival order.
* **Retention.** Per feature, points are kept while ``ts > T - W`` where ``T`` is the
  entity's greatest timestamp so far and ``W`` the feature's longest window, and at most
  ``max_window_points`` of them: beyond the cap the oldest points are dropped, so windows can
  undercount. A late event (``ts < T``) is folded into every later window that covers it;
  its own windows see only the retained points.
* ``seconds_since_last_by_entity`` is ``max(0, t - T)`` (late events give 0.0).

>>> from stream_app.settings import AggregateSettings, FeatureSettings
>>> from features.spec import compile_spec
>>> spec = compile_spec(FeatureSettings(since_last=True, aggregates=(
...     AggregateSettings(feature="amount", stats=("count", "mean", "std"), windows=("1m",)),)))
>>> state = None
>>> for ts, amount in [(0.0, 10.0), (45.0, 20.0), (90.0, 60.0)]:
...     before = compute(spec, state, ts)
...     state = update(spec, state, ts, {"amount": amount})
>>> before  # as it stood just before the event at t=90: the t=0 event is out of the minute
... # doctest: +NORMALIZE_WHITESPACE
{'amount_count_by_entity': 2.0, 'amount_mean_by_entity': 15.0, 'amount_std_by_entity': 5.0,
 'amount_count_by_entity_1m': 1.0, 'amount_sum_by_entity_1m': 20.0,
 'amount_mean_by_entity_1m': 20.0, 'seconds_since_last_by_entity': 45.0}
>>> compute(spec, None, 5.0)["amount_mean_by_entity"]
0.0
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from typing import Any, Final

from features.spec import SINCE_LAST, AggregateSpec, FeatureSpec

__all__ = ["STATE_VERSION", "State", "compute", "fold_events", "update"]

#: a per-entity state: plain dicts, lists, floats and ints (stored as one orjson blob)
State = dict[str, Any]
#: bumped when the state layout changes; a state of another version counts as empty
STATE_VERSION: Final = 1
_MAX_ABS: Final = 1e100

# Layout: {"v": 1, "ts": greatest event ts, "f": {feature: feature state}}, where a feature
# state is {"n": count, "s": sum, "m": mean, "q": Welford M2, "lo": min, "hi": max,
# "l": last value, "lt": its ts} and, with windows, "t": [ts ascending], "x": [values].
# Window sums are plain sums over a slice: the stored points dominate the cost (decoding k
# points costs more than summing them), and raw values keep the JSON short (prefix sums would
# turn "12.34" into "1234.5600000000002").


def compute(
    spec: FeatureSpec,
    state: State | None,
    event_ts: float,
    event_features: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """The aggregates before an event at ``event_ts``, keyed in ``spec.names`` order.

    ``event_features`` is not used (the event itself never counts); it is accepted so that
    :func:`compute` and :func:`update` take the same arguments.
    """
    ts = _check_ts(event_ts)
    if state is None or state.get("v") != STATE_VERSION or state.get("ts") is None:
        return dict.fromkeys(spec.names, 0.0)
    out: dict[str, float] = {}
    feats = state["f"]
    last_ts = state["ts"]
    for agg in spec.aggregates:
        fs = feats.get(agg.feature)
        if fs is None or not fs["n"]:
            for name in agg.names:
                out[name] = 0.0
            continue
        if agg.cumulative:
            _cumulative(agg, fs, out)
        if agg.windows:
            _windowed(agg, fs, ts, last_ts - agg.horizon_s, out)
    if spec.since_last:
        out[SINCE_LAST] = max(0.0, ts - last_ts)
    return out


def update(
    spec: FeatureSpec,
    state: State | None,
    event_ts: float,
    event_features: Mapping[str, Any],
) -> State:
    """A new state with the event folded in (``state`` is left untouched)."""
    new = _thaw(state)
    _fold(spec, new, _check_ts(event_ts), event_features, set())
    return new


def fold_events(
    spec: FeatureSpec,
    state: State | None,
    events: Iterable[tuple[float, Mapping[str, Any]]],
    *,
    reuse_state: bool = False,
) -> tuple[list[dict[str, float]], State]:
    """For one entity's ``(ts, features)`` events in arrival order: each event's aggregates
    before it, and the state after all of them.

    Copies each touched feature state once; with ``reuse_state=True`` nothing is copied and
    ``state`` is updated in place, for a caller that owns it (say, just decoded from the
    store) and drops it afterwards. This is the hot path: windows make a copy cost O(points).

    >>> from stream_app.settings import AggregateSettings, FeatureSettings
    >>> from features.spec import compile_spec
    >>> spec = compile_spec(FeatureSettings(aggregates=(AggregateSettings(feature="x"),)))
    >>> rows, state = fold_events(spec, None, [(1.0, {"x": 2}), (2.0, {"x": None}), (3.0, {"x": 4})])
    >>> [row["x_mean_by_entity"] for row in rows], state["f"]["x"]["n"]
    ([0.0, 2.0, 2.0], 2)
    """
    if reuse_state and state is not None and state.get("v") == STATE_VERSION:
        new, owned = state, {agg.feature for agg in spec.aggregates}
    else:
        new, owned = _thaw(state), set()
    rows = []
    for event_ts, features in events:
        ts = _check_ts(event_ts)
        rows.append(compute(spec, new, ts))
        _fold(spec, new, ts, features, owned)
    return rows, new


# -- reading ------------------------------------------------------------------


def _cumulative(agg: AggregateSpec, fs: dict[str, Any], out: dict[str, float]) -> None:
    n = fs["n"]
    std = math.sqrt(max(fs["q"] / n, 0.0))
    values = (float(n), fs["s"], fs["m"], fs["lo"], fs["hi"], fs["l"], std)
    for name, index in agg.cumulative:
        out[name] = values[index]


def _windowed(
    agg: AggregateSpec, fs: dict[str, Any], ts: float, horizon: float, out: dict[str, float]
) -> None:
    times = fs.get("t") or ()
    values = fs.get("x") or ()
    hi = bisect_left(times, ts)
    for w in agg.windows:
        start = ts - w.seconds
        lo = bisect_right(times, start if start > horizon else horizon, 0, hi)
        count = hi - lo
        if w.count_name is not None:
            out[w.count_name] = float(count)
        if w.sum_name is not None or w.mean_name is not None:
            total = sum(values[lo:hi], 0.0)
            if w.sum_name is not None:
                out[w.sum_name] = total
            if w.mean_name is not None:
                out[w.mean_name] = total / count if count else 0.0


# -- writing ------------------------------------------------------------------


def _thaw(state: State | None) -> State:
    """A copy we may mutate at the top level; feature states are copied on first touch."""
    if state is None or state.get("v") != STATE_VERSION:
        return {"v": STATE_VERSION, "ts": None, "f": {}}
    return {**state, "f": dict(state["f"])}


def _fold(
    spec: FeatureSpec, state: State, ts: float, features: Mapping[str, Any], owned: set[str]
) -> None:
    prev = state["ts"]
    top = ts if prev is None or ts > prev else prev
    state["ts"] = top
    feats = state["f"]
    for agg in spec.aggregates:
        name = agg.feature
        value = _numeric(features.get(name))
        if value is None:
            continue
        fs = feats.get(name)
        if fs is None:
            fs = feats[name] = _new_feature(value, ts)
            owned.add(name)
        elif name not in owned:  # copy on first write
            fs = feats[name] = _copy_feature(fs)
            owned.add(name)
        _fold_cumulative(fs, ts, value)
        if agg.windows:
            _fold_window(fs, ts, value, top - agg.horizon_s, spec.max_window_points)


def _new_feature(value: float, ts: float) -> dict[str, Any]:
    return {"n": 0, "s": 0.0, "m": 0.0, "q": 0.0, "lo": value, "hi": value, "l": value, "lt": ts}


def _copy_feature(fs: dict[str, Any]) -> dict[str, Any]:
    new = dict(fs)
    if "t" in new:
        new["t"] = list(new["t"])
        new["x"] = list(new["x"])
    return new


def _fold_cumulative(fs: dict[str, Any], ts: float, value: float) -> None:
    n = fs["n"] + 1
    delta = value - fs["m"]
    mean = fs["m"] + delta / n
    fs["q"] += delta * (value - mean)
    fs["m"] = mean
    fs["n"] = n
    fs["s"] += value
    if value < fs["lo"]:
        fs["lo"] = value
    if value > fs["hi"]:
        fs["hi"] = value
    if ts >= fs["lt"]:
        fs["l"] = value
        fs["lt"] = ts


def _fold_window(fs: dict[str, Any], ts: float, value: float, horizon: float, cap: int) -> None:
    if ts <= horizon:  # already older than every window can reach
        return
    times: list[float] | None = fs.get("t")
    values: list[float] | None = fs.get("x")
    if times is None or values is None:
        times, values = fs["t"], fs["x"] = [], []
    if not times or ts >= times[-1]:
        times.append(ts)
        values.append(value)
    else:  # a late event
        at = bisect_right(times, ts)
        times.insert(at, ts)
        values.insert(at, value)
    drop = max(bisect_right(times, horizon), len(times) - cap)
    if drop > 0:
        del times[:drop]
        del values[:drop]


def _numeric(value: object) -> float | None:
    if value.__class__ is float:  # the common case first; NaN and inf fail the comparison
        return value if -_MAX_ABS <= value <= _MAX_ABS else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if -_MAX_ABS <= value <= _MAX_ABS else None
    return None


def _check_ts(ts: float) -> float:
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise ValueError(f"event timestamp must be a finite number of seconds, got {ts!r}")
    return float(ts)
