"""``stream_app.transactions`` on real Kafka: a batch's outputs and offset commit together,
an aborted batch is invisible, and a newer owner of a partition fences the older one."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import TopicPartition

from stream_app import contract
from stream_app.kafka_io import ensure_topics, make_admin, make_consumer
from stream_app.transactions import Transactions
from tests.kafka_helpers import collect

pytestmark = [pytest.mark.integration]


def _out(settings, i: int) -> tuple[str, bytes, bytes]:
    return (settings.topic(contract.PREDICTIONS), f"e{i}".encode(),
            orjson.dumps({"event_id": f"e{i}"}))


async def _committed(settings, group: str, tp: TopicPartition, expected: int,
                     timeout_s: float = 10.0) -> int | None:
    """The group's committed offset of ``tp``, read until it is ``expected`` or ``timeout_s``
    passes. A transaction's offsets stay pending after EndTxn returns, until the coordinator's
    commit marker reaches the group coordinator (asynchronously, KIP-98), and an OffsetFetch in
    that window still answers the previous offset."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    admin = make_admin(settings)
    await admin.start()
    try:
        while True:
            offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
            meta = offsets.get(tp)
            got = None if meta is None or meta.offset < 0 else meta.offset
            if got == expected or asyncio.get_running_loop().time() > deadline:
                return got
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def test_outputs_and_offsets_commit_together_and_a_newer_owner_fences(kafka_settings
                                                                            ) -> None:
    settings = kafka_settings
    if not settings.exactly_once:
        pytest.skip("the embedded broker has no transactions")
    await ensure_topics(settings)
    tp = TopicPartition(settings.topic(contract.EVENTS), 1)
    group = f"{settings.app_id}-txn-test"
    old = Transactions(settings, group)
    new = Transactions(settings, group)
    try:
        await old.on_assigned([tp])
        await old.submit(tp, [_out(settings, 0), _out(settings, 1)], next_offset=2)
        await old.wait()
        assert old.committed == 1
        assert await _committed(settings, group, tp, 2) == 2

        await new.on_assigned([tp])  # the partition moved while `old` was paused
        await old.submit(tp, [_out(settings, 2)], next_offset=3)  # `old` wakes up mid-batch
        await old.wait()
        assert (old.committed, old.dropped) == (1, 1)
        await new.submit(tp, [_out(settings, 3)], next_offset=4)
        await new.wait()
        assert new.committed == 1
        assert await _committed(settings, group, tp, 4) == 4
        # a batch of a partition not owned is dropped, not sent
        await new.submit(TopicPartition(tp.topic, 0), [_out(settings, 9)], next_offset=1)
        assert new.dropped == 1
    finally:
        await old.stop()
        await new.stop()

    got = await collect(settings, contract.PREDICTIONS, timeout_s=10,
                        until=lambda rs: len(rs) >= 3)
    ids = sorted(orjson.loads(r.value)["event_id"] for r in got)
    assert ids == ["e0", "e1", "e3"]  # e2 (the fenced batch) and e9 were never visible
    # and a read_uncommitted reader agrees that nothing of the fenced batch was written
    raw = make_consumer(settings, isolation_level="read_uncommitted")
    await raw.start()
    try:
        ptp = TopicPartition(settings.topic(contract.PREDICTIONS), 0)
        parts = [TopicPartition(ptp.topic, p) for p in range(settings.partitions)]
        raw.assign(parts)
        await raw.seek_to_beginning(*parts)
        seen = []
        for _ in range(10):
            for batch in (await raw.getmany(timeout_ms=300)).values():
                seen.extend(orjson.loads(r.value)["event_id"] for r in batch)
        assert "e2" not in seen and "e9" not in seen
    finally:
        await raw.stop()


async def test_a_producer_fenced_in_the_background_drops_its_batches_and_never_raises(
        kafka_settings) -> None:
    """A zombie's producer can turn fatal in its sender (fenced while it was paused); the next
    batch must neither raise into the agent (a Faust agent that raises skips its batch, and a
    later offset would commit past it) nor commit: it is dropped and comes again."""
    from aiokafka.errors import ProducerFenced

    settings = kafka_settings
    if not settings.exactly_once:
        pytest.skip("the embedded broker has no transactions")
    await ensure_topics(settings)
    tp = TopicPartition(settings.topic(contract.EVENTS), 2)
    group = f"{settings.app_id}-txn-fatal"
    txn = Transactions(settings, group)
    try:
        await txn.on_assigned([tp])
        await txn.submit(tp, [_out(settings, 20)], next_offset=1)
        await txn.wait()
        txn._producers[tp]._txn_manager.fatal_error(ProducerFenced())  # as its sender does
        await txn.submit(tp, [_out(settings, 21)], next_offset=2)
        await txn.wait()
        assert (txn.committed, txn.dropped) == (1, 1)
        assert await _committed(settings, group, tp, 1) == 1
        await txn.submit(tp, [_out(settings, 22)], next_offset=3)  # given up: dropped too
        assert txn.dropped == 2
        await txn.on_assigned([tp])  # assigned again: a new producer, batches commit again
        await txn.submit(tp, [_out(settings, 23)], next_offset=4)
        await txn.wait()
        assert txn.committed == 2 and await _committed(settings, group, tp, 4) == 4
    finally:
        await txn.stop()
