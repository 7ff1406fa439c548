"""Per-entity aggregates as pure functions over a per-entity state of constant size.

:func:`compute` gives the aggregates as they stood *before* an event (point in time, no
leakage); :func:`update` folds the event in and returns a new state; :func:`fold_events` does
both for a run of one entity's events. None of them modifies the state it is given.

Semantics
---------
* **Values.** A feature value counts when it is an ``int`` or ``float`` (``bool`` is not
  numeric here), finite, and at most ``1e100`` in magnitude (so every sum and square stays
  finite). Anything else, or a missing key, is skipped for that feature only.
* **Timestamps** are seconds (any finite float); windows are in seconds too. Below, ``t`` is
  the event's timestamp and ``T`` the greatest timestamp of the entity's earlier events.
* **Empty history is 0.0.** Every output is a finite float. A stat with nothing behind it
  (an unknown entity, a feature never seen, an empty window) is ``0.0``; the matching
  ``count`` is 0.0 too, which is how a model can tell.
* **Cumulative** stats are exact and cover every earlier event of the entity, in arrival
  order (late ones and those sharing ``t`` included). ``std`` is the *population* standard
  deviation (ddof=0, Welford), so one value gives 0.0. ``last`` is the value with the
  greatest timestamp so far (ties: the later arrival).
* **Windows are tiles.** A window of ``w`` seconds is read from fixed tiles of ``s`` seconds
  (``s = w / 30`` unless the aggregate sets ``tile_s``, which divides ``w``), so it spans
  ``k = w / s`` tiles. Tile ``j`` holds the events with ``floor(ts / s) == j``, that is
  ``j*s <= ts < (j + 1)*s``. With ``i = floor(t / s)``:

  - *in order* (``t >= T``): the window covers the earlier events in tiles ``i - k + 1`` to
    ``i`` with ``ts < t``. Those tiles lie inside ``(t - w, t]``; the tile that straddles
    ``t - w`` is out, so the window reaches back between ``w - s`` and ``w`` seconds and
    never counts an event ``w`` or more seconds old. Events sharing ``t`` (and the event
    itself) are out, whatever their arrival order.
  - *late* (``t < T``): its own tile may hold events after ``t``, so its window covers the
    earlier events in tiles ``i - k + 1`` to ``i - 1`` only. It does not move ``T``.

  A ring keeps the ``K`` tiles up to ``T``'s (``K`` the longest window on that tile size, in
  tiles): a tile older than ``floor(T / s) - K + 1`` is gone, from every window, late events'
  included. An event is folded into its tile (if kept), so a late event counts in the windows
  of later events that cover its tile. Each window's count and sum are kept per tile, so an
  event costs the same and the state has the same size however many events a window holds.
* ``seconds_since_last_by_entity`` is ``max(0, t - T)`` (late events give 0.0).

>>> from stream_app.settings import AggregateSettings, FeatureSettings
>>> from features.spec import compile_spec
>>> spec = compile_spec(FeatureSettings(since_last=True, aggregates=(
...     AggregateSettings(feature="amount", stats=("count", "mean", "std"), windows=("1m",)),)))
>>> spec.aggregates[0].rings  # the minute in 30 tiles of 2 s
(RingSpec(tile_s=2.0, size=30),)
>>> state = None
>>> for ts, amount in [(0.0, 10.0), (45.0, 20.0), (90.0, 60.0)]:
...     before = compute(spec, state, ts)
...     state = update(spec, state, ts, {"amount": amount})
>>> before  # as it stood just before the event at t=90: the t=0 event is out of the minute
... # doctest: +NORMALIZE_WHITESPACE
{'amount_count_by_entity': 2.0, 'amount_mean_by_entity': 15.0, 'amount_std_by_entity': 5.0,
 'amount_count_by_entity_1m': 1.0, 'amount_sum_by_entity_1m': 20.0,
 'amount_mean_by_entity_1m': 20.0, 'seconds_since_last_by_entity': 45.0}

The window's start is exact to one tile: at t=90.5 the minute is tiles 16 to 45 (32 s to
90.5 s), so an event at 31 s (tile 15, which straddles 30.5 s) is out; at t=89.9 it is in.

>>> one = update(spec, None, 31.0, {"amount": 1.0})
>>> compute(spec, one, 90.5)["amount_count_by_entity_1m"], compute(spec, one, 89.9)["amount_count_by_entity_1m"]
(0.0, 1.0)
>>> compute(spec, None, 5.0)["amount_mean_by_entity"]
0.0
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from typing import Any, Final

from features.spec import SINCE_LAST, AggregateSpec, FeatureSpec, WindowSpec

__all__ = ["STATE_VERSION", "State", "compute", "fold_events", "update"]

#: a per-entity state as stored: plain dicts, lists, floats and ints (one orjson blob)
State = dict[str, Any]
#: bumped when the state layout changes; a state of another version counts as empty
STATE_VERSION: Final = 2
_MAX_ABS: Final = 1e100

# A feature's working state is two arrays. ``d`` (doubles): count, sum, mean, Welford M2, min,
# max, last value, its ts, then (with windows) the sum of the values held back at exactly T,
# then each ring's tile sums. ``u`` (unsigned 32-bit): the count held back at T, then each
# ring's tile counts. Tile j of a ring lives at its offset + j % size. Values at exactly T are
# held back until a later ts comes (then added to T's tile), so a window never subtracts.
_N, _SUM, _MEAN, _M2, _MIN, _MAX, _LAST, _LAST_TS, _HELD = range(9)
_U32: Final = next(code for code in "IL" if array(code).itemsize == 4)
_U32_MAX: Final = 2**32 - 1  # a tile's count saturates there


class _Ring:
    """One ring of an aggregate: its tile size, length and offsets in ``d`` and ``u``."""

    __slots__ = ("d0", "size", "tile", "u0")

    def __init__(self, tile: float, size: int, d0: int, u0: int) -> None:
        self.tile, self.size, self.d0, self.u0 = tile, size, d0, u0


class _Agg:
    """An :class:`~features.spec.AggregateSpec` with its state layout worked out."""

    __slots__ = ("cumulative", "d_len", "feature", "layout", "names", "rings", "u_len",
                 "windows")

    def __init__(self, agg: AggregateSpec) -> None:
        self.feature, self.cumulative, self.names = agg.feature, agg.cumulative, agg.names
        rings, offset = [], 0
        for ring in agg.rings:
            rings.append(_Ring(ring.tile_s, ring.size, _HELD + 1 + offset, 1 + offset))
            offset += ring.size
        self.rings = tuple(rings)
        self.windows: tuple[tuple[WindowSpec, _Ring], ...] = tuple(
            (w, rings[w.ring]) for w in agg.windows)
        self.d_len = _HELD + 1 + offset if rings else _HELD
        self.u_len = 1 + offset if rings else 0
        #: identifies the ring layout in a stored state: tile sizes and lengths
        self.layout = ",".join(f"{r.tile_s!r}x{r.size}" for r in agg.rings)


class _Plan:
    __slots__ = ("aggs", "names", "since_last")

    def __init__(self, spec: FeatureSpec) -> None:
        self.aggs = tuple(_Agg(agg) for agg in spec.aggregates)
        self.names, self.since_last = spec.names, spec.since_last


_Feature = tuple[array, array]  # (d, u), changed in place


class _Work:
    """A decoded state: the entity's greatest timestamp and its features' arrays."""

    __slots__ = ("feats", "top")

    def __init__(self, top: float | None, feats: dict[str, _Feature]) -> None:
        self.top, self.feats = top, feats


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
    plan = _plan(spec)
    return _read(plan, _decode(plan, state), ts)


def update(
    spec: FeatureSpec,
    state: State | None,
    event_ts: float,
    event_features: Mapping[str, Any],
) -> State:
    """A new state with the event folded in (``state`` is left untouched)."""
    ts = _check_ts(event_ts)
    plan = _plan(spec)
    work = _decode(plan, state)
    _fold(plan, work, ts, event_features)
    return _encode(plan, work)


def fold_events(
    spec: FeatureSpec,
    state: State | None,
    events: Iterable[tuple[float, Mapping[str, Any]]],
    *,
    reuse_state: bool = False,
) -> tuple[list[dict[str, float]], State]:
    """For one entity's ``(ts, features)`` events in arrival order: each event's aggregates
    before it, and the state after all of them.

    The state is decoded once and encoded once, whatever the number of events. ``state`` is
    never changed: decoding copies it, so ``reuse_state`` (kept for callers that own the
    state) changes nothing.

    >>> from stream_app.settings import AggregateSettings, FeatureSettings
    >>> from features.spec import compile_spec
    >>> spec = compile_spec(FeatureSettings(aggregates=(AggregateSettings(feature="x"),)))
    >>> rows, state = fold_events(spec, None, [(1.0, {"x": 2}), (2.0, {"x": None}), (3.0, {"x": 4})])
    >>> [row["x_mean_by_entity"] for row in rows], compute(spec, state, 4.0)["x_count_by_entity"]
    ([0.0, 2.0, 2.0], 2.0)
    """
    plan = _plan(spec)
    work = _decode(plan, state)
    rows = []
    for event_ts, features in events:
        ts = _check_ts(event_ts)
        rows.append(_read(plan, work, ts))
        _fold(plan, work, ts, features)
    return rows, _encode(plan, work)


# -- reading ------------------------------------------------------------------


def _read(plan: _Plan, work: _Work, ts: float) -> dict[str, float]:
    top = work.top
    if top is None:
        return dict.fromkeys(plan.names, 0.0)
    out: dict[str, float] = {}
    feats = work.feats
    for agg in plan.aggs:
        fs = feats.get(agg.feature)
        if fs is None:
            for name in agg.names:
                out[name] = 0.0
            continue
        if agg.cumulative:
            _cumulative(agg, fs[0], out)
        if agg.windows:
            _windowed(agg, fs, ts, top, out)
    if plan.since_last:
        out[SINCE_LAST] = max(0.0, ts - top)
    return out


def _cumulative(agg: _Agg, d: array, out: dict[str, float]) -> None:
    n = d[_N]
    std = math.sqrt(max(d[_M2] / n, 0.0))
    values = (n, d[_SUM], d[_MEAN], d[_MIN], d[_MAX], d[_LAST], std)
    for name, index in agg.cumulative:
        out[name] = values[index]


def _windowed(agg: _Agg, fs: _Feature, ts: float, top: float, out: dict[str, float]) -> None:
    d, u = fs
    late = ts < top
    held = u[0] if ts > top else 0  # the values at exactly T count for a later ts only
    for w, ring in agg.windows:
        now = math.floor(ts / ring.tile)
        top_tile = math.floor(top / ring.tile)
        lo = now - w.tiles + 1
        if late:
            count, total = _tiles(d, u, ring, max(lo, top_tile - ring.size + 1), now)
        else:
            count, total = _tiles(d, u, ring, lo, top_tile + 1)
            if held and top_tile >= lo:
                count += u[0]
                total += d[_HELD]
        if w.count_name is not None:
            out[w.count_name] = float(count)
        if w.sum_name is not None:
            out[w.sum_name] = total
        if w.mean_name is not None:
            out[w.mean_name] = total / count if count else 0.0


def _tiles(d: array, u: array, ring: _Ring, lo: int, hi: int) -> tuple[int, float]:
    """Count and sum of tiles ``lo`` to ``hi - 1`` (at most ``ring.size`` of them)."""
    if lo >= hi:
        return 0, 0.0
    size = ring.size
    start = lo % size
    end = start + (hi - lo)
    d0, u0 = ring.d0, ring.u0
    if end <= size:
        return sum(u[u0 + start:u0 + end]), sum(d[d0 + start:d0 + end], 0.0)
    end -= size
    return (sum(u[u0 + start:u0 + size]) + sum(u[u0:u0 + end]),
            sum(d[d0 + start:d0 + size], 0.0) + sum(d[d0:d0 + end], 0.0))


# -- writing ------------------------------------------------------------------


def _fold(plan: _Plan, work: _Work, ts: float, features: Mapping[str, Any]) -> None:
    top = work.top
    if top is None or ts > top:
        if top is not None:
            _advance(plan, work.feats, top, ts)
        work.top = top = ts
    feats = work.feats
    for agg in plan.aggs:
        value = _numeric(features.get(agg.feature))
        if value is None:
            continue
        fs = feats.get(agg.feature)
        if fs is None:
            fs = feats[agg.feature] = _new_feature(agg, value, ts)
        d, u = fs
        _fold_cumulative(d, ts, value)
        if not agg.rings:
            continue
        if ts == top:  # held back until a later ts comes
            if u[0] < _U32_MAX:
                u[0] += 1
            d[_HELD] += value
        else:
            _fold_late(agg, d, u, ts, top, value)


def _advance(plan: _Plan, feats: dict[str, _Feature], top: float, ts: float) -> None:
    """T moves from ``top`` to ``ts``: put the held-back values in T's tile, clear new tiles."""
    for agg in plan.aggs:
        fs = feats.get(agg.feature) if agg.rings else None
        if fs is None:
            continue
        d, u = fs
        held, held_sum = u[0], d[_HELD]
        for ring in agg.rings:
            old = math.floor(top / ring.tile)
            if held:
                _add(d, u, ring, old % ring.size, held, held_sum)
            new = min(math.floor(ts / ring.tile), old + ring.size)
            for tile in range(old + 1, new + 1):
                slot = tile % ring.size
                u[ring.u0 + slot] = 0
                d[ring.d0 + slot] = 0.0
        u[0] = 0
        d[_HELD] = 0.0


def _fold_late(agg: _Agg, d: array, u: array, ts: float, top: float, value: float) -> None:
    for ring in agg.rings:
        tile = math.floor(ts / ring.tile)
        if tile > math.floor(top / ring.tile) - ring.size:  # still kept
            _add(d, u, ring, tile % ring.size, 1, value)


def _add(d: array, u: array, ring: _Ring, slot: int, count: int, total: float) -> None:
    u[ring.u0 + slot] = min(u[ring.u0 + slot] + count, _U32_MAX)
    d[ring.d0 + slot] += total


def _new_feature(agg: _Agg, value: float, ts: float) -> _Feature:
    d = array("d", bytes(8 * agg.d_len))
    d[_MIN] = d[_MAX] = d[_LAST] = value
    d[_LAST_TS] = ts
    return d, array(_U32, bytes(4 * agg.u_len))


def _fold_cumulative(d: array, ts: float, value: float) -> None:
    n = d[_N] + 1.0
    delta = value - d[_MEAN]
    mean = d[_MEAN] + delta / n
    d[_M2] += delta * (value - mean)
    d[_MEAN] = mean
    d[_N] = n
    d[_SUM] += value
    if value < d[_MIN]:
        d[_MIN] = value
    if value > d[_MAX]:
        d[_MAX] = value
    if ts >= d[_LAST_TS]:
        d[_LAST] = value
        d[_LAST_TS] = ts


# -- the stored form ----------------------------------------------------------

# {"v": 2, "ts": T, "f": {feature: {"k": ring layout, "d": [...], "u": [...]}}}: the arrays as
# lists. A feature whose stored ring layout differs from the spec's keeps its cumulative stats
# and starts its windows afresh; features not in the spec are dropped.


def _decode(plan: _Plan, state: State | None) -> _Work:
    if not isinstance(state, dict) or state.get("v") != STATE_VERSION or state.get("ts") is None:
        return _Work(None, {})
    stored = state["f"]
    feats: dict[str, _Feature] = {}
    for agg in plan.aggs:
        fs = stored.get(agg.feature)
        if fs is None:
            continue
        d, u = array("d", fs["d"]), array(_U32, fs["u"])
        if fs["k"] != agg.layout or len(d) != agg.d_len or len(u) != agg.u_len:
            d = d[:_HELD] + array("d", bytes(8 * (agg.d_len - _HELD)))
            u = array(_U32, bytes(4 * agg.u_len))
        feats[agg.feature] = (d, u)
    return _Work(float(state["ts"]), feats)


def _encode(plan: _Plan, work: _Work) -> State:
    feats = {}
    for agg in plan.aggs:
        fs = work.feats.get(agg.feature)
        if fs is not None:
            feats[agg.feature] = {"k": agg.layout, "d": fs[0].tolist(), "u": fs[1].tolist()}
    return {"v": STATE_VERSION, "ts": work.top, "f": feats}


_PLANS: dict[int, tuple[FeatureSpec, _Plan]] = {}


def _plan(spec: FeatureSpec) -> _Plan:
    """The spec's layout, worked out once per spec (the cache holds the spec, so its id holds)."""
    hit = _PLANS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    if len(_PLANS) >= 64:
        _PLANS.clear()
    plan = _Plan(spec)
    _PLANS[id(spec)] = (spec, plan)
    return plan


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
