"""The flow, per batch: validate -> features -> score -> remember -> emit, and label -> learn.

This is the one module that awaits the online store; every stage it calls is a plain function
or a small object (``validate``, ``features.aggregates``, ``models.spec``). It never talks to
Kafka: it returns the records to send, and the agent (``stream_app.app``) sends them and acks
the batch only once they are delivered.

Two Redis round trips per batch of events (read states + claim event ids; write states +
snapshots + take the labels that arrived early, which go back to the labels topic for the
learner) and one per batch of labels.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from features.aggregates import fold_events
from features.spec import FeatureSpec, compile_spec
from features.store import DUPLICATE, EXPIRED, JOINED, REDELIVERED, FeatureStore, open_feature_store
from models.metrics import PrequentialMetrics, decide
from models.online import ModelOutputError
from models.registry.types import DataHash
from models.spec import OnlineModel, build_model, one_hot
from stream_app import contract
from stream_app.batching import Record
from stream_app.engine_metrics import EngineMetrics
from stream_app.monitoring import DriftStage
from stream_app.settings import Settings
from stream_app.validate import Event, Label, Limits, Rejection, parse_event, parse_label

__all__ = ["Challenger", "Engine", "Out", "Record"]

log = logging.getLogger(__name__)


#: (topic, key, value) ready for the producer
Out = tuple[str, bytes | None, bytes]


@dataclass(slots=True)
class Challenger:
    """A model scored in shadow beside the champion and compared on the same labels.

    ``outcomes`` holds, for the last ``compare`` labels both models scored before learning,
    whether each was right: ``(champion_right, challenger_right)``.
    """

    model: OnlineModel
    snapshot_id: int = 0
    compare: int = 500
    prequential: PrequentialMetrics = field(default_factory=PrequentialMetrics)
    outcomes: deque[tuple[bool, bool]] = field(default_factory=deque)
    compared: int = 0
    learned: int = 0

    def record(self, champion_right: bool, challenger_right: bool) -> None:
        self.outcomes.append((champion_right, challenger_right))
        if len(self.outcomes) > self.compare:
            self.outcomes.popleft()
        self.compared += 1

    def accuracies(self) -> tuple[float, float] | None:
        """(champion, challenger) accuracy over the last ``compare`` labels, once that many."""
        n = len(self.outcomes)
        if n < self.compare:
            return None
        return (sum(a for a, _ in self.outcomes) / n, sum(b for _, b in self.outcomes) / n)


class Engine:
    """Holds the model, the feature spec, the store handle and the metrics of one worker."""

    def __init__(self, settings: Settings, *, store: FeatureStore | None = None,
                 model: OnlineModel | None = None) -> None:
        self.settings = settings
        self.limits = Limits(settings.max_payload_bytes, settings.max_abs_value)
        self.spec: FeatureSpec = compile_spec(settings.features)
        self.model: OnlineModel = model or build_model(settings.model)
        self._store = store
        self.metrics = EngineMetrics(model=self.model.name, model_version=self.model.version)
        self.drift = DriftStage(settings, model=self.model.name, model_version=self.model.version)
        self._t_predictions = settings.topic(contract.PREDICTIONS)
        self._t_dead = settings.topic(contract.DEAD_LETTERS)
        self._one_hot = settings.model.one_hot_strings
        self._threshold = settings.model.threshold
        self._positive = {p.lower() for p in settings.model.positive_labels}
        self._seen_ttl = 2 * settings.label_horizon_s
        warmup = settings.drift.prediction_warmup
        self._score_warmup = settings.drift.window if warmup is None else warmup
        self._t_shadow = settings.topic(contract.PREDICTIONS_SHADOW)
        self._t_labels = settings.topic(contract.LABELS)
        #: the registry snapshot the serving model descends from (0: none)
        self.snapshot_id = 0
        #: per labels partition, the lowest offset this model has not consumed (learned or not)
        #: and the offsets above it it has consumed: a restore rewinds to ``label_next``, and
        #: records fetched before the rewind took effect may come first
        self.label_next: dict[int, int] = {}
        self.label_ahead: dict[int, set[int]] = {}
        #: the ``(event_id, label)`` sequence learned, hashed (the training-data hash)
        self.data_hash = DataHash()
        #: learns since the last checkpoint (see ``stream_app.lifecycle``)
        self.learns_since_snapshot = 0
        #: the last labelled feature vectors learned, to warm-start a challenger
        self.recent: deque[tuple[dict[str, float], bool]] = deque(
            maxlen=settings.lifecycle.warm_start_window)
        self.challenger: Challenger | None = None

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
            self.label_next = dict(label_next)
            self.label_ahead = {p: set(o) for p, o in (label_ahead or {}).items()}
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
                                             namespace=self.settings.app_id)

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None

    # -- events -----------------------------------------------------------------------------
    async def process_events(self, records: Sequence[Record]) -> list[Out]:
        """Validate, enrich, score and remember one batch; return the records to emit.

        Idempotent under redelivery: nothing is written before ``commit_batch``, which claims the
        event ids together with the states and snapshots in one atomic step. A record that comes
        again from the same topic/partition/offset (the batch was processed but not acked)
        re-emits its stored prediction; any other repeat of an ``event_id`` is a duplicate.
        """
        t0 = time.perf_counter()
        out: list[Out] = []
        fresh: list[tuple[Record, Event]] = []
        for rec in records:
            parsed = parse_event(rec.value, self.limits)
            if isinstance(parsed, Rejection):
                out.append(self._dead(rec, parsed))
            else:
                fresh.append((rec, parsed))
        if not fresh:
            self.metrics.batch(len(records), 0, time.perf_counter() - t0)
            return out
        entity_ids = list(dict.fromkeys(ev.entity_id for _, ev in fresh))
        read = await self.store.begin_batch(entity_ids, [ev.event_id for _, ev in fresh])
        t1 = time.perf_counter()
        fresh, redelivered = self._dedupe(fresh, read.seen)
        if redelivered:
            out.extend(await self._replay_predictions(redelivered))
        states = dict(zip(entity_ids, read.states, strict=True))
        scored, snapshots, claims, observed = self._score_batch(fresh, states, out)
        t2 = time.perf_counter()
        touched = {e: states[e] for e in {ev.entity_id for _, ev in fresh}} if self.spec.names else {}
        learner = self.learning_enabled
        # labels that came before their events are handed back, not learned here: they go to
        # the labels topic again, so every learn comes from a label record with an offset,
        # and a model restored from a snapshot knows exactly which ones to learn again
        early = await self.store.commit_batch(
            touched, claims, snapshots,
            entity_ttl_s=self.settings.features.entity_ttl_s,
            snapshot_ttl_s=self.settings.label_horizon_s, claim_ttl_s=self._seen_ttl,
            mark_learned=False)
        # committed: only now do these events count for drift (a retried batch counts once)
        if observed:
            observe = self.drift.observe
            for x, features, score, ts in observed:
                out.extend(observe(x, features, score=score, timestamp=ts))
        if self.model.kind == "anomaly" and learner:
            for x in scored:
                self.model.learn_one(x, None)
            self.metrics.learned += len(scored)
            self.learns_since_snapshot += len(scored)
        for event_id, raw_label in early.items():
            out.append((self._t_labels, event_id.encode(), raw_label))
            self.metrics.labels_forwarded += 1
        t3 = time.perf_counter()
        self.metrics.batch(len(records), len(snapshots), t3 - t0,
                           store_read_s=t1 - t0, score_s=t2 - t1, store_write_s=t3 - t2)
        return out

    def _dedupe(self, batch: list[tuple[Record, Event]], seen: Sequence[bytes | None]
                ) -> tuple[list[tuple[Record, Event]], list[tuple[Record, Event]]]:
        """Split into first sightings and redeliveries; count and drop true duplicates."""
        fresh, redelivered = [], []
        in_batch: set[str] = set()
        for (rec, ev), claim in zip(batch, seen, strict=True):
            if claim is None and ev.event_id not in in_batch:
                in_batch.add(ev.event_id)
                fresh.append((rec, ev))
            elif claim is not None and claim == _position(rec):
                redelivered.append((rec, ev))
            else:
                self.metrics.duplicate_events += 1
        return fresh, redelivered

    def _score_batch(self, batch: list[tuple[Record, Event]], states: dict[str, Any],
                     out: list[Out]) -> tuple[list[dict[str, float]], dict[str, bytes],
                                              dict[str, bytes], list[tuple[Any, ...]]]:
        """Featurise (point in time, entity by entity) and score, in arrival order."""
        aggregates = self._aggregates(batch, states)
        xs: list[dict[str, float]] = []
        drift_on = self.settings.drift.enabled
        observed: list[tuple[Any, ...]] = []
        warm = self.metrics.learned >= self._score_warmup
        snapshots: dict[str, bytes] = {}
        claims: dict[str, bytes] = {}
        challenger = self.challenger
        sid = self.snapshot_id
        for i, (rec, ev) in enumerate(batch):
            x = one_hot(ev.features) if self._one_hot else _numeric(ev.features)
            if aggregates:
                x.update(aggregates[i])
            try:
                score = self.model.predict_proba_one(x)
            except ModelOutputError as exc:
                out.append(self._dead(rec, Rejection("model_output", str(exc))))
                continue
            now = time.time()
            latency_ms = max(0.0, (now - rec.timestamp) * 1000.0) if rec.timestamp else 0.0
            out.append((self._t_predictions, ev.event_id.encode(),
                        self._prediction(ev, score, now, latency_ms, self.model.version, sid)))
            snap: dict[str, Any] = {"x": x, "s": score, "v": self.model.version, "t": now,
                                    "l": latency_ms, "n": sid}
            if challenger is not None:
                c = self._shadow(ev, x, challenger, now, latency_ms, out)
                if c is not None:
                    snap["c"], snap["cv"] = c, challenger.model.version
            snapshots[ev.event_id] = orjson.dumps(snap)
            claims[ev.event_id] = _position(rec)
            xs.append(x)
            if drift_on:
                observed.append((x, ev.features, score if warm else None, ev.timestamp))
        return xs, snapshots, claims, observed

    def _shadow(self, ev: Event, x: dict[str, float], challenger: Challenger, now: float,
                latency_ms: float, out: list[Out]) -> float | None:
        """Score in shadow: to ``predictions-shadow``, never to ``predictions``."""
        try:
            c = challenger.model.predict_proba_one(x)
        except ModelOutputError:
            return None
        out.append((self._t_shadow, ev.event_id.encode(), contract.prediction(
            event_id=ev.event_id, entity_id=ev.entity_id, model=challenger.model.name,
            model_version=challenger.model.version, score=c, predicted=decide(c, self._threshold),
            event_timestamp=ev.timestamp, scored_at=now, latency_ms=latency_ms,
            model_snapshot=challenger.snapshot_id)))
        return c

    def _aggregates(self, batch: list[tuple[Record, Event]], states: dict[str, Any]
                    ) -> list[dict[str, float]]:
        """Each event's entity aggregates as they stood before it; ``states`` move forward."""
        if not self.spec.names:
            return []
        by_entity: dict[str, list[int]] = {}
        for i, (_, ev) in enumerate(batch):
            by_entity.setdefault(ev.entity_id, []).append(i)
        rows: list[dict[str, float]] = [{}] * len(batch)
        for entity, idx in by_entity.items():
            got, states[entity] = fold_events(
                self.spec, states.get(entity),
                [(batch[i][1].timestamp, batch[i][1].features) for i in idx], reuse_state=True)
            for i, row in zip(idx, got, strict=True):
                rows[i] = row
        return rows

    async def _replay_predictions(self, batch: list[tuple[Record, Event]]) -> list[Out]:
        """Re-emit the predictions of records processed before a crash (same position)."""
        snaps = await self.store.get_snapshots([ev.event_id for _, ev in batch])
        out: list[Out] = []
        for (_, ev), snap in zip(batch, snaps, strict=True):
            self.metrics.redelivered += 1
            if snap is None:  # expired: nothing to re-emit; the original was sent long ago
                continue
            s = orjson.loads(snap)
            out.append((self._t_predictions, ev.event_id.encode(),
                        self._prediction(ev, s["s"], s["t"], s["l"], s["v"], s.get("n", 0))))
        return out

    def _prediction(self, ev: Event, score: float, scored_at: float, latency_ms: float,
                    version: str, snapshot_id: int) -> bytes:
        self.metrics.observe_latency_ms(latency_ms)
        return contract.prediction(
            event_id=ev.event_id, entity_id=ev.entity_id, model=self.model.name,
            model_version=version, score=score, predicted=decide(score, self._threshold),
            event_timestamp=ev.timestamp, scored_at=scored_at, latency_ms=latency_ms,
            model_snapshot=snapshot_id)

    def _dead(self, rec: Record, rej: Rejection) -> Out:
        self.metrics.dead_letter(rej.reason)
        value = rec.value or b""
        if rej.reason == "too_large":
            value = value[:4096]  # the original is too large to forward; keep its head
        return (self._t_dead, rec.key, contract.dead_letter(
            value, rec.topic, rec.partition, rec.offset, rej.reason, rej.error))

    # -- labels -----------------------------------------------------------------------------
    def to_target(self, label: bool | int | str) -> bool:
        """Map a label to the positive class.

        ``True``, non-zero ints and the configured strings (case-insensitive) are positive.
        """
        if type(label) is bool:
            return label
        if type(label) is int:
            return label != 0
        return str(label).strip().lower() in self._positive

    async def process_labels(self, records: Sequence[Record]) -> list[Out]:
        """Join labels to the feature snapshots they were scored with, and learn once each.

        A label record that comes again from the same position (``redelivered``) is learned
        again only if this model has not consumed that offset: after a restore from a snapshot
        older than the label, never after a plain redelivery of a batch it learned.
        """
        out: list[Out] = []
        # one join per "round": a second record of the same event id in the batch waits for the
        # next round, so the store judges every record by its own position (in a replay, a
        # label and its sent-back copy often share a batch, and only one of them was learned)
        rounds: list[dict[str, tuple[Label, bytes, Record]]] = []
        for rec in records:
            parsed = parse_label(rec.value, self.limits)
            if isinstance(parsed, Rejection):
                out.append(self._dead(rec, parsed))
                continue
            self.metrics.labels_received += 1
            for labels in rounds:
                if parsed.event_id not in labels:
                    break
            else:
                labels = {}
                rounds.append(labels)
            labels[parsed.event_id] = (parsed, rec.value or b"", rec)
        for labels in rounds:
            joined = await self.store.join_labels(
                {eid: raw for eid, (_, raw, _) in labels.items()},
                pending_ttl_s=self.settings.label_horizon_s, learned_ttl_s=self._seen_ttl,
                positions={eid: _position(rec) for eid, (_, _, rec) in labels.items()})
            for eid, (label, _, rec) in labels.items():
                status, snap = joined[eid]
                if status == REDELIVERED and not self._consumed(rec.partition, rec.offset):
                    status = JOINED  # consumed by a model that was lost before a checkpoint
                    self.metrics.labels_relearned += 1
                if status == JOINED and snap is not None:
                    out.extend(self._learn(label, snap))
                elif status in (DUPLICATE, REDELIVERED):
                    self.metrics.labels_duplicate += 1
                elif status == EXPIRED:
                    self.metrics.labels_expired += 1
                else:
                    self.metrics.labels_parked += 1
        # only now, after learning: a checkpoint taken meanwhile must not claim these offsets
        for rec in records:
            self._mark_consumed(rec.partition, rec.offset)
        return out

    def _consumed(self, partition: int, offset: int) -> bool:
        """Has this model consumed that label record (so it learned it, if it was learnable)?"""
        return offset < self.label_next.get(partition, 0) or offset in self.label_ahead.get(
            partition, ())

    def _mark_consumed(self, partition: int, offset: int) -> None:
        nxt = self.label_next.setdefault(partition, offset)  # a first record: start there
        if offset < nxt:
            return
        ahead = self.label_ahead.setdefault(partition, set())
        ahead.add(offset)
        while nxt in ahead:
            ahead.remove(nxt)
            nxt += 1
        self.label_next[partition] = nxt
        if len(ahead) > 100_000:  # a rewind that never took effect: do not grow for ever
            log.error("labels[%d]: %d consumed offsets above %d; giving up on the gap",
                      partition, len(ahead), nxt)
            self.label_next[partition] = max(ahead) + 1
            ahead.clear()

    def _learn(self, label: Label, snap: bytes) -> list[Out]:
        """Learn from the features as scored; measure the prediction made before learning."""
        s = orjson.loads(snap)
        y = self.to_target(label.label)
        self.metrics.label_joined(y, s["s"], self._threshold, delay_s=time.time() - s["t"])
        if not self.learning_enabled or self.model.kind != "classifier":
            return []
        x = s["x"]
        self.model.learn_one(x, y)
        self.metrics.learned += 1
        self.learns_since_snapshot += 1
        self.data_hash.update(label.event_id, y)
        self.recent.append((x, y))
        challenger = self.challenger
        if challenger is not None:
            c = s.get("c")
            if c is not None and s.get("cv") == challenger.model.version:
                challenger.prequential.update(y, c, self._threshold)
                challenger.record(decide(s["s"], self._threshold) == y,
                                  decide(c, self._threshold) == y)
            challenger.model.learn_one(x, y)
            challenger.learned += 1
        return self.drift.observe_label(y, s["s"])


def _position(rec: Record) -> bytes:
    return f"{rec.topic}:{rec.partition}:{rec.offset}".encode()


def _numeric(features: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in features.items() if type(v) in (int, float)}
