"""The vectorised partitioner picks the partition aiokafka's (and Java's) murmur2 picks."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2

from stream_app.pipeline.partition import murmur2_many, partitions


def test_murmur2_many_equals_aiokafka_on_random_keys_of_every_length() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(n) for n in range(65) for _ in range(20)]
    rng.shuffle(keys)
    assert [int(h) for h in murmur2_many(keys)] == [murmur2(k) & 0xFFFFFFFF for k in keys]
    for n in (1, 3, 4, 12):
        assert partitions(keys, n) == [(murmur2(k) & 0x7FFFFFFF) % n for k in keys]


def test_no_keys() -> None:
    assert partitions([], 4) == []
