"""The ``/v1`` endpoints: thin handlers over :class:`~stream_app.http.predict.Predictor`, the
feature store, the registry and the drift topic. Bodies are read here within
``http.max_body_bytes`` (413) and decoded with orjson; every refusal is a documented status.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from features.aggregates import compute
from stream_app.errors import ModelNotFoundError
from stream_app.http import schemas
from stream_app.http.predict import Predictor, field_error, shape_prediction
from stream_app.inspection import drift_state, model_view, models_view
from stream_app.settings import Settings
from stream_app.validate import Rejection, classify_bad_json

__all__ = ["TooLarge", "build_router", "json_response", "read_asgi"]


#: a registry model name (``models.registry.types``), optionally ``@VERSION``
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(?:@[A-Za-z0-9][A-Za-z0-9._-]{0,63})?")


class TooLarge(Exception):
    """The body passed ``http.max_body_bytes``."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def _invalid(errors: list[dict[str, Any]]) -> Response:
    return json_response({"detail": errors}, 422)


async def _read(request: Request, limit: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise TooLarge
    chunks, got = [], 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def read_asgi(scope: dict[str, Any], receive: Any, limit: int) -> bytes:
    """The request body from ASGI ``receive``, refused past ``limit`` (:class:`TooLarge`)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise TooLarge
    chunks, got, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise TooLarge  # nobody to answer; nothing was read to act on
        chunk = message.get("body", b"")
        got += len(chunk)
        if got > limit:
            raise TooLarge
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _decode(predictor: Predictor, raw: bytes) -> Any:
    """The decoded body, or its 422 (and its dead letter: bad input never vanishes)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        rejection = classify_bad_json(raw, exc)
        await predictor.refuse(raw, rejection)
        return _invalid([field_error(None, rejection)])


def _too_many(n: int, most: int, where: list[str]) -> Response:
    return _invalid([{"loc": ["body", *where], "msg": f"{n} items, at most {most} "
                      "(http.max_batch)", "type": "too_many"}])


_ERRORS = {401: schemas.Error, 413: schemas.Error, 422: schemas.FieldErrors,
           429: schemas.Error, 503: schemas.Error}


def _responses(*codes: int, **extra: Any) -> dict[int | str, dict[str, Any]]:
    """The documented answers: these error codes, 503 (Kafka, Redis or the registry is down)
    and ``r<code>=`` extras."""
    out: dict[int | str, dict[str, Any]] = {c: {"model": _ERRORS[c]} for c in (*codes, 503)}
    out.update({int(k[1:]): v for k, v in extra.items()})
    return out


def build_router(settings: Settings, predictor: Predictor) -> APIRouter:
    conf = settings.http
    limit = conf.max_body_bytes
    engine = predictor.engine
    router = APIRouter(prefix="/v1")
    shape = {"precision": conf.score_precision, "with_score": conf.return_score}

    @router.post("/predict", summary="score one event or a batch",
                 openapi_extra=schemas.openapi_body(schemas.predict_body(settings)),
                 responses=_responses(401, 413, 422, 429, r200={"model": schemas.Predictions | schemas.Prediction},
                                      r409={"model": schemas.Prediction | schemas.Repeated}))
    async def predict(request: Request) -> Response:
        return await answer(await _read(request, limit))

    async def answer(body: bytes) -> Response:
        """``POST /v1/predict``'s answer to ``body`` (also ``Guard``'s fast path)."""
        obj = await _decode(predictor, body)
        if isinstance(obj, Response):
            return obj
        batch = isinstance(obj, dict) and "events" in obj
        if batch:
            events = obj["events"]
            if set(obj) != {"events"} or not isinstance(events, list) or not events:
                refused = Rejection("schema", "events: expected a non-empty list of events and "
                                    "nothing else")
                await predictor.refuse(body, refused)
                return _invalid([field_error(None, refused)])
            if len(events) > conf.max_batch:
                return _too_many(len(events), conf.max_batch, ["events"])
            outcome = await predictor.predict(events)
        else:
            outcome = await predictor.predict([obj], raw=body)
        if outcome.errors:
            if batch:
                for e in outcome.errors:
                    e["loc"].insert(1, "events")
            return _invalid(outcome.errors)
        answers = []
        for event_id, prediction, repeated in outcome.results:
            if prediction is None and not repeated:
                return _invalid([{"loc": ["body"], "msg": f"{event_id}: the model gave no "
                                  "score", "type": "model_output"}])
            if not batch and repeated:
                if prediction is None:
                    return json_response({"event_id": event_id, "detail": "predicted before; "
                                          "that prediction has expired"}, 409)
                return json_response(shape_prediction(prediction, **shape), 409)
            item = shape_prediction(prediction, **shape) if prediction is not None else \
                {"event_id": event_id}
            if batch:
                item["duplicate"] = repeated
            answers.append(item)
        return json_response({"predictions": answers} if batch else answers[0])

    router.predict_answer = answer  # type: ignore[attr-defined]

    @router.post("/labels", summary="send labels to the labels topic", status_code=202,
                 openapi_extra=schemas.openapi_body(schemas.label_body(settings)),
                 responses=_responses(401, 413, 422, 429, r202={"model": schemas.Batch}))
    async def labels(request: Request) -> Response:
        obj = await _decode(predictor, await _read(request, limit))
        if isinstance(obj, Response):
            return obj
        items = obj if isinstance(obj, list) else [obj]
        if not items:
            return _invalid([field_error(None, Rejection("schema", "expected labels"))])
        if len(items) > conf.max_batch:
            return _too_many(len(items), conf.max_batch, [])
        errors = await predictor.labels(items)
        return _invalid(errors) if errors else json_response({"accepted": len(items)}, 202)

    @router.get("/features/{entity_id}", summary="an entity's online features now",
                responses=_responses(401, 429, r404={"model": schemas.Error}))
    async def features(entity_id: str) -> Response:
        state = (await engine.store.read_entities([entity_id]))[0]
        if state is None:  # (without features.aggregates no entity is ever stored)
            return json_response({"detail": "no features for this entity"}, 404)
        now = time.time()
        return json_response({"entity_id": entity_id, "as_of": now,
                              "features": compute(engine.spec, state, now)})

    @router.get("/models", summary="every model's versions and stages",
                responses=_responses(401, 429))
    async def models() -> Response:
        return json_response(await models_view(settings))

    @router.get("/models/{name}", summary="one model: versions, snapshots, stage history",
                responses=_responses(401, 429, r404={"model": schemas.Error}))
    async def model(name: str) -> Response:
        missing = json_response({"detail": f"no model {name!r}"}, 404)
        if not _MODEL.fullmatch(name):
            return missing
        try:
            found = await model_view(settings, name)
        except (ModelNotFoundError, ValueError):
            return missing
        return json_response(found) if found["versions"] else missing

    @router.get("/drift", summary="every monitored subject's drift state",
                responses=_responses(401, 429))
    async def drift() -> Response:
        summaries, opened = await drift_state(settings)
        return json_response({"workers": summaries, "in_drift_since": [
            {"worker": w, "subject": s, "since": t} for (w, s), t in opened.items()]})

    return router
