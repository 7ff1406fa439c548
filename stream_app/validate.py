"""Validate raw Kafka values against the event and label contracts: pure functions, no I/O.

Bad data is never an exception here: each function returns either the parsed record or a
:class:`Rejection` whose ``reason`` is one of ``contract.DEAD_LETTER_REASONS``.

>>> limits = Limits(max_payload_bytes=1024, max_abs_value=1e12)
>>> ev = parse_event(b'{"event_id": "e1", "entity_id": "a", "timestamp": 1.5, "features": {"x": 2}}', limits)
>>> ev.event_id, ev.entity_id, ev.timestamp, ev.features
('e1', 'a', 1.5, {'x': 2})
>>> parse_event(b'{"event_id": "e1"', limits).reason
'invalid_json'
>>> parse_event(b'{"event_id": "e1", "entity_id": "a", "timestamp": 1, "features": {"x": NaN}}', limits)
Rejection(reason='non_finite', error='features.x is not finite')
>>> parse_event(b'{"event_id": "e1", "entity_id": "a", "timestamp": 1, "features": {"x": 1e13}}', limits)
Rejection(reason='out_of_range', error='features.x: |1e+13| exceeds 1e+12')
>>> parse_event(b'{"event_id": 7, "entity_id": "a", "timestamp": 1, "features": {}}', limits)
Rejection(reason='schema', error='event_id: expected a non-empty string, got int')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = ["Event", "Label", "Limits", "Rejection", "check_event", "check_label",
           "classify_bad_json", "parse_event", "parse_label"]

#: plausible epoch seconds: 0 .. year 5138
_MAX_TIMESTAMP = 1e11
_MAX_ID_LEN = 512


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 1024 * 1024
    max_abs_value: float = 1e12


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    error: str


@dataclass(slots=True)
class Event:
    event_id: str
    entity_id: str
    timestamp: float
    features: dict[str, Any]


@dataclass(slots=True)
class Label:
    event_id: str
    label: bool | int | str
    timestamp: float


def _decode(raw: bytes | None, limits: Limits) -> dict[str, Any] | Rejection:
    if raw is None:
        return Rejection("invalid_json", "empty value (tombstone)")
    if len(raw) > limits.max_payload_bytes:
        return Rejection("too_large", f"{len(raw)} bytes exceeds {limits.max_payload_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _classify_bad_json(raw, exc)
    if not isinstance(obj, dict):
        return Rejection("schema", f"expected a JSON object, got {_tname(obj)}")
    return obj


def _classify_bad_json(raw: bytes, exc: Exception) -> Rejection:
    """orjson refuses NaN/Infinity and numbers that overflow; tell those apart from garbage."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return Rejection("invalid_json", str(exc))
    path = _find_non_finite(obj, "")
    if path is None:
        return Rejection("invalid_json", str(exc))
    if path.startswith("int:"):
        return Rejection("out_of_range", f"{path[4:] or 'value'}: integer overflows a double")
    return Rejection("non_finite", f"{path or 'value'} is not finite")


def _find_non_finite(obj: Any, path: str) -> str | None:
    """Path of the first NaN/inf (or ``int:path`` of an integer too big for a double)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    if type(obj) is int and abs(obj) > 1.7e308:
        return "int:" + path
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _find_non_finite(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check_id(obj: dict[str, Any], name: str) -> str | Rejection:
    v = obj.get(name)
    if type(v) is not str or not v:
        got = "missing" if name not in obj else _tname(v)
        return Rejection("schema", f"{name}: expected a non-empty string, got {got}")
    if len(v) > _MAX_ID_LEN:
        return Rejection("schema", f"{name}: longer than {_MAX_ID_LEN} characters")
    return v


def _check_timestamp(obj: dict[str, Any]) -> float | Rejection:
    ts = obj.get("timestamp")
    if type(ts) not in (int, float):
        got = "missing" if "timestamp" not in obj else _tname(ts)
        return Rejection("schema", f"timestamp: expected epoch seconds (number), got {got}")
    if not 0 <= ts <= _MAX_TIMESTAMP:
        return Rejection("out_of_range", f"timestamp: {ts!r} is not plausible epoch seconds")
    return float(ts)


_NUMBERS: Final = frozenset((int, float))


def _check_features(feats: Any, limits: Limits) -> Rejection | None:
    if type(feats) is not dict:
        got = _tname(feats)
        return Rejection("schema", f"features: expected an object, got {got}")
    bound = limits.max_abs_value
    values = feats.values()
    if values and {type(v) for v in values} <= _NUMBERS:  # the common case, in C loops
        if max(values) <= bound and min(values) >= -bound:
            return None
    for name, v in feats.items():
        t = type(v)
        if t is float or t is int:
            if v > bound or v < -bound:
                return Rejection("out_of_range", f"features.{name}: |{float(v):g}| exceeds {bound:g}")
        elif v is None or t is str or t is bool:
            continue
        else:
            return Rejection(
                "schema", f"features.{name}: expected number, string, bool or null, got {_tname(v)}"
            )
    return None


def parse_event(raw: bytes | None, limits: Limits) -> Event | Rejection:
    """Parse one ``events`` value; never raises on bad data."""
    obj = _decode(raw, limits)
    if isinstance(obj, Rejection):
        return obj
    return check_event(obj, limits)


def classify_bad_json(raw: bytes, exc: Exception) -> Rejection:
    """Why orjson refused ``raw``: ``non_finite`` (NaN, Infinity), ``out_of_range`` (an
    integer too big for a double) or ``invalid_json``.

    >>> classify_bad_json(b'{"features": {"x": Infinity}}', ValueError("bad"))
    Rejection(reason='non_finite', error='features.x is not finite')
    """
    return _classify_bad_json(raw, exc)


def check_event(obj: dict[str, Any], limits: Limits) -> Event | Rejection:
    """Check one decoded ``events`` object (the HTTP API decodes a batch at once)."""
    event_id = _check_id(obj, "event_id")
    if isinstance(event_id, Rejection):
        return event_id
    entity_id = _check_id(obj, "entity_id")
    if isinstance(entity_id, Rejection):
        return entity_id
    ts = _check_timestamp(obj)
    if isinstance(ts, Rejection):
        return ts
    if "features" not in obj:
        return Rejection("schema", "features: missing")
    feats = obj["features"]
    bad = _check_features(feats, limits)
    if bad is not None:
        return bad
    return Event(event_id, entity_id, ts, feats)


def parse_label(raw: bytes | None, limits: Limits) -> Label | Rejection:
    """Parse one ``labels`` value; never raises on bad data.

    >>> parse_label(b'{"event_id": "e1", "label": true, "timestamp": 3}', Limits())
    Label(event_id='e1', label=True, timestamp=3.0)
    >>> parse_label(b'{"event_id": "e1", "label": [1], "timestamp": 3}', Limits()).error
    'label: expected bool, int or string, got list'
    """
    obj = _decode(raw, limits)
    if isinstance(obj, Rejection):
        return obj
    return check_label(obj)


def check_label(obj: dict[str, Any]) -> Label | Rejection:
    """Check one decoded ``labels`` object."""
    event_id = _check_id(obj, "event_id")
    if isinstance(event_id, Rejection):
        return event_id
    label = obj.get("label")
    if type(label) not in (bool, int, str):
        got = "missing" if "label" not in obj else _tname(label)
        return Rejection("schema", f"label: expected bool, int or string, got {got}")
    ts = _check_timestamp(obj)
    if isinstance(ts, Rejection):
        return ts
    return Label(event_id, label, ts)
