"""Faust wiring: ``create_app(settings)`` builds the app, its topics and two thin agents.

Agents read whole fetched batches (``stream_app.batching``), hand the batch to the :class:`~stream_app.pipeline.engine.Engine`
and send what it returns. Exactly once (the default on Apache Kafka): a batch's outputs are parted
by input partition, and each partition's outputs and its offset go in one transaction
(``stream_app.transactions``).
At least once: the batch is acked only after every send is delivered, so a crash replays it and
re-emits the outputs already sent. Either way the store's ``event_id`` claims turn a replay into
no second scoring: a replayed event re-emits its stored prediction. Errors are handled per batch and then per event inside the
agent: an exception escaping a Faust agent would ack and silently skip the message.

Concurrency stays 1 (faust-streaming #606 loses messages above 1); scale by partitions and workers.

The worker that holds the single ``labels`` partition learns; the others score with the
learner's newest checkpoint (``stream_app.lifecycle``). Roles follow partition assignment:
gaining the labels partition restores the newest snapshot and seeks the labels to the offsets
stored with it; losing it checkpoints first.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from stream_app import contract
from stream_app.batching import Batch, BatchConsumer
from stream_app.errors import ServiceError
from stream_app.kafka_io import ensure_topics, make_consumer, stop_consumer
from stream_app.lifecycle import ModelKeeper, freeze_for_gc, require_key
from stream_app.pipeline import emit
from stream_app.pipeline.engine import SWEEP_EVERY_S, Engine
from stream_app.pipeline.records import LabelBack, Output, Record, by_partition
from stream_app.security import faust_credentials
from stream_app.settings import Settings
from stream_app.transactions import Transactions

__all__ = ["StreamApp", "create_app"]

log = logging.getLogger(__name__)

_INFRA_ERRORS = (ServiceError, KafkaError, ProducerSendError, OSError)


class StreamApp(faust.App):
    """A Faust app that owns an :class:`Engine` and closes it on stop."""

    engine: Engine
    keeper: ModelKeeper | None
    #: exactly-once outputs (``stream_app.transactions``); None: at least once
    transactions: Transactions | None = None
    #: set once the role for the current assignment is taken (learner restored or scorer)
    role_settled: asyncio.Event
    settings: Settings
    fetch_max_wait_ms: int = 500
    #: ``/metrics``, ``/healthz``, ``/readyz`` (``stream_app.ops``): ``app.ops.routes()`` go
    #: on the worker's HTTP server
    ops: Any = None
    #: the HTTP API (``stream_app.http``), started once the app is up; None: disabled
    http: Any = None

    async def on_started(self) -> None:
        await super().on_started()
        if self.http is not None:  # a child: stopped before on_shutdown closes the engine
            await self.add_runtime_dependency(self.http)

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        transport.Consumer = BatchConsumer
        return transport

    async def on_shutdown(self) -> None:
        """After the agents have stopped (``on_stop`` runs before them: a batch in flight
        would find the store closed): the final checkpoint, then the store."""
        await super().on_shutdown()
        transactions = getattr(self, "transactions", None)
        if transactions is not None:
            try:
                await transactions.stop()  # the batches in flight commit (or are replayed)
            except Exception:
                log.exception("ending the transactions in flight failed")
        keeper = getattr(self, "keeper", None)
        if keeper is not None:
            try:
                await keeper.stop()  # the learner checkpoints on a clean stop
            except Exception:
                log.exception("final checkpoint failed")
        ops = getattr(self, "ops", None)
        if ops is not None:
            await ops.aclose()  # the readiness probe's Redis clients
        engine = getattr(self, "engine", None)
        if engine is not None:
            await engine.aclose()


def _app_options(settings: Settings) -> dict[str, Any]:
    opts: dict[str, Any] = dict(
        broker=settings.kafka_url,
        broker_credentials=faust_credentials(settings.kafka),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        datadir=str(settings.data_dir / "faust"),
        consumer_auto_offset_reset="earliest",
        producer_linger=0.002,
        producer_max_batch_size=512 * 1024,  # stream_app.pipeline.emit appends a batch's records to one
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # one fetch is one batch (stream_app.batching): its size is the poll limit
        broker_max_poll_records=settings.batch_max,
        stream_buffer_maxsize=2 * BatchConsumer.max_pending + 2,
        autodiscover=False,
    )
    if settings.embedded:
        # tansu: a group join takes about half the session timeout; keep both small.
        opts.update(broker_session_timeout=6.0, broker_heartbeat_interval=1.0,
                    broker_rebalance_timeout=6.0, broker_request_timeout=20.0)
    else:
        # Faust's 60 s means a worker killed with -9 keeps its partitions (the labels one
        # included: no learning anywhere) for a minute; heartbeats run on the consumer thread,
        # so a busy event loop does not expire the session.
        opts.update(broker_session_timeout=10.0, broker_heartbeat_interval=1.0,
                    broker_rebalance_timeout=20.0)
    return opts


def create_app(settings: Settings, *, engine: Engine | None = None,
               http_socket: socket.socket | None = None,
               http_routes: Sequence[Any] = ()) -> StreamApp:
    """Build the Faust app for these settings. Nothing connects until the worker starts.

    With ``http_enabled`` the worker also serves the HTTP API (``stream_app.http``) on
    ``http_socket`` (default: bound to ``http_host:http_port`` when it starts), with the
    operating routes (``stream_app.ops``: ``/metrics``, ``/healthz``, ``/readyz``) and
    ``http_routes`` (Starlette routes) mounted beside ``/v1``.

    Raises ``ConfigError`` without ``STREAM_REGISTRY_KEY`` while the lifecycle is enabled.
    """
    if settings.lifecycle.enabled:
        require_key(settings)
    app = StreamApp(settings.app_id, **_app_options(settings))
    app.settings = settings
    app.engine = engine or Engine(settings)
    app.role_settled = asyncio.Event()
    if settings.exactly_once:
        app.transactions = Transactions(settings, group_id=app.conf.id)
    app.keeper = ModelKeeper(settings, app.engine) if settings.lifecycle.enabled else None
    app.ops = _ops(app)
    app.engine.learning_enabled = False  # until this worker is given the labels partition
    # one fetch is one batch: the broker answers as soon as a record waits, and holds an idle
    # fetch open at most this long (Faust hard-codes 1.5 s)
    app.fetch_max_wait_ms = max(1, round(settings.batch_within_s * 1000))

    def topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions_of(name))

    topics = {name: topic(name) for name in contract.TOPICS}
    app.contract_topics = topics  # type: ignore[attr-defined]

    async def send_all(outputs: list[Output]) -> None:
        await emit.send(app.producer._ensure_producer(), outputs)  # noqa: SLF001

    keeper = app.keeper
    ready_lock = asyncio.Lock()

    async def ready() -> None:
        async with ready_lock:
            await app.engine.start()
            if keeper is not None:  # the worker command created every topic before this
                await keeper.start()

    async def score(batch: list[Record]) -> list[Output]:
        outs = await app.engine.process_events(batch)
        if keeper is not None:
            outs += await keeper.on_outputs(outs)
        return outs

    async def learn(batch: list[Record]) -> list[Output]:
        # Faust's recovery resumes the streams in a task of its own, possibly before this
        # worker has restored the model it is to learn with: a label joined before that would
        # be marked learned in Redis and never learned
        await app.role_settled.wait()
        if not app.engine.learning_enabled:  # a batch from before this worker lost the labels
            return []                         # partition: its next owner learns them
        outs = await app.engine.process_labels(batch)
        if keeper is not None:
            outs += await keeper.on_outputs(outs)
            await keeper.maybe_checkpoint()
            outs += await keeper.judge()
        return outs

    _register_batch_agent(app, topics[contract.EVENTS], "score_events", score, send_all, ready)
    _register_batch_agent(app, topics[contract.LABELS], "learn_labels", learn, send_all, ready)

    async def metrics_record() -> None:
        consumer = app.consumer
        txn = app.transactions
        # exactly once commits in the batches' transactions, which Faust does not see
        committed = txn.committed_offsets if txn is not None else \
            consumer._committed_offset  # noqa: SLF001
        app.engine.metrics.lag({(tp.topic, tp.partition): consumer.highwater(tp)
                                for tp in consumer.assignment()},
                               committed={(tp.topic, tp.partition): offset
                                          for tp, offset in committed.items()
                                          if offset is not None})
        snap = app.engine.metrics.snapshot()
        await send_all([(settings.topic(contract.METRICS), settings.app_id.encode(),
                         orjson.dumps(snap))])

    async def drift_summary() -> None:
        summary = app.engine.drift.summary()
        if summary is not None:
            await send_all([summary])

    # an exception escaping a Faust timer crashes the worker: report, never crash, for these
    @app.timer(interval=settings.metrics_interval_s)
    async def publish_metrics() -> None:
        await _guarded("publishing metrics", metrics_record())

    async def sweep_labels() -> None:
        if not app.engine.learning_enabled or not app.role_settled.is_set():
            return
        outs = await app.engine.sweep_labels()
        if keeper is not None and outs:
            outs += await keeper.on_outputs(outs)
        if outs:  # outside any transaction: no consumed offset goes with them
            await _retrying(f"sweep: sending {len(outs)} records", lambda: send_all(outs), app)

    @app.timer(interval=SWEEP_EVERY_S)
    async def sweep_parked_labels() -> None:
        await _guarded("sweeping parked labels", sweep_labels())

    @app.timer(interval=settings.drift.summary_interval_s)
    async def publish_drift_summary() -> None:
        await _guarded("publishing the drift summary", drift_summary())

    frozen_at_start = False

    @app.on_partitions_assigned.connect
    async def follow_assignment(sender: Any, assigned: set[Any], **kw: Any) -> None:
        nonlocal frozen_at_start
        try:
            await _take_role(app, assigned)
        finally:
            app.role_settled.set()
        if not frozen_at_start:
            # what the worker built to start (modules, Faust, the clients, the model) lives
            # as long as it does: one full collection now, then no collection scans it again
            # (a gen-2 pass over it held the loop 100-180 ms every few seconds; after: 15 ms)
            frozen_at_start = True
            freeze_for_gc(settings.lifecycle, full=True)

    @app.on_partitions_revoked.connect
    async def checkpoint_before_losing_labels(sender: Any, revoked: set[Any], **kw: Any) -> None:
        app.role_settled.clear()  # until the next assignment has settled who learns
        labels = settings.topic(contract.LABELS)
        if keeper is not None and keeper.learner and any(tp.topic == labels for tp in revoked):
            await _guarded("checkpoint on revoke", keeper.checkpoint(force=True))

    if keeper is not None:
        _register_lifecycle(app, keeper, send_all)
    if settings.http_enabled:
        from stream_app.http.predict import Predictor
        from stream_app.http.server import HttpService, create_http_app

        # /metrics, /healthz and /readyz beside the API (no key: probes and scrapers)
        routes = [*app.ops.routes(), *http_routes]
        asgi = create_http_app(settings, Predictor(app.engine, send_all), extra_routes=routes)
        app.http = HttpService(asgi, settings, http_socket,
                               lambda: _retrying("http: starting", ready, app))
    return app


def _ops(app: StreamApp) -> Any:
    """The app's metrics registry and probes (no I/O until a route is called)."""
    from stream_app.ops.routes import Ops  # Starlette and prometheus-client, only here
    from stream_app.ops.view import WorkerView

    return Ops(WorkerView.of_app(app))


async def _rewind(app: StreamApp, offsets: dict[Any, int]) -> None:
    """Make the labels resume at the restored snapshot's offsets.

    Faust's recovery seeks every partition to its committed offset in a task of its own,
    before, during or after this signal handler, and resets the offset below which it drops
    records. So the offsets are committed (backwards is allowed: we are this generation's
    member), sought now, and sought again at the end of any seek of Faust's in this
    generation (``BatchConsumer.perform_seek``).
    """
    for tp, offset in offsets.items():
        log.info("labels %s[%d]: resuming at offset %d, the restored snapshot's",
                 tp.topic, tp.partition, offset)
    consumer = app.consumer
    if isinstance(consumer, BatchConsumer):  # and again when a seek of Faust's own ends after this
        consumer.rewind = (app.consumer_generation_id, dict(offsets))
        # batches in flight from before the rewind must not commit past it
        consumer.forget(offsets, committed=offsets)
    thread = consumer._thread  # noqa: SLF001 (the aiokafka consumer lives on this thread)
    await thread.commit(offsets)
    # on the consumer's own thread and loop (Consumer.seek calls aiokafka from ours)
    await thread.seek_wait(offsets)


def _register_lifecycle(app: StreamApp, keeper: ModelKeeper,
                        send_all: Callable[[list[Output]], Awaitable[None]]) -> None:
    conf = app.settings.lifecycle

    @app.timer(interval=min(1.0, conf.snapshot_interval_s / 2))
    async def checkpoint() -> None:
        if keeper.learner:
            await _guarded("checkpoint", keeper.maybe_checkpoint())

    @app.timer(interval=min(1.0, conf.staleness_s / 4))
    async def refresh() -> None:
        outs = await _guarded("registry refresh", keeper.refresh())
        if outs:
            await _guarded("sending stage changes", send_all(outs))

    @app.task
    async def follow_retrain_signals() -> None:
        """Every worker reads every retrain signal (no group); only the learner acts on them."""
        await _follow_signals(app, keeper, send_all)


async def _guarded(what: str, step: Awaitable[Any]) -> Any:
    """A lifecycle step that fails is logged and retried at its next turn, never fatal."""
    try:
        return await step
    except Exception:
        log.exception("%s failed; will retry", what)
        return None


async def _follow_signals(app: StreamApp, keeper: ModelKeeper,
                          send_all: Callable[[list[Output]], Awaitable[None]]) -> None:
    from aiokafka import TopicPartition

    settings = app.settings
    topic = settings.topic(contract.RETRAIN_SIGNALS)
    while not app.should_stop:
        consumer = make_consumer(settings)
        try:
            await ensure_topics(settings, [contract.RETRAIN_SIGNALS])
            await consumer.start()
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            while not app.should_stop:
                batches = await consumer.getmany(timeout_ms=500)
                records = [Record(m.topic, m.partition, m.offset, m.key, m.value,
                                  (m.timestamp or 0) / 1000.0)
                           for msgs in batches.values() for m in msgs]
                if records and keeper.learner:
                    outs = await _guarded("challenger", keeper.on_signals(records))
                    if outs:
                        await send_all(outs)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reading retrain signals failed; retrying")
            await asyncio.sleep(1.0)
        finally:
            await stop_consumer(consumer)


def _register_batch_agent(
    app: StreamApp,
    source: faust.TopicT,
    name: str,
    process: Callable[[list[Record]], Awaitable[list[Output]]],
    send_all: Callable[[list[Output]], Awaitable[None]],
    ready: Callable[[], Awaitable[None]],
) -> Any:
    """One thin agent: every fetched batch goes through ``process`` (retried on infrastructure
    errors, bad records isolated) and its outputs through ``send_all``; returns the agent."""
    settings = app.settings

    async def agent(stream: faust.StreamT) -> None:
        await _retrying(f"{name}: starting", ready, app)
        consumed = app.engine.metrics.consumed
        txn = app.transactions
        async for batch in stream:  # one fetched run of records (stream_app.batching)
            last = {(rec.topic, rec.partition): rec.offset for rec in batch}
            for (topic, partition), offset in last.items():
                consumed(topic, partition, offset)
            outs = await _retrying(f"{name}: processing", lambda b=batch: _process_safely(
                app, process, b), app)
            if txn is not None:  # per partition: its outputs and offset, atomically
                # labels sent back go first and outside the transaction: a transaction would
                # leave its commit marker in the labels topic, a gap in the offsets the label
                # ledger counts consumed ones by; a copy sent twice (this batch aborted and
                # replayed) is learned once
                back = [o for o in outs if type(o) is LabelBack]
                if back:
                    await _retrying(f"{name}: sending {len(back)} labels back",
                                    lambda o=back: send_all(o), app)
                    outs = [o for o in outs if type(o) is not LabelBack]
                parts = by_partition(outs, [partition for _, partition in last])
                for (topic, partition), offset in last.items():
                    await txn.submit(TopicPartition(topic, partition), parts[partition],
                                     offset + 1)
            else:
                await _retrying(f"{name}: sending {len(outs)} records",
                                lambda o=outs: send_all(o), app)
                if isinstance(batch, Batch):
                    batch.done()  # delivered: its offsets may commit now

    agent.__name__ = agent.__qualname__ = name
    return app.agent(source, name=f"{settings.app_id}.{name}", concurrency=1)(agent)


async def _retrying(what: str, attempt: Callable[[], Awaitable[Any]], app: StreamApp,
                    first_delay_s: float = 0.1, max_delay_s: float = 10.0) -> Any:
    """Retry infrastructure failures with backoff until they pass or the worker stops.

    The batch is not acked meanwhile (an exception escaping the agent would ack and skip it),
    so an outage of Redis or Kafka pauses the partition instead of losing or dead-lettering
    valid events. Both steps are idempotent: the flow writes nothing before its atomic commit,
    and a resend can only duplicate an output, never lose one.
    """
    delay = first_delay_s
    while True:
        try:
            return await attempt()
        except _INFRA_ERRORS as exc:
            if app.should_stop:
                raise
            app.engine.metrics.service_error(_service_of(exc), _stage_of(what))
            log.error("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc,
                      delay)
            await asyncio.sleep(delay)
            delay = min(max_delay_s, delay * 2)


def _service_of(exc: BaseException) -> str:
    """Which service an infrastructure error came from (for the error counters).

    >>> _service_of(ServiceError("redis feature store: ConnectionError: ...")), _service_of(KafkaError())
    ('redis', 'kafka')
    """
    if isinstance(exc, (KafkaError, ProducerSendError)):
        return "kafka"
    text = str(exc).lower()
    return "redis" if "redis" in text else "kafka" if "kafka" in text else "other"


def _stage_of(what: str) -> str:
    """``starting``, ``processing`` or ``sending``: the step of a ``_retrying`` description."""
    step = what.partition(": ")[2]
    return next((s for s in ("starting", "processing", "sending") if step.startswith(s)), "other")


async def _process_safely(app: StreamApp, process: Callable[[list[Record]], Awaitable[list[Output]]],
                          batch: list[Record]) -> list[Output]:
    """Process a batch; if it fails on a record, isolate it and dead-letter only the culprit.

    Infrastructure errors are not the record's fault: they propagate to :func:`_retrying`.
    """
    try:
        return await process(batch)
    except _INFRA_ERRORS:
        raise
    except Exception:
        if app.should_stop:  # shutting down: not the records' fault; unacked, they come again
            raise
        log.exception("batch of %d failed; retrying one record at a time", len(batch))
    outs: list[Output] = []
    for rec in batch:
        try:
            outs.extend(await process([rec]))
        except _INFRA_ERRORS:
            raise
        except Exception as exc:  # an error we did not foresee: never a silent skip
            log.exception("record %s[%d]@%d failed", rec.topic, rec.partition, rec.offset)
            outs.append(app.engine.dead_letter(rec, "processing_error",
                                               f"{type(exc).__name__}: {exc}"))
    return outs


async def _take_role(app: StreamApp, assigned: set[Any]) -> None:
    """The holder of the labels partition learns; everyone else scores (see module doc)."""
    settings = app.settings
    events, labels = settings.topic(contract.EVENTS), settings.topic(contract.LABELS)
    app.engine.metrics.partitions_assigned = sum(tp.topic == events for tp in assigned)
    app.engine.metrics.assigned({(tp.topic, tp.partition) for tp in assigned})
    app.engine.drift.assign_partitions(tp.partition for tp in assigned if tp.topic == events)
    mine = sorted((tp for tp in assigned if tp.topic == labels), key=lambda tp: tp.partition)
    if any(tp.partition != 0 for tp in mine):
        log.error("%s has more than one partition: several workers may learn and fork the "
                  "model. Recreate it with one partition.", labels)
    keeper = app.keeper
    if keeper is None:
        app.engine.learning_enabled = bool(mine)
        return
    # a learner that keeps the partition across a rebalance goes on, unless another worker
    # learned meanwhile (it was paused past its session: its lease was taken over)
    if mine and not (keeper.learner and await keeper.holds_lease()):
        offsets = await keeper.become_learner()
        rewind = {tp: offsets[tp.partition] for tp in mine if tp.partition in offsets}
        if rewind:
            await _rewind(app, rewind)
    elif not mine and keeper.learner:
        await keeper.become_scorer()
    elif not mine:
        await keeper.start()
        app.engine.learning_enabled = False
