"""The model's lifecycle in one worker: restore, checkpoint, hot swap, champion and challenger.

One worker learns: the one holding the single partition of ``labels`` (Kafka's group protocol
gives it to exactly one member). It checkpoints the model to the registry every
``snapshot_every_learns`` learns or ``snapshot_interval_s`` seconds (when it learned anything),
but no sooner than the last checkpoint's size over ``checkpoint_max_bytes_per_s``, and when
it loses the partition and when it stops; it keeps at most ``keep_snapshots`` and
``keep_bytes`` of them per version. Every other worker is a scorer: it polls the
registry and hot-swaps to the newest snapshot of the production version, so the model it serves
is at most ``staleness_s`` behind the learner's newest checkpoint. A swap happens between two
batches: no prediction is dropped or doubled, and each carries ``model_version`` and
``model_snapshot``.

A worker that becomes the learner restores the newest snapshot that verifies and returns the
label offsets stored with it (the agent seeks there), so labels learned after that snapshot
by a worker that died are learned again (see ``Engine.process_labels``).

A checkpoint is pickled in a worker thread (``models.registry.pickling``: the event loop keeps
running, measured in ``bench/RESULTS.md``). Learning waits meanwhile (``Engine.learn_lock``:
a batch of labels, an anomaly detector's learning), so the thread never reads a model that
learns; champion and challenger are pickled together with the label offsets, learn count and
data hash read at the same moment, and learning resumes before the bytes are written.

A model whose last checkpoint was ``checkpoint_fork_bytes`` or more (16 MiB; Linux) is
pickled by a forked child instead (``ForkedPickles``): learning waits only for the fork, and
the pickler's GIL holds (its biggest containers, the release of its memo at the end: 100 to
300 ms for a forest of 100 trees) happen in the child, not in the worker. So is a learner's
first checkpoint of a model it did not restore, whose size nobody knows yet: a fork of a small
worker costs a few milliseconds, a thread's pickle of a big model held the loop 174 ms. If a
child fails (or runs past :data:`FORK_TIMEOUT_S`), the worker says so once and pickles in a
thread from then on.

Such a model is also taken out of the cyclic garbage collector's reach (``gc_freeze``): after
each of its checkpoints and each install, ``gc.freeze()`` moves every object then alive to the
permanent generation, so a full collection scans only what was made since. A snapshot that big
is unpickled frozen (``pickling.loads(freeze=True)``): its objects never sit in the youngest
generation, whose next pass over a forest's 850,000 held a scorer's loop 0.6 s. A full pass over a
100-tree forest trained on 10,000 events (848,000 tracked objects, 2.5 GB) held the GIL for
1.2 s. Frozen objects are still freed when their count drops to zero; what freezing gives up is
finding cycles among them that were garbage or became so later. River's models make none
(a forest learning 3,000 events through a concept drift left 0 cyclic garbage), and the
worker's young garbage is collected just before each freeze.

Scoring goes on while the thread pickles. River's predict paths read a model and do not write
it (river 0.26.1: ``Pipeline._transform_one``; ``StandardScaler.transform_one``;
``LogisticRegression.predict_proba_one``, whose ``VectorDict.dot`` adds no key;
``ARFClassifier.predict_proba_one`` -> ``HoeffdingTreeClassifier.predict_proba_one`` ->
``Branch.traverse``, the leaves' ``prediction``, ``do_naive_bayes_prediction``,
``GaussianSplitter.cond_log_proba``; ``tests/test_checkpoint_offloop.py`` checks that scoring
leaves the pickle of every allow-listed model unchanged), with two exceptions:

* a first use builds caches (a pipeline's plan, a forest's trees); every model that learned
  once has them, and one that never learned is pickled on the loop;
* the scalers (Standard, MinMax, MaxAbs) add a default entry to their ``defaultdict`` for a
  feature they never learned: the value a lookup gives anyway, so either side of it is the
  same model. If it lands while the pickler walks that very dict, pickle raises ``RuntimeError``
  (dictionary changed size); the pickle is tried again, the last time on the loop.

Champion and challenger: on a retrain signal (or ``stream-app models challenge``) the learner
creates a ``staging`` version (the champion's spec, or ``challenger_steps``), warm-starts it on
the last ``warm_start_window`` labelled feature vectors, scores it in shadow (to
``predictions-shadow``) and teaches it the same labels. Once both models have scored the last
``compare_labels`` labels, a challenger whose accuracy beats the champion's by
``promote_margin`` is promoted (``auto_promote``) or reported ready; one that has not won after
``challenger_max_labels`` is archived. Every stage change goes to the ``models`` topic.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from models.metrics import PrequentialMetrics
from models.registry import ModelRegistry, open_registry
from models.registry.pickling import ForkedPickles, Pickled, PicklingFailed, can_fork
from models.registry.types import SnapshotInfo, StageChange, VersionInfo, utc_now
from models.spec import OnlineModel, build_model
from stream_app import contract
from stream_app.errors import CheckpointError, ConfigError, FencedError, ModelNotFoundError
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Out, Output, Record, RetrainSignal
from stream_app.pipeline.shadow import Challenger
from stream_app.settings import LifecycleSettings, ModelSettings, Settings, StepSettings

__all__ = ["ModelKeeper", "freeze_for_gc", "model_spec", "require_key"]

log = logging.getLogger(__name__)

#: prune old snapshots after this many checkpoints, or after ``keep_bytes`` / this many bytes
_PRUNE_EVERY = 10
#: pickling attempts in a thread before the last one on the loop (see the module docstring)
_THREAD_ATTEMPTS = 2
#: a pickling child still running after this long is killed and the checkpoint pickled in a
#: thread (from then on); pickling runs at ~75 MB/s, so a GB of model takes ~15 s
FORK_TIMEOUT_S = 300.0


def freeze_for_gc(conf: LifecycleSettings, *, full: bool = False) -> None:
    """Move every object alive now out of the cyclic GC's reach (``gc.freeze``), after a
    young collection (``full``: a full one), when ``conf.gc_freeze`` (module doc)."""
    if conf.gc_freeze:
        gc.collect() if full else gc.collect(1)
        gc.freeze()


def require_key(settings: Settings) -> None:
    """A worker that checkpoints needs ``STREAM_REGISTRY_KEY``; refuse to start without one."""
    if settings.lifecycle.enabled and settings.registry_key_bytes is None:
        raise ConfigError(
            "STREAM_REGISTRY_KEY is not set: a worker signs its model checkpoints and refuses "
            "to start without a key (at least 16 bytes; keep it secret). `stream-app demo` "
            "makes an ephemeral one; or set STREAM_LIFECYCLE__ENABLED=false to run without "
            "checkpoints.")


def model_spec(steps: tuple[StepSettings, ...]) -> dict[str, Any]:
    """The registry's ``spec`` of a version: its River steps.

    >>> model_spec((StepSettings(name="GaussianNB"),))
    {'steps': [{'name': 'GaussianNB', 'params': {}}]}
    """
    return {"steps": [{"name": s.name, "params": dict(s.params)} for s in steps]}


@dataclass(frozen=True, slots=True)
class _Taken:
    """One model's part of a checkpoint, as it was when the checkpoint was taken."""

    model: OnlineModel
    state: dict[str, Any]
    learned: int
    offsets: dict[str, int]
    data_hash: str
    metrics: dict[str, Any]
    challenger: Challenger | None = None


class ModelKeeper:
    """Moves models between the registry and an :class:`~stream_app.pipeline.engine.Engine`."""

    def __init__(self, settings: Settings, engine: Engine,
                 registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.conf = settings.lifecycle
        self.engine = engine
        self.name = settings.model.name
        self.registry = registry or open_registry(
            settings.registry_url, key=settings.registry_key_bytes, namespace=settings.app_id)
        self.learner = False
        #: this learner's lease (``ModelRegistry.take_lease``); checkpoints carry it
        self.lease: int | None = None
        #: times another learner's lease refused this one's checkpoint
        self.fenced = 0
        self.started = False
        self._last_checkpoint = time.monotonic()
        #: the size of the last checkpoint saved or restored (champion and challenger);
        #: None until one is (the first checkpoint of a model that was not restored)
        self._last_bytes: int | None = None
        self._fork_ok = True
        self._checkpoints = 0
        self._unpruned_bytes = 0
        #: one checkpoint at a time, saved in the order they were taken
        self._checkpointing = asyncio.Lock()
        self._t_models = settings.topic(contract.MODELS)
        self._ready_reported: str | None = None
        self._signals_seen: set[str] = set()
        #: the longest a scorer served an older model after the learner saved a newer one
        self.max_swap_delay_s = 0.0
        self.swaps = 0
        #: what the last ``become_learner`` restored (version, snapshot, learn count)
        self.restored: dict[str, Any] | None = None
        self._start_lock = asyncio.Lock()
        #: ``models`` records made outside a batch, sent by the next ``refresh``
        self.pending: list[Out] = []

    # -- start, roles ---------------------------------------------------------------------
    async def start(self) -> None:
        """Serve the production version's newest good snapshot (creating version 1 if none)."""
        async with self._start_lock:
            if not self.started:
                await self._start()

    async def _start(self) -> None:
        try:
            prod = await self.registry.production(self.name)
        except ModelNotFoundError:
            prod, created = await self._first_version()
            if created:
                self.pending += self._records((await self.registry.history(self.name))[-1:])
        configured = model_spec(self.settings.model.steps)
        if prod.spec.get("steps") != configured["steps"]:
            log.warning("model %r: production version %s has steps %s, the config says %s; "
                        "serving the registry's. Try the config's with a challenger "
                        "(lifecycle.challenger_steps) or promote a version built from it.",
                        self.name, prod.version, prod.spec.get("steps"), configured["steps"])
        await self._serve(prod, restore=True)
        self.started = True
        self._publish_state()

    async def _first_version(self) -> tuple[VersionInfo, bool]:
        model = build_model(self.settings.model)
        v, created = await self.registry.ensure_production(
            self.name, spec=model_spec(self.settings.model.steps), params=model.params(),
            reason="first start: no production version")
        if created:
            log.info("model %r: created version %s in production (none existed)",
                     self.name, v.version)
        return v, created

    async def become_learner(self) -> dict[int, int]:
        """This worker now holds the labels partition: restore the newest snapshot exactly.

        Returns the label offsets to seek to (per partition) so that labels the lost learner
        consumed after that snapshot are learned again.
        """
        await self.start()
        # the lease first: from now on a learner this one replaces (paused past its session,
        # say) cannot checkpoint, so the snapshot restored next stays the newest
        self.lease = await self.registry.take_lease(self.name)
        prod = await self.registry.production(self.name)
        info = await self._serve(prod, restore=True)
        self.learner = True
        self.engine.learning_enabled = True
        self.restored = {"version": prod.version, "snapshot": self.engine.snapshot_id,
                         "learn_count": self.engine.metrics.learned}
        self._last_checkpoint = time.monotonic()
        self._last_bytes = None if info is None else info.checkpoint_size
        self._publish_state()
        log.info("model %r v%s: this worker is the learner (lease %d, snapshot %d, %d "
                 "learned)", self.name, prod.version, self.lease, self.engine.snapshot_id,
                 self.engine.metrics.learned)
        return dict(self.engine.label_next)

    async def holds_lease(self) -> bool:
        """Whether this learner's lease is still the model's newest (no one replaced it)."""
        return self.learner and self.lease == await self.registry.lease(self.name)

    def _fenced(self, exc: FencedError) -> None:
        """Another worker learns now: stop learning at once, checkpoint nothing."""
        log.warning("%s; this worker stops learning (its model is discarded at the next "
                    "restore)", exc)
        self.learner = False
        self.engine.learning_enabled = False
        self.engine.challenger = None
        self.fenced += 1
        self._publish_state()

    async def become_scorer(self) -> None:
        """This worker lost (or never held) the labels partition: checkpoint, stop learning."""
        if self.learner:
            await self.checkpoint(force=True)
        self.learner = False
        self.engine.learning_enabled = False
        self.engine.challenger = None  # the learner owns it; scorers shadow from the registry
        self._publish_state()

    async def stop(self) -> None:
        if self.learner:
            await self.checkpoint(force=True)
        await self.registry.aclose()

    # -- serving ----------------------------------------------------------------------------
    def _build(self, version: VersionInfo) -> OnlineModel:
        steps = tuple(StepSettings(**s) for s in version.spec.get("steps", ()))
        conf = ModelSettings(**{**self.settings.model.model_dump(), "steps": steps})
        model = build_model(conf)
        model.version = version.version
        return model

    async def _load(self, version: VersionInfo) -> tuple[OnlineModel, dict[str, Any] | None,
                                                         Any]:
        """The version's newest snapshot that verifies, or a fresh model when it has none."""
        model = self._build(version)
        try:
            state, info = await self.registry.load_snapshot(
                self.name, version.version,
                freeze_bytes=self.conf.checkpoint_fork_bytes if self.conf.gc_freeze else None)
        except ModelNotFoundError:
            return model, None, None
        except CheckpointError as exc:
            log.error("model %r v%s: no snapshot verifies (%s); starting it from scratch",
                      self.name, version.version, exc)
            return model, None, None
        model.pipeline = state["pipeline"]
        return model, state, info

    async def _serve(self, version: VersionInfo, *, restore: bool) -> SnapshotInfo | None:
        """Install the version's newest good snapshot (a fresh model if none); its record."""
        model, state, info = await self._load(version)
        if info is None:
            self.engine.install(model, snapshot_id=0, learned=0 if restore else None,
                                prequential=PrequentialMetrics() if restore else None,
                                label_next={} if restore else None, label_ahead={},
                                data_hash="" if restore else None)
            return None
        self.engine.install(
            model, snapshot_id=info.snapshot_id,
            learned=info.learn_count if restore else None,
            prequential=state.get("prequential") if restore else None,
            label_next={int(k.rpartition(":")[2]): v for k, v in info.label_offsets.items()}
            if restore else None,
            label_ahead=state.get("label_ahead") if restore else None,
            data_hash=info.data_hash if restore else None)
        self.engine.metrics.snapshot_at = datetime.fromisoformat(info.created_at).timestamp()
        if info.checkpoint_size >= self.conf.checkpoint_fork_bytes:
            freeze_for_gc(self.conf)
        return info

    async def refresh(self) -> list[Out]:
        """Poll the registry: follow promotions (every worker) and new snapshots (scorers).

        Returns the ``models`` records waiting to be sent.
        """
        if not self.started:
            return []
        out, self.pending = self.pending, []
        engine = self.engine
        prod = await self.registry.production(self.name)
        if prod.version != engine.model.version:
            log.info("model %r: production is now v%s (was v%s); swapping", self.name,
                     prod.version, engine.model.version)
            # between two batches of labels: a batch gives the loop back while it learns
            # (``pipeline.engine.LEARN_SLICE_S``), and must not be learned half by each model
            async with engine.learn_lock:
                await self._serve(prod, restore=False)
                if self.learner:
                    engine.challenger = None
                    engine.learns_since_snapshot = 0
            self.swaps += 1
            self._publish_state()
            return out
        if self.learner:
            return out
        snaps = await self.registry.snapshots(self.name, prod.version)
        newest = snaps[-1].snapshot_id if snaps else 0
        if newest > engine.snapshot_id:
            await self._serve(prod, restore=False)
            if engine.snapshot_id >= newest:  # served from now on: how long after it was saved
                saved = datetime.fromisoformat(snaps[-1].created_at).timestamp()
                self.max_swap_delay_s = max(self.max_swap_delay_s, time.time() - saved)
                self.swaps += 1
        await self._follow_challenger()
        self._publish_state()
        return out

    async def _follow_challenger(self) -> None:
        """Scorers shadow-score the newest staging version that has a snapshot."""
        staging = [v for v in await self.registry.versions(self.name) if v.stage == "staging"]
        if not staging:
            self.engine.challenger = None
            return
        version = staging[-1]
        current = self.engine.challenger
        snaps = await self.registry.snapshots(self.name, version.version)
        if not snaps:
            return
        if current is None or current.model.version != version.version \
                or current.snapshot_id < snaps[-1].snapshot_id:
            model, _, info = await self._load(version)
            if info is not None:
                self.engine.challenger = Challenger(model, info.snapshot_id,
                                                    compare=self.conf.compare_labels)

    # -- checkpoints ------------------------------------------------------------------------
    def due(self) -> bool:
        """Learned since the last checkpoint, enough (learns or time), and not too soon for
        its size (``checkpoint_max_bytes_per_s``)."""
        n = self.engine.learns_since_snapshot
        elapsed = time.monotonic() - self._last_checkpoint
        if n == 0 or elapsed < (self._last_bytes or 0) / self.conf.checkpoint_max_bytes_per_s:
            return False
        return n >= self.conf.snapshot_every_learns or elapsed >= self.conf.snapshot_interval_s

    async def maybe_checkpoint(self) -> None:
        if self.learner and self.due() and not self._checkpointing.locked():
            await self.checkpoint()

    async def checkpoint(self, *, force: bool = False) -> int | None:
        """Save the learner's model (and its challenger's) as new snapshots; the new id."""
        async with self._checkpointing:
            engine = self.engine
            if not self.learner or (engine.learns_since_snapshot == 0 and not force):
                return None
            async with engine.learn_lock:  # no learning until both are pickled (or forked)
                taken = self._take()
                forked = self._fork([t.state for t in taken])
                if forked is None:
                    blobs = await self._pickle(taken)
            if forked is not None:  # learning goes on while the child pickles
                with forked:
                    try:
                        blobs = await asyncio.to_thread(forked.result, FORK_TIMEOUT_S)
                    except PicklingFailed as exc:
                        log.warning("model %r: a forked checkpoint failed (%s); pickling in "
                                    "a thread from now on", self.name, exc)
                        self._fork_ok = False
                        async with engine.learn_lock:
                            taken = self._take()
                            blobs = await self._pickle(taken)
            return await self._save(taken, blobs)

    @property
    def forks_next(self) -> bool:
        """Whether the next checkpoint is pickled by a forked child: on Linux, no child has
        failed, and the last one was at least ``checkpoint_fork_bytes`` or there was none
        (module doc)."""
        last = self._last_bytes
        return self._fork_ok and (last is None or last >= self.conf.checkpoint_fork_bytes) \
            and can_fork()

    def _fork(self, states: list[Any]) -> ForkedPickles | None:
        """A child pickling ``states`` as they are now (:attr:`forks_next`); ``None``: pickle
        in a thread."""
        if not self.forks_next:
            return None
        freeze_for_gc(self.conf)  # before the fork: the parent's GC copies no page of it
        try:
            return ForkedPickles.start(states)
        except OSError as exc:
            log.warning("model %r: cannot fork to pickle a checkpoint (%s); pickling in a "
                        "thread from now on", self.name, exc)
            self._fork_ok = False
            return None

    def _take(self) -> list[_Taken]:
        """What a checkpoint saves, read at one moment: the champion, then any challenger."""
        engine = self.engine
        model = engine.model
        offsets = {f"{self.settings.topic(contract.LABELS)}:{p}": o
                   for p, o in engine.label_next.items()}
        taken = [_Taken(model, {"pipeline": model.pipeline,
                                "prequential": engine.metrics.prequential,
                                "label_ahead": engine.ledger.saved()},
                        engine.metrics.learned, offsets, engine.data_hash.hexdigest(),
                        engine.metrics.prequential.snapshot())]
        challenger = engine.challenger
        if challenger is not None:
            taken.append(_Taken(challenger.model, {"pipeline": challenger.model.pipeline,
                                                   "prequential": challenger.prequential},
                                challenger.learned, offsets, "",
                                challenger.prequential.snapshot(), challenger))
        engine.learns_since_snapshot = 0
        self._last_checkpoint = time.monotonic()
        return taken

    async def _pickle(self, taken: list[_Taken]) -> list[Pickled]:
        """Pickle in a worker thread; a model that never learned on the loop (module doc)."""
        states = [t.state for t in taken]
        if all(t.learned == 0 for t in taken):
            return [Pickled.of(s) for s in states]
        for attempt in range(1, _THREAD_ATTEMPTS + 1):
            try:
                return await asyncio.to_thread(lambda: [Pickled.of(s) for s in states])
            except RecursionError:
                raise
            except RuntimeError as exc:  # scoring added a scaler's default entry meanwhile
                log.warning("model %r: pickling a checkpoint raced with scoring (%s); "
                            "trying again%s", self.name, exc,
                            "" if attempt < _THREAD_ATTEMPTS else " on the event loop")
        return [Pickled.of(s) for s in states]

    async def _save(self, taken: list[_Taken], blobs: list[Pickled]) -> int | None:
        engine = self.engine
        saved: list[SnapshotInfo] = []
        for t, blob in zip(taken, blobs, strict=True):
            try:
                saved.append(await self.registry.save_snapshot(
                    self.name, t.model.version, blob, learn_count=t.learned,
                    label_offsets=t.offsets, data_hash=t.data_hash, metrics=t.metrics,
                    lease=self.lease))
            except FencedError as exc:
                self._fenced(exc)
                return None
            if t.challenger is not None:
                t.challenger.snapshot_id = saved[-1].snapshot_id
            elif engine.model is t.model:
                engine.snapshot_id = engine.metrics.snapshot_id = saved[-1].snapshot_id
                engine.metrics.snapshot_at = time.time()
        size = sum(len(b.data) for b in blobs)
        self._last_bytes = size
        self._checkpoints += 1
        self._unpruned_bytes += size
        if self._checkpoints % _PRUNE_EVERY == 0 \
                or self._unpruned_bytes >= self.conf.keep_bytes / _PRUNE_EVERY:
            self._unpruned_bytes = 0
            for version in dict.fromkeys(t.model.version for t in taken):
                await self.registry.prune_snapshots(self.name, version,
                                                    self.conf.keep_snapshots,
                                                    keep_bytes=self.conf.keep_bytes)
        self._publish_state()
        return saved[0].snapshot_id

    # -- champion and challenger ------------------------------------------------------------
    async def on_signals(self, records: list[Record]) -> list[Out]:
        """Retrain signals read from Kafka (any worker's drift stage, or by hand)."""
        out: list[Out] = []
        for rec in records:
            try:
                signal = orjson.loads(rec.value or b"")
            except orjson.JSONDecodeError:
                continue
            if isinstance(signal, dict):
                out += await self._on_signal(signal.get("model"), str(signal.get("signal_id")),
                                             signal.get("reason"))
        return out

    async def on_outputs(self, outs: list[Output]) -> list[Out]:
        """Act at once on the retrain signals this (learner) worker's own drift stage raised."""
        out: list[Out] = []
        if self.learner:
            for o in outs:
                if isinstance(o, RetrainSignal):
                    out += await self._on_signal(o.model, o.signal_id, o.reason)
        return out

    async def _on_signal(self, model: Any, signal_id: str, reason: Any) -> list[Out]:
        """Spawn a challenger for a retrain signal of this model, once per signal id."""
        if model != self.name or signal_id in self._signals_seen:
            return []  # another model's, or acted on in process before Kafka had it
        self._signals_seen.add(signal_id)
        return await self.challenge(f"retrain signal {signal_id}: {reason}",
                                    since_change=reason == "performance_drift")

    async def challenge(self, reason: str, *, since_change: bool = False) -> list[Out]:
        """Create, warm-start and start shadowing a challenger (the learner, one at a time).

        It learns the last ``warm_start_window`` labelled feature vectors first; with
        ``since_change`` (performance drift) only those after the change ADWIN found.
        """
        engine = self.engine
        if not (self.learner and self.conf.challenger) or engine.challenger is not None:
            return []
        champion = engine.model
        steps = self.conf.challenger_steps or self.settings.model.steps
        if not self.conf.challenger_steps:
            prod = await self.registry.get_version(self.name, champion.version)
            steps = tuple(StepSettings(**s) for s in prod.spec.get("steps", ())) or steps
        conf = ModelSettings(**{**self.settings.model.model_dump(), "steps": steps})
        fresh = build_model(conf)
        version = await self.registry.create_version(
            self.name, spec=model_spec(steps), params=fresh.params(), parent=champion.version,
            stage="staging", reason=f"challenger: {reason}")
        fresh.version = version.version
        warm = list(engine.recent)
        performance = engine.drift.performance
        if since_change and performance is not None:
            warm = warm[-max(1, int(performance.adwin.width)):]
        for x, y in warm:
            fresh.learn_one(x, y)
        challenger = Challenger(fresh, compare=self.conf.compare_labels)
        challenger.learned = len(warm)
        engine.challenger = challenger
        engine.learns_since_snapshot += 1  # checkpoint soon, so scorers can shadow it too
        log.info("model %r: challenger v%s (parent v%s) warm-started on %d labelled events",
                 self.name, version.version, champion.version, len(warm))
        self._publish_state()
        return self._records((await self.registry.history(self.name))[-1:])

    async def judge(self) -> list[Out]:
        """Promote (or report ready) a challenger that beats the champion; archive a loser."""
        engine = self.engine
        challenger = engine.challenger
        if not self.learner or challenger is None:
            return []
        acc = challenger.accuracies()
        if acc is not None and acc[1] >= acc[0] + self.conf.promote_margin:
            why = (f"challenger won: accuracy {acc[1]:.4f} vs champion {acc[0]:.4f} over the "
                   f"last {len(challenger.outcomes)} labels")
            if not self.conf.auto_promote:
                if self._ready_reported != challenger.model.version:
                    self._ready_reported = challenger.model.version
                    log.warning("model %r: v%s is ready for promotion (%s)", self.name,
                                challenger.model.version, why)
                    return [self._ready(challenger.model.version, why)]
                return []
            return await self._promote(challenger, why)
        if challenger.compared >= self.conf.challenger_max_labels:
            change = await self.registry.set_stage(
                self.name, challenger.model.version, "archived",
                f"challenger did not beat the champion in {challenger.compared} labels")
            engine.challenger = None
            self._publish_state()
            return self._records([change])
        return []

    async def _promote(self, challenger: Challenger, why: str) -> list[Out]:
        engine = self.engine
        before = len(await self.registry.history(self.name))
        await self.registry.promote(self.name, challenger.model.version, reason=why)
        changes = (await self.registry.history(self.name))[before:]
        engine.challenger = None
        engine.install(challenger.model, snapshot_id=challenger.snapshot_id,
                       learned=challenger.learned, prequential=challenger.prequential)
        engine.learns_since_snapshot = 1  # checkpoint the new champion at once
        await self.checkpoint()
        log.warning("model %r: promoted v%s (%s)", self.name, challenger.model.version, why)
        self.swaps += 1
        self._publish_state()
        return self._records(changes)

    # -- records ----------------------------------------------------------------------------
    def _records(self, changes: list[StageChange]) -> list[Out]:
        return [(self._t_models, c.model.encode(), contract.model_change(
            model=c.model, version=c.version, from_stage=c.from_stage, to_stage=c.to_stage,
            reason=c.reason, at=c.at)) for c in changes]

    def _ready(self, version: str, why: str) -> Out:
        return (self._t_models, self.name.encode(), contract.model_change(
            model=self.name, version=version, from_stage="staging", to_stage="staging",
            reason=f"ready for promotion: {why}", at=utc_now()))

    def _publish_state(self) -> None:
        engine = self.engine
        challenger = engine.challenger
        acc = challenger.accuracies() if challenger is not None else None
        engine.metrics.lifecycle = {
            "role": "learner" if self.learner else "scorer",
            "restored": self.restored,
            "swaps": self.swaps,
            "max_swap_delay_s": self.max_swap_delay_s,
            "challenger": None if challenger is None else {
                "version": challenger.model.version, "compared": challenger.compared,
                "accuracy": None if acc is None else acc[1],
                "champion_accuracy": None if acc is None else acc[0]},
        }

