"""The Redis online store: one ``MGET`` or one server-side Lua script per batched call.

redis-py's asyncio client spends tens of microseconds per pipelined command on packing and
parsing, so a 500-event batch as a pipeline (a few commands per event) costs ~20 ms of client
time. Reads here are a single ``MGET``; writes are a single ``EVALSHA`` over declared ``KEYS``:
one round trip, one reply, and atomic, which is what closes the race between an event's
:meth:`~RedisFeatureStore.commit_batch` and its label's :meth:`~RedisFeatureStore.join_labels`.
Replies are kept short: taken labels come back as ``[index, label, ...]`` pairs for the hits
only, join outcomes as one ``"jdep"`` string plus the joined snapshots. Needs Redis >= 6.2
(``GETDEL``). Scripts are loaded on first use (redis-py retries ``NOSCRIPT`` with a load).
The parked labels' index (``features.store.base``) is kept by the same two scripts that park
and take labels, so its count and byte sum never drift from the labels; ``_JOIN`` reads the
server's clock (``TIME``) for the entries' expiry, so workers' clocks do not matter.

Timeouts: redis-py's asyncio client with a ``socket_timeout`` wraps every send in
``asyncio.wait_for`` (a new task) and every reply in a timeout, ~35 us of CPU per call here.
The client has no socket timeout; instead each store call (one command) runs under one
deadline, :data:`DEADLINE_S` (a single timer, a few us), which also bounds a server that is
alive but never answers (stopped, wedged), which TCP alone would wait on forever. Connecting
is bounded by :data:`CONNECT_TIMEOUT_S`; TCP keepalive (plus ``TCP_USER_TIMEOUT`` on Linux)
drops idle pooled connections to a host that is gone. A killed server closes the connection,
which fails at once.

Packing: redis-py packs a command by re-joining its growing buffer once per argument (up to
6 KB copied per argument) after a generic encoder call; a commit of 500 events has ~3,000
arguments. :class:`_FastPacking` packs each argument once, into one ``b"".join`` (the same
bytes on the wire, checked in its doctest), on the client's own connections.

Errors: any ``RedisError``, and the deadline, become :class:`~stream_app.errors.ServiceError`
(retriable).
Retrying is safe: ``begin_batch`` only reads and every write is an overwrite. What a retry
cannot undo is a taken label whose reply was lost: ``commit_batch`` (or ``join_labels``) marked
it learned, so the retry reports nothing (or ``"duplicate"``). Learning is at most once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Final

import redis.asyncio as aredis
from hiredis import pack_command as _hiredis_pack
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from features.store.base import (
    DUPLICATE,
    ENTITY,
    EXPIRED,
    FLOODED,
    INCARNATION,
    JOINED,
    LEARNED,
    MISSING,
    ORPHAN_GRACE_S,
    PARK_OVERHEAD_BYTES,
    PARKED,
    PARKED_BYTES,
    PARKED_DEAD,
    PARKED_INDEX,
    PARKED_POSITIONS,
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
)
from features.store.connect import cluster_key_prefix, is_cluster, open_redis
from stream_app.errors import ServiceError

__all__ = ["CONNECT_TIMEOUT_S", "DEADLINE_S", "RedisFeatureStore", "keepalive_options"]

log = logging.getLogger(__name__)

#: how long one store call may take, reconnects and redis-py's retries included (the old
#: 5 s socket timeout failed a stopped server in 5 s too; a 500-event commit takes ~12 ms)
DEADLINE_S: Final = 5.0
#: how long connecting may take
CONNECT_TIMEOUT_S: Final = 5.0
#: TCP keepalive: probe after 10 s idle, every 5 s, give up after 3 unanswered; and give up
#: on data unacknowledged for 25 s (Linux ``TCP_USER_TIMEOUT``)
_KEEPALIVE: Final = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3),
                     ("TCP_USER_TIMEOUT", 25_000))

# The incarnation check both write scripts start with: ``marker`` is "" when the key holds the
# id the caller knows (ARGV[ma]); else the id now there: the caller's candidate (ARGV[ma + 1]),
# written because the key was gone (a state loss, or the very first write), or another
# worker's, written after a loss it saw first.
_MARKER = """
local function incarnation(mkey, ma)
  local marker = redis.call('GET', mkey)
  if marker == ARGV[ma] then return '' end
  if not marker then
    redis.call('SET', mkey, ARGV[ma + 1])
    marker = ARGV[ma + 1]
  end
  return marker
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- index entries past their expiry (at most 1000) move to the dead set, kept grace_ms, for
-- the sweep to report; returns the bytes they no longer count
local function retire(zkey, dkey, now, grace_ms)
  local dead = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. now, 'WITHSCORES', 'LIMIT', 0,
                          1000)
  local freed, members = 0, {}
  for n = 1, #dead, 2 do
    local m = dead[n]
    freed = freed + tonumber(string.match(m, '^(%d+):'))
    members[#members + 1] = m
    redis.call('ZADD', dkey, dead[n + 1], m)
  end
  if #members > 0 then
    redis.call('ZREM', zkey, unpack(members))
    redis.call('PEXPIRE', dkey, grace_ms)
  end
  return freed
end
"""
# KEYS: the keys to write (entities, claims, snapshots: as many as ARGV values), then nl label
# keys, (when marking) nl learned keys, and nl taken-label keys, for the last nl keys written
# (the snapshots), then the parked labels' index, byte count and positions, and the
# incarnation. A label taken is kept under its taken-label key for the claim ttl, and leaves
# the index; a label past its expiry in the index is not taken (the sweep reports it).
# ARGV: n entities, n claims, entity ttl, claim ttl, snapshot ttl, mark (1/0), length of the
# label keys' prefix, park overhead, the incarnation known and a candidate, one value per key
# written. Returns {incarnation ("" if as known), {i1, label1, i2, label2, ...}}, i the
# 1-based index among the nl, for labels taken.
_COMMIT = _MARKER + """
local ne, nc, mark = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[6] == '1'
local plen, oh = tonumber(ARGV[7]), tonumber(ARGV[8])
local nw = #ARGV - 10
local nl = #KEYS - nw - 4
if mark then nl = nl / 3 else nl = nl / 2 end
local taken = #KEYS - 4 - nl
local zkey, bkey, pkey = KEYS[#KEYS - 3], KEYS[#KEYS - 2], KEYS[#KEYS - 1]
local marker = incarnation(KEYS[#KEYS], 9)
for i = 1, nw do
  local ttl = ARGV[5]
  if i <= ne then ttl = ARGV[3] elseif i <= ne + nc then ttl = ARGV[4] end
  redis.call('SET', KEYS[i], ARGV[10 + i], 'EX', ttl)
end
local out, freed, now = {}, 0, nil
-- every parked label is in the index: with none parked, no snapshot has a label to take
if nl > 0 and redis.call('EXISTS', zkey) == 0 then nl = 0 end
for i = 1, nl do
  local key = KEYS[nw + i]
  local label = redis.call('GET', key)
  if label then
    local eid = string.sub(key, plen + 1)
    local cost = #label + #key + 2 * #eid + #(redis.call('HGET', pkey, eid) or '') + oh
    local member = cost .. ':' .. eid
    local due = redis.call('ZSCORE', zkey, member)
    if now == nil then now = now_ms() end
    if due and tonumber(due) > now then
      redis.call('DEL', key)
      redis.call('HDEL', pkey, eid)
      freed = freed + cost * redis.call('ZREM', zkey, member)
    else
      label = nil
    end
  end
  if label and (not mark or redis.call('SET', KEYS[nw + nl + i], '1', 'NX', 'EX', ARGV[4])) then
    out[#out + 1] = i; out[#out + 1] = label
    redis.call('SET', KEYS[taken + i], label, 'EX', ARGV[4])
  end
end
if freed > 0 then
  local left = tonumber(redis.call('GET', bkey) or '0') - freed
  if left > 0 and redis.call('EXISTS', zkey) == 1 then
    redis.call('SET', bkey, left, 'KEEPTTL')
  else
    redis.call('DEL', bkey)
  end
end
return {marker, out}
"""
# KEYS: the parked labels' index, byte count, positions and dead set, the incarnation, then
# the snap, learned, seen, plabel keys of label 1, then of label 2, ...
# ARGV: pending ttl, learned ttl, park ("1"/"0"), most labels parked and most bytes (-1: no
# limit), length of the label keys' prefix, park overhead, the grace (ms) a parked label's key
# outlives its ttl, the incarnation known and a candidate, label 1, position 1, label 2, ...
# Returns {"jrdepmf" (one status per label), {snapshot of each "j" and "r", in order},
# incarnation ("" if as known)}.
# Parking first retires the index's expired entries (at most 1000 a call) to the dead set; an
# entry is "{cost}:{event_id}" scored by its expiry in ms, server time.
_JOIN = _MARKER + """
local status, snaps = {}, {}
local park = ARGV[3] == '1'
local maxn, maxb = tonumber(ARGV[4]), tonumber(ARGV[5])
local plen, oh, grace = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local zkey, bkey, pkey, dkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local marker = incarnation(KEYS[5], 9)
local count, bytes, expiry, ttl_ms = nil, 0, 0, tonumber(ARGV[1]) * 1000
local function load_index()
  local now = now_ms()
  expiry = now + ttl_ms
  bytes = tonumber(redis.call('GET', bkey) or '0') - retire(zkey, dkey, now, grace)
  count = redis.call('ZCARD', zkey)
  if count == 0 then bytes = 0 end
end
for i = 1, (#ARGV - 10) / 2 do
  local k = 5 + 4 * (i - 1)
  local label, position = ARGV[2 * i + 9], ARGV[2 * i + 10]
  local snap = redis.call('GET', KEYS[k + 1])
  if snap then
    if redis.call('SET', KEYS[k + 2], position, 'NX', 'EX', ARGV[2]) then
      status[i] = 'j'; snaps[#snaps + 1] = snap
    elseif position ~= '1' and redis.call('GET', KEYS[k + 2]) == position then
      status[i] = 'r'; snaps[#snaps + 1] = snap
    else
      status[i] = 'd'
    end
  elseif redis.call('EXISTS', KEYS[k + 3]) == 1 then
    status[i] = 'e'
  elseif park then
    if count == nil then load_index() end
    local key = KEYS[k + 4]
    local eid = string.sub(key, plen + 1)
    local cost = #label + #key + 2 * #eid + #position + oh
    local old, replaced, orphan, was_cost = redis.call('GET', key), nil, nil, 0
    if old then
      was_cost = #old + #key + 2 * #eid + #(redis.call('HGET', pkey, eid) or '') + oh
      local was = was_cost .. ':' .. eid
      if redis.call('ZSCORE', zkey, was) then replaced = was
      elseif redis.call('ZSCORE', dkey, was) then orphan = was end
    end
    local n, b = count + 1, bytes + cost
    if replaced then n = count; b = b - was_cost end
    if (maxn >= 0 and n > maxn) or (maxb >= 0 and b > maxb) then
      status[i] = 'f'
    else
      if replaced then redis.call('ZREM', zkey, replaced) end
      if orphan then redis.call('ZREM', dkey, orphan) end  -- a newer label for its event
      redis.call('ZADD', zkey, expiry, cost .. ':' .. eid)
      redis.call('SET', key, label, 'PX', ttl_ms + grace)
      redis.call('HSET', pkey, eid, position)
      count, bytes = n, b
      status[i] = 'p'
    end
  else
    status[i] = 'm'
  end
end
if count ~= nil then
  if count == 0 then
    redis.call('DEL', zkey, bkey)
  else
    -- the index lives as long as its longest-lived entry's key (to retire it at its expiry)
    if redis.call('PTTL', zkey) < ttl_ms + grace then redis.call('PEXPIRE', zkey, ttl_ms + grace) end
    redis.call('SET', bkey, bytes, 'PX', redis.call('PTTL', zkey))
  end
  if redis.call('PTTL', pkey) < ttl_ms + grace then redis.call('PEXPIRE', pkey, ttl_ms + grace) end
end
return {table.concat(status), snaps, marker}
"""
# KEYS: the parked labels' index, byte count and dead set. ARGV: grace (ms), most members.
# Retires the index's expired entries; returns the dead set's first members.
_RETIRED = _MARKER + """
local zkey, bkey, dkey = KEYS[1], KEYS[2], KEYS[3]
local freed = retire(zkey, dkey, now_ms(), tonumber(ARGV[1]))
if freed > 0 then
  local left = tonumber(redis.call('GET', bkey) or '0') - freed
  if left > 0 and redis.call('EXISTS', zkey) == 1 then
    redis.call('SET', bkey, left, 'KEEPTTL')
  else
    redis.call('DEL', bkey)
  end
end
return redis.call('ZRANGE', dkey, 0, tonumber(ARGV[2]) - 1)
"""
# KEYS: the dead set, the positions, then the label key of each member in ARGV. Takes each
# member still in the dead set: returns {i, label or "", position or "", ...}.
_SWEEP = """
local dkey, pkey, out = KEYS[1], KEYS[2], {}
for i = 1, #ARGV do
  if redis.call('ZREM', dkey, ARGV[i]) == 1 then
    local eid = string.match(ARGV[i], '^%d+:(.*)$')
    local label = redis.call('GETDEL', KEYS[2 + i]) or ''
    local position = redis.call('HGET', pkey, eid) or ''
    redis.call('HDEL', pkey, eid)
    out[#out + 1] = i; out[#out + 1] = label; out[#out + 1] = position
  end
end
return out
"""
_J, _R = ord("j"), ord("r")
_STATUS = {_J: JOINED, _R: REDELIVERED, ord("d"): DUPLICATE, ord("e"): EXPIRED, ord("p"): PARKED,
           ord("m"): MISSING, ord("f"): FLOODED}


def keepalive_options() -> dict[int, int]:
    """:data:`_KEEPALIVE` for the options this platform has."""
    return {getattr(socket, name): value for name, value in _KEEPALIVE if hasattr(socket, name)}


class RedisFeatureStore:
    """The :class:`~features.store.protocol.FeatureStore` contract over ``redis.asyncio``.

    Takes ownership of ``client`` (closed by :meth:`aclose`); :meth:`from_url` builds one.
    """

    def __init__(self, client: aredis.Redis | RedisCluster, namespace: str = "", *,
                 deadline_s: float | None = DEADLINE_S):
        self._r = client
        # on a Redis Cluster the namespace is the keys' hash tag: one slot (features.store.connect)
        self._prefix = cluster_key_prefix(namespace) if is_cluster(client) else key_prefix(namespace)
        self._deadline_s = deadline_s
        self._commit = client.register_script(_COMMIT)
        self._join = client.register_script(_JOIN)
        self._retired = client.register_script(_RETIRED)
        self._sweep = client.register_script(_SWEEP)
        #: the incarnation id this store knows (b"" until its first write) and the one it
        #: writes if it finds none (``features.store.base``)
        self._incarnation = b""
        self._candidate = uuid.uuid4().hex.encode()
        #: state losses seen: writes that found the incarnation gone or replaced
        self.state_losses = 0

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "", deadline_s: float | None = DEADLINE_S,
                 **kwargs: Any) -> RedisFeatureStore:
        """Connect lazily to ``redis://``, ``rediss://``, ``unix://`` or a Redis Cluster
        (``redis+cluster://``, ``rediss+cluster://``; see ``features.store.connect``); RESP2,
        bytes replies.

        Each call has ``deadline_s`` (``None``: no deadline) and the client no socket timeout
        (see the module docstring); ``kwargs`` and the URL's query (``?socket_timeout=2``)
        override the client's options.
        """
        options: dict[str, Any] = {"protocol": 2, "socket_connect_timeout": CONNECT_TIMEOUT_S,
                                   "socket_timeout": None}
        if not url.startswith("unix:"):
            options.update(socket_keepalive=True, socket_keepalive_options=keepalive_options())
        options.update(kwargs)
        client = open_redis(url, **options)
        if not is_cluster(client):  # a cluster's per-node pools keep redis-py's packing
            pool = client.connection_pool  # TCP, TLS or unix, as the URL says; connects lazily
            pool.connection_class = _fast_packing(pool.connection_class)
        return cls(client, namespace, deadline_s=deadline_s)

    # -- the contract -------------------------------------------------------

    async def read_entities(self, entity_ids: Sequence[str]) -> list[State | None]:
        return (await self.begin_batch(entity_ids, [])).states

    async def write_entities(self, states: Mapping[str, State], ttl_s: int) -> None:
        await self._write(states, {}, {}, (ttl_s, ttl_s, ttl_s), labels=None)

    async def put_snapshots(self, snaps: Mapping[str, bytes], ttl_s: int) -> None:
        await self._write({}, {}, snaps, (ttl_s, ttl_s, ttl_s), labels=None)

    async def taken_labels(self, event_ids: Sequence[str]) -> list[bytes | None]:
        if not event_ids:
            return []
        return list(await self._call(self._r.mget(self._keys(TAKEN_LABEL, event_ids))))

    async def get_snapshots(self, event_ids: Sequence[str]) -> list[bytes | None]:
        if not event_ids:
            return []
        return list(await self._call(self._r.mget(self._keys(SNAPSHOT, event_ids))))

    async def begin_batch(self, entity_ids: Sequence[str], event_ids: Sequence[str]) -> BatchRead:
        if not entity_ids and not event_ids:
            return BatchRead([], [])
        keys = self._keys(ENTITY, entity_ids) + self._keys(SEEN, event_ids)
        blobs = await self._call(self._r.mget(keys))
        n = len(entity_ids)
        return BatchRead(states=blobs[:n], seen=blobs[n:])

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
        ttls = (entity_ttl_s, claim_ttl_s, snapshot_ttl_s)
        return await self._write(states, claims, snapshots, ttls, labels=mark_learned)

    async def join_labels(
        self, labels: Mapping[str, bytes], *, pending_ttl_s: int, learned_ttl_s: int,
        positions: Mapping[str, bytes] | None = None, park: bool = True,
        max_parked: int | None = None, max_parked_bytes: int | None = None,
    ) -> dict[str, tuple[str, bytes | None]]:
        args: list[Any] = [check_ttl(pending_ttl_s), check_ttl(learned_ttl_s), b"1" if park else b"0",
                           -1 if max_parked is None else max_parked,
                           -1 if max_parked_bytes is None else max_parked_bytes,
                           len((self._prefix + PENDING_LABEL).encode()), PARK_OVERHEAD_BYTES,
                           ORPHAN_GRACE_S * 1000, self._incarnation, self._candidate]
        if not labels:
            return {}
        for event_id, label in labels.items():
            args += (label, positions[event_id] if positions else b"1")
        kinds = [self._prefix + k for k in (SNAPSHOT, LEARNED, SEEN, PENDING_LABEL)]
        keys = [self._prefix + k for k in (PARKED_INDEX, PARKED_BYTES, PARKED_POSITIONS,
                                           PARKED_DEAD, INCARNATION)]
        keys += [kind + i for i in labels for kind in kinds]
        status, snaps, marker = await self._call(self._join(keys=keys, args=args))
        self._incarnation_seen(marker)
        return _join_reply(labels, status, snaps)

    async def sweep_parked(self, *, limit: int = 1000
                           ) -> list[tuple[str, bytes | None, bytes | None]]:
        p = self._prefix
        members = await self._call(self._retired(
            keys=[p + PARKED_INDEX, p + PARKED_BYTES, p + PARKED_DEAD],
            args=[ORPHAN_GRACE_S * 1000, limit]))
        if not members:
            return []
        ids = [m.split(b":", 1)[1].decode() for m in members]
        keys = [p + PARKED_DEAD, p + PARKED_POSITIONS, *self._keys(PENDING_LABEL, ids)]
        got = await self._call(self._sweep(keys=keys, args=members))
        return [(ids[got[k] - 1], got[k + 1] or None, got[k + 2] or None)
                for k in range(0, len(got), 3)]

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self._r.ping()))
        except (ServiceError, OSError):
            return False

    async def aclose(self) -> None:
        await self._r.aclose()

    # -- helpers ------------------------------------------------------------

    def _incarnation_seen(self, marker: bytes) -> None:
        """A write script's incarnation reply (``b""``: as known); one log line per loss."""
        if not marker:
            return
        if self._incarnation and marker != self._incarnation:
            self.state_losses += 1
            log.error("redis feature store: state lost (incarnation %s is now %s): entity "
                      "states, snapshots, claims and parked labels written before are gone; "
                      "state loss %d, continuing", self._incarnation.decode(errors="replace"),
                      marker.decode(errors="replace"), self.state_losses)
        self._incarnation = marker
        self._candidate = uuid.uuid4().hex.encode()

    def _keys(self, kind: str, ids: Iterable[str]) -> list[str]:
        prefix = self._prefix + kind
        return [prefix + i for i in ids]

    async def _write(
        self,
        states: Mapping[str, State],
        claims: Mapping[str, bytes],
        snapshots: Mapping[str, bytes],
        ttls: tuple[int, int, int],
        *,
        labels: bool | None,
    ) -> dict[str, bytes]:
        """One ``_COMMIT`` call; ``ttls`` are (entity, claim, snapshot); ``labels``: take the
        parked labels of the snapshots and mark them learned (True), take them (False), or
        leave them (None)."""
        args: list[Any] = [len(states), len(claims), *(check_ttl(t) for t in ttls),
                           1 if labels else 0, len((self._prefix + PENDING_LABEL).encode()),
                           PARK_OVERHEAD_BYTES, self._incarnation, self._candidate]
        if not states and not claims and not snapshots:
            return {}
        snap_ids = list(snapshots)
        keys = self._keys(ENTITY, states) + self._keys(SEEN, claims) + self._keys(SNAPSHOT, snap_ids)
        if labels is not None:
            keys += self._keys(PENDING_LABEL, snap_ids)
        if labels:
            keys += self._keys(LEARNED, snap_ids)
        if labels is not None:
            keys += self._keys(TAKEN_LABEL, snap_ids)
        keys += [self._prefix + k for k in (PARKED_INDEX, PARKED_BYTES, PARKED_POSITIONS,
                                            INCARNATION)]
        args += [encode_state(s) for s in states.values()]
        args += claims.values()
        args += snapshots.values()
        marker, pairs = await self._call(self._commit(keys=keys, args=args))
        self._incarnation_seen(marker)
        return {snap_ids[pairs[k] - 1]: pairs[k + 1] for k in range(0, len(pairs), 2)}

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        """One command, within the store's deadline (see the module docstring)."""
        try:
            async with asyncio.timeout(self._deadline_s):
                return await awaitable
        except RedisError as exc:
            raise ServiceError(f"redis feature store: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:  # the deadline, not redis-py's own TimeoutError
            raise ServiceError(
                f"redis feature store: no reply within {self._deadline_s} s") from exc


class _FastPacking(AbstractConnection):
    r"""A connection whose :meth:`pack_command` packs a command into one buffer: in C with
    hiredis (0.31 against 0.65 ms for a 2,800-argument script call), or joining each argument
    once where hiredis refuses an argument (redis-py then refuses it too, with its own error).

    >>> from redis.asyncio.connection import Connection
    >>> fast, plain = _fast_packing(Connection)(), Connection()
    >>> args = ("EVALSHA", "abc", 2, "k:é", b"v\r\n", 3.5, -7)
    >>> fast.pack_command(*args) == [b"".join(plain.pack_command(*args))]
    True
    >>> fast.pack_command("SCRIPT LOAD", b"return 1") == plain.pack_command("SCRIPT LOAD", b"return 1")
    True
    >>> fast.pack_command("SET", "k", True)
    Traceback (most recent call last):
    ...
    redis.exceptions.DataError: Invalid input of type: 'bool'. Convert to a bytes, string, int or float first.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if type(name) is not str or " " in name or self.encoder.encoding != "utf-8" \
                or self.encoder.encoding_errors != "strict":
            return super().pack_command(*args)  # "SCRIPT LOAD" and the like: split by redis-py
        try:
            return [_hiredis_pack(args)]
        except TypeError:  # not str, bytes, int or float: as redis-py, which refuses or encodes
            pass
        out = [b"*%d\r\n" % len(args)]
        append, encode = out.append, self.encoder.encode
        for arg in args:
            t = type(arg)
            if t is str:
                arg = arg.encode()
            elif t is not bytes:
                arg = encode(arg)  # numbers as redis-py writes them; refuses what it refuses
                if type(arg) is not bytes:
                    arg = bytes(arg)
            append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        return [b"".join(out)]


_FAST_CLASSES: dict[type, type] = {}


def _fast_packing(base: type) -> type:
    """``base`` (redis-py's ``Connection``, ``SSLConnection``, ...) with :class:`_FastPacking`."""
    fast = _FAST_CLASSES.get(base)
    if fast is None:
        fast = _FAST_CLASSES[base] = type(f"FastPacking{base.__name__}", (_FastPacking, base), {})
    return fast


def _join_reply(
    labels: Iterable[str], status: bytes, snaps: list[bytes]
) -> dict[str, tuple[str, bytes | None]]:
    """``_JOIN``'s reply -> ``{event_id: (status, snapshot or None)}``.

    >>> _join_reply(["a", "b", "c", "d", "e"], b"jdepr", [b"x", b"y"])  # doctest: +NORMALIZE_WHITESPACE
    {'a': ('joined', b'x'), 'b': ('duplicate', None), 'c': ('expired', None), 'd': ('parked', None),
     'e': ('redelivered', b'y')}
    """
    joined = iter(snaps)
    return {
        event_id: (_STATUS[c], next(joined) if c in (_J, _R) else None)
        for event_id, c in zip(labels, status, strict=True)
    }
