"""Records fetched before a seek of their partition are never delivered after it.

A learner that restores rewinds the labels to its snapshot's offset; a fetch that came back just
before that seek, delivered after it, moved the read offset past the rewound records and they
were dropped unlearned. Here on a real broker and a real aiokafka fetcher: its seeks are
counted, a fetch carries the counts it was made under, and a run fetched before a seek is
dropped while the next fetch (from the sought offset) is kept.
"""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from stream_app import contract
from stream_app.batching import _count_seeks, _not_sought_since
from stream_app.kafka_io import ensure_topics, make_consumer
from tests.kafka_helpers import label, produce

pytestmark = [pytest.mark.integration]


async def _fetch(consumer, seeks: dict[tuple[str, int], int]):
    """One fetch as ``_ConsumerThread._fetch_records`` stamps it: records and seek counts."""
    fetched = await consumer._fetcher.fetched_records((), timeout=5.0, max_records=1000)
    return fetched, {(tp.topic, tp.partition): seeks.get((tp.topic, tp.partition), 0)
                     for tp in fetched}


async def test_a_run_fetched_before_a_seek_is_dropped_and_the_sought_records_come(
        kafka_settings) -> None:
    settings = kafka_settings
    await ensure_topics(settings)
    await produce(settings, contract.LABELS, [(b"k", label(f"e{i}", i % 2)) for i in range(10)],
                  partition=0)
    tp = TopicPartition(settings.topic(contract.LABELS), 0)
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-seek-test")
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 6)
        seeks: dict[tuple[str, int], int] = {}
        _count_seeks(consumer._fetcher, seeks)
        _count_seeks(consumer._fetcher, seeks)  # wrapping twice counts once
        fetched, under = await _fetch(consumer, seeks)
        assert [r.offset for r in fetched[tp]] == [6, 7, 8, 9]
        assert _not_sought_since(list(fetched.items()), under, seeks) == list(fetched.items())

        consumer.seek(tp, 2)  # the rewind, after the fetch came back and before its delivery
        assert seeks == {(tp.topic, 0): 1}
        assert _not_sought_since(list(fetched.items()), under, seeks) == []
        again, under = await _fetch(consumer, seeks)
        kept = _not_sought_since(list(again.items()), under, seeks)
        assert [r.offset for _, recs in kept for r in recs] == list(range(2, 10))

        await consumer.seek_to_committed(tp)  # nothing committed: no seek, nothing counted
        assert seeks == {(tp.topic, 0): 1}
    finally:
        await consumer.stop()
