"""Typed records: what the pipeline consumes and what it emits, serialised once, at emit.

A consumed :class:`Record` is a Kafka record reduced to what the flow needs. The stages return
typed outputs (:class:`Prediction`, :class:`FeatureLog`, :class:`LabelLog`, :class:`DeadLetter`,
:class:`RetrainSignal`, :class:`LabelBack`) that other stages can read without parsing bytes;
:func:`encode` turns them into ``(topic, key, value)`` for the producer, with the wire format
of ``stream_app.contract``. Records that are bytes already (a ``models`` stage change, a drift
episode) travel as :data:`Out`.

>>> p = Prediction("predictions", "e1", "alice", "m", "1", 0.75, True, 10.0, 11.0, 2.5, 0)
>>> topic, key, value = encode([p])[0]
>>> topic, key, orjson.loads(value)["score"]
('predictions', b'e1', 0.75)
>>> f = FeatureLog("feature-log", "e1", "alice", "m", 10.0, b'{"x":{"a":1.0},"s":0.75}')
>>> orjson.loads(encode([f])[0][2])["snapshot"]["x"]
{'a': 1.0}
>>> d = DeadLetter.of("dead-letters", Record("events", 2, 41, b"k", b"{oops", 0.0),
...                   "invalid_json", "bad")
>>> orjson.loads(encode([d])[0][2])["offset"], d.reason
(41, 'invalid_json')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from stream_app import contract

__all__ = ["DeadLetter", "FeatureLog", "LabelBack", "LabelLog", "Out", "Output", "Prediction",
           "Record", "RetrainSignal", "by_partition", "encode"]

#: (topic, key, value) ready for the producer
Out = tuple[str, bytes | None, bytes]


@dataclass(slots=True)
class Record:
    """One consumed Kafka record, reduced to what the flow needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # Kafka record timestamp, epoch seconds


@dataclass(slots=True)
class Prediction:
    """A ``predictions`` (or ``predictions-shadow``) record; fields as ``contract.prediction``."""

    topic: str
    event_id: str
    entity_id: str
    model: str
    model_version: str
    score: float
    predicted: bool
    event_timestamp: float
    scored_at: float
    latency_ms: float
    model_snapshot: int
    #: the input partition of the event it answers (-1: none, e.g. HTTP); never emitted. Under
    #: exactly once it says which partition's transaction carries it (:func:`by_partition`)
    source: int = -1

    def encode(self) -> Out:
        return (self.topic, self.event_id.encode(), orjson.dumps({
            "event_id": self.event_id, "entity_id": self.entity_id, "model": self.model,
            "model_version": self.model_version, "score": self.score,
            "predicted": self.predicted, "event_timestamp": self.event_timestamp,
            "scored_at": self.scored_at, "latency_ms": self.latency_ms,
            "model_snapshot": self.model_snapshot}))


@dataclass(slots=True)
class FeatureLog:
    """A ``feature-log`` record of kind ``features``: one scored event, for the offline store.

    ``snapshot`` is the very bytes stored for the learner (``{"x", "s", "v", "t", "l", "n"}``:
    the feature vector as scored, score, model version, scored at, latency, registry
    snapshot), spliced in as they are: logging an event costs one small dump, not a second
    serialisation of its vector.
    """

    topic: str
    event_id: str
    entity_id: str
    model: str
    event_timestamp: float
    snapshot: bytes
    #: the input partition of the event (as :attr:`Prediction.source`); never emitted
    source: int = -1

    def encode(self) -> Out:
        head = orjson.dumps({"kind": "features", "event_id": self.event_id,
                             "entity_id": self.entity_id, "model": self.model,
                             "event_timestamp": self.event_timestamp})
        return (self.topic, self.event_id.encode(),
                b"".join((head[:-1], b',"snapshot":', self.snapshot, b"}")))


@dataclass(slots=True)
class LabelLog:
    """A ``feature-log`` record of kind ``label``: a label the learner joined to its event."""

    topic: str
    event_id: str
    model: str
    model_version: str
    label: bool | int | str
    y: bool
    label_timestamp: float
    joined_at: float

    def encode(self) -> Out:
        return (self.topic, self.event_id.encode(), orjson.dumps({
            "kind": "label", "event_id": self.event_id, "model": self.model,
            "model_version": self.model_version, "label": self.label, "y": self.y,
            "label_timestamp": self.label_timestamp, "joined_at": self.joined_at}))


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be handled, with why and where it came from."""

    topic: str
    key: bytes | None
    payload: bytes
    source_topic: str
    partition: int
    offset: int
    reason: str
    error: str

    @classmethod
    def of(cls, topic: str, rec: Record, reason: str, error: str) -> DeadLetter:
        """The dead letter of ``rec``; a ``too_large`` payload keeps its first 4 KiB."""
        payload = rec.value or b""
        if reason == "too_large":
            payload = payload[:4096]
        return cls(topic, rec.key, payload, rec.topic, rec.partition, rec.offset, reason, error)

    def encode(self) -> Out:
        return (self.topic, self.key, contract.dead_letter(
            self.payload, self.source_topic, self.partition, self.offset, self.reason,
            self.error))


@dataclass(slots=True)
class RetrainSignal:
    """A ``retrain-signals`` record; the learner acts on its own at once, before Kafka has it."""

    topic: str
    signal_id: str
    model: str
    model_version: str
    reason: str
    emitted_at: float
    evidence: list[str] = field(default_factory=list)

    def encode(self) -> Out:
        return (self.topic, self.model.encode(), contract.retrain_signal(
            signal_id=self.signal_id, model=self.model, model_version=self.model_version,
            reason=self.reason, evidence=list(self.evidence), emitted_at=self.emitted_at))


@dataclass(slots=True)
class LabelBack:
    """A label that came before its event, sent back to the labels topic (as it came) once
    the event is scored, so that every learn comes from a label record with an offset.

    Never part of a batch's transaction: its commit marker would be a gap in the labels
    topic's offsets, which the label ledger counts consumed records by.
    """

    topic: str
    event_id: str
    value: bytes

    def encode(self) -> Out:
        return (self.topic, self.event_id.encode(), self.value)


#: what a stage emits: a typed record, or one that is bytes already
Output = Prediction | FeatureLog | LabelLog | DeadLetter | RetrainSignal | LabelBack | Out


def encode(outputs: Iterable[Output]) -> list[Out]:
    """Serialise for the producer (tuples are bytes already)."""
    return [o if type(o) is tuple else o.encode() for o in outputs]  # type: ignore[union-attr]


def by_partition(outputs: Iterable[Output], partitions: Sequence[int]) -> dict[int, list[Output]]:
    """The outputs of a batch of several input partitions, apart per partition, each in order.

    An event's prediction, feature log and dead letter go with its own partition (each goes in
    that partition's transaction, with its offset); what the batch made as a whole (drift,
    quality and lifecycle records) goes with the first partition.

    >>> p = Prediction("predictions", "e1", "a", "m", "1", 0.9, True, 1.0, 2.0, 0.5, 0, source=3)
    >>> d = DeadLetter("dead-letters", None, b"{", "events", 1, 7, "bad_json", "x")
    >>> {k: [type(o).__name__ for o in v] for k, v in by_partition([p, d, ("drift", None, b"")],
    ...                                                            [1, 3]).items()}
    {1: ['DeadLetter', 'tuple'], 3: ['Prediction']}
    """
    first = partitions[0]
    groups: dict[int, list[Output]] = {p: [] for p in partitions}
    for o in outputs:
        t = type(o)
        if t is Prediction or t is FeatureLog:
            part = o.source  # type: ignore[union-attr]
        elif t is DeadLetter:
            part = o.partition  # type: ignore[union-attr]
        else:
            part = first
        group = groups.get(part)
        if group is None:  # not from this batch's records (an HTTP prediction): not possible
            raise ValueError(f"{t.__name__} from partition {part}, not in the batch's {partitions}")
        group.append(o)
    return groups
