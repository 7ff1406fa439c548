"""What ``POST /v1/predict`` and ``POST /v1/labels`` do with a decoded body, on the stream's
own path: ``stream_app.validate`` and the engine's input schema check every event, and
:meth:`~stream_app.pipeline.engine.Engine.predict_events` features, scores and remembers them
as it does a batch from Kafka (the snapshot under the ``event_id``, so a later label teaches
the model once). The outputs go where the stream's go: predictions, dead letters, labels that
came early (back to the labels topic), drift records. The answer waits until they are
delivered, so a 200 means the ``predictions`` record is on Kafka too.

A request is all or nothing: if one of its events is refused (422), none is scored, and each
refused event is a dead letter from source topic ``http``.

>>> from stream_app.validate import Limits
>>> errs = check_events([{"event_id": "e", "entity_id": "a", "timestamp": 1, "features": {},
...                       "extra": 1}, {"event_id": "f"}], Limits())
>>> [(e["loc"], e["type"]) for e in errs]
[(['body', 0, 'extra'], 'extra_forbidden'), (['body', 1, 'entity_id'], 'schema')]
>>> shape_prediction(Prediction("p", "e1", "a", "m", "2", 0.123456, False, 1.0, 2.0, 0.5, 7),
...                  precision=3, with_score=True)["score"]
0.123
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_app import contract
from stream_app.errors import ServiceError
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import DeadLetter, Output, Prediction, Record
from stream_app.validate import Event, Limits, Rejection, check_event, check_label

__all__ = ["Outcome", "Predictor", "check_events", "check_labels", "field_error",
           "shape_prediction"]

log = logging.getLogger(__name__)

#: dead letters of refused HTTP input name this as their source topic
SOURCE = "http"
#: a request waits this long for its batch to be scored and delivered, then answers 503
_ANSWER_TIMEOUT_S = 5.0
_EVENT_FIELDS = frozenset(contract.EVENT_FIELDS)
_LABEL_FIELDS = frozenset(contract.LABEL_FIELDS)
_LOC = re.compile(r"[A-Za-z_][\w]*(?:\.[^\s:]+)?")


def field_error(index: int | None, rejection: Rejection) -> dict[str, Any]:
    """A 422 entry: where (``body``, the index in a batch, the field's path), why, which reason.

    >>> field_error(2, Rejection("non_finite", "features.x is not finite"))["loc"]
    ['body', 2, 'features', 'x']
    """
    m = _LOC.match(rejection.error)
    path = m.group(0).split(".") if m else []
    if path and path[0] not in _EVENT_FIELDS | _LABEL_FIELDS:  # not a field: the whole body
        path = []
    where: list[str | int] = ["body"] + ([] if index is None else [index])
    return {"loc": where + path, "msg": rejection.error, "type": rejection.reason}


def _extra(obj: dict[str, Any], allowed: frozenset[str], index: int | None) -> list[dict]:
    where: list[str | int] = ["body"] + ([] if index is None else [index])
    return [{"loc": [*where, name], "msg": f"{name}: unknown field", "type": "extra_forbidden"}
            for name in obj if name not in allowed]


def _check(objs: Sequence[Any], allowed: frozenset[str], check: Callable[[dict], Any]
           ) -> tuple[list[Any], list[dict[str, Any]]]:
    parsed, errors = [], []
    index = None if len(objs) == 1 else 0
    for i, obj in enumerate(objs):
        at = None if index is None else i
        if not isinstance(obj, dict):
            errors.append(field_error(at, Rejection(
                "schema", f"expected a JSON object, got {type(obj).__name__}")))
            parsed.append(None)
            continue
        bad = _extra(obj, allowed, at)
        got = check(obj)
        if isinstance(got, Rejection):
            bad.append(field_error(at, got))
        errors.extend(bad)
        parsed.append(None if bad else got)
    return parsed, errors


def check_events(objs: Sequence[Any], limits: Limits) -> list[dict[str, Any]]:
    """The 422 entries of decoded events (``stream_app.validate`` plus no unknown field)."""
    return _check(objs, _EVENT_FIELDS, lambda o: check_event(o, limits))[1]


def check_labels(objs: Sequence[Any]) -> list[dict[str, Any]]:
    """The 422 entries of decoded labels."""
    return _check(objs, _LABEL_FIELDS, check_label)[1]


def shape_prediction(p: Prediction, *, precision: int, with_score: bool) -> dict[str, Any]:
    """What a client sees of a prediction: the score rounded, or not at all."""
    out: dict[str, Any] = {"event_id": p.event_id}
    if with_score:
        out["score"] = round(p.score, precision)
    out.update(predicted=p.predicted, model=p.model, model_version=p.model_version,
               model_snapshot=p.model_snapshot, latency_ms=round(p.latency_ms, 3))
    return out


@dataclass(slots=True)
class Outcome:
    """A request's answer: 422 ``errors``, or each event's prediction and whether its id came
    before (``repeated``: the first prediction, or None once expired)."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[str, Prediction | None, bool]] = field(default_factory=list)


class Predictor:
    """Runs decoded HTTP events and labels through the worker's engine and producer.

    Requests that arrive while a batch is in the engine go together in the next one (at most
    ``http.max_batch`` x 4 events): under load one engine call, two Redis round trips and one
    Kafka send serve many requests; alone, a request waits for nobody.
    """

    def __init__(self, engine: Engine, send: Callable[[list[Output]], Awaitable[None]]) -> None:
        self.engine = engine
        self._send = send
        self._labels = engine.settings.topic(contract.LABELS)
        self._predictions = engine.settings.topic(contract.PREDICTIONS)
        # positions nobody else uses: a random start, so a restarted worker never meets its
        # own earlier claims (a claim from the same position would read as a redelivery)
        self._seq = itertools.count(secrets.randbits(62))
        self._queue: list[tuple[list[Record], asyncio.Future[Any]]] = []
        self._draining = False
        self._most = 4 * engine.settings.http.max_batch
        self._await_delivery = engine.settings.http.await_delivery
        self._outbox: list[tuple[list[Output], list[Any], Any]] = []
        self._sending = False
        self._deliveries: set[asyncio.Task[None]] = set()

    def _record(self, obj: dict[str, Any], raw: bytes | None) -> Record:
        value = raw if raw is not None else orjson.dumps(obj)
        key = obj["entity_id"].encode() if isinstance(obj.get("entity_id"), str) else None
        return Record(SOURCE, 0, next(self._seq), key, value, time.time())

    async def predict(self, objs: Sequence[Any], raw: bytes | None = None) -> Outcome:
        """Check, admit, score; ``raw`` is the body when it is the one event itself."""
        engine = self.engine
        records = [self._record(o if isinstance(o, dict) else {}, raw) for o in objs]
        parsed, errors = _check(objs, _EVENT_FIELDS, lambda o: check_event(o, engine.limits))
        for i, ev in enumerate(parsed):  # the input schema's caps, as for the stream
            if isinstance(ev, Event):
                refused = engine.schema.check(ev.features)
                if refused is not None:
                    errors.append(field_error(None if len(objs) == 1 else i, refused))
                    parsed[i] = None
        if errors:
            single = len(objs) == 1
            await self._bounded([self._dead_letter(rec, [e for e in errors
                                                      if single or e["loc"][1] == i])
                              for i, rec in enumerate(records) if parsed[i] is None])
            return Outcome(errors=errors)
        scored, repeated = await self._score(records)
        results: list[tuple[str, Prediction | None, bool]] = []
        for rec, ev in zip(records, parsed, strict=True):
            if rec.offset in repeated:  # scored before, or earlier in this very batch
                results.append((ev.event_id, repeated[rec.offset], True))
            else:  # None: the model refused it (a ``model_output`` dead letter)
                results.append((ev.event_id, scored.get(ev.event_id), False))
        return Outcome(results=results)

    async def _score(self, records: list[Record]
                     ) -> tuple[dict[str, Prediction], dict[int, Prediction | None]]:
        """These records' predictions, scored with whatever else is waiting, once delivered."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((records, future))
        if not self._draining:
            self._draining = True
            task = asyncio.ensure_future(self._drain())
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        try:  # an outage answers 503 in bounded time; the batch itself goes on
            return await asyncio.wait_for(asyncio.shield(future), _ANSWER_TIMEOUT_S)  # type: ignore[no-any-return]
        except TimeoutError:
            raise ServiceError(f"no answer from Redis or Kafka within {_ANSWER_TIMEOUT_S:g} s; "
                               "the events may be scored: a retry answers 409 with the "
                               "prediction") from None

    async def _drain(self) -> None:
        try:
            while self._queue:
                take, n = [], 0
                while self._queue and (not take or n + len(self._queue[0][0]) <= self._most):
                    item = self._queue.pop(0)
                    take.append(item)
                    n += len(item[0])
                try:
                    outs, repeated = await self.engine.predict_events(
                        [r for recs, _ in take for r in recs])
                except Exception as exc:  # each request answers it (503 for an outage)
                    for _, future in take:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                # delivered in the background: the next batch need not wait for this one's acks
                task = asyncio.ensure_future(self._deliver(outs, repeated, take))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
        finally:
            self._draining = False

    async def _deliver(self, outs: list[Output], repeated: dict[int, Prediction | None],
                       take: list[tuple[list[Record], asyncio.Future[Any]]]) -> None:
        scored = {o.event_id: o for o in outs
                  if type(o) is Prediction and o.topic == self._predictions}
        if not self._await_delivery:  # committed in Redis: answer now, deliver meanwhile
            self._answer(take, (scored, repeated))
            await self._deliver_eventually(outs)
            return
        # one send for every batch scored while the previous send was out: a partition takes
        # one record batch per round trip, so a send per batch would queue behind the acks
        self._outbox.append((outs, take, (scored, repeated)))
        if self._sending:
            return
        self._sending = True
        try:
            while self._outbox:
                box, self._outbox = self._outbox, []
                try:
                    await self._send([o for outs_, _, _ in box for o in outs_])
                except Exception as exc:
                    for _, take_, _ in box:
                        self._answer(take_, exc)
                    continue
                for _, take_, result in box:
                    self._answer(take_, result)
        finally:
            self._sending = False

    @staticmethod
    def _answer(take: list[tuple[list[Record], asyncio.Future[Any]]], result: Any) -> None:
        for _, future in take:
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _deliver_eventually(self, outs: list[Output]) -> None:
        """Retry with backoff for up to 10 minutes (the outputs are the stream's: lost only
        if Kafka stays away that long, or the worker dies first; both are logged)."""
        delay, deadline = 0.1, time.monotonic() + 600.0
        while True:
            try:
                await self._send(outs)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("HTTP outputs (%d records) not delivered: %s", len(outs), exc)
                    return
                log.warning("delivering HTTP outputs failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def refuse(self, raw: bytes, rejection: Rejection) -> None:
        """Dead-letter a body refused as a whole (not JSON, not the batch's shape)."""
        rec = Record(SOURCE, 0, next(self._seq), None, raw, time.time())
        await self._bounded([self.engine.dead_letter(rec, rejection.reason, rejection.error)])

    def _dead_letter(self, rec: Record, errors: list[dict[str, Any]]) -> DeadLetter:
        reason = next((e["type"] for e in errors if e["type"] in contract.DEAD_LETTER_REASONS),
                      "schema")
        return self.engine.dead_letter(rec, reason, "; ".join(e["msg"] for e in errors))

    async def labels(self, objs: Sequence[Any]) -> list[dict[str, Any]]:
        """Check labels and put them on the labels topic (the learner learns them); returns
        the 422 entries, empty when they were delivered."""
        errors = check_labels(objs)
        if errors:
            return errors
        await self._bounded([(self._labels, o["event_id"].encode(), orjson.dumps(o))
                             for o in objs])
        return []

    async def _bounded(self, outs: list[Output]) -> None:
        """Send, or raise ``ServiceError`` (503) after ``_ANSWER_TIMEOUT_S``; the send goes on."""
        try:
            await asyncio.wait_for(asyncio.shield(self._send(outs)), _ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise ServiceError(f"Kafka did not take the records within {_ANSWER_TIMEOUT_S:g} s"
                               ) from None
