"""The online store contract: entity states, scoring snapshots, dedupe claims, early labels.

Every method is batched and costs one round trip. The event agent spends two per batch:
:meth:`FeatureStore.begin_batch` only *reads* (entity states and the claims of the event ids),
and :meth:`FeatureStore.commit_batch` writes everything at once, atomically (states, claims,
snapshots) and hands back the labels that arrived before their events. Because the read
claims nothing, a batch retried after a failure anywhere is processed exactly as the first
time; a claim's value is the caller's (say, the prediction it emitted), so a retry can
re-emit it. The label agent spends one: :meth:`FeatureStore.join_labels`, also atomic, so a
label and its event can race without the label being lost or learned twice.

A miss is ``None``, never an exception; an unreachable backend raises
:class:`~stream_app.errors.ServiceError`.

Keys live under ``stream:{namespace}:`` (``stream:`` without a namespace), so tests and several
apps can share one Redis::

    stream:{ns}:ent:{entity_id}      entity state (opaque bytes)  entity TTL, refreshed on write
    stream:{ns}:snap:{event_id}      scored feature vector        snapshot TTL
    stream:{ns}:seen:{event_id}      claim: caller's bytes        claim TTL
    stream:{ns}:plabel:{event_id}    label that came early        pending TTL
    stream:{ns}:learned:{event_id}   the label's position or "1"  claim / learned TTL

Backends are chosen by URL: ``memory://`` (:class:`~features.memory_store.MemoryFeatureStore`)
or ``redis://host:port/db``, ``rediss://...``, ``unix:///path.sock``
(:class:`~features.redis_store.RedisFeatureStore`).

>>> import asyncio
>>> TTLS = dict(entity_ttl_s=60, snapshot_ttl_s=60, claim_ttl_s=60)
>>> async def demo():
...     store = open_feature_store("memory://", namespace="demo")
...     early = await store.join_labels({"e1": b"fraud"}, pending_ttl_s=60, learned_ttl_s=60)
...     first = await store.begin_batch(["alice"], ["e1"])
...     learn = await store.commit_batch({"alice": b"s1"}, {"e1": b"pred"}, {"e1": b"x"}, **TTLS)
...     retry = await store.begin_batch(["alice"], ["e1"])
...     again = await store.commit_batch({"alice": b"s1"}, {"e1": b"pred"}, {"e1": b"x"}, **TTLS)
...     late = await store.join_labels({"e1": b"fraud"}, pending_ttl_s=60, learned_ttl_s=60)
...     await store.aclose()
...     return early, first, learn, retry, again, late
>>> for step in asyncio.run(demo()): print(step)
{'e1': ('parked', None)}
BatchRead(states=[None], seen=[None])
{'e1': b'fraud'}
BatchRead(states=[b's1'], seen=[b'pred'])
{}
{'e1': ('duplicate', None)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from stream_app.errors import ConfigError

__all__ = [
    "DUPLICATE",
    "EXPIRED",
    "JOINED",
    "PARKED",
    "REDELIVERED",
    "BatchRead",
    "FeatureStore",
    "encode_state",
    "key_prefix",
    "open_feature_store",
]

#: a per-entity state as stored: opaque bytes (``features.state`` makes and reads them)
State = bytes

ENTITY: Final = "ent:"
SNAPSHOT: Final = "snap:"
SEEN: Final = "seen:"
PENDING_LABEL: Final = "plabel:"
LEARNED: Final = "learned:"
LEARNED_VALUE: Final = b"1"

#: what :meth:`FeatureStore.join_labels` did with a label
JOINED: Final = "joined"  # its snapshot was there and it was not learned yet: learn now
DUPLICATE: Final = "duplicate"  # its event was learned from already
EXPIRED: Final = "expired"  # its event was scored but the snapshot has expired
PARKED: Final = "parked"  # its event was not scored yet: kept for commit_batch
#: the very label record that was joined before (same position) came again: the caller
#: decides whether its model has learned it (see ``stream_app.flow``)
REDELIVERED: Final = "redelivered"


@dataclass(frozen=True, slots=True)
class BatchRead:
    """What :meth:`FeatureStore.begin_batch` found, aligned with its arguments."""

    #: one per entity id: the stored state, or ``None``
    states: list[State | None]
    #: one per event id: the claim value committed for it, or ``None`` if never committed
    seen: list[bytes | None]


@runtime_checkable
class FeatureStore(Protocol):
    """The online store. Every call is one round trip; results align with their arguments."""

    async def read_entities(self, entity_ids: Sequence[str]) -> list[State | None]:
        """Entity states, ``None`` for a miss."""
        ...

    async def write_entities(self, states: Mapping[str, State], ttl_s: int) -> None:
        """Store entity states, (re)setting their TTL."""
        ...

    async def put_snapshots(self, snaps: Mapping[str, bytes], ttl_s: int) -> None:
        """Store the feature vectors used for scoring, by event id (no label is taken)."""
        ...

    async def get_snapshots(self, event_ids: Sequence[str]) -> list[bytes | None]:
        """Scoring snapshots by event id, ``None`` for a miss."""
        ...

    async def begin_batch(self, entity_ids: Sequence[str], event_ids: Sequence[str]) -> BatchRead:
        """Read entity states and event claims; writes nothing, so it is safe to repeat."""
        ...

    async def commit_batch(
        self,
        states: Mapping[str, State],
        claims: Mapping[str, bytes],
        snapshots: Mapping[str, bytes],
        *,
        entity_ttl_s: int,
        snapshot_ttl_s: int,
        claim_ttl_s: int,
        mark_learned: bool = True,
    ) -> dict[str, bytes]:
        """Atomically write states, claims and snapshots; take the labels parked for them.

        Every write is a plain overwrite. Then, for each snapshot's event id, a parked label is
        removed and returned, ``{event_id: label}``: with ``mark_learned`` (the caller learns
        it) only if the event was not learned from already, and it is marked learned (claim
        TTL); without (a scorer, which forwards it to the learner) as it was. Each parked label
        is returned at most once, ever.
        """
        ...

    async def join_labels(
        self, labels: Mapping[str, bytes], *, pending_ttl_s: int, learned_ttl_s: int,
        positions: Mapping[str, bytes] | None = None,
    ) -> dict[str, tuple[str, bytes | None]]:
        """Atomically join labels to snapshots: ``{event_id: (status, snapshot or None)}``.

        :data:`JOINED` (with the snapshot; the event is now marked learned, the mark holding the
        label's entry in ``positions``, default ``b"1"``), :data:`REDELIVERED` (with the
        snapshot: marked learned by this same position before), :data:`DUPLICATE`,
        :data:`EXPIRED` (claimed, snapshot gone) or :data:`PARKED` (kept ``pending_ttl_s`` for
        :meth:`commit_batch`; a later label for the same id replaces it).
        """
        ...

    async def ping(self) -> bool:
        """``True`` if the backend answers; never raises."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def open_feature_store(url: str, *, namespace: str = "") -> FeatureStore:
    """The store for ``url``: ``memory://`` or ``redis://``, ``rediss://``, ``unix://``.

    >>> type(open_feature_store("memory://")).__name__
    'MemoryFeatureStore'
    >>> open_feature_store("postgres://db")
    Traceback (most recent call last):
    ...
    stream_app.errors.ConfigError: feature store URL must start with memory://, redis://, rediss:// or unix://, got 'postgres://db'
    """
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme == "memory":
        from features.memory_store import MemoryFeatureStore

        return MemoryFeatureStore(namespace)
    if scheme in ("redis", "rediss", "unix"):
        from features.redis_store import RedisFeatureStore

        return RedisFeatureStore.from_url(url, namespace=namespace)
    raise ConfigError(
        "feature store URL must start with memory://, redis://, rediss:// or unix://, "
        f"got {url!r}"
    )


def key_prefix(namespace: str) -> str:
    """The prefix of every key of a store.

    >>> key_prefix(""), key_prefix("t1"), key_prefix("t1:")
    ('stream:', 'stream:t1:', 'stream:t1:')
    """
    if not namespace:
        return "stream:"
    return f"stream:{namespace}" if namespace.endswith(":") else f"stream:{namespace}:"


def check_ttl(ttl_s: int) -> int:
    """TTLs are whole seconds, at least 1 (Redis ``EX`` semantics)."""
    ttl = int(ttl_s)
    if ttl < 1 or ttl != ttl_s:
        raise ValueError(f"ttl_s must be a whole number of seconds >= 1, got {ttl_s!r}")
    return ttl


def encode_state(state: State) -> bytes:
    """The bytes stored for an entity state: the state itself (a copy of a bytearray).

    The store carries states as they are; anything but bytes is a caller's bug, refused before
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
