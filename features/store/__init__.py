"""The online feature store: entity states, scoring snapshots, dedupe claims, early labels.

- ``features.store.protocol``: ``FeatureStore`` (the contract), ``open_feature_store(url)``
  and the URL scheme -> backend mapping
- ``features.store.base``: what the backends share: key layout, join statuses,
  ``BatchRead``, the state codec, TTL checks
- ``features.store.memory`` (``memory://``) and ``features.store.redis`` (``redis://``,
  ``rediss://``, ``unix://``): the backends, held to one contract test suite

Backends are imported when a URL names them, so importing this package does not import
``redis``.
"""

from __future__ import annotations

from features.store.base import (
    DUPLICATE,
    EXPIRED,
    FLOODED,
    JOINED,
    MISSING,
    PARKED,
    REDELIVERED,
    BatchRead,
    State,
    encode_state,
)
from features.store.protocol import FeatureStore, open_feature_store

__all__ = [
    "DUPLICATE",
    "EXPIRED",
    "FLOODED",
    "JOINED",
    "MISSING",
    "PARKED",
    "REDELIVERED",
    "BatchRead",
    "FeatureStore",
    "State",
    "encode_state",
    "open_feature_store",
]
