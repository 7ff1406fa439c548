"""What every feature store backend shares: key layout, statuses, the state codec, TTL checks.

Backends import this module only (never ``protocol``), so nothing imports in a circle.

Keys live under ``stream:{namespace}:`` (``stream:`` without a namespace), so tests and several
apps can share one Redis::

    stream:{ns}:ent:{entity_id}      entity state (bytes)         entity TTL, refreshed on write
    stream:{ns}:snap:{event_id}      scored feature vector        snapshot TTL
    stream:{ns}:seen:{event_id}      claim: caller's bytes        claim TTL
    stream:{ns}:plabel:{event_id}    label that came early        pending TTL
    stream:{ns}:learned:{event_id}   the label's position or "1"  claim / learned TTL
    stream:{ns}:plabels              index of the parked labels   pending TTL (a sorted set:
                                     "{cost}:{event_id}" scored by its expiry, epoch ms)
    stream:{ns}:plabels:bytes        the sum of their costs       pending TTL
    stream:{ns}:plabels:pos          parked label -> its position  pending TTL + grace (a hash:
                                     "{topic}:{partition}:{offset}" of the label record)
    stream:{ns}:plabels:dead         parked labels past their TTL  grace (a sorted set, as the
                                     index: waiting for ``sweep_parked`` to report them)
    stream:{ns}:incarnation          the store's incarnation        none (see below)

Parked labels are bounded: ``join_labels`` parks a label only while the namespace's parked
labels stay within ``max_parked`` labels and ``max_parked_bytes`` (each label costs
:func:`park_cost`); past either it reports :data:`FLOODED` and keeps nothing. The index is
kept in the same atomic step as the labels (parking, replacing, taking), and expired entries
leave it on the next park.

A parked label is never dropped in silence: past its pending TTL its entry moves from the
index to the ``dead`` set (freeing its place), and its key lives :data:`ORPHAN_GRACE_S` longer,
so that :meth:`~features.store.FeatureStore.sweep_parked` can hand it, with its position, to
the learner, which dead-letters it (``label_orphaned``). A label past its TTL is not taken.

State loss: the first write of a store writes a random incarnation id under
``incarnation`` (or adopts the one there); the write scripts check it atomically, so the first
write after Redis lost its data (restarted empty, flushed) finds it gone, counts one state loss
(``state_losses``), writes a new one and goes on. Another worker then finds an id it does not
know, and counts the same loss once too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DUPLICATE",
    "ENTITY",
    "EXPIRED",
    "FLOODED",
    "JOINED",
    "LEARNED",
    "LEARNED_VALUE",
    "MISSING",
    "PARKED",
    "INCARNATION",
    "ORPHAN_GRACE_S",
    "PARKED_BYTES",
    "PARKED_DEAD",
    "PARKED_INDEX",
    "PARKED_POSITIONS",
    "PARK_OVERHEAD_BYTES",
    "PENDING_LABEL",
    "REDELIVERED",
    "SEEN",
    "SNAPSHOT",
    "TAKEN_LABEL",
    "BatchRead",
    "State",
    "check_ttl",
    "encode_state",
    "key_prefix",
    "park_cost",
]

#: a per-entity state as stored: opaque bytes (``features.state`` makes and reads them)
State = bytes

ENTITY: Final = "ent:"
SNAPSHOT: Final = "snap:"
SEEN: Final = "seen:"
PENDING_LABEL: Final = "plabel:"
LEARNED: Final = "learned:"
#: a parked label that ``commit_batch`` took, kept (claim TTL) so a replayed batch can send it
#: back again if the first batch's outputs never became visible
TAKEN_LABEL: Final = "tlabel:"
LEARNED_VALUE: Final = b"1"
#: the parked labels' index and the sum of their costs (see the module docstring)
PARKED_INDEX: Final = "plabels"
PARKED_BYTES: Final = "plabels:bytes"
#: the parked labels' positions, and those past their TTL not yet swept (module docstring)
PARKED_POSITIONS: Final = "plabels:pos"
PARKED_DEAD: Final = "plabels:dead"
#: the store's incarnation id, to tell a write after a state loss (module docstring)
INCARNATION: Final = "incarnation"
#: how long a parked label's key outlives its TTL, for ``sweep_parked`` to find it
ORPHAN_GRACE_S: Final = 300
#: what a parked label costs in Redis beyond its payload, key, index entry's and positions
#: entry's names: the key's and value's objects, its expiry, the index's skip list and hash
#: entries, the positions hash entry, allocator rounding (Redis 7.0.15: see
#: ``tests/test_bounded_abuse.py``, which prints the measured bytes a label)
PARK_OVERHEAD_BYTES: Final = 384

#: what :meth:`~features.store.FeatureStore.join_labels` did with a label
JOINED: Final = "joined"  # its snapshot was there and it was not learned yet: learn now
DUPLICATE: Final = "duplicate"  # its event was learned from already
EXPIRED: Final = "expired"  # its event was scored but the snapshot has expired
PARKED: Final = "parked"  # its event was not scored yet: kept for commit_batch
MISSING: Final = "missing"  # its event was not scored yet, and park=False: nothing kept
#: its event was not scored yet, and the parked labels are at their limit: nothing kept
FLOODED: Final = "flooded"
#: the very label record that was joined before (same position) came again: the caller
#: decides whether its model has learned it (see ``stream_app.pipeline``)
REDELIVERED: Final = "redelivered"


@dataclass(frozen=True, slots=True)
class BatchRead:
    """What :meth:`~features.store.FeatureStore.begin_batch` found, aligned with its arguments."""

    #: one per entity id: the stored state, or ``None``
    states: list[State | None]
    #: one per event id: the claim value committed for it, or ``None`` if never committed
    seen: list[bytes | None]


def key_prefix(namespace: str) -> str:
    """The prefix of every key of a store.

    >>> key_prefix(""), key_prefix("t1"), key_prefix("t1:")
    ('stream:', 'stream:t1:', 'stream:t1:')
    """
    if not namespace:
        return "stream:"
    return f"stream:{namespace}" if namespace.endswith(":") else f"stream:{namespace}:"


def park_cost(prefix: str, event_id: str, label: bytes, position: bytes = LEARNED_VALUE
              ) -> int:
    """The bytes a parked label counts against ``max_parked_bytes``, about what Redis spends on
    it: its payload, its key, its event id (the index entry), its event id and source
    ``position`` (the positions entry, for the ``label_orphaned`` dead letter) and
    :data:`PARK_OVERHEAD_BYTES`. ``prefix`` is the store's :func:`key_prefix`.

    >>> park_cost("stream:app:", "e1", b'{"event_id": "e1", "label": 1, "timestamp": 1}',
    ...           b"labels:0:17")
    465
    """
    key = f"{prefix}{PENDING_LABEL}{event_id}".encode()
    eid = len(event_id.encode())
    return len(label) + len(key) + 2 * eid + len(position) + PARK_OVERHEAD_BYTES


def check_ttl(ttl_s: int) -> int:
    """TTLs are whole seconds, at least 1 (Redis ``EX`` semantics)."""
    ttl = int(ttl_s)
    if ttl < 1 or ttl != ttl_s:
        raise ValueError(f"ttl_s must be a whole number of seconds >= 1, got {ttl_s!r}")
    return ttl


def encode_state(state: State) -> bytes:
    """The bytes stored for an entity state: the state itself (a copy of a bytearray).

    The store carries states as they are (``features.state`` versions them, and reads a
    state of another version as empty); anything but bytes is a caller's bug, refused before
    any write.

    >>> encode_state(bytearray(b"\\xa5"))
    b'\\xa5'
    >>> encode_state({"v": 1})
    Traceback (most recent call last):
    ...
    TypeError: an entity state is bytes (see features.state), got dict
    """
    if isinstance(state, bytes):
        return state
    if isinstance(state, (bytearray, memoryview)):
        return bytes(state)
    raise TypeError(f"an entity state is bytes (see features.state), got {type(state).__name__}")
