"""Per-entity aggregates as pure functions over a per-entity state of constant size.

:func:`compute` gives the aggregates as they stood *before* an event (point in time, no
leakage); :func:`update` folds the event in and returns a new state; :func:`fold_events` does
both for a run of one entity's events. A state is immutable bytes (``features.state``: a few
KiB, versioned), so none of them can change the state it is given.

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

>>> from features.spec import AggregateSettings, FeatureSettings, compile_spec
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

from features.spec import MAX_TILES, SINCE_LAST, FeatureSpec
from features.state import (
    HELD,
    LAST,
    LAST_TS,
    M2,
    MAX,
    MEAN,
    MIN,
    STATE_VERSION,
    SUM,
    U32,
    AggLayout,
    Layout,
    N,
    Ring,
    State,
    Work,
    decode,
    encode,
    layout_of,
)

__all__ = ["STATE_VERSION", "State", "compute", "fold_events", "update"]

_MAX_ABS: Final = 1e100
_U32_MAX: Final = 2**32 - 1  # a tile's count saturates there
_ZERO_D: Final = array("d", bytes(8 * MAX_TILES))
_ZERO_U: Final = array(U32, bytes(4 * MAX_TILES))


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
    layout = layout_of(spec)
    return _read(layout, decode(layout, state), ts)


def update(
    spec: FeatureSpec,
    state: State | None,
    event_ts: float,
    event_features: Mapping[str, Any],
) -> State:
    """A new state with the event folded in (``state`` is left untouched)."""
    ts = _check_ts(event_ts)
    layout = layout_of(spec)
    work = decode(layout, state)
    _fold(layout, work, ts, event_features)
    return encode(layout, work)


def fold_events(
    spec: FeatureSpec,
    state: State | None,
    events: Iterable[tuple[float, Mapping[str, Any]]],
    *,
    reuse_state: bool = False,
) -> tuple[list[dict[str, float]], State]:
    """For one entity's ``(ts, features)`` events in arrival order: each event's aggregates
    before it, and the state after all of them.

    The state is decoded once and encoded once, whatever the number of events. States are
    immutable bytes, so ``reuse_state`` (kept for callers that own the state) changes nothing.

    >>> from features.spec import AggregateSettings, FeatureSettings, compile_spec
    >>> spec = compile_spec(FeatureSettings(aggregates=(AggregateSettings(feature="x"),)))
    >>> rows, state = fold_events(spec, None, [(1.0, {"x": 2}), (2.0, {"x": None}), (3.0, {"x": 4})])
    >>> [row["x_mean_by_entity"] for row in rows], compute(spec, state, 4.0)["x_count_by_entity"]
    ([0.0, 2.0, 2.0], 2.0)
    """
    layout = layout_of(spec)
    work = decode(layout, state)
    rows = []
    for event_ts, features in events:
        ts = _check_ts(event_ts)
        rows.append(_read(layout, work, ts))
        _fold(layout, work, ts, features)
    return rows, encode(layout, work)


# -- reading ------------------------------------------------------------------


def _read(layout: Layout, work: Work, ts: float) -> dict[str, float]:
    top = work.top
    if top is None:
        return dict.fromkeys(layout.names, 0.0)
    out: dict[str, float] = {}
    d = work.d
    for agg in layout.aggs:
        if not d[agg.d0 + N]:  # no value yet
            for name in agg.names:
                out[name] = 0.0
            continue
        if agg.cumulative:
            _cumulative(agg, d, out)
        if agg.windows:
            _windowed(agg, work, ts, top, out)
    if layout.since_last:
        out[SINCE_LAST] = max(0.0, ts - top)
    return out


def _cumulative(agg: AggLayout, d: array, out: dict[str, float]) -> None:
    at = agg.d0
    n = d[at + N]
    std = math.sqrt(max(d[at + M2] / n, 0.0))
    values = (n, d[at + SUM], d[at + MEAN], d[at + MIN], d[at + MAX], d[at + LAST], std)
    for name, index in agg.cumulative:
        out[name] = values[index]


def _windowed(agg: AggLayout, work: Work, ts: float, top: float, out: dict[str, float]) -> None:
    d, u = work.d, work.u
    held = u[agg.u0] if ts > top else 0  # the values at exactly T count for a later ts only
    for w, ring, index in agg.windows:
        now = math.floor(ts / ring.tile)
        top_tile = math.floor(top / ring.tile)
        lo = now - w.tiles + 1
        if ts < top:  # late: not its own tile, and only the tiles kept
            count, total = _tiles(d, u, ring, max(lo, top_tile - ring.size + 1), now)
        else:  # the tiles before T's (cached while T's tile is the event's), T's, held back
            closed = work.closed.get(index)
            if closed is None or closed[0] != now or now != top_tile:
                closed = (now, *_tiles(d, u, ring, lo, top_tile))
                if now == top_tile:
                    work.closed[index] = closed
            _, count, total = closed
            if top_tile >= lo:
                slot = top_tile % ring.size
                count += u[ring.u0 + slot] + held
                total += d[ring.d0 + slot]
                if held:
                    total += d[agg.d0 + HELD]
        if w.count_name is not None:
            out[w.count_name] = float(count)
        if w.sum_name is not None:
            out[w.sum_name] = total
        if w.mean_name is not None:
            out[w.mean_name] = total / count if count else 0.0


def _tiles(d: array, u: array, ring: Ring, lo: int, hi: int) -> tuple[int, float]:
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


def _fold(layout: Layout, work: Work, ts: float, features: Mapping[str, Any]) -> None:
    d, u, top = work.d, work.u, work.top
    if top is None or ts > top:
        if top is not None:
            _advance(layout, d, u, top, ts)
        work.top = top = ts
    for agg in layout.aggs:
        value = _numeric(features.get(agg.feature))
        if value is None:
            continue
        _fold_cumulative(d, agg.d0, ts, value)
        if not agg.rings:
            continue
        if ts == top:  # held back until a later ts comes
            if u[agg.u0] < _U32_MAX:
                u[agg.u0] += 1
            d[agg.d0 + HELD] += value
        else:
            _fold_late(agg, d, u, ts, top, value)
            work.closed.clear()  # it may have landed before T's tile


def _advance(layout: Layout, d: array, u: array, top: float, ts: float) -> None:
    """T moves from ``top`` to ``ts``: put the held-back values in T's tile, clear new tiles."""
    for agg in layout.aggs:
        if not agg.rings or not d[agg.d0 + N]:
            continue
        held, held_sum = u[agg.u0], d[agg.d0 + HELD]
        for ring in agg.rings:
            old = math.floor(top / ring.tile)
            if held:
                _add(d, u, ring, old % ring.size, held, held_sum)
            new = math.floor(ts / ring.tile)
            if new > old:
                _clear(d, u, ring, old + 1, min(new, old + ring.size) + 1)
        u[agg.u0] = 0
        d[agg.d0 + HELD] = 0.0


def _clear(d: array, u: array, ring: Ring, lo: int, hi: int) -> None:
    """Empty tiles ``lo`` to ``hi - 1`` (at most ``ring.size`` of them)."""
    start = lo % ring.size
    end = start + (hi - lo)
    first = min(end, ring.size) - start
    d[ring.d0 + start:ring.d0 + start + first] = _ZERO_D[:first]
    u[ring.u0 + start:ring.u0 + start + first] = _ZERO_U[:first]
    if end > ring.size:
        d[ring.d0:ring.d0 + end - ring.size] = _ZERO_D[:end - ring.size]
        u[ring.u0:ring.u0 + end - ring.size] = _ZERO_U[:end - ring.size]


def _fold_late(agg: AggLayout, d: array, u: array, ts: float, top: float, value: float) -> None:
    for ring in agg.rings:
        tile = math.floor(ts / ring.tile)
        if tile > math.floor(top / ring.tile) - ring.size:  # still kept
            _add(d, u, ring, tile % ring.size, 1, value)


def _add(d: array, u: array, ring: Ring, slot: int, count: int, total: float) -> None:
    u[ring.u0 + slot] = min(u[ring.u0 + slot] + count, _U32_MAX)
    d[ring.d0 + slot] += total


def _fold_cumulative(d: array, at: int, ts: float, value: float) -> None:
    n = d[at + N] + 1.0
    if n == 1.0:
        d[at + MIN] = d[at + MAX] = d[at + LAST] = value
        d[at + LAST_TS] = ts
    delta = value - d[at + MEAN]
    mean = d[at + MEAN] + delta / n
    d[at + M2] += delta * (value - mean)
    d[at + MEAN] = mean
    d[at + N] = n
    d[at + SUM] += value
    if value < d[at + MIN]:
        d[at + MIN] = value
    elif value > d[at + MAX]:
        d[at + MAX] = value
    if ts >= d[at + LAST_TS]:
        d[at + LAST] = value
        d[at + LAST_TS] = ts


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
