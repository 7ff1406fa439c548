"""Pins the public contract: topic names and message fields (extend, never change)."""

from __future__ import annotations

import base64

import orjson
import pytest

from stream_app import contract
from stream_app.settings import load_settings


def test_topic_names_are_pinned() -> None:
    assert contract.TOPICS == (
        "events", "labels", "predictions", "drift", "retrain-signals", "dead-letters", "metrics",
        "predictions-shadow", "models", "feature-log")
    assert contract.SINGLE_PARTITION == ("labels", "models")


def test_topics_take_the_prefix() -> None:
    s = load_settings(environ={"STREAM_TOPIC_PREFIX": "acme."})
    assert [s.topic(t) for t in contract.TOPICS] == [
        "acme.events", "acme.labels", "acme.predictions", "acme.drift",
        "acme.retrain-signals", "acme.dead-letters", "acme.metrics",
        "acme.predictions-shadow", "acme.models", "acme.feature-log"]


def test_message_fields_are_pinned() -> None:
    assert contract.EVENT_FIELDS == ("event_id", "entity_id", "timestamp", "features")
    assert contract.LABEL_FIELDS == ("event_id", "label", "timestamp")
    assert contract.PREDICTION_FIELDS == (
        "event_id", "entity_id", "model", "model_version", "score", "predicted",
        "event_timestamp", "scored_at", "latency_ms", "model_snapshot")
    assert contract.MODEL_FIELDS == ("model", "version", "from_stage", "to_stage", "reason", "at")
    assert contract.DEAD_LETTER_FIELDS == (
        "source_topic", "partition", "offset", "reason", "error", "payload")
    assert set(contract.DEAD_LETTER_REASONS) >= {
        "invalid_json", "schema", "non_finite", "out_of_range", "too_large"}


def test_prediction_record_has_exactly_the_contract_fields() -> None:
    rec = orjson.loads(contract.prediction(
        event_id="e", entity_id="a", model="m", model_version="1", score=0.9, predicted=True,
        event_timestamp=1.0, scored_at=2.0, latency_ms=0.5))
    assert tuple(rec) == contract.PREDICTION_FIELDS
    assert rec["predicted"] is True and rec["score"] == 0.9
    assert rec["model_snapshot"] == 0  # no snapshot yet


def test_model_change_record_has_exactly_the_contract_fields() -> None:
    rec = orjson.loads(contract.model_change(model="m", version="1", from_stage=None,
                                             to_stage="production", reason="first", at="t"))
    assert tuple(rec) == contract.MODEL_FIELDS and rec["from_stage"] is None


def test_dead_letter_keeps_utf8_payload_as_text() -> None:
    rec = orjson.loads(contract.dead_letter(b'{"a": ', "events", 3, 17, "invalid_json", "eof"))
    assert tuple(rec) == contract.DEAD_LETTER_FIELDS
    assert rec == {"source_topic": "events", "partition": 3, "offset": 17,
                   "reason": "invalid_json", "error": "eof", "payload": '{"a": '}


def test_dead_letter_base64_for_binary_payload() -> None:
    raw = bytes(range(256))
    rec = orjson.loads(contract.dead_letter(raw, "events", 0, 1, "invalid_json", "binary"))
    assert rec["payload_encoding"] == "base64"
    assert base64.b64decode(rec["payload"]) == raw


def test_dead_letter_rejects_unknown_reason() -> None:
    with pytest.raises(ValueError, match="unknown dead-letter reason"):
        contract.dead_letter(b"x", "events", 0, 0, "whatever", "")


def test_drift_and_retrain_fields_are_pinned() -> None:
    assert contract.DRIFT_FIELDS == (
        "drift_id", "kind", "subject", "test", "statistic", "p_value", "adjusted_p_value",
        "alpha", "drift", "reference", "current", "model", "model_version", "detected_at")
    assert contract.DRIFT_KINDS == ("feature", "prediction", "performance")
    assert contract.RETRAIN_FIELDS == (
        "signal_id", "model", "model_version", "reason", "evidence", "emitted_at")
    assert contract.RETRAIN_REASONS == (
        "feature_drift", "prediction_drift", "performance_drift", "manual")
    with pytest.raises(ValueError, match="unknown retrain reason"):
        contract.retrain_signal(signal_id="s", model="m", model_version="1", reason="whim",
                                evidence=[], emitted_at=0.0)
