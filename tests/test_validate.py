"""Every kind of bad input becomes a rejection with a reason from the fixed vocabulary."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.contract import DEAD_LETTER_REASONS
from stream_app.validate import Event, Limits, Rejection, parse_event, parse_label

LIMITS = Limits(max_payload_bytes=4096, max_abs_value=1e12)


def ev(**over: object) -> bytes:
    base: dict[str, object] = {"event_id": "e1", "entity_id": "a", "timestamp": 1700000000.5,
                               "features": {"amount": 12.5, "country": "FR", "new": True, "x": None}}
    base.update(over)
    return json.dumps(base).encode()


def test_valid_event() -> None:
    got = parse_event(ev(), LIMITS)
    assert isinstance(got, Event)
    assert got.features == {"amount": 12.5, "country": "FR", "new": True, "x": None}


@pytest.mark.parametrize("raw, reason, fragment", [
    (b"{not json", "invalid_json", ""),
    (b"", "invalid_json", ""),
    (b"\xff\xfe\x00", "invalid_json", ""),
    (b"[1, 2]", "schema", "JSON object"),
    (ev(event_id=5), "schema", "event_id"),
    (ev(entity_id=""), "schema", "entity_id"),
    (ev(timestamp="yesterday"), "schema", "timestamp"),
    (ev(features=[1, 2]), "schema", "features"),
    (ev(features={"a": {"nested": 1}}), "schema", "features.a"),
    (ev(features={"a": 1e13}), "out_of_range", "features.a"),
    (ev(features={"a": -1e13}), "out_of_range", "features.a"),
    (ev(timestamp=1e15), "out_of_range", "timestamp"),
    (ev(timestamp=-1), "out_of_range", "timestamp"),
    (b'{"event_id":"e","entity_id":"a","timestamp":1,"features":{"a":NaN}}', "non_finite", "features.a"),
    (b'{"event_id":"e","entity_id":"a","timestamp":1,"features":{"a":-Infinity}}', "non_finite", "features.a"),
    (b'{"event_id":"e","entity_id":"a","timestamp":1,"features":{"a":1e999}}', "non_finite", "features.a"),
    (b'{"event_id":"e","entity_id":"a","timestamp":NaN,"features":{}}', "non_finite", "timestamp"),
    (ev(features={"pad": "x" * 5000}), "too_large", "exceeds 4096"),
])
def test_each_bad_input_gets_its_reason(raw: bytes, reason: str, fragment: str) -> None:
    got = parse_event(raw, LIMITS)
    assert isinstance(got, Rejection), got
    assert got.reason == reason
    assert fragment in got.error


def test_missing_fields_are_named() -> None:
    for field in ("event_id", "entity_id", "timestamp", "features"):
        obj = orjson.loads(ev())
        del obj[field]
        got = parse_event(orjson.dumps(obj), LIMITS)
        assert isinstance(got, Rejection) and got.reason == "schema"
        assert got.error.startswith(field)


def test_bool_is_not_a_timestamp() -> None:
    got = parse_event(ev(timestamp=True), LIMITS)
    assert isinstance(got, Rejection) and got.reason == "schema"


def test_labels() -> None:
    assert parse_label(b'{"event_id":"e","label":"fraud","timestamp":2}', LIMITS).label == "fraud"
    bad = parse_label(b'{"event_id":"e","timestamp":2}', LIMITS)
    assert isinstance(bad, Rejection) and bad.error == "label: expected bool, int or string, got missing"
    bad = parse_label(b'{"event_id":"e","label":null,"timestamp":2}', LIMITS)
    assert isinstance(bad, Rejection) and bad.reason == "schema"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"event_id": json_values, "entity_id": json_values,
                                        "timestamp": json_values, "features": json_values})
                 .map(lambda v: json.dumps(v).encode())))
def test_never_raises_and_never_lets_non_finite_through(raw: bytes) -> None:
    got = parse_event(raw, LIMITS)
    if isinstance(got, Rejection):
        assert got.reason in DEAD_LETTER_REASONS
        return
    assert math.isfinite(got.timestamp)
    for v in got.features.values():
        if isinstance(v, float):
            assert math.isfinite(v) and abs(v) <= LIMITS.max_abs_value
        else:
            assert v is None or isinstance(v, (bool, int, str))
