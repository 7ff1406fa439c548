"""Online features: per-entity aggregates and the store that keeps them between events.

::

    spec.py          FeatureSettings -> FeatureSpec (derived names, windows)   pure
    aggregates.py    compute / update / fold_events over a per-entity state   pure
    state.py         the state as bytes: versioned, one size per spec         pure
    store/           the online store, laid out like models/registry/:
      protocol.py    FeatureStore protocol, open_feature_store(url), scheme -> backend
      base.py        key layout, statuses, BatchRead, state codec, TTL checks
      memory.py      MemoryFeatureStore   (memory://)
      redis.py       RedisFeatureStore    (redis://, rediss://, unix://)

Backends are imported on demand, so importing this package does not import ``redis``.
"""

from __future__ import annotations

from features.aggregates import STATE_VERSION, State, compute, fold_events, update
from features.spec import (
    CUMULATIVE_STATS,
    SINCE_LAST,
    WINDOW_STATS,
    AggregateSpec,
    FeatureSpec,
    WindowSpec,
    compile_spec,
    parse_window,
)
from features.store import BatchRead, FeatureStore, open_feature_store

__all__ = [
    "CUMULATIVE_STATS",
    "SINCE_LAST",
    "STATE_VERSION",
    "WINDOW_STATS",
    "AggregateSpec",
    "BatchRead",
    "FeatureSpec",
    "FeatureStore",
    "State",
    "WindowSpec",
    "compile_spec",
    "compute",
    "fold_events",
    "open_feature_store",
    "parse_window",
    "update",
]
