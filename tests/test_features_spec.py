"""Compiling ``[features]`` settings: derived names, windows and config errors."""

from __future__ import annotations

import pytest

from features.spec import (
    MAX_TILES,
    SINCE_LAST,
    TILES_PER_WINDOW,
    FeatureSpec,
    RingSpec,
    compile_spec,
    parse_window,
)
from stream_app.errors import ConfigError
from stream_app.settings import AggregateSettings, FeatureSettings, load_settings


def spec_of(*aggregates: AggregateSettings, since_last: bool = False) -> FeatureSpec:
    return compile_spec(FeatureSettings(aggregates=aggregates, since_last=since_last))


def test_derived_names_in_declared_order() -> None:
    spec = spec_of(
        AggregateSettings(
            feature="amount",
            stats=("count", "sum", "mean", "min", "max", "last", "std"),
            windows=("10m", "1h"),
        ),
        AggregateSettings(feature="qty", stats=(), windows=("30s",), window_stats=("mean",)),
        since_last=True,
    )
    assert spec.names == (
        "amount_count_by_entity",
        "amount_sum_by_entity",
        "amount_mean_by_entity",
        "amount_min_by_entity",
        "amount_max_by_entity",
        "amount_last_by_entity",
        "amount_std_by_entity",
        "amount_count_by_entity_10m",
        "amount_sum_by_entity_10m",
        "amount_mean_by_entity_10m",
        "amount_count_by_entity_1h",
        "amount_sum_by_entity_1h",
        "amount_mean_by_entity_1h",
        "qty_mean_by_entity_30s",
        SINCE_LAST,
    )
    assert SINCE_LAST == "seconds_since_last_by_entity"
    assert [a.horizon_s for a in spec.aggregates] == [3600.0, 30.0]


def test_defaults_and_settings_fields_carry_over() -> None:
    spec = compile_spec(FeatureSettings(
        aggregates=(AggregateSettings(feature="amount"),), entity_ttl_s=60))
    assert spec.names == ("amount_count_by_entity", "amount_mean_by_entity")
    assert (spec.entity_ttl_s, spec.since_last) == (60, False)
    assert spec.aggregates[0].rings == ()
    assert compile_spec(FeatureSettings()).names == ()


def test_windows_default_to_30_tiles_each() -> None:
    agg = spec_of(AggregateSettings(feature="a", windows=("10m", "1h", "45s"))).aggregates[0]
    assert agg.rings == (RingSpec(20.0, TILES_PER_WINDOW), RingSpec(120.0, TILES_PER_WINDOW),
                         RingSpec(1.5, TILES_PER_WINDOW))
    assert [(w.tiles, w.ring) for w in agg.windows] == [(30, 0), (30, 1), (30, 2)]


def test_tile_s_puts_the_windows_on_one_ring_as_long_as_the_longest() -> None:
    agg = spec_of(AggregateSettings(feature="a", windows=("10m", "1h", "30m"),
                                    tile_s=60)).aggregates[0]
    assert agg.rings == (RingSpec(60.0, 60),)
    assert [(w.tiles, w.ring) for w in agg.windows] == [(10, 0), (60, 0), (30, 0)]
    assert spec_of(AggregateSettings(feature="a", windows=("1s",), tile_s=0.25)
                   ).aggregates[0].rings == (RingSpec(0.25, 4),)


@pytest.mark.parametrize(
    ("windows", "tile_s", "message"),
    [(("10m", "1h"), 7, "tile_s 7.0 does not divide window 10m"),
     (("30s",), 60, "tile_s 60.0 does not divide window 30s"),
     (("1d",), 1, f"window 1d is 86400 tiles of 1.0 s, more than {MAX_TILES}")],
)
def test_bad_tile_s_is_a_config_error(windows: tuple[str, ...], tile_s: float, message: str
                                      ) -> None:
    with pytest.raises(ConfigError, match=message):
        spec_of(AggregateSettings(feature="a", windows=windows, tile_s=tile_s))
    with pytest.raises(ConfigError, match="tile_s"):
        load_settings(environ={}, features={"aggregates": [{"feature": "a", "tile_s": 0}]})


def test_max_window_points_was_removed_with_a_clear_error() -> None:
    for features in ({"max_window_points": 5000}, {"max_window_points": 0}):
        with pytest.raises(ConfigError, match="max_window_points was removed: windows are "
                                              "now fixed time tiles"):
            load_settings(environ={}, features=features)
    with pytest.raises(ConfigError, match="max_window_points was removed"):
        load_settings(environ={"STREAM_FEATURES__MAX_WINDOW_POINTS": "10000"})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h", 3600), ("24h", 86_400), ("7d", 604_800), ("2w", 1_209_600)],
)
def test_parse_window(text: str, seconds: int) -> None:
    assert parse_window(text) == float(seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "0m", "1.5h", "10M", "-1h", "1y", " 1h", "1h "])
def test_bad_window_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="bad window"):
        spec_of(AggregateSettings(feature="amount", windows=(text,)))


@pytest.mark.parametrize(
    ("aggregate", "message"),
    [
        (AggregateSettings(feature="a", stats=("median",)), "unknown stat 'median'"),
        (AggregateSettings(feature="a", windows=("1h",), window_stats=("std",)), "unknown stat 'std'"),
        (AggregateSettings(feature="a", stats=("count", "count")), "stat repeated"),
        (AggregateSettings(feature="a", windows=("1h", "1h")), "window repeated"),
        (AggregateSettings(feature="a", stats=()), "no features to compute"),
        (AggregateSettings(feature="a", windows=("1h",), window_stats=()), "window_stats is empty"),
        (AggregateSettings(feature="", stats=("count",)), "feature name is empty"),
    ],
)
def test_config_errors(aggregate: AggregateSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec_of(aggregate)


def test_feature_declared_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="feature declared in two aggregates: 'a'"):
        spec_of(AggregateSettings(feature="a"), AggregateSettings(feature="a", stats=("max",)))


def test_equal_durations_with_different_labels_are_distinct_windows() -> None:
    spec = spec_of(AggregateSettings(feature="a", stats=(), windows=("60m", "1h")))
    assert spec.names[0] == "a_count_by_entity_60m" and "a_count_by_entity_1h" in spec.names


def test_from_loaded_settings() -> None:
    settings = load_settings(environ={}, features={
        "since_last": True,
        "aggregates": [{"feature": "amount", "stats": ["sum"], "windows": ["1h"]}],
    })
    assert compile_spec(settings.features).names == (
        "amount_sum_by_entity",
        "amount_count_by_entity_1h",
        "amount_sum_by_entity_1h",
        "amount_mean_by_entity_1h",
        SINCE_LAST,
    )


def test_settings_reject_non_positive_caps() -> None:
    with pytest.raises(ConfigError, match="max_window_points"):
        load_settings(environ={}, features={"max_window_points": 0})
    with pytest.raises(ConfigError, match="entity_ttl_s"):
        load_settings(environ={}, features={"entity_ttl_s": 0})
