"""Featurize: each event's model input, from its own features and its entity's aggregates.

Point in time: the aggregates are the entity's as they stood *before* the event (events of one
entity are folded in arrival order, ``features.aggregates.fold_events``), so a model never sees
the event it scores, nor anything after it. Pure: the caller reads the states from the store
before and writes the moved-forward states after.

>>> from features.spec import compile_spec
>>> from stream_app.settings import AggregateSettings, FeatureSettings
>>> spec = compile_spec(FeatureSettings(aggregates=(
...     AggregateSettings(feature="amount", stats=("count", "mean"), windows=()),)))
>>> f = Featurizer(spec, one_hot=True)
>>> states = {}
>>> rows = f.inputs([("alice", 1.0, {"amount": 10, "channel": "web"}),
...                  ("alice", 2.0, {"amount": 30, "channel": "app"})], states)
>>> rows[1]  # doctest: +NORMALIZE_WHITESPACE
{'amount': 30.0, 'channel=app': 1.0, 'amount_count_by_entity': 1.0,
 'amount_mean_by_entity': 10.0}
>>> sorted(states)
['alice']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from features.aggregates import fold_events
from features.spec import FeatureSpec
from models.spec import one_hot as one_hot_encode

__all__ = ["Featurizer", "numeric"]


def numeric(features: Mapping[str, Any]) -> dict[str, float]:
    """The numeric features only (``bool`` is not numeric), as floats."""
    return {k: float(v) for k, v in features.items() if type(v) in (int, float)}


class Featurizer:
    """Model inputs for a batch: event features (one-hot strings or numbers only) + aggregates."""

    def __init__(self, spec: FeatureSpec, *, one_hot: bool) -> None:
        self.spec = spec
        self._encode = one_hot_encode if one_hot else numeric

    @property
    def has_aggregates(self) -> bool:
        return bool(self.spec.names)

    def inputs(self, events: Sequence[tuple[str, float, Mapping[str, Any]]],
               states: dict[str, Any]) -> list[dict[str, float]]:
        """``(entity_id, timestamp, features)`` per event -> its model input, in order.

        ``states`` (entity id -> stored state, absent for a new entity) moves forward in place.
        """
        rows = [self._encode(features) for _, _, features in events]
        if not self.spec.names:
            return rows
        by_entity: dict[str, list[int]] = {}
        for i, (entity, _, _) in enumerate(events):
            by_entity.setdefault(entity, []).append(i)
        for entity, idx in by_entity.items():
            got, states[entity] = fold_events(
                self.spec, states.get(entity), [(events[i][1], events[i][2]) for i in idx],
                reuse_state=True)
            for i, aggregates in zip(idx, got, strict=True):
                rows[i].update(aggregates)
        return rows

