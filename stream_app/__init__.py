"""Streaming real-time inference on Kafka: online features in Redis, River models that keep
learning, drift monitoring.

The flow, and where each step lives (``stream_app/pipeline/`` unless named)::

    Kafka ──> batching.py ──> validate ──> featurize ──> score ──> remember ──> emit ──> Kafka
              (one item per   validate.py  featurize.py  models/   features/    emit.py
               fetched batch)              + features/   spec.py   store        records.py
                                             aggregates             ▲
    labels ──> validate ──> join snapshot ──> learn (engine.py, labels.py, shadow.py) ──┘
                            drift.py: drift episodes and retrain signals, per event and label

Importing this package has no side effects; ``create_app(settings)`` builds the Faust app.
Tooling that is not the worker (datasets, replay, tail, operator commands, local services,
the demo) lives in :mod:`stream_app.tools`.
"""

from __future__ import annotations

from typing import Any

from stream_app.errors import ConfigError, ServiceError, StreamAppError

__version__ = "0.1.0"

__all__ = ["ConfigError", "ServiceError", "Settings", "StreamAppError", "__version__", "load_settings"]


def __getattr__(name: str) -> Any:
    """``Settings`` and ``load_settings`` load on first use: the domain packages (``models``,
    ``features``) import ``stream_app.errors``, and settings composes their schemas."""
    if name in ("Settings", "load_settings"):
        from stream_app import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'stream_app' has no attribute {name!r}")
