"""An entity's stored state: compact, versioned binary, of a size fixed by the spec.

``features.aggregates`` decodes a state once per batch into :class:`Work` (two flat arrays),
folds the batch's events into it and encodes it once; the online store keeps the bytes as
they are. Layout, little-endian::

    header     B 0xA5, B STATE_VERSION, d T (the entity's greatest event time), H features
    directory  per feature: H name length, the name (UTF-8), I ring layout id, I n
    doubles    per feature: count, sum, mean, Welford M2, min, max, last value, its time;
               with windows (n > 0) then the sum held back at exactly T and each ring's
               tile sums (n - 1 in all)
    counts     per feature: n unsigned 32-bit: the count held back at T, each ring's tiles

Every feature of the spec is there from the first event on (count 0: no value yet), so a
spec gives one size: 3,244 bytes for ``bench/fraud-bench.toml``, however many events the
entity saw. Tile ``j`` of a ring is at the ring's offset plus ``j % size``.

A state of another version, or one that does not parse, counts as empty. When the spec
changes, a feature it still declares keeps its cumulative stats, and its windows too if its
ring layout id (a CRC-32 of its tile sizes and ring lengths) is unchanged; they restart
otherwise. A feature the spec no longer declares is dropped.

>>> from features.spec import AggregateSettings, FeatureSettings, compile_spec
>>> layout = layout_of(compile_spec(FeatureSettings(aggregates=(
...     AggregateSettings(feature="f0", windows=("10m", "1h")),))))
>>> work = decode(layout, None)
>>> work.top = 1.7e9
>>> blob = encode(layout, work)
>>> len(blob), layout.size, blob[:2], decode(layout, blob).top == 1.7e9
(820, 820, b'\\xa5\\x03', True)
>>> decode(layout, b"\\xa5\\x02" + blob[2:]).top is None  # another version: empty
True
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from typing import Final

from features.spec import AggregateSpec, FeatureSpec, WindowSpec

__all__ = ["HELD", "STATE_VERSION", "AggLayout", "Layout", "Ring", "State", "Work", "decode",
           "encode", "layout_of"]

#: a per-entity state as stored: opaque bytes in this module's layout
State = bytes
#: bumped when the layout changes; a state of another version counts as empty
STATE_VERSION: Final = 3

#: offsets from a feature's first double; HELD (with windows) is the held-back sum
N, SUM, MEAN, M2, MIN, MAX, LAST, LAST_TS, HELD = range(9)
U32: Final = next(code for code in "IL" if array(code).itemsize == 4)
_MAGIC: Final = 0xA5
_HEADER: Final = struct.Struct("<BBdH")
_NAME: Final = struct.Struct("<H")
_ENTRY: Final = struct.Struct("<II")
_SWAP: Final = sys.byteorder != "little"


class Ring:
    """One ring of tiles: tile size, length, and where its sums and counts start."""

    __slots__ = ("d0", "size", "tile", "u0")

    def __init__(self, tile: float, size: int, d0: int, u0: int) -> None:
        self.tile, self.size, self.d0, self.u0 = tile, size, d0, u0


class AggLayout:
    """An :class:`~features.spec.AggregateSpec` and its place in :class:`Work`'s arrays:
    doubles from ``d0`` (``d0 + HELD``: the held-back sum), the held-back count at ``u0``."""

    __slots__ = ("cumulative", "d0", "entry", "feature", "n", "names", "rings", "u0", "windows")

    def __init__(self, agg: AggregateSpec, d0: int, u0: int, first_window: int) -> None:
        self.feature, self.cumulative, self.names = agg.feature, agg.cumulative, agg.names
        self.d0, self.u0 = d0, u0
        rings, offset = [], 1
        for ring in agg.rings:
            rings.append(Ring(ring.tile_s, ring.size, d0 + HELD + offset, u0 + offset))
            offset += ring.size
        self.rings = tuple(rings)
        #: each window, its ring, and its index among all the spec's windows
        self.windows: tuple[tuple[WindowSpec, Ring, int], ...] = tuple(
            (w, rings[w.ring], first_window + i) for i, w in enumerate(agg.windows))
        self.n = offset if rings else 0  # counts; the doubles are HELD + n
        layout_id = zlib.crc32(",".join(f"{r.tile_s!r}x{r.size}" for r in agg.rings).encode())
        name = agg.feature.encode()
        #: the feature's directory entry
        self.entry = _NAME.pack(len(name)) + name + _ENTRY.pack(layout_id, self.n)


class Layout:
    """Everything a spec needs to read, fold and store states (see :func:`layout_of`)."""

    __slots__ = ("aggs", "d_len", "directory", "names", "since_last", "size", "u_len")

    def __init__(self, spec: FeatureSpec) -> None:
        aggs: list[AggLayout] = []
        d0 = u0 = 0
        for agg in spec.aggregates:
            aggs.append(AggLayout(agg, d0, u0, sum(len(a.windows) for a in aggs)))
            d0, u0 = d0 + HELD + aggs[-1].n, u0 + aggs[-1].n
        self.aggs, self.d_len, self.u_len = tuple(aggs), d0, u0
        self.names, self.since_last = spec.names, spec.since_last
        self.directory = b"".join(agg.entry for agg in aggs)
        self.size = _HEADER.size + len(self.directory) + 8 * d0 + 4 * u0


class Work:
    """A decoded state: the entity's greatest timestamp (``None``: no events yet), every
    feature's doubles ``d`` and counts ``u``, changed in place; ``closed`` is a cache, never
    stored (see ``features.aggregates``)."""

    __slots__ = ("closed", "d", "top", "u")

    def __init__(self, top: float | None, d: array, u: array) -> None:
        self.top, self.d, self.u = top, d, u
        #: per window (by ``AggLayout.windows`` index), ``(tile, count, sum)`` of its tiles
        #: before ``tile``; ``features.aggregates`` keeps it right, it is never stored
        self.closed: dict[int, tuple[int, int, float]] = {}


def decode(layout: Layout, blob: bytes | None) -> Work:
    """The working form of ``blob``; empty for ``None``, another version, or a bad blob."""
    if (blob and len(blob) == layout.size and blob[0] == _MAGIC and blob[1] == STATE_VERSION
            and blob.startswith(layout.directory, _HEADER.size)):  # the spec's own layout
        at = _HEADER.size + len(layout.directory)
        mid = at + 8 * layout.d_len
        return _work(_HEADER.unpack_from(blob)[2], blob[at:mid], blob[mid:])
    empty = Work(None, array("d", bytes(8 * layout.d_len)), array(U32, bytes(4 * layout.u_len)))
    if not blob or len(blob) < _HEADER.size or blob[0] != _MAGIC or blob[1] != STATE_VERSION:
        return empty
    try:
        return _migrate(layout, bytes(blob), empty)
    except (struct.error, _BadState):
        return empty


def encode(layout: Layout, work: Work) -> State:
    """The bytes to store; ``b""`` for an entity without events (which decodes as empty)."""
    if work.top is None:
        return b""
    d, u = (_swapped(work.d), _swapped(work.u)) if _SWAP else (work.d, work.u)
    return b"".join((_HEADER.pack(_MAGIC, STATE_VERSION, work.top, len(layout.aggs)),
                     layout.directory, d.tobytes(), u.tobytes()))


class _BadState(Exception):
    pass


def _work(top: float, doubles: bytes, counts: bytes) -> Work:
    d, u = array("d", doubles), array(U32, counts)
    if _SWAP:
        d.byteswap()
        u.byteswap()
    return Work(top, d, u)


def _migrate(layout: Layout, blob: bytes, work: Work) -> Work:
    """A state written under another spec: take over what still means the same."""
    _, _, top, count = _HEADER.unpack_from(blob)
    at, entries = _HEADER.size, []
    for _ in range(count):
        (n_name,) = _NAME.unpack_from(blob, at)
        n = _ENTRY.unpack_from(blob, at + _NAME.size + n_name)[1]
        entries.append((blob[at:at + _NAME.size + n_name + _ENTRY.size], n))
        at += _NAME.size + n_name + _ENTRY.size
    d_len, u_len = sum(HELD + n for _, n in entries), sum(n for _, n in entries)
    if len(blob) != at + 8 * d_len + 4 * u_len:
        raise _BadState("lengths do not add up")
    old = _work(top, blob[at:at + 8 * d_len], blob[at + 8 * d_len:])
    by_name = {agg.entry[:-_ENTRY.size]: agg for agg in layout.aggs}
    d0 = u0 = 0
    for entry, n in entries:
        agg = by_name.get(entry[:-_ENTRY.size])
        if agg is not None and entry == agg.entry:  # same tiles: take it all
            work.d[agg.d0:agg.d0 + HELD + n] = old.d[d0:d0 + HELD + n]
            work.u[agg.u0:agg.u0 + n] = old.u[u0:u0 + n]
        elif agg is not None:  # other tiles: the cumulative stats only
            work.d[agg.d0:agg.d0 + HELD] = old.d[d0:d0 + HELD]
        d0, u0 = d0 + HELD + n, u0 + n
    work.top = top
    return work


def _swapped(values: array) -> array:
    out = array(values.typecode, values)
    out.byteswap()
    return out


_LAYOUTS: dict[int, tuple[FeatureSpec, Layout]] = {}


def layout_of(spec: FeatureSpec) -> Layout:
    """The spec's layout, worked out once per spec (the cache holds the spec, so its id holds)."""
    hit = _LAYOUTS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    if len(_LAYOUTS) >= 64:
        _LAYOUTS.clear()
    layout = Layout(spec)
    _LAYOUTS[id(spec)] = (spec, layout)
    return layout
