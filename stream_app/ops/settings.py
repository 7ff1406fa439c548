"""The ``[health]`` and ``[quality]`` settings (composed into ``stream_app.settings.Settings``).

>>> QualitySettings().max_event_age_s, HealthSettings().stall_s
(300.0, 30.0)
>>> from pydantic import ValidationError
>>> try:
...     QualitySettings(max_missing_rate=2)
... except ValidationError as exc:
...     print(exc.errors()[0]["msg"])
Input should be less than or equal to 1
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HealthSettings", "QualitySettings"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HealthSettings(_Frozen):
    """``GET /readyz``: when a worker stops being ready."""

    #: records waiting and nothing consumed for this long: the consumer is stalled
    stall_s: float = Field(default=30.0, gt=0)
    #: each Redis the worker uses must answer a PING within this long
    redis_timeout_s: float = Field(default=1.0, gt=0, le=60)


class QualitySettings(_Frozen):
    """Data-quality monitors (``stream_app.ops.quality``), judged per window of events."""

    enabled: bool = True
    #: events per judgement: the missing-value and stale rates are of the last full window
    window: int = Field(default=1000, ge=10)
    #: a feature absent or null in more than this share of a window opens an episode
    max_missing_rate: float = Field(default=0.05, ge=0, le=1)
    #: an event whose event time is older than this (now - timestamp) is stale
    max_event_age_s: float = Field(default=300.0, gt=0)
    #: more than this share of stale events in a window opens a freshness episode
    max_stale_rate: float = Field(default=0.01, ge=0, lt=1)
    #: events of a batch looked at for missing values (a systematic sample; the rest of the
    #: monitors see every event)
    sample_per_batch: int = Field(default=64, ge=1)
    #: feature names first seen in this many first events are the baseline, not a change
    schema_warmup_events: int = Field(default=100, ge=0)
    #: distinct schema changes reported at most (each once); further ones are only counted
    max_schema_changes: int = Field(default=256, ge=1)
