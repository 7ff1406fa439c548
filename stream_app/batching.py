"""Batch delivery under the Faust agents: one stream item per fetched run of a topic's records.

Faust hands records to agents one at a time: every record becomes a ``ConsumerMessage``, goes
through the conductor, the stream's queue, four sensor calls, ``wait_first`` and an ack under a
process-wide lock. That machinery cost about two thirds of a core at 3,000 events/s. Here the
consumer drains each fetch as **one message per topic** whose value is the list of that fetch's
records of the topic (:class:`Record`, all its partitions), so the framework cost is paid per
batch. Everything else stays Faust's: the worker, ``app.agent``, timers, rebalance callbacks,
flow control during rebalances, the web server.

What a batch must keep (see ``shared/notes/faust-internals.md``):

* **Commit only what was delivered and processed.** Each delivered batch records, per partition,
  a :class:`Span` ``[first, last]``. The agent marks its :class:`Batch` done once the outputs
  are delivered; :meth:`BatchConsumer._new_offset` then commits, per partition, the end of the
  longest prefix of done spans. Offsets between spans (transaction
  markers, compaction) are covered because a span's commit point is ``last + 1``.
* **Rebalance safety.** Spans of revoked partitions are dropped with Faust's own offset state, so
  a batch acked after its partition moved commits nothing (its records come again elsewhere and
  the ``event_id`` claims turn the replay into no second output). Messages carry the group
  generation; the stream skips stale ones as it does for single records.
* **The read-offset filter.** Records below a partition's read offset are dropped, as Faust does,
  and the read offset moves to the last record delivered.
* **Seeks win over records fetched before them.** A fetch returned just before a seek of its
  partition (a learner's rewind to its restored snapshot, or Faust's seek to the committed
  offset) must not be delivered after the seek: its last offset would become the read offset
  and the filter would drop every record the seek went back for (seen: 180 to 270 labels never
  learned after a learner was killed). Every seek of the aiokafka fetcher counts, on the
  consumer's thread, against its partition; each fetch carries the counts it was made under,
  and a run fetched under an older count is dropped (the seek moved the position: it comes
  again from there). A batch delivered while its partition was sought moves no read offset.
* **Back-pressure, per topic.** When an agent's queue holds :attr:`BatchConsumer.max_pending`
  batches, that topic's partitions leave the set Faust fetches for (``on_buffer_full``) until
  the queue drains, while the other topic's agent keeps being fed: a labels agent waiting for
  events must not stop the events. Memory stays bounded by aiokafka's own prefetch.

* **Exactly once.** With transactional outputs (``stream_app.transactions``) a batch's offsets
  are committed in transactions and never here: the agent parts the batch's outputs by input
  partition (``pipeline.records.by_partition``) and each partition's go in that partition's
  next transaction, with its offset. The batch stays whole for the engine (one store round
  trip for all its partitions: at 5,000 events/s over 4 partitions, one batch per partition
  meant four times the round trips). The partitions' producers start (fencing their previous
  owners) before their committed offsets are read, and revoked partitions' transactions end
  before they are handed on.

Concurrency stays 1 and per-record isolation is the agent's (``stream_app.app``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify

from stream_app.pipeline.records import Record

__all__ = ["Batch", "BatchConsumer", "BatchMessage", "Span"]

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Span:
    """The offsets ``[first, last]`` of one partition delivered in one batch."""

    first: int
    last: int
    done: bool = False


class Batch(list[Record]):
    """What the agent receives: the records, and :meth:`done` to say they are handled.

    The agent calls :meth:`done` once the batch's outputs are delivered; only then may its
    offsets commit. (Faust's stream acks the message too, but its Cython iterator inlines
    ``Consumer.ack`` and never reaches :meth:`BatchConsumer.ack`: relying on the ack alone
    committed nothing.)
    """

    __slots__ = ("spans",)

    def __init__(self, records: list[Record], spans: dict[TP, Span]) -> None:
        super().__init__(records)
        self.spans = spans

    def done(self) -> None:
        for span in self.spans.values():
            span.done = True


class BatchMessage(ConsumerMessage):
    """A Faust message whose value is a :class:`Batch` of records, with a span per partition."""

    spans: dict[TP, Span]

    @classmethod
    def of(cls, tp: TP, records: list[Record], spans: dict[TP, Span], generation_id: int,
           timestamp: float) -> BatchMessage:
        msg = cls(tp.topic, tp.partition, records[-1].offset, timestamp, 0, None, None,
                  Batch(records, spans), None, 0, 0, tp, generation_id=generation_id)
        msg.spans = spans
        return msg


class _Fetched(dict):  # type: ignore[type-arg]
    """One fetch's records by partition, and the partitions' seek counts when it was made."""

    __slots__ = ("seeks",)

    def __init__(self, records: Mapping[TP, list[Any]], seeks: dict[tuple[str, int], int]
                 ) -> None:
        super().__init__(records)
        self.seeks = seeks


def _count_seeks(fetcher: Any, seeks: dict[tuple[str, int], int]) -> None:
    """Make every seek of this aiokafka fetcher (``seek``, ``seek_to_committed``, ...: all go
    through ``Fetcher.seek_to``) count against its partition first."""
    if getattr(fetcher, "_stream_app_counted", False):
        return
    seek_to = fetcher.seek_to

    def counted(tp: Any, offset: int) -> None:
        key = (tp.topic, tp.partition)
        seeks[key] = seeks.get(key, 0) + 1
        seek_to(tp, offset)

    fetcher.seek_to = counted
    fetcher._stream_app_counted = True  # noqa: SLF001


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust hard-codes ``fetch_max_wait_ms=1500``; the embedded broker holds every fetch that long.
    Fetches also carry their partitions' seek counts (see the module doc)."""

    async def _fetch_records(self, consumer: Any, active_partitions: Any,
                             timeout: float | None = None,  # noqa: ASYNC109 (Faust's signature)
                             max_records: int | None = None) -> Any:
        seeks = self.consumer._seeks  # type: ignore[attr-defined]
        _count_seeks(consumer._fetcher, seeks)  # noqa: SLF001 (created by consumer.start())
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
        if not records:
            return records
        # no await since the fetcher drained these: no seek came between (one thread, one loop)
        return _Fetched(records, {(tp.topic, tp.partition): seeks.get((tp.topic, tp.partition), 0)
                                  for tp in records})

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        if getattr(self.app, "transactions", None) is not None:
            # labels sent back and every other input written in transactions: committed only
            consumer._isolation_level = "read_committed"  # noqa: SLF001 (read at start())
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, draining fetches as :class:`BatchMessage` per topic."""

    #: batches waiting in one agent's queue at which its topic stops being fetched for
    max_pending: int = 2
    #: (group generation, {tp: offset}): where the labels resume after a restore
    rewind: tuple[int, dict[Any, int]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: per partition, the spans delivered and not yet committed, in delivery order
        self._spans: dict[TP, deque[Span]] = {}
        #: topics whose agent has ``max_pending`` batches queued: not fetched for meanwhile
        self._full: set[str] = set()
        #: per (topic, partition), the seeks of its fetch position so far (written on the
        #: consumer's thread, read here: see the module doc)
        self._seeks: dict[tuple[str, int], int] = {}

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Faust's recovery seeks to the committed offsets (and resets the offsets below which
        it drops records) in a task of its own; a restore's rewind must come after it."""
        await super().perform_seek()
        pending = self.rewind
        if pending is not None and pending[0] == self.app.consumer_generation_id:
            await self._thread.seek_wait(pending[1])

    def forget(self, tps: Iterable[TP], committed: Mapping[TP, int] | None = None) -> None:
        """Drop the spans of ``tps`` (revoked, or sought elsewhere); optionally record the
        offsets now committed for them, so later commits are judged against those."""
        for tp in tps:
            self._spans.pop(tp, None)
        if committed:
            self._committed_offset.update(committed)

    @property
    def _transactions(self) -> Any:
        return getattr(self.app, "transactions", None)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        txn = self._transactions
        if txn is not None:  # fence the partitions' previous owners before their offsets are read
            await txn.on_assigned(assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        txn = self._transactions
        if txn is not None:  # the revoked partitions' transactions end before Kafka hands them on
            await txn.on_revoked(revoked)
        self.forget(revoked)
        self._full.clear()  # Faust resets the fetched set on assignment; queues are cleared
        self._buffered_partitions.difference_update(revoked)
        await super().on_partitions_revoked(revoked)

    # -- acks and commits --------------------------------------------------------------------
    def ack(self, message: Any) -> bool:
        if not isinstance(message, BatchMessage):
            return super().ack(message)
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            self._unacked_messages.discard(message)
            n = 0
            for span in message.spans.values():
                span.done = True
                n += span.last - span.first + 1
            self._n_acked += n
            notify(self._waiting_for_ack)
            return True

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Any:
        return (tp for tp, spans in self._spans.items() if spans and spans[0].done
                and (topics is None or tp in topics or tp.topic in topics))

    def _new_offset(self, tp: TP) -> int | None:
        # Faust's Cython stream iterator records its acks here itself: never read, keep small
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        spans = self._spans.get(tp)
        offset = None
        while spans and spans[0].done:
            offset = spans.popleft().last + 1
        return offset

    # -- delivery ----------------------------------------------------------------------------
    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop (``Consumer._drain_messages``), one message per topic per fetch."""
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        read_offset = self._read_offset
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await self.sleep(0)
                if self.should_stop:
                    break
                if self._full and not self._resume_drained():
                    await asyncio.sleep(0.001)  # every topic's agent is busy: wait, not fetch
                    continue
                # with a topic held back, come back soon to resume it rather than wait for
                # the other topic's next record
                records, active = await self._wait_next_records(0.005 if self._full else 1.0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._seek_when_flow_stopped()
                    continue
                generation = self.app.consumer_generation_id
                # exactly once: the agent commits each partition's offset in its transaction
                commit = self._transactions is None
                for topic, runs in _by_topic(records).items():
                    if self.app.consumer_generation_id != generation or not self.flow_active:
                        break
                    batch, spans = self._collect(runs, active, read_offset,
                                                 getattr(records, "seeks", None))
                    if batch:
                        await self._deliver(topic, batch, spans, generation, commit=commit)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise

    def _collect(self, runs: list[tuple[TP, list[Any]]], active: set[TP] | None,
                 read_offset: Any, fetched_under: Mapping[tuple[str, int], int] | None = None
                 ) -> tuple[list[Record], dict[TP, Span]]:
        batch: list[Record] = []
        spans: dict[TP, Span] = {}
        for tp, recs in _not_sought_since(runs, fetched_under, self._seeks):
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            floor = read_offset.get(tp)
            if floor is not None and recs and recs[0].offset < floor:
                recs = [r for r in recs if r.offset >= floor]
            if not recs:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            batch.extend(Record(r.topic, r.partition, r.offset, r.key, r.value,
                                (r.timestamp or 0) / 1000.0) for r in recs)
            spans[tp] = Span(recs[0].offset, recs[-1].offset)
        return batch, spans

    async def _deliver(self, topic: str, batch: list[Record], spans: dict[TP, Span],
                       generation: int, commit: bool = True) -> None:
        """Hand one batch to the agent; with ``commit`` its spans commit once it is acked
        (without: the agent commits its offset in a transaction)."""
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        first_tp = next(iter(spans))
        message = BatchMessage.of(first_tp, batch, spans, generation, batch[-1].timestamp)
        if commit:
            for tp, span in spans.items():
                self._spans.setdefault(tp, deque()).append(span)
        seeks = self._seeks
        before = [seeks.get((tp.topic, tp.partition), 0) for tp in spans]
        await self.wait_first(self.callback(message), self.suspend_flow.wait())
        for (tp, span), count in zip(spans.items(), before, strict=True):
            if seeks.get((tp.topic, tp.partition), 0) == count:  # else the seek set it
                self._read_offset[tp] = span.last
        if self._queued(topic) >= self.max_pending:
            self._full.add(topic)
            for tp in self._assigned(topic):
                self.on_buffer_full(tp)

    def _queued(self, topic: str) -> int:
        """The most batches waiting in the queue of an agent that reads ``topic``."""
        channels = self.app.topics._topic_name_index.get(topic, ())  # noqa: SLF001
        return max((chan.queue.qsize() for chan in channels), default=0)

    def _assigned(self, topic: str) -> list[TP]:
        return [tp for tp in self.assignment() if tp.topic == topic]

    def _resume_drained(self) -> bool:
        """Fetch again for the full topics whose agents caught up; True if any topic is
        fetched for now."""
        for topic in [t for t in self._full if self._queued(t) < self.max_pending]:
            self._full.discard(topic)
            for tp in self._assigned(topic):
                self.on_buffer_drop(tp)
        return bool(self._get_active_partitions())

    async def _seek_when_flow_stopped(self) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:  # as Faust's getmany: logged, the loop goes on
            log.warning("exception performing seek when flow not active %s", exc)


def _not_sought_since(runs: list[tuple[TP, list[Any]]],
                      fetched_under: Mapping[tuple[str, int], int] | None,
                      seeks: Mapping[tuple[str, int], int]) -> list[tuple[TP, list[Any]]]:
    """The runs of partitions not sought since their fetch (``fetched_under``: the seek counts
    the fetch was made under; ``None``: a fetch that carries none, all kept)."""
    if fetched_under is None:
        return runs
    kept = []
    for tp, recs in runs:
        key = (tp.topic, tp.partition)
        if fetched_under.get(key, 0) == seeks.get(key, 0):
            kept.append((tp, recs))
        else:
            log.debug("%s[%d]: dropping %d records fetched before a seek", *key, len(recs))
    return kept


def _by_topic(records: Mapping[TP, list[Any]]) -> dict[str, list[tuple[TP, list[Any]]]]:
    out: dict[str, list[tuple[TP, list[Any]]]] = {}
    for tp, recs in records.items():
        out.setdefault(tp.topic, []).append((tp, recs))
    return out
