"""Exactly-once outputs: each batch's outputs and its consumed offset in one Kafka transaction.

With ``processing_guarantee = "exactly_once"`` (the default on Apache Kafka) the agent parts
each batch's outputs by input partition (``pipeline.records.by_partition``) and
:class:`Transactions` sends each part on that partition's own transactional producer::

    begin -> the part's predictions, dead letters, drift and model records
          -> the offset after the batch, for the worker's consumer group -> commit

Readers with ``isolation_level="read_committed"`` see a batch's outputs exactly when its offset
is committed: a worker killed mid-batch leaves an open transaction that the next owner of the
partition aborts, and the batch comes again. Its replay finds the ``event_id`` claims the first
attempt stored in Redis (same topic, partition and offset) and re-emits the stored predictions,
so what becomes visible is still one prediction per event.

**Zombies.** The transactional id is ``{app_id}-{topic}-{partition}`` (aiokafka 0.14 commits
offsets in a transaction without the group generation, KIP-447, so fencing must come from the
id, as Kafka Streams did before 2.6). A worker that gains a partition starts its producer
before the partition's committed offset is read; that ``InitProducerId`` bumps the id's epoch,
aborts whatever the previous owner left open and fences it: a worker that was paused past its
session timeout and resumes gets ``ProducerFenced`` on its next send or commit, and its batch
is dropped unseen (the partition is someone else's now).

**Uncertain outcomes.** A transaction that fails with a Kafka error is aborted and retried
on a new producer of the same id. If the failure came after the commit was sent (its answer
lost), the retry first reads the group's committed offset: the offset moves with the outputs,
so an offset at or past the batch's end means it was committed, and it is not sent again.

**Group commit.** A partition's transactions run one at a time (its producer has one open)
in a task of their own, while the agent goes on with the next batches. The batches that come
while one transaction is running wait for the next, and go in it together: their outputs in
order, and the offset after the last of them. So a transaction's fixed cost (its begin, the
offsets, the commit markers: several broker round trips) is paid per round trip rather than
per batch, and the agent never waits for it, unless :attr:`Transactions.max_waiting` outputs
are waiting already (memory stays bounded). Revoking a partition waits for its transactions
before Kafka hands it on.

**Back-to-back transactions.** A producer's next transaction cannot add a partition until the
broker has written the last one's commit markers (a few ms after ``EndTxn`` answers): until
then ``AddPartitionsToTxn`` answers ``CONCURRENT_TRANSACTIONS`` and aiokafka retries after a
fixed 20 ms (``aiokafka.producer.sender.BACKOFF_OVERRIDE``, as Java's client, KAFKA-5477). A
lane that always has a batch waiting paid that 20 ms in every transaction, before its first
output reached the log: back-to-back transactions of 100 records cycled in 24.6 ms, against 8.7
ms with a 5 ms retry and 5.1 ms with 2 ms (Kafka 4.1.2 here). The retry waits
:data:`CONCURRENT_TXN_RETRY_S`; each retry is one small request, so not less.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.producer import sender as _aiokafka_sender

from stream_app.kafka_io import make_admin, producer_options
from stream_app.pipeline import emit
from stream_app.pipeline.records import Output
from stream_app.settings import Settings

__all__ = ["CONCURRENT_TXN_RETRY_S", "Transactions", "transactional_id"]

log = logging.getLogger(__name__)

#: how soon ``AddPartitionsToTxn`` is retried while the last transaction's markers are written
#: (the module docstring); aiokafka reads its constant at every retry
CONCURRENT_TXN_RETRY_S = 0.005
_aiokafka_sender.BACKOFF_OVERRIDE = CONCURRENT_TXN_RETRY_S


def transactional_id(settings: Settings, topic: str, partition: int) -> str:
    """The id whose epoch fences the previous owner of ``topic[partition]``.

    >>> from stream_app.settings import load_settings
    >>> transactional_id(load_settings(environ={}, topic_prefix="t."), "t.events", 3)
    'stream-app-t.events-3'
    """
    return f"{settings.app_id}-{topic}-{partition}"


class Transactions:
    """One transactional producer per owned input partition, and the batches in flight."""

    #: outputs waiting for a partition's next transaction at which :meth:`submit` waits
    max_waiting: int = 20_000
    #: how long a revoke waits for the revoked partitions' transactions to end
    revoke_wait_s: float = 5.0

    def __init__(self, settings: Settings, group_id: str,
                 make: Callable[[str], AIOKafkaProducer] | None = None) -> None:
        self.settings = settings
        self.group_id = group_id
        self._make = make or self._producer
        #: partitions this worker owns, and their started producers
        self._owned: set[TopicPartition] = set()
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        #: per partition: its running transaction and the batches waiting for the next
        self._lanes: dict[TopicPartition, _Lane] = {}
        #: per owned partition, the offset its last transaction committed
        self.committed_offsets: dict[TopicPartition, int] = {}
        #: batches made visible; dropped (the partition is not this worker's); retried
        self.committed = 0
        self.dropped = 0
        self.retried = 0
        self._admin: Any = None

    def _producer(self, tid: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(**producer_options(
            self.settings, transactional_id=tid, enable_idempotence=True, acks="all",
            linger_ms=2, max_batch_size=512 * 1024, client_id=tid))

    # -- ownership --------------------------------------------------------------------------
    async def on_assigned(self, tps: Iterable[Any]) -> None:
        """Start (and so fence the previous owner of) each newly owned partition's id. Must
        finish before the partitions' committed offsets are read."""
        new = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        new = [tp for tp in new if tp not in self._owned]
        self._owned.update(new)
        await asyncio.gather(*(self._start(tp) for tp in new))

    async def _start(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = self._make(transactional_id(self.settings, tp.topic, tp.partition))
        try:
            await producer.start()  # InitProducerId: aborts the old owner's open transaction
        except BaseException:
            await _quiet_stop(producer)
            raise
        if tp not in self._owned:  # revoked meanwhile
            await _quiet_stop(producer)
            raise _NotOwned
        self._producers[tp] = producer
        return producer

    async def on_revoked(self, tps: Iterable[Any]) -> None:
        """Let the revoked partitions' transactions finish, then stop their producers."""
        gone = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        tails = [lane.task for tp in gone
                 if (lane := self._lanes.pop(tp, None)) is not None and lane.task is not None]
        if tails:  # bounded: with the broker away they would retry for ever
            _, late = await asyncio.wait(tails, timeout=self.revoke_wait_s)
            for task in late:
                task.cancel()  # not committed: the next owner aborts them and replays
        self._owned.difference_update(gone)
        for tp in gone:
            self.committed_offsets.pop(tp, None)
        await asyncio.gather(*(_quiet_stop(p) for tp in gone
                               if (p := self._producers.pop(tp, None)) is not None))

    async def stop(self) -> None:
        await self.on_revoked(list(self._owned))
        if self._admin is not None:
            admin, self._admin = self._admin, None
            try:
                await admin.close()
            except Exception:  # noqa: BLE001
                pass

    # -- batches ----------------------------------------------------------------------------
    async def submit(self, tp: Any, outputs: Sequence[Output], next_offset: int) -> None:
        """Send one batch of ``tp``: its outputs, then ``next_offset`` as the group's offset,
        in ``tp``'s next transaction (with the batches that come while the current one runs).

        Returns at once, unless :attr:`max_waiting` outputs of ``tp`` are waiting already.
        Never raises into the agent (an exception escaping a Faust agent skips its batch, and
        a later batch's offset would commit past it). A batch of a partition this worker does
        not own, or has given up (fenced, a producer in a fatal state, a failure that is not
        Kafka's), is dropped (counted): its offset is not committed, so its records come again
        to the owner.
        """
        key = TopicPartition(tp.topic, tp.partition)
        if key not in self._owned:
            self.dropped += 1
            return
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        while lane.task is not None and len(lane.outputs) >= self.max_waiting:
            await lane.taken.wait()
        lane.outputs.extend(outputs)
        lane.next_offset = next_offset
        if lane.task is None:
            lane.task = asyncio.ensure_future(self._drain(key, lane))

    async def wait(self) -> None:
        """Wait for every transaction in flight."""
        while tails := [lane.task for lane in self._lanes.values() if lane.task is not None]:
            await asyncio.gather(*tails, return_exceptions=True)

    async def _drain(self, tp: TopicPartition, lane: _Lane) -> None:
        """Run ``tp``'s transactions until no batch is waiting."""
        try:
            while lane.next_offset is not None:
                outputs, next_offset = lane.take()
                await self._run(tp, outputs, next_offset)
        finally:
            lane.task = None

    async def _run(self, tp: TopicPartition, outputs: list[Output], next_offset: int) -> None:
        delay, uncertain = 0.1, False
        while True:
            if tp not in self._owned:  # revoked, or fenced
                self.dropped += 1
                return
            try:
                producer = self._producers.get(tp) or await self._start(tp)
                if uncertain and await self._committed(tp) >= next_offset:
                    # the failed attempt did commit (its answer was lost): the new producer's
                    # start completed it, and the offset says so
                    self.committed += 1
                    self.committed_offsets[tp] = next_offset
                    return
                await self._transaction(producer, tp, outputs, next_offset)
                self.committed += 1
                self.committed_offsets[tp] = next_offset
                return
            except _NotOwned:
                continue
            except (ProducerFenced, _Unusable) as exc:
                log.warning("%s[%d]: %s; this worker's batches of it are dropped unseen, "
                            "and come again to the partition's owner", tp.topic, tp.partition,
                            "fenced, another worker owns it now" if isinstance(exc, ProducerFenced)
                            else exc)
                self._give_up(tp)
            except KafkaError as exc:
                self.retried += 1
                uncertain = True
                log.error("%s[%d]: transaction failed (%s: %s); retrying in %.1f s", tp.topic,
                          tp.partition, type(exc).__name__, exc, delay)
                if (p := self._producers.pop(tp, None)) is not None:
                    await _quiet_abort(p)
                    await _quiet_stop(p)  # a new producer for the same id: a clean state
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug, not Kafka: never commit past this batch
                log.exception("%s[%d]: transaction failed unexpectedly; this worker's batches "
                              "of it are dropped unseen until it is assigned again", tp.topic,
                              tp.partition)
                self._give_up(tp)

    def _give_up(self, tp: TopicPartition) -> None:
        """Stop sending ``tp``'s batches (none commits, so its records come again to whoever
        is assigned it next, this worker included)."""
        self._owned.discard(tp)
        if (p := self._producers.pop(tp, None)) is not None:
            asyncio.ensure_future(_quiet_stop(p))

    async def _committed(self, tp: TopicPartition) -> int:
        """The group's committed offset of ``tp`` (-1: none)."""
        if self._admin is None:
            self._admin = make_admin(self.settings)
            await self._admin.start()
        offsets = await self._admin.list_consumer_group_offsets(self.group_id, partitions=[tp])
        meta = offsets.get(tp)
        return -1 if meta is None or meta.offset is None else meta.offset

    async def _transaction(self, producer: AIOKafkaProducer, tp: TopicPartition,
                           outputs: list[Output], next_offset: int) -> None:
        if producer._txn_manager.is_fatal_error():  # noqa: SLF001 (fenced in its sender)
            raise _Unusable("its producer hit a fatal error (fenced in the background)")
        await producer.begin_transaction()
        try:
            await emit.send(producer, outputs)
            await producer.send_offsets_to_transaction({tp: next_offset}, self.group_id)
        except BaseException:
            await _quiet_abort(producer)
            raise
        await producer.commit_transaction()


class _Lane:
    """One partition's transactions: the running one (``task``), and what waits for the next."""

    __slots__ = ("next_offset", "outputs", "taken", "task")

    def __init__(self) -> None:
        self.task: asyncio.Future[None] | None = None
        self.outputs: list[Output] = []
        #: the offset after the last batch waiting (None: none is)
        self.next_offset: int | None = None
        #: set each time the waiting batches are taken into a transaction
        self.taken = asyncio.Event()

    def take(self) -> tuple[list[Output], int]:
        """The waiting batches' outputs, and the offset after the last of them."""
        assert self.next_offset is not None
        outputs, next_offset = self.outputs, self.next_offset
        self.outputs, self.next_offset = [], None
        self.taken.set()
        self.taken.clear()
        return outputs, next_offset


class _Unusable(Exception):
    """A partition's producer cannot be used again (its transaction state is fatal)."""


class _NotOwned(Exception):
    """The partition was revoked while its producer started."""


async def _quiet_abort(producer: Any) -> bool:
    try:
        await producer.abort_transaction()
        return True
    except Exception:  # noqa: BLE001
        return False


async def _quiet_stop(producer: Any) -> None:
    try:
        await producer.stop()
    except Exception:  # noqa: BLE001 (a fenced or broken producer: nothing to keep)
        pass
