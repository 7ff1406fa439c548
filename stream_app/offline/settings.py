"""The offline half's settings schema (TOML ``[offline]``, ``STREAM_OFFLINE__*``); the store's
URL is ``STREAM_OFFLINE_URL`` beside it, as the registry's is ``STREAM_REGISTRY_URL``.

>>> s = OfflineSettings()
>>> s.enabled, s.sink_batch_max, s.sink_flush_s
(True, 50000, 5.0)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OfflineSettings"]


class OfflineSettings(BaseModel):
    """The feature log and its sink."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the worker writes every scored event's feature vector (and every joined label) to the
    #: ``feature-log`` topic, in the same emit step (and transaction) as its prediction
    enabled: bool = True
    #: the sink writes a file once it holds this many records ...
    sink_batch_max: int = Field(default=50_000, ge=1)
    #: ... or once its oldest record waited this long
    sink_flush_s: float = Field(default=5.0, gt=0)
    #: the time-based holdout when ``train`` is not given ``--holdout-from``: the last part of
    #: the data set, by event time
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
