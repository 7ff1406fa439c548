"""The HTTP API's documents: request JSON schemas (from the settings' limits) and response
models, both only for ``/openapi.json``. Requests are checked by ``stream_app.validate``, the
stream's own checks, not by these models, so the two paths can never disagree; the schemas say
the same thing for clients and for schemathesis.

>>> from stream_app.settings import load_settings
>>> s = predict_body(load_settings(environ={}))
>>> s["oneOf"][1]["properties"]["events"]["maxItems"], s["oneOf"][0]["additionalProperties"]
(100, False)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from stream_app.settings import Settings

__all__ = ["Batch", "Error", "FieldErrors", "Prediction", "Predictions", "label_body",
           "predict_body"]

_ID = {"type": "string", "minLength": 1, "maxLength": 512}
_TIMESTAMP = {"type": "number", "minimum": 0, "maximum": 1e11,
              "description": "epoch seconds"}


def _event(settings: Settings) -> dict[str, Any]:
    bound = settings.max_abs_value
    value = {"anyOf": [{"type": "number", "minimum": -bound, "maximum": bound},
                       {"type": "string"}, {"type": "boolean"}, {"type": "null"}]}
    return {"type": "object", "additionalProperties": False,
            "required": ["event_id", "entity_id", "timestamp", "features"],
            "properties": {"event_id": _ID, "entity_id": _ID, "timestamp": _TIMESTAMP,
                           "features": {"type": "object", "additionalProperties": value}}}


def _label() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "required": ["event_id", "label", "timestamp"],
            "properties": {"event_id": _ID, "timestamp": _TIMESTAMP,
                           "label": {"anyOf": [{"type": "boolean"}, {"type": "integer"},
                                               {"type": "string"}]}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def predict_body(settings: Settings) -> dict[str, Any]:
    """One ``events`` message, or ``{"events": [...]}`` of at most ``http.max_batch``."""
    event = _event(settings)
    return {"oneOf": [event, {
        "type": "object", "additionalProperties": False, "required": ["events"],
        "properties": {"events": {"type": "array", "items": event, "minItems": 1,
                                  "maxItems": settings.http.max_batch}}}]}


def label_body(settings: Settings) -> dict[str, Any]:
    """One ``labels`` message, or a list of at most ``http.max_batch``."""
    label = _label()
    return {"oneOf": [label, {"type": "array", "items": label, "minItems": 1,
                              "maxItems": settings.http.max_batch}]}


def openapi_body(schema: dict[str, Any]) -> dict[str, Any]:
    return _body(schema)


class Prediction(BaseModel):
    """The fields of a ``predictions`` record a client may see (``score`` only with
    ``http.return_score``, rounded to ``http.score_precision`` decimals)."""

    event_id: str
    score: float | None = None
    predicted: bool
    model: str
    model_version: str
    model_snapshot: int
    latency_ms: float
    #: in a batch: this id was predicted before, and this is that first prediction
    duplicate: bool | None = None


class Predictions(BaseModel):
    predictions: list[Prediction]


class Batch(BaseModel):
    accepted: int


class Error(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, then the index and field names")
    msg: str
    type: str = Field(description="the dead-letter reason, or extra_forbidden / too_many")


class FieldErrors(BaseModel):
    detail: list[FieldError]


class Repeated(BaseModel):
    """409 when the first prediction of a repeated id has expired."""

    event_id: str
    detail: str
