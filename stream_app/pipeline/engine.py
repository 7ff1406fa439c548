"""The flow, per batch: validate -> admit -> featurize -> score -> remember -> emit, and
label -> learn.

This is the one module that awaits the online store; every stage it calls is a plain function
or a small object (``validate``, ``pipeline.schema``, ``pipeline.featurize``, ``models.spec``,
``pipeline.shadow``, ``pipeline.labels``, ``pipeline.drift``). It never talks to Kafka: it
returns the records to send, and the agent (``stream_app.app``) sends them and acks the batch
only once they are delivered.

Two Redis round trips per batch of events (read states + claim event ids; write states +
snapshots + take the labels that arrived early, which go back to the labels topic for the
learner) and one per batch of labels, plus one per 50 ms (or per commit of events here) while
labels that came before their events are held for them (``label_wait_s``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import orjson

from features.spec import FeatureSpec, compile_spec
from features.store import (
    DUPLICATE,
    EXPIRED,
    FLOODED,
    JOINED,
    MISSING,
    PARKED,
    REDELIVERED,
    FeatureStore,
    open_feature_store,
)
from models.metrics import PrequentialMetrics, decide
from models.online import ModelOutputError
from models.registry.types import DataHash
from models.spec import OnlineModel, build_model
from stream_app import contract
from stream_app.engine_metrics import EngineMetrics
from stream_app.gil import SwitchInterval
from stream_app.ops.quality import QualityMonitor
from stream_app.pipeline.drift import DriftStage
from stream_app.pipeline.featurize import Featurizer
from stream_app.pipeline.labels import LabelLedger, to_target
from stream_app.pipeline.records import (
    DeadLetter,
    FeatureLog,
    LabelBack,
    LabelLog,
    Output,
    Prediction,
    Record,
)
from stream_app.pipeline.schema import Schema
from stream_app.pipeline.shadow import Challenger, shadow_score
from stream_app.redact import Redactor
from stream_app.settings import Settings
from stream_app.validate import Event, Label, Limits, Rejection, parse_event, parse_label

__all__ = ["Engine"]

log = logging.getLogger(__name__)

#: a held label looks for its event again at least this often (events scored elsewhere)
_LABEL_POLL_S = 0.05
#: holds in a row that met no event before holding turns off for a while
_FRUITLESS_HOLDS = 3
#: learning gives the event loop back at least this often, and waits there for a batch of
#: events being scored (``Engine._yield_to_scoring``; scoring shares the loop: a slow
#: model's batch of labels would otherwise hold every prediction for as long as it learns;
#: and each step of a transaction in flight waits for the loop: 20 ms slices stretched a
#: transaction of five broker round trips past 50 ms at 5,000 events/s)
LEARN_SLICE_S = 0.005
#: scoring a batch gives the loop back at least this often (a slow model's batch of 100
#: events took 300 ms to score, and every broker round trip of the transactions in flight,
#: every fetch and every HTTP request waited behind it); learning waits meanwhile, as it
#: waits for the whole batch (``events_lock``)
SCORE_SLICE_S = 0.005
#: the newest parked labels the learner remembers, to park again after a state loss
REMEMBER_PARKED = 1000
#: the learner sweeps orphaned parked labels at most this often
SWEEP_EVERY_S = 1.0


class Engine:
    """Holds the model, the feature spec, the store handle and the metrics of one worker."""

    def __init__(self, settings: Settings, *, store: FeatureStore | None = None,
                 model: OnlineModel | None = None) -> None:
        self.settings = settings
        self.limits = Limits(settings.max_payload_bytes, settings.max_abs_value)
        self.spec: FeatureSpec = compile_spec(settings.features)
        #: the event features this worker admits: declared, or learned up to the caps
        self.schema = Schema(settings.features, one_hot=settings.model.one_hot_strings)
        self.featurizer = Featurizer(self.spec, one_hot=settings.model.one_hot_strings)
        self.model: OnlineModel = model or build_model(settings.model)
        self._store = store
        self.metrics = EngineMetrics(model=self.model.name, model_version=self.model.version)
        self.drift = DriftStage(settings, model=self.model.name, model_version=self.model.version)
        #: missing values, freshness and schema change, per committed batch (``stream_app.ops``)
        self.quality = QualityMonitor(settings.quality, topic=settings.topic(contract.DRIFT),
                                      model=self.model.name, scope=lambda: self.drift.scope,
                                      declared=settings.features.inputs)
        self._t_predictions = settings.topic(contract.PREDICTIONS)
        self._t_dead = settings.topic(contract.DEAD_LETTERS)
        self._t_shadow = settings.topic(contract.PREDICTIONS_SHADOW)
        self._t_labels = settings.topic(contract.LABELS)
        #: every scored event and joined label also goes to the feature log (offline store)
        self._t_feature_log = settings.topic(contract.FEATURE_LOG) \
            if settings.offline.enabled else None
        self._threshold = settings.model.threshold
        self._positive = {p.lower() for p in settings.model.positive_labels}
        self._seen_ttl = 2 * settings.label_horizon_s
        #: a label parked for an event not scored yet waits at most this long for it
        self._park_ttl = min(settings.labels.park_ttl_s, settings.label_horizon_s)
        #: the registry snapshot the serving model descends from (0: none)
        self.snapshot_id = 0
        #: which label records this model has consumed (a restore rewinds to ``ledger.next``)
        self.ledger = LabelLedger()
        #: the ``(event_id, label)`` sequence learned, hashed (the training-data hash)
        self.data_hash = DataHash()
        #: learns since the last checkpoint (see ``stream_app.lifecycle``)
        self.learns_since_snapshot = 0
        #: the last labelled feature vectors learned, to warm-start a challenger
        self.recent: deque[tuple[dict[str, float], bool]] = deque(
            maxlen=settings.lifecycle.warm_start_window)
        self.challenger: Challenger | None = None
        #: held while the models learn (a batch of labels; an anomaly detector's own events)
        #: and while a checkpoint pickles them in another thread (``stream_app.lifecycle``):
        #: no learn ever runs under the pickler. Scoring does not take it (module docstring).
        self.learn_lock = asyncio.Lock()
        #: the worker's GIL switch interval, fed the model's busy time per score and learn
        #: (``stream_app.gil``; set by ``stream-app worker`` when the setting is "auto")
        self.gil: SwitchInterval | None = None
        #: labels whose events are not scored yet wait on this; until then, they park at once
        self._scored = _Signal()
        #: one batch of events at a time from read to commit, whether from Kafka or HTTP: two
        #: batches in flight could both read an event id unclaimed and both score it
        self.events_lock = asyncio.Lock()
        #: configured fields and patterns never reach a dead letter (``stream_app.redact``)
        self.redactor = Redactor(settings.http.redact_fields, settings.http.redact_patterns)
        self._hold_labels_after = 0.0
        self._fruitless_holds = 0
        #: the newest parked labels, by event id: (label, raw record value, record), to park
        #: again after the store lost its state (``sweep_labels``)
        self._parked: OrderedDict[str, tuple[Label, bytes, Record]] = OrderedDict()
        self._losses_seen = 0
        self._swept_at = 0.0

    @property
    def label_next(self) -> dict[int, int]:
        return self.ledger.next

    @property
    def label_ahead(self) -> dict[int, set[int]]:
        return self.ledger.ahead

    def install(self, model: OnlineModel, *, snapshot_id: int, learned: int | None = None,
                prequential: PrequentialMetrics | None = None,
                label_next: dict[int, int] | None = None,
                label_ahead: dict[int, set[int]] | None = None,
                data_hash: str | None = None) -> None:
        """Serve ``model`` from now on (between two batches: no prediction is lost or doubled).

        With ``learned``/``prequential``/``label_next``/``data_hash`` (a restore) the learner's
        accounting resumes from the snapshot; without, only the served model changes.
        """
        changed_version = model.version != self.model.version or model.name != self.model.name
        self.model = model
        self.snapshot_id = snapshot_id
        self.metrics.model_version = model.version
        self.metrics.snapshot_id = snapshot_id
        if learned is not None:
            self.metrics.learned = learned
            self.learns_since_snapshot = 0
        if prequential is not None:
            self.metrics.prequential = prequential
        if label_next is not None:
            self.ledger = LabelLedger(label_next, label_ahead)
        if data_hash is not None:
            self.data_hash = DataHash(data_hash or None)
        if changed_version:  # a new champion: drift references start again from its inputs
            old = self.drift
            self.drift = DriftStage(self.settings, model=model.name, model_version=model.version,
                                    partitions=old.partitions)
            self.drift.continue_cooldown(old)  # a promotion is no reason to signal again at once

    @property
    def learning_enabled(self) -> bool:
        """True on the one worker that learns: the holder of the labels partition."""
        return self.metrics.learning_enabled

    @learning_enabled.setter
    def learning_enabled(self, value: bool) -> None:
        self.metrics.learning_enabled = value

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            raise RuntimeError("Engine.start() was not awaited")
        return self._store

    async def start(self) -> None:
        if self._store is None:
            self._store = open_feature_store(self.settings.store_url,
                                             namespace=self.settings.feature_store_namespace)

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None

    # -- events -----------------------------------------------------------------------------
    async def process_events(self, records: Sequence[Record]) -> list[Output]:
        """Validate, enrich, score and remember one batch; return the records to emit.

        See :meth:`predict_events`, which also says which event ids came before."""
        async with self.events_lock:
            return (await self._process_events(records))[0]

    async def predict_events(self, records: Sequence[Record]
                             ) -> tuple[list[Output], dict[int, Prediction | None]]:
        """:meth:`process_events`, and the first prediction of each record whose ``event_id``
        was predicted before (by its ``offset``; ``None`` once that snapshot has expired): the
        HTTP API answers those 409, never scoring twice. A repeat within ``records`` gets the
        prediction made for its first copy."""
        async with self.events_lock:
            out, repeated = await self._process_events(records)
        first: dict[str, Prediction | None] = {
            o.event_id: o for o in out if type(o) is Prediction and o.topic == self._t_predictions}
        ask = list({ev.event_id: ev for _, ev in repeated if ev.event_id not in first}.values())
        snaps = await self.store.get_snapshots([ev.event_id for ev in ask]) if ask else []
        for ev, snap in zip(ask, snaps, strict=True):
            first[ev.event_id] = None if snap is None else self._from_snapshot(ev, snap)
        return out, {rec.offset: first[ev.event_id] for rec, ev in repeated}

    async def _process_events(self, records: Sequence[Record]
                              ) -> tuple[list[Output], list[tuple[Record, Event]]]:
        """The flow of :meth:`process_events`; also the events dropped as repeats.

        Idempotent under redelivery: nothing is written before ``commit_batch``, which claims the
        event ids together with the states and snapshots in one atomic step. A record that comes
        again from the same topic/partition/offset (the batch was processed but not acked)
        re-emits its stored prediction; any other repeat of an ``event_id`` is a duplicate.
        """
        t0 = time.perf_counter()
        out: list[Output] = []
        fresh: list[tuple[Record, Event]] = []
        admit = self.schema.check
        for rec in records:
            parsed = parse_event(rec.value, self.limits)
            if isinstance(parsed, Rejection):
                out.append(self.dead_letter(rec, parsed.reason, parsed.error))
                continue
            # past the schema's caps (a new name, a new category, a type): never scored or
            # learned, so no producer can grow the model (and this worker) without bound
            refused = admit(parsed.features)
            if refused is not None:
                out.append(self.dead_letter(rec, refused.reason, refused.error))
            else:
                fresh.append((rec, parsed))
        if not fresh:
            self.metrics.batch(len(records), 0, time.perf_counter() - t0)
            out.extend(self.quality.observe((), (), now=time.time(),
                                            changes=self.schema.take_changes()))
            return out, []
        entity_ids = list(dict.fromkeys(ev.entity_id for _, ev in fresh))
        read = await self.store.begin_batch(entity_ids, [ev.event_id for _, ev in fresh])
        t1 = time.perf_counter()
        fresh, redelivered, repeated = self._dedupe(fresh, read.seen)
        if redelivered:
            out.extend(await self._replay_predictions(redelivered))
        states = dict(zip(entity_ids, read.states, strict=True))
        xs = self.featurizer.inputs(
            [(ev.entity_id, ev.timestamp, ev.features) for _, ev in fresh], states)
        snapshots, claims, observed, scored = await self._score(fresh, xs, out)
        t2 = time.perf_counter()
        touched = {e: states[e] for e in {ev.entity_id for _, ev in fresh}} \
            if self.featurizer.has_aggregates else {}
        learner = self.learning_enabled
        # labels that came before their events are handed back, not learned here: they go to
        # the labels topic again, so every learn comes from a label record with an offset,
        # and a model restored from a snapshot knows exactly which ones to learn again
        early = await self.store.commit_batch(
            touched, claims, snapshots,
            entity_ttl_s=self.settings.features.entity_ttl_s,
            snapshot_ttl_s=self.settings.label_horizon_s, claim_ttl_s=self._seen_ttl,
            mark_learned=False)
        self._scored.notify()  # labels held for these events may join now
        # committed: only now do these events count for drift (a retried batch counts once)
        observe = self.drift.observe
        for x, features, score, ts in observed:
            out.extend(observe(x, features, score=score, timestamp=ts))
        out.extend(self.quality.observe([ev.features for _, ev in fresh],
                                        [ev.timestamp for _, ev in fresh], now=time.time(),
                                        changes=self.schema.take_changes()))
        if self.model.kind == "anomaly" and learner and scored:
            async with self.learn_lock:  # a checkpoint may be pickling the model
                yield_at = time.perf_counter() + LEARN_SLICE_S
                for x in scored:
                    self.model.learn_one(x, None)
                    if time.perf_counter() >= yield_at:
                        await asyncio.sleep(0)
                        yield_at = time.perf_counter() + LEARN_SLICE_S
                self.metrics.learned += len(scored)
                self.learns_since_snapshot += len(scored)
            self.drift.observe_learns(self.metrics.learned)
        for event_id, raw_label in early.items():
            out.append(LabelBack(self._t_labels, event_id, raw_label))
            self.metrics.labels_forwarded += 1
        t3 = time.perf_counter()
        self.metrics.state_losses = self.store.state_losses
        self.metrics.batch(len(records), len(snapshots), t3 - t0,
                           store_read_s=t1 - t0, score_s=t2 - t1, store_write_s=t3 - t2)
        return out, repeated

    def _dedupe(self, batch: list[tuple[Record, Event]], seen: Sequence[bytes | None]
                ) -> tuple[list[tuple[Record, Event]], list[tuple[Record, Event]],
                           list[tuple[Record, Event]]]:
        """Split into first sightings, redeliveries and true duplicates (counted, dropped)."""
        fresh, redelivered, repeated = [], [], []
        in_batch: set[str] = set()
        for (rec, ev), claim in zip(batch, seen, strict=True):
            if claim is None and ev.event_id not in in_batch:
                in_batch.add(ev.event_id)
                fresh.append((rec, ev))
            elif claim is not None and claim == _position(rec):
                redelivered.append((rec, ev))
            else:
                self.metrics.duplicate_events += 1
                repeated.append((rec, ev))
        return fresh, redelivered, repeated

    async def _score(self, batch: list[tuple[Record, Event]], xs: list[dict[str, float]],
                     out: list[Output]) -> tuple[dict[str, bytes], dict[str, bytes],
                                                 list[tuple[Any, ...]], list[dict[str, float]]]:
        """Score each input in arrival order: the snapshots and claims to commit, what drift
        observes once they are committed, and the inputs scored. Gives the loop back every
        :data:`SCORE_SLICE_S`; the model is the one the batch started with."""
        drift_on = self.settings.drift.enabled
        observed: list[tuple[Any, ...]] = []
        snapshots: dict[str, bytes] = {}
        claims: dict[str, bytes] = {}
        challenger = self.challenger
        model = self.model
        sid, version, name, threshold = self.snapshot_id, model.version, model.name, \
            self._threshold
        topic, log_topic = self._t_predictions, self._t_feature_log
        latencies: list[float] = []
        scored: list[dict[str, float]] = []
        clock = time.perf_counter
        started = clock()
        paused = 0.0  # yielded to other tasks: not the model's time
        yield_at = started + SCORE_SLICE_S
        for (rec, ev), x in zip(batch, xs, strict=True):
            if clock() >= yield_at:
                t = clock()
                await asyncio.sleep(0)
                yield_at = clock()
                paused += yield_at - t
                yield_at += SCORE_SLICE_S
            try:
                score = model.predict_proba_one(x)
            except ModelOutputError as exc:
                out.append(self.dead_letter(rec, "model_output", str(exc)))
                continue
            now = time.time()
            latency_ms = max(0.0, (now - rec.timestamp) * 1000.0) if rec.timestamp else 0.0
            latencies.append(latency_ms)
            part = rec.partition
            out.append(Prediction(topic, ev.event_id, ev.entity_id, name, version, score,
                                  decide(score, threshold), ev.timestamp, now, latency_ms, sid,
                                  part))
            snap: dict[str, Any] = {"x": x, "s": score, "v": version, "t": now,
                                    "l": latency_ms, "n": sid}
            if challenger is not None:
                shadow = shadow_score(challenger, self._t_shadow, ev, x, now, latency_ms,
                                      threshold)
                if shadow is not None:
                    shadow.source = part
                    out.append(shadow)
                    snap["c"], snap["cv"] = shadow.score, shadow.model_version
            snapshots[ev.event_id] = snapshot = orjson.dumps(snap)
            if log_topic is not None:  # the vector as scored, the learner's very bytes
                out.append(FeatureLog(log_topic, ev.event_id, ev.entity_id, name, ev.timestamp,
                                      snapshot, part))
            claims[ev.event_id] = _position(rec)
            scored.append(x)
            if drift_on:
                observed.append((x, ev.features, score, ev.timestamp))  # the stage gates it
        self.metrics.observe_latencies_ms(latencies)
        if self.gil is not None:
            self.gil.observe(clock() - started - paused, len(batch))
        return snapshots, claims, observed, scored

    async def _replay_predictions(self, batch: list[tuple[Record, Event]]) -> list[Output]:
        """Re-emit the predictions of records processed before a crash (same position), and
        the labels their first attempt took from the store to send back: that attempt's
        outputs may never have become visible (an aborted transaction, a crash before the
        send). A label that did arrive twice is learned once (its event's "learned" mark)."""
        ids = [ev.event_id for _, ev in batch]
        snaps = await self.store.get_snapshots(ids)
        out: list[Output] = []
        for event_id, raw_label in zip(ids, await self.store.taken_labels(ids), strict=True):
            if raw_label is not None:
                out.append(LabelBack(self._t_labels, event_id, raw_label))
                self.metrics.labels_forwarded += 1
        for (rec, ev), snap in zip(batch, snaps, strict=True):
            self.metrics.redelivered += 1
            if snap is None:  # expired: nothing to re-emit; the original was sent long ago
                continue
            prediction = self._from_snapshot(ev, snap)
            prediction.source = rec.partition
            self.metrics.observe_latencies_ms((prediction.latency_ms,))
            out.append(prediction)
            if self._t_feature_log is not None:  # the first attempt's may not be visible
                out.append(FeatureLog(self._t_feature_log, ev.event_id, ev.entity_id,
                                      self.model.name, ev.timestamp, snap, rec.partition))
        return out

    def _from_snapshot(self, ev: Event, snap: bytes) -> Prediction:
        """The prediction made when ``ev``'s id was scored, from its stored snapshot."""
        s = orjson.loads(snap)
        return Prediction(self._t_predictions, ev.event_id, ev.entity_id, self.model.name,
                          s["v"], s["s"], decide(s["s"], self._threshold), ev.timestamp, s["t"],
                          s["l"], s.get("n", 0))

    def dead_letter(self, rec: Record, reason: str, error: str) -> DeadLetter:
        """The dead letter of ``rec`` (counted by reason), redacted (``http.redact_*``)."""
        self.metrics.dead_letter(reason)
        letter = DeadLetter.of(self._t_dead, rec, reason, error)
        redactor = self.redactor
        if redactor.enabled:
            letter.payload = redactor.payload(letter.payload)
            letter.error = redactor.text(letter.error)
        return letter

    # -- labels -----------------------------------------------------------------------------
    def to_target(self, label: bool | int | str) -> bool:
        """Map a label to the positive class (see ``pipeline.labels.to_target``)."""
        return to_target(label, self._positive)

    async def process_labels(self, records: Sequence[Record]) -> list[Output]:
        """Join labels to the feature snapshots they were scored with, and learn once each.

        A label record that comes again from the same position (``redelivered``) is learned
        again only if this model has not consumed that offset: after a restore from a snapshot
        older than the label, never after a plain redelivery of a batch it learned.

        Holds ``learn_lock`` throughout, so a checkpoint sees a model and label offsets that
        agree: all of a batch or none of it.
        """
        async with self.learn_lock:
            return await self._process_labels(records)

    async def _process_labels(self, records: Sequence[Record]) -> list[Output]:
        out: list[Output] = []
        # one join per "round": a second record of the same event id in the batch waits for the
        # next round, so the store judges every record by its own position (in a replay, a
        # label and its sent-back copy often share a batch, and only one of them was learned)
        rounds: list[dict[str, tuple[Label, bytes, Record]]] = []
        for rec in records:
            parsed = parse_label(rec.value, self.limits)
            if isinstance(parsed, Rejection):
                out.append(self.dead_letter(rec, parsed.reason, parsed.error))
                continue
            self.metrics.labels_received += 1
            for labels in rounds:
                if parsed.event_id not in labels:
                    break
            else:
                labels = {}
                rounds.append(labels)
            labels[parsed.event_id] = (parsed, rec.value or b"", rec)
        ledger = self.ledger
        clock = time.perf_counter
        scoring = self.events_lock.locked if self.model.kind == "classifier" else bool
        for labels in rounds:
            joined = await self._join(
                {eid: raw for eid, (_, raw, _) in labels.items()},
                {eid: _position(rec) for eid, (_, _, rec) in labels.items()})
            started = clock()
            paused, learned = 0.0, 0
            yield_at = started + LEARN_SLICE_S
            for eid, (label, raw, rec) in labels.items():
                status, snap = joined[eid]
                self._remember(eid, status, label, raw, rec)
                if status == REDELIVERED and not ledger.consumed(rec.partition, rec.offset):
                    status = JOINED  # consumed by a model that was lost before a checkpoint
                    self.metrics.labels_relearned += 1
                if status == JOINED and snap is not None:
                    # between two learns the model is whole: yield at the end of a slice,
                    # or at once when an events batch got under way meanwhile
                    if clock() >= yield_at or scoring():
                        t = clock()
                        await self._yield_to_scoring()
                        yield_at = clock()
                        paused += yield_at - t
                        yield_at += LEARN_SLICE_S
                    out.extend(self._learn(label, snap))
                    learned += 1
                elif status in (DUPLICATE, REDELIVERED):
                    self.metrics.labels_duplicate += 1
                elif status == EXPIRED:
                    self.metrics.labels_expired += 1
                elif status == FLOODED:
                    limits = self.settings.labels
                    out.append(self.dead_letter(
                        rec, "label_flood", f"its event is not scored yet, and the parked labels "
                        f"are at labels.max_parked ({limits.max_parked}) or "
                        f"labels.max_parked_bytes ({limits.max_parked_bytes})"))
                else:
                    self.metrics.labels_parked += 1
            if self.gil is not None and learned:
                self.gil.observe(clock() - started - paused, learned)
        # only now, after learning: a checkpoint taken meanwhile must not claim these offsets
        for rec in records:
            ledger.mark(rec.partition, rec.offset)
        self.metrics.state_losses = self.store.state_losses
        return out

    def _remember(self, eid: str, status: str, label: Label, raw: bytes, rec: Record) -> None:
        """Keep the newest :data:`REMEMBER_PARKED` parked labels; forget a label once joined."""
        parked = self._parked
        if status == PARKED:
            parked[eid] = (label, raw, rec)
            parked.move_to_end(eid)
            if len(parked) > REMEMBER_PARKED:
                parked.popitem(last=False)
        else:
            parked.pop(eid, None)

    async def sweep_labels(self, *, force: bool = False) -> list[Output]:
        """The learner's sweep (a timer, at most once per :data:`SWEEP_EVERY_S`): dead-letter
        the parked labels whose events were not scored within ``labels.park_ttl_s``
        (``label_orphaned``), and, after the store lost its state, park the remembered ones
        again (those whose events come later are still learned)."""
        now = time.monotonic()
        if self._store is None or (not force and now - self._swept_at < SWEEP_EVERY_S):
            return []
        self._swept_at = now
        async with self.learn_lock:
            out: list[Output] = []
            store = self.store
            losses = store.state_losses
            self.metrics.state_losses = losses
            if losses != self._losses_seen:
                self._losses_seen = losses
                out.extend(await self._park_again())
            for eid, raw, position in await store.sweep_parked(limit=1000):
                entry = self._parked.pop(eid, None)
                rec = _record_at(position, raw, eid) if entry is None else entry[2]
                self.metrics.labels_orphaned += 1
                out.append(self.dead_letter(
                    rec, "label_orphaned", f"no event {eid!r} was scored (or its features "
                    f"were lost with the store's state) within labels.park_ttl_s "
                    f"({self._park_ttl} s)"))
            return out

    async def _park_again(self) -> list[Output]:
        """After a state loss: park the remembered labels again; join those that can."""
        remembered = list(self._parked.items())
        if not remembered:
            return []
        limits = self.settings.labels
        joined = await self.store.join_labels(
            {eid: raw for eid, (_, raw, _) in remembered},
            positions={eid: _position(rec) for eid, (_, _, rec) in remembered},
            pending_ttl_s=self._park_ttl, learned_ttl_s=self._seen_ttl,
            max_parked=limits.max_parked, max_parked_bytes=limits.max_parked_bytes)
        out: list[Output] = []
        for eid, (label, raw, rec) in remembered:
            status, snap = joined[eid]
            self._remember(eid, status, label, raw, rec)
            if status == JOINED and snap is not None:
                out.extend(self._learn(label, snap))
            elif status == FLOODED:
                out.append(self.dead_letter(rec, "label_flood", "parked again after a state "
                                            "loss, past labels.max_parked(_bytes)"))
        self.metrics.labels_reparked += len(remembered)
        log.warning("parked %d remembered labels again after a state loss of the store",
                    len(remembered))
        return out

    async def _join(self, raw: dict[str, bytes], positions: dict[str, bytes]
                    ) -> dict[str, tuple[str, bytes | None]]:
        """Join labels to their snapshots; hold those whose event is not scored yet.

        A label that comes before its event would be parked in the store and sent back to the
        labels topic once the event is scored: twice the work. Instead it is held while this
        worker keeps scoring events (at most ``label_wait_s`` without a commit here, and
        ``20 * label_wait_s`` in all; polled every 50 ms for events scored elsewhere), then
        parked. Three holds in a row during which events were scored but none of their labels
        met its event (labels for events that never come, or far ahead of them) turn holding
        off for ten holds' time.
        """
        store, learned_ttl = self.store, self._seen_ttl
        limits = self.settings.labels
        ttls = dict(pending_ttl_s=self._park_ttl, learned_ttl_s=learned_ttl,
                    max_parked=limits.max_parked, max_parked_bytes=limits.max_parked_bytes)
        wait = self.settings.label_wait_s if time.monotonic() >= self._hold_labels_after else 0.0
        joined = await store.join_labels(raw, positions=positions, park=not wait, **ttls)
        missing = [eid for eid, (status, _) in joined.items() if status == MISSING]
        if not missing:
            return joined
        scored = self._scored
        start = time.monotonic()
        hard, idle_until, commits = start + 20 * wait, start + wait, scored.count
        met = 0
        while missing:
            now = time.monotonic()
            final = now >= min(hard, idle_until)
            if not final:
                seen = scored.count
                await scored.wait(min(min(hard, idle_until) - now, _LABEL_POLL_S))
                if scored.count != seen:  # events are being scored here: keep holding
                    idle_until = time.monotonic() + wait
            again = await store.join_labels(
                {eid: raw[eid] for eid in missing},
                positions={eid: positions[eid] for eid in missing}, park=final, **ttls)
            joined.update(again)
            met += sum(again[eid][0] not in (MISSING, PARKED, FLOODED) for eid in missing)
            missing = [eid for eid in missing if again[eid][0] == MISSING]
        self.metrics.label_batches_held += 1
        if met or scored.count == commits:
            self._fruitless_holds = 0
        else:
            self._fruitless_holds += 1
            if self._fruitless_holds >= _FRUITLESS_HOLDS:
                self._fruitless_holds = 0
                self._hold_labels_after = time.monotonic() + 10 * (time.monotonic() - start)
        return joined

    async def _yield_to_scoring(self) -> None:
        """Between two learns: give the loop back, and if a batch of events is being scored,
        wait until it is done. Scoring comes first: when learning cannot keep up, the labels
        lag (``consumer_lag`` on the labels topic) while predictions keep their latency; each
        events batch costs learning at most one slice of waiting, never the other way round.
        (An anomaly model learns inside the events batch, under ``learn_lock``, which learning
        holds here: it only gives the loop back.)"""
        await asyncio.sleep(0)  # an events batch that is ready starts now
        if self.model.kind == "classifier" and self.events_lock.locked():
            async with self.events_lock:  # FIFO: the next events batch queues behind us
                pass

    def _learn(self, label: Label, snap: bytes) -> list[Output]:
        """Learn from the features as scored; measure the prediction made before learning."""
        s = orjson.loads(snap)
        y = to_target(label.label, self._positive)
        now = time.time()
        self.metrics.label_joined(y, s["s"], self._threshold, delay_s=now - s["t"])
        logged: list[Output] = [] if self._t_feature_log is None else [LabelLog(
            self._t_feature_log, label.event_id, self.model.name, s["v"], label.label, y,
            label.timestamp, now)]
        if not self.learning_enabled or self.model.kind != "classifier":
            return logged
        x = s["x"]
        self.model.learn_one(x, y)
        self.metrics.learned += 1
        self.learns_since_snapshot += 1
        self.data_hash.update(label.event_id, y)
        self.recent.append((x, y))
        challenger = self.challenger
        if challenger is not None:
            challenger.learn(x, y, champion_score=s["s"], score=s.get("c"), version=s.get("cv"),
                             threshold=self._threshold)
        return logged + self.drift.observe_label(y, s["s"], learned=self.metrics.learned)


class _Signal:
    """Wakes every waiter at once on ``notify``; ``wait`` also returns after ``timeout_s``.
    ``count`` is the number of notifications so far."""

    __slots__ = ("_event", "count")

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self.count = 0

    def notify(self) -> None:
        self.count += 1
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, timeout_s: float) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            pass


def _position(rec: Record) -> bytes:
    return f"{rec.topic}:{rec.partition}:{rec.offset}".encode()


def _record_at(position: bytes | None, value: bytes | None, event_id: str) -> Record:
    """The label record a parked label's position names (topic names have no ``:``); one
    parked without a position is at ``("", -1, -1)``, and one whose payload is gone carries
    its event id.

    >>> r = _record_at(b"t.labels:2:17", b"{}", "e1"); (r.topic, r.partition, r.offset, r.value)
    ('t.labels', 2, 17, b'{}')
    >>> r = _record_at(None, None, "e1"); (r.topic, r.partition, r.offset, r.value)
    ('', -1, -1, b'{"event_id":"e1"}')
    """
    topic, partition, offset = "", -1, -1
    parts = (position or b"").decode(errors="replace").rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        topic, partition, offset = parts[0], int(parts[1]), int(parts[2])
    if value is None:
        value = orjson.dumps({"event_id": event_id})
    return Record(topic, partition, offset, event_id.encode(), value, 0.0)
