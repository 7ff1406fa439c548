"""The in-process online store: one dict of bytes with monotonic-clock expiry.

A real implementation of :class:`~features.store.protocol.FeatureStore`, used by the demo and the unit
tests and held to the same contract tests as Redis. Values are stored encoded, exactly as in
Redis, so a caller never shares objects with the store. No method awaits, so each call is
atomic like a Redis script. Expired keys vanish when touched, and a sweep after as many writes
as there are keys bounds the memory held by idle keys.

>>> import asyncio
>>> now = [0.0]
>>> store = MemoryFeatureStore(clock=lambda: now[0])
>>> asyncio.run(store.join_labels({"e1": b"1"}, pending_ttl_s=10, learned_ttl_s=10))
{'e1': ('parked', None)}
>>> now[0] = 10.0  # ten seconds later the parked label has expired
>>> asyncio.run(store.commit_batch({}, {"e1": b"p"}, {"e1": b"x"},
...                                entity_ttl_s=60, snapshot_ttl_s=60, claim_ttl_s=60))
{}
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from features.store.base import (
    DUPLICATE,
    ENTITY,
    EXPIRED,
    FLOODED,
    JOINED,
    LEARNED,
    LEARNED_VALUE,
    MISSING,
    ORPHAN_GRACE_S,
    PARKED,
    PENDING_LABEL,
    REDELIVERED,
    SEEN,
    SNAPSHOT,
    TAKEN_LABEL,
    BatchRead,
    State,
    check_ttl,
    encode_state,
    key_prefix,
    park_cost,
)

__all__ = ["MemoryFeatureStore"]

_MIN_SWEEP = 1024


class MemoryFeatureStore:
    """The :class:`~features.store.protocol.FeatureStore` contract over a dict, for one process."""

    def __init__(self, namespace: str = "", *, clock: Callable[[], float] = time.monotonic):
        self._prefix = key_prefix(namespace)
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}
        self._writes = 0
        #: the parked labels' index: event id -> (expiry, cost), oldest write first
        self._parked: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._parked_bytes = 0
        #: parked labels past their expiry, not swept yet: event id -> expiry
        self._dead: OrderedDict[str, float] = OrderedDict()
        #: the parked labels' positions
        self._positions: dict[str, bytes] = {}
        #: a process's memory is never lost under it (the Redis store counts them)
        self.state_losses = 0

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "") -> MemoryFeatureStore:
        """A new, empty store for ``memory://`` (anything after the scheme is ignored)."""
        return cls(namespace)

    # -- the contract -------------------------------------------------------

    async def read_entities(self, entity_ids: Sequence[str]) -> list[State | None]:
        now = self._clock()
        return [self._get(ENTITY + i, now) for i in entity_ids]

    async def write_entities(self, states: Mapping[str, State], ttl_s: int) -> None:
        self._set_many(ENTITY, {k: encode_state(v) for k, v in states.items()}, ttl_s)

    async def put_snapshots(self, snaps: Mapping[str, bytes], ttl_s: int) -> None:
        self._set_many(SNAPSHOT, snaps, ttl_s)

    async def taken_labels(self, event_ids: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        return [self._get(TAKEN_LABEL + e, now) for e in event_ids]

    async def get_snapshots(self, event_ids: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        return [self._get(SNAPSHOT + i, now) for i in event_ids]

    async def begin_batch(self, entity_ids: Sequence[str], event_ids: Sequence[str]) -> BatchRead:
        now = self._clock()
        return BatchRead(
            states=[self._get(ENTITY + i, now) for i in entity_ids],
            seen=[self._get(SEEN + i, now) for i in event_ids],
        )

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
        check_ttl(entity_ttl_s)
        check_ttl(snapshot_ttl_s)
        learned_until = self._clock() + check_ttl(claim_ttl_s)
        self._set_many(ENTITY, {k: encode_state(v) for k, v in states.items()}, entity_ttl_s)
        self._set_many(SEEN, claims, claim_ttl_s)
        self._set_many(SNAPSHOT, snapshots, snapshot_ttl_s)
        now = self._clock()
        early: dict[str, bytes] = {}
        for event_id in snapshots:
            entry = self._parked.get(event_id)
            # a label past its expiry is not taken: the sweep reports it
            label = self._pop(PENDING_LABEL + event_id, now) \
                if entry is not None and entry[0] > now else None
            if label is not None:
                self._unpark(event_id)
            if label is not None and (not mark_learned or self._set_nx(
                    LEARNED + event_id, learned_until, now)):
                early[event_id] = label
                self._set_many(TAKEN_LABEL, {event_id: label}, claim_ttl_s)
        return early

    async def join_labels(
        self, labels: Mapping[str, bytes], *, pending_ttl_s: int, learned_ttl_s: int,
        positions: Mapping[str, bytes] | None = None, park: bool = True,
        max_parked: int | None = None, max_parked_bytes: int | None = None,
    ) -> dict[str, tuple[str, bytes | None]]:
        now = self._clock()
        pending_until = now + check_ttl(pending_ttl_s)
        learned_until = now + check_ttl(learned_ttl_s)
        out: dict[str, tuple[str, bytes | None]] = {}
        for event_id, label in labels.items():
            snap = self._get(SNAPSHOT + event_id, now)
            if snap is not None:
                position = bytes(positions[event_id]) if positions else LEARNED_VALUE
                if self._set_nx(LEARNED + event_id, learned_until, now, position):
                    out[event_id] = (JOINED, snap)
                elif positions and self._get(LEARNED + event_id, now) == position:
                    out[event_id] = (REDELIVERED, snap)
                else:
                    out[event_id] = (DUPLICATE, None)
            elif self._get(SEEN + event_id, now) is not None:
                out[event_id] = (EXPIRED, None)
            elif park:
                position = bytes(positions[event_id]) if positions else LEARNED_VALUE
                if self._park(event_id, bytes(label), now, pending_until, max_parked,
                              max_parked_bytes, position):
                    out[event_id] = (PARKED, None)
                else:
                    out[event_id] = (FLOODED, None)
            else:
                out[event_id] = (MISSING, None)
        self._wrote(len(labels))
        return out

    async def sweep_parked(self, *, limit: int = 1000
                           ) -> list[tuple[str, bytes | None, bytes | None]]:
        now = self._clock()
        self._retire(now)
        out: list[tuple[str, bytes | None, bytes | None]] = []
        while self._dead and len(out) < limit:
            event_id, _ = self._dead.popitem(last=False)
            out.append((event_id, self._pop(PENDING_LABEL + event_id, now),
                        self._positions.pop(event_id, None)))
        return out

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._data.clear()
        self._parked.clear()
        self._parked_bytes = 0
        self._dead.clear()
        self._positions.clear()

    # -- parked labels, bounded --------------------------------------------

    def _retire(self, now: float) -> None:
        """Move the parked labels past their expiry to the dead set (in write order: with one
        pending ttl, expiry order), where they no longer count."""
        parked = self._parked
        while parked:
            first, (expires, cost) = next(iter(parked.items()))
            if expires > now:
                break
            del parked[first]
            self._parked_bytes -= cost
            self._dead[first] = expires

    def _park(self, event_id: str, label: bytes, now: float, until: float,
              max_parked: int | None, max_bytes: int | None, position: bytes) -> bool:
        """Park ``label`` if the parked labels stay within the limits (a replacement frees the
        label it replaces); ``False``: nothing kept."""
        parked = self._parked
        self._retire(now)
        cost = park_cost(self._prefix, event_id, label, position)
        old = parked.get(event_id)
        count = len(parked) + (old is None)
        size = self._parked_bytes + cost - (0 if old is None else old[1])
        if (max_parked is not None and count > max_parked) or (
                max_bytes is not None and size > max_bytes):
            return False
        self._data[self._prefix + PENDING_LABEL + event_id] = (label, until + ORPHAN_GRACE_S)
        self._dead.pop(event_id, None)  # an orphan replaced by a newer label for its event
        self._positions[event_id] = position
        parked[event_id] = (until, cost)
        parked.move_to_end(event_id)
        self._parked_bytes = size
        return True

    def _unpark(self, event_id: str) -> None:
        entry = self._parked.pop(event_id, None)
        if entry is not None:
            self._parked_bytes -= entry[1]
        self._positions.pop(event_id, None)

    # -- a tiny key-value store with expiry --------------------------------

    def _get(self, key: str, now: float) -> bytes | None:
        item = self._data.get(self._prefix + key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[self._prefix + key]
            return None
        return item[0]

    def _pop(self, key: str, now: float) -> bytes | None:
        value = self._get(key, now)
        if value is not None:
            del self._data[self._prefix + key]
        return value

    def _set_nx(self, key: str, expires: float, now: float, value: bytes = LEARNED_VALUE) -> bool:
        """``SET key value NX``: ``True`` if the key was absent (and is now set)."""
        if self._get(key, now) is not None:
            return False
        self._data[self._prefix + key] = (value, expires)
        self._wrote(1)
        return True

    def _set_many(self, kind: str, values: Mapping[str, bytes], ttl_s: int) -> None:
        expires = self._clock() + check_ttl(ttl_s)
        for key, value in values.items():
            self._data[self._prefix + kind + key] = (bytes(value), expires)
        self._wrote(len(values))

    def _wrote(self, n: int) -> None:
        self._writes += n
        if self._writes >= max(_MIN_SWEEP, len(self._data)):
            now = self._clock()
            self._data = {k: item for k, item in self._data.items() if item[1] > now}
            self._writes = 0
            for event_id in [e for e, t in self._dead.items() if t + ORPHAN_GRACE_S <= now]:
                del self._dead[event_id]  # past the grace: as gone as in Redis
                self._positions.pop(event_id, None)
