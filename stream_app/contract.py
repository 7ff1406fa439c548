"""The public contract: topic names and the fields of every message.

Names may be extended, never changed; ``tests/test_contract.py`` pins them. Every message is a
UTF-8 JSON object. Builders here are pure and return ``bytes`` ready for Kafka.

>>> TOPICS  # doctest: +NORMALIZE_WHITESPACE
('events', 'labels', 'predictions', 'drift', 'retrain-signals', 'dead-letters', 'metrics',
 'predictions-shadow', 'models', 'feature-log')
>>> sorted(orjson.loads(dead_letter(b"{oops", "events", 2, 41, "invalid_json", "bad")))
['error', 'offset', 'partition', 'payload', 'reason', 'source_topic']
>>> orjson.loads(dead_letter(b"\\xff\\xfe", "events", 0, 7, "invalid_json", "not utf-8"))["payload"]
'//4='
"""

from __future__ import annotations

import base64
from typing import Any, Final

import orjson

__all__ = [
    "DEAD_LETTER_FIELDS",
    "DEAD_LETTER_REASONS",
    "DRIFT_FIELDS",
    "QUALITY_FIELDS",
    "QUALITY_KINDS",
    "RETRAIN_FIELDS",
    "EVENT_FIELDS",
    "FEATURE_LOG_FIELDS",
    "LABEL_LOG_FIELDS",
    "LABEL_FIELDS",
    "PREDICTION_FIELDS",
    "MODEL_FIELDS",
    "SINGLE_PARTITION",
    "TOPICS",
    "dead_letter",
    "model_change",
    "prediction",
]

EVENTS: Final = "events"
LABELS: Final = "labels"
PREDICTIONS: Final = "predictions"
DRIFT: Final = "drift"
RETRAIN_SIGNALS: Final = "retrain-signals"
DEAD_LETTERS: Final = "dead-letters"
METRICS: Final = "metrics"
PREDICTIONS_SHADOW: Final = "predictions-shadow"
MODELS: Final = "models"
FEATURE_LOG: Final = "feature-log"

#: every topic the engine creates on start, before the prefix
TOPICS: Final = (EVENTS, LABELS, PREDICTIONS, DRIFT, RETRAIN_SIGNALS, DEAD_LETTERS, METRICS,
                 PREDICTIONS_SHADOW, MODELS, FEATURE_LOG)
#: topics with one partition whatever ``partitions`` says: labels, so that exactly one worker
#: (the one holding it) learns; ``models``, so that stage changes stay in order
SINGLE_PARTITION: Final = (LABELS, MODELS)

#: ``events`` (key: ``entity_id``)
EVENT_FIELDS: Final = ("event_id", "entity_id", "timestamp", "features")
#: ``labels`` (key: ``event_id``)
LABEL_FIELDS: Final = ("event_id", "label", "timestamp")
#: ``predictions`` (key: ``event_id``)
PREDICTION_FIELDS: Final = (
    "event_id",
    "entity_id",
    "model",
    "model_version",
    "score",
    "predicted",
    "event_timestamp",
    "scored_at",
    "latency_ms",
    "model_snapshot",
)
#: ``predictions-shadow`` (key: ``event_id``): a challenger's predictions, same fields
#: ``models`` (key: model): one record per stage change of a model version
MODEL_FIELDS: Final = ("model", "version", "from_stage", "to_stage", "reason", "at")
#: ``feature-log`` (key: ``event_id``): what the offline store keeps (``stream_app.offline``).
#: ``kind`` is ``features`` (a scored event: its ``snapshot`` is the exact feature vector,
#: score and model version stored for the learner, ``{"x", "s", "v", "t", "l", "n"}``) or
#: ``label`` (a label joined to that event by the learner)
FEATURE_LOG_FIELDS: Final = ("kind", "event_id", "entity_id", "model", "event_timestamp",
                             "snapshot")
LABEL_LOG_FIELDS: Final = ("kind", "event_id", "model", "model_version", "label", "y",
                           "label_timestamp", "joined_at")
#: ``dead-letters`` (key: the source record's key); ``payload_encoding`` only when base64
DEAD_LETTER_FIELDS: Final = ("source_topic", "partition", "offset", "reason", "error", "payload")

#: ``drift`` (key: subject): one record when an episode opens (``drift: true``) or closes
#: (``drift: false``); ``record`` tells these ``episode`` records from the periodic ``summary``
DRIFT_FIELDS: Final = (
    "drift_id", "kind", "subject", "test", "statistic", "p_value", "adjusted_p_value", "alpha",
    "drift", "reference", "current", "model", "model_version", "detected_at",
)
#: ``kind`` of a drift record
DRIFT_KINDS: Final = ("feature", "prediction", "performance")
#: ``drift`` records with ``"record": "quality"`` (key: subject), from ``stream_app.ops.quality``:
#: an episode opens (``drift: true``) and closes (``drift: false``), a schema change is one
#: record (``change``: new, retyped, vanished, returned)
QUALITY_FIELDS: Final = ("record", "kind", "subject", "drift", "drift_id", "model",
                         "detected_at", "scope")
QUALITY_KINDS: Final = ("missing_rate", "freshness", "schema_change")
#: ``retrain-signals`` (key: model)
RETRAIN_FIELDS: Final = ("signal_id", "model", "model_version", "reason", "evidence", "emitted_at")
RETRAIN_REASONS: Final = ("feature_drift", "prediction_drift", "performance_drift", "manual")

#: the fixed vocabulary of ``reason`` in dead-letter records
DEAD_LETTER_REASONS: Final = (
    "invalid_json",
    "schema",
    "non_finite",
    "out_of_range",
    "too_large",
    "model_output",
    "processing_error",
    #: an event past the input schema (``stream_app.pipeline.schema``): a feature name not
    #: declared or beyond ``features.max_feature_names``, or a type other than the declared
    #: (or first seen) one
    "schema_drift",
    #: an event with a new value of a string feature that has ``features.max_categories``
    "cardinality",
    #: a label for an event not scored yet, when ``labels.max_parked`` labels (or
    #: ``labels.max_parked_bytes``) are parked already
    "label_flood",
    #: a parked label whose event was not scored within ``labels.park_ttl_s`` (it never came,
    #: or its scored features were lost with the store's state)
    "label_orphaned",
)


def prediction(
    *,
    event_id: str,
    entity_id: str,
    model: str,
    model_version: str,
    score: float,
    predicted: bool,
    event_timestamp: float,
    scored_at: float,
    latency_ms: float,
    model_snapshot: int = 0,
    **extra: Any,
) -> bytes:
    """A ``predictions`` (or ``predictions-shadow``) record.

    ``model_snapshot`` is the registry snapshot the serving model descends from (0: none yet).

    >>> orjson.loads(prediction(event_id="e1", entity_id="a", model="m", model_version="1",
    ...     score=0.25, predicted=False, event_timestamp=1.0, scored_at=2.0, latency_ms=3.0,
    ...     model_snapshot=7))  # doctest: +NORMALIZE_WHITESPACE
    {'event_id': 'e1', 'entity_id': 'a', 'model': 'm', 'model_version': '1', 'score': 0.25,
     'predicted': False, 'event_timestamp': 1.0, 'scored_at': 2.0, 'latency_ms': 3.0,
     'model_snapshot': 7}
    """
    record = {
        "event_id": event_id,
        "entity_id": entity_id,
        "model": model,
        "model_version": model_version,
        "score": score,
        "predicted": predicted,
        "event_timestamp": event_timestamp,
        "scored_at": scored_at,
        "latency_ms": latency_ms,
        "model_snapshot": model_snapshot,
    }
    record.update(extra)
    return orjson.dumps(record)


#: the largest ``dead-letters`` record: a longer payload keeps its head (see ``dead_letter``)
MAX_DEAD_LETTER_BYTES: Final = 256 * 1024


def dead_letter(
    payload: bytes | None,
    source_topic: str,
    partition: int | None,
    offset: int | None,
    reason: str,
    error: str,
) -> bytes:
    """A ``dead-letters`` record carrying the original bytes (as text, or base64 if not UTF-8).

    A record longer than :data:`MAX_DEAD_LETTER_BYTES` keeps the head of its payload and
    ``payload_truncated_from``, the original length in bytes: the broker refuses records over
    about 1 MB, and a dead letter that can never be sent would stall its partition for ever.

    >>> big = orjson.loads(dead_letter(b"{" * 2_000_000, "events", 0, 9, "invalid_json", "eof"))
    >>> big["payload_truncated_from"], len(big["payload"]) <= MAX_DEAD_LETTER_BYTES
    (2000000, True)
    """
    if reason not in DEAD_LETTER_REASONS:
        raise ValueError(f"unknown dead-letter reason {reason!r}")
    record: dict[str, Any] = {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "error": error,
    }
    raw = payload or b""
    while True:
        try:
            record["payload"] = raw.decode("utf-8")
            record.pop("payload_encoding", None)
        except UnicodeDecodeError:
            record["payload"] = base64.b64encode(raw).decode("ascii")
            record["payload_encoding"] = "base64"
        out = orjson.dumps(record)
        if len(out) <= MAX_DEAD_LETTER_BYTES:
            return out
        # a record the broker would refuse would be retried for ever and stall its partition:
        # keep the head of the payload (cut at a byte, so text may turn base64) and say so
        record["payload_truncated_from"] = len(payload or b"")
        raw = raw[:len(raw) // 2]


def retrain_signal(*, signal_id: str, model: str, model_version: str, reason: str,
                   evidence: list[Any], emitted_at: float) -> bytes:
    """A ``retrain-signals`` record.

    >>> sorted(orjson.loads(retrain_signal(signal_id="s", model="m", model_version="1",
    ...     reason="manual", evidence=[], emitted_at=1.0))) == sorted(RETRAIN_FIELDS)
    True
    """
    if reason not in RETRAIN_REASONS:
        raise ValueError(f"unknown retrain reason {reason!r}")
    return orjson.dumps({"signal_id": signal_id, "model": model, "model_version": model_version,
                         "reason": reason, "evidence": evidence, "emitted_at": emitted_at})


def model_change(*, model: str, version: str, from_stage: str | None, to_stage: str,
                 reason: str, at: str) -> bytes:
    """A ``models`` record: one stage change of one model version.

    >>> orjson.loads(model_change(model="m", version="2", from_stage="staging",
    ...     to_stage="production", reason="challenger won", at="2026-01-01T00:00:00+00:00"))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'model': 'm', 'version': '2', 'from_stage': 'staging', 'to_stage': 'production',
     'reason': 'challenger won', 'at': '2026-01-01T00:00:00+00:00'}
    """
    return orjson.dumps({"model": model, "version": version, "from_stage": from_stage,
                         "to_stage": to_stage, "reason": reason, "at": at})
