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
:class:`~stream_app.errors.ServiceError`. Entity states are opaque bytes to the store; the key
layout is in ``features.store.base``.

Backends are chosen by URL, as Faust chooses its stores (``FactoryMapping.by_url``): the
scheme names a ``module:class`` in :data:`BACKENDS`, imported on first use, whose
``from_url`` builds the store. ``memory://`` is
:class:`~features.store.memory.MemoryFeatureStore`; ``redis://host:port/db``, ``rediss://...``
and ``unix:///path.sock`` are :class:`~features.store.redis.RedisFeatureStore`.

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

import importlib
from collections.abc import Mapping, Sequence
from typing import Final, Protocol, runtime_checkable

from features.store.base import BatchRead, State
from stream_app.errors import ConfigError

__all__ = ["BACKENDS", "FeatureStore", "StoreBackend", "backend_by_url", "open_feature_store"]

#: URL scheme -> the ``module:class`` of its backend (imported only when a URL names it)
BACKENDS: Final[Mapping[str, str]] = {
    "memory": "features.store.memory:MemoryFeatureStore",
    "redis": "features.store.redis:RedisFeatureStore",
    "rediss": "features.store.redis:RedisFeatureStore",
    "unix": "features.store.redis:RedisFeatureStore",
    "redis+cluster": "features.store.redis:RedisFeatureStore",
    "rediss+cluster": "features.store.redis:RedisFeatureStore",
}


@runtime_checkable
class FeatureStore(Protocol):
    """The online store. Every call is one round trip; results align with their arguments."""

    #: how many times this store found its state lost (``features.store.base``): a write that
    #: found the incarnation id gone or replaced; the memory store never loses its state
    state_losses: int

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

    async def taken_labels(self, event_ids: Sequence[str]) -> list[bytes | None]:
        """The parked labels that :meth:`commit_batch` took for these events (kept for the
        claim TTL), ``None`` for none: a replayed batch sends them back again, because the
        first attempt's outputs may never have become visible."""
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
        positions: Mapping[str, bytes] | None = None, park: bool = True,
        max_parked: int | None = None, max_parked_bytes: int | None = None,
    ) -> dict[str, tuple[str, bytes | None]]:
        """Atomically join labels to snapshots: ``{event_id: (status, snapshot or None)}``.

        :data:`JOINED` (with the snapshot; the event is now marked learned, the mark holding the
        label's entry in ``positions``, default ``b"1"``), :data:`REDELIVERED` (with the
        snapshot: marked learned by this same position before), :data:`DUPLICATE`,
        :data:`EXPIRED` (claimed, snapshot gone) or :data:`PARKED` (kept ``pending_ttl_s`` for
        :meth:`commit_batch`; a later label for the same id replaces it). With ``park=False``
        a label whose event is not scored yet is :data:`MISSING` instead, and nothing is kept:
        the caller may try again once the event may be scored. A label that would take the
        namespace's parked labels past ``max_parked`` labels or ``max_parked_bytes`` (their
        :func:`~features.store.base.park_cost`; ``None``: no limit) is :data:`FLOODED`, and
        nothing is kept; labels are parked in the order given until then.
        """
        ...

    async def sweep_parked(self, *, limit: int = 1000
                           ) -> list[tuple[str, bytes | None, bytes | None]]:
        """Take up to ``limit`` parked labels past their pending TTL, never taken (orphans):
        ``[(event_id, label, position)]``, the label and its position as parked (``None`` if
        gone: not swept within :data:`~features.store.base.ORPHAN_GRACE_S`). Each is returned
        at most once, ever; two round trips."""
        ...

    async def ping(self) -> bool:
        """``True`` if the backend answers; never raises."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class StoreBackend(Protocol):
    """A backend class: it builds its store from a URL."""

    def from_url(self, url: str, *, namespace: str = "") -> FeatureStore:
        ...


def backend_by_url(url: str) -> StoreBackend:
    """The backend class for ``url``'s scheme, imported on first use.

    >>> backend_by_url("redis://127.0.0.1:6379/0").__name__
    'RedisFeatureStore'
    >>> backend_by_url("postgres://db")
    Traceback (most recent call last):
    ...
    stream_app.errors.ConfigError: feature store URL must start with memory://, redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://, got 'postgres://db'
    """
    scheme, sep, _ = url.partition("://")
    target = BACKENDS.get(scheme) if sep else None
    if target is None:
        schemes = [f"{name}://" for name in BACKENDS]
        raise ConfigError(f"feature store URL must start with {', '.join(schemes[:-1])} or "
                          f"{schemes[-1]}, got {url!r}")
    module, _, name = target.partition(":")
    backend: StoreBackend = getattr(importlib.import_module(module), name)
    return backend


def open_feature_store(url: str, *, namespace: str = "") -> FeatureStore:
    """The store for ``url``: ``memory://`` or ``redis://``, ``rediss://``, ``unix://``.

    >>> type(open_feature_store("memory://")).__name__
    'MemoryFeatureStore'
    """
    return backend_by_url(url).from_url(url, namespace=namespace)
