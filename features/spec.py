"""Compile the declared ``[features]`` settings into a :class:`FeatureSpec`.

Each declared aggregate over a numeric event feature yields

* cumulative stats over the entity's life, named ``{feature}_{stat}_by_entity``, chosen from
  :data:`CUMULATIVE_STATS`;
* for each window, windowed stats named ``{feature}_{stat}_by_entity_{window}``, chosen from
  :data:`WINDOW_STATS`;

plus ``seconds_since_last_by_entity`` when ``since_last`` is on. Windows are written
``<positive integer><unit>`` with unit ``s``, ``m``, ``h``, ``d`` or ``w``; the name keeps the
window exactly as written.

Each window is kept as fixed time tiles (see ``features.aggregates`` for what a window then
covers): :data:`TILES_PER_WINDOW` tiles of ``window / 30`` seconds each, or tiles of the
aggregate's ``tile_s``, which must divide every one of its windows. Windows of one aggregate
with the same tile size share one :class:`RingSpec`, as long as the longest of them.

>>> spec = compile_spec(FeatureSettings(
...     aggregates=(AggregateSettings(feature="amount", stats=("count", "mean"),
...                                   windows=("1h",), window_stats=("sum",)),),
...     since_last=True))
>>> spec.names
('amount_count_by_entity', 'amount_mean_by_entity', 'amount_sum_by_entity_1h', 'seconds_since_last_by_entity')
>>> spec.aggregates[0].horizon_s, spec.aggregates[0].rings
(3600.0, (RingSpec(tile_s=120.0, size=30),))
>>> compile_spec(FeatureSettings(aggregates=(AggregateSettings(feature="x", stats=("median",)),)))
Traceback (most recent call last):
...
stream_app.errors.ConfigError: features.aggregates[0] (x): unknown stat 'median'; choose from count, sum, mean, min, max, last, std
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stream_app.errors import ConfigError

__all__ = [
    "CUMULATIVE_STATS",
    "AggregateSettings",
    "FeatureSettings",
    "SINCE_LAST",
    "WINDOW_STATS",
    "AggregateSpec",
    "MAX_TILES",
    "TILES_PER_WINDOW",
    "FeatureSpec",
    "InputSettings",
    "RingSpec",
    "WindowSpec",
    "compile_spec",
    "parse_window",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AggregateSettings(_Frozen):
    """A per-entity aggregate over a numeric event feature (see ``features.spec``)."""

    feature: str
    #: cumulative stats over the entity's life: count, sum, mean, min, max, last, std
    stats: tuple[str, ...] = ("count", "mean")
    #: sliding windows ending at the event, e.g. "30s", "10m", "1h", "7d"
    windows: tuple[str, ...] = ()
    #: stats computed over each window: any of count, sum, mean
    window_stats: tuple[str, ...] = ("count", "sum", "mean")
    #: windows are kept as fixed time tiles of this many seconds (it must divide each window);
    #: default: each window in 30 tiles of window / 30
    tile_s: float | None = Field(default=None, gt=0)


class InputSettings(_Frozen):
    """One declared event feature: its type and, for a number, an optional range.

    >>> InputSettings(type="number", min=0, max=1e6).max
    1000000.0
    >>> InputSettings(type="string", min=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for InputSettings
      Value error, min and max apply to type = "number" only ...
    """

    #: ``number`` (JSON int or float), ``bool`` or ``string``; ``null`` is always allowed
    type: Literal["number", "bool", "string"] = "number"
    #: inclusive bounds of a number (either may be left out)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> InputSettings:
        if (self.min is not None or self.max is not None) and self.type != "number":
            raise ValueError('min and max apply to type = "number" only')
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class FeatureSettings(_Frozen):
    aggregates: tuple[AggregateSettings, ...] = ()
    #: add ``seconds_since_last_by_entity``
    since_last: bool = False
    #: idle entities expire from the online store after this many seconds
    entity_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    #: the declared event features (name -> type and range); see ``stream_app.pipeline.schema``
    inputs: dict[str, InputSettings] = Field(default_factory=dict)
    #: accept (and learn) feature names that ``inputs`` does not declare, up to
    #: ``max_feature_names``; off: an undeclared name is ``schema_drift``
    learn_undeclared: bool = True
    #: most undeclared feature names one worker learns; an event with another is ``schema_drift``
    max_feature_names: int = Field(default=256, ge=0)
    #: most distinct values of one string feature (one-hot columns) one worker learns; an event
    #: with another is ``cardinality`` (only while strings are one-hot encoded)
    max_categories: int = Field(default=100, ge=1)
    #: most model inputs one worker learns in all: undeclared numeric names plus one-hot
    #: columns (a new one past it is ``schema_drift`` for a name, ``cardinality`` for a value)
    max_inputs: int = Field(default=4096, ge=0)
    #: longest feature name, and longest string value a worker learns as a category (``schema``)
    max_name_chars: int = Field(default=128, ge=1)
    max_category_chars: int = Field(default=128, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "max_window_points" in data:
            raise ValueError(
                "max_window_points was removed: windows are now fixed time tiles, so an "
                "entity's state no longer grows with its events; delete the setting (tile "
                "sizes are set per aggregate with tile_s)")
        return data

#: cumulative stats, in the order of the per-stat values ``aggregates`` computes
CUMULATIVE_STATS: Final = ("count", "sum", "mean", "min", "max", "last", "std")
#: stats available over a sliding window
WINDOW_STATS: Final = ("count", "sum", "mean")
#: name of the optional recency feature
SINCE_LAST: Final = "seconds_since_last_by_entity"

#: tiles per window when the aggregate sets no ``tile_s``: edges exact to 1/30 of the window
TILES_PER_WINDOW: Final = 30
#: most tiles in one ring (with ``tile_s``): bounds each entity's state
MAX_TILES: Final = 1440

_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_WINDOW_RE: Final = re.compile(r"([1-9][0-9]*)([smhdw])")


@dataclass(frozen=True, slots=True)
class RingSpec:
    """Fixed time tiles of one size, kept for as many tiles as its longest window spans."""

    tile_s: float
    size: int


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One sliding window of one aggregate, with its output names (``None``: not requested)."""

    label: str
    seconds: float
    count_name: str | None
    sum_name: str | None
    mean_name: str | None
    #: the window's length in tiles, and its ring (an index into ``AggregateSpec.rings``)
    tiles: int
    ring: int


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """The compiled outputs of one aggregated feature."""

    feature: str
    #: ``(output name, index into CUMULATIVE_STATS)`` in declared order
    cumulative: tuple[tuple[str, int], ...]
    windows: tuple[WindowSpec, ...]
    #: the longest window in seconds (0.0 without windows)
    horizon_s: float
    names: tuple[str, ...]
    #: the tile rings the windows read, in order of first use (empty without windows)
    rings: tuple[RingSpec, ...]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """Everything the aggregate functions need, compiled once at start-up."""

    aggregates: tuple[AggregateSpec, ...]
    since_last: bool
    entity_ttl_s: int
    #: every output feature name, in a stable order
    names: tuple[str, ...]


def parse_window(text: str) -> float:
    """Seconds in a window written like ``30s``, ``10m``, ``1h``, ``24h``, ``7d`` or ``2w``.

    >>> parse_window("10m"), parse_window("7d")
    (600.0, 604800.0)
    >>> parse_window("1.5h")
    Traceback (most recent call last):
    ...
    stream_app.errors.ConfigError: bad window '1.5h': write <positive integer><unit>, unit one of s, m, h, d, w (e.g. 30s, 10m, 1h, 7d)
    """
    match = _WINDOW_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            f"bad window {text!r}: write <positive integer><unit>, unit one of "
            f"{', '.join(_UNIT_SECONDS)} (e.g. 30s, 10m, 1h, 7d)"
        )
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def compile_spec(settings: FeatureSettings) -> FeatureSpec:
    """Validate the declared aggregates and derive every output name.

    Raises :class:`~stream_app.errors.ConfigError` for an unknown stat, a bad or repeated
    window, a ``tile_s`` that does not divide a window (or gives more than :data:`MAX_TILES`
    tiles), a feature declared twice or an aggregate with no outputs.
    """
    aggregates = tuple(_compile_aggregate(i, a) for i, a in enumerate(settings.aggregates))
    _check_unique((a.feature for a in aggregates), "feature declared in two aggregates")
    names = [name for agg in aggregates for name in agg.names]
    if settings.since_last:
        names.append(SINCE_LAST)
    _check_unique(names, "two aggregates produce the same feature name")
    return FeatureSpec(
        aggregates=aggregates,
        since_last=settings.since_last,
        entity_ttl_s=settings.entity_ttl_s,
        names=tuple(names),
    )


def _compile_aggregate(index: int, agg: AggregateSettings) -> AggregateSpec:
    where = f"features.aggregates[{index}] ({agg.feature})"
    if not agg.feature:
        raise ConfigError(f"features.aggregates[{index}]: feature name is empty")
    _check_stats(where, agg.stats, CUMULATIVE_STATS)
    _check_stats(where, agg.window_stats, WINDOW_STATS)
    _check_unique(agg.windows, f"{where}: window repeated")
    if agg.windows and not agg.window_stats:
        raise ConfigError(f"{where}: windows declared but window_stats is empty")
    cumulative = tuple(
        (f"{agg.feature}_{stat}_by_entity", CUMULATIVE_STATS.index(stat)) for stat in agg.stats
    )
    sizes: dict[float, int] = {}  # tile size -> longest window in tiles: the rings
    windows = tuple(_window(where, agg, label, sizes) for label in agg.windows)
    rings = tuple(RingSpec(tile, size) for tile, size in sizes.items())
    names = tuple(name for name, _ in cumulative) + tuple(
        name
        for w in windows
        for name in (w.count_name, w.sum_name, w.mean_name)
        if name is not None
    )
    if not names:
        raise ConfigError(f"{where}: no stats and no windows, so no features to compute")
    horizon = max((w.seconds for w in windows), default=0.0)
    return AggregateSpec(agg.feature, cumulative, windows, horizon, names, rings)


def _window(where: str, agg: AggregateSettings, label: str, sizes: dict[float, int]
            ) -> WindowSpec:
    """One window, its tiles, and its ring in ``sizes`` (windows of one tile size share one)."""
    seconds = parse_window(label)
    tile_s = agg.tile_s
    tiles = TILES_PER_WINDOW if tile_s is None else round(seconds / tile_s)
    tile = seconds / tiles if tile_s is None else float(tile_s)
    if tiles < 1 or not math.isclose(tiles * tile, seconds, rel_tol=1e-9):
        raise ConfigError(f"{where}: tile_s {tile_s} does not divide window {label}")
    if tiles > MAX_TILES:
        raise ConfigError(f"{where}: window {label} is {tiles} tiles of {tile_s} s, more than "
                          f"{MAX_TILES}: choose a larger tile_s")
    sizes[tile] = max(sizes.get(tile, 0), tiles)

    def name(stat: str) -> str | None:
        return f"{agg.feature}_{stat}_by_entity_{label}" if stat in agg.window_stats else None

    return WindowSpec(label, seconds, name("count"), name("sum"), name("mean"), tiles,
                      list(sizes).index(tile))


def _check_stats(where: str, stats: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    for stat in stats:
        if stat not in allowed:
            raise ConfigError(f"{where}: unknown stat {stat!r}; choose from {', '.join(allowed)}")
    _check_unique(stats, f"{where}: stat repeated")


def _check_unique(items: Iterable[str], message: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ConfigError(f"{message}: {item!r}")
        seen.add(item)
