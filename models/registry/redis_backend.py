"""The registry in Redis, for workers on several hosts.

Keys, with ``P = stream:{namespace}:reg:`` (``stream:reg:`` without a namespace)::

    P models                          SET     model names
    P {model}:versions                HASH    version -> VersionInfo JSON, as created
    P {model}:stages                  HASH    version -> current stage
    P {model}:history                 LIST    StageChange JSON, oldest first
    P {model}:{version}:snaps         HASH    snapshot id -> SnapshotInfo JSON, signed
    P {model}:{version}:ckpt:{id}     STRING  pickled model (protocol 5)

The client is ``redis.asyncio``: the engine is async, and a blocking client would stall the
event loop for the length of a checkpoint upload. Every write is an optimistic transaction:
WATCH the model's keys, read, decide (the pure rules of ``models.registry.lifecycle``), then
MULTI/EXEC, retried if another writer got there first. A snapshot's checkpoint and its record
are written in the same MULTI/EXEC, so a reader sees both or neither, even if the writer is
killed while sending them. Redis failures raise :class:`~stream_app.errors.ServiceError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, WatchError

from features.store.base import key_prefix
from features.store.connect import cluster_key_prefix, is_cluster, open_redis
from models.registry.base import MakeRecord, RegistryBase
from models.registry.lifecycle import Catalog, Plan, PlanFn
from models.registry.types import StageChange, VersionInfo, check_stage
from stream_app.errors import FencedError, ModelNotFoundError, ServiceError

__all__ = ["RedisRegistry"]

_ATTEMPTS: Final = 50


class RedisRegistry(RegistryBase):
    """:class:`~models.registry.protocol.ModelRegistry` over ``redis.asyncio`` (owns ``client``)."""

    def __init__(self, client: aredis.Redis | RedisCluster, *, key: bytes | None, namespace: str = "") -> None:
        super().__init__(key)
        self._r = client
        # on a Redis Cluster, one hash tag for the whole registry: its MULTI/EXEC transactions
        # touch a model's keys and the set of model names together (features.store.connect)
        self.prefix = (cluster_key_prefix(namespace, "reg") if is_cluster(client)
                       else key_prefix(namespace) + "reg:")

    @classmethod
    def from_url(cls, url: str, *, key: bytes | None, namespace: str = "",
                 **kwargs: Any) -> RedisRegistry:
        """Connect lazily to ``redis://``, ``rediss://``, ``unix://`` or a Redis Cluster
        (``redis+cluster://``, ``rediss+cluster://``); RESP2, bytes replies."""
        options: dict[str, Any] = {"protocol": 2, "socket_connect_timeout": 5.0}
        options.update(kwargs)
        return cls(open_redis(url, **options), key=key, namespace=namespace)

    def __repr__(self) -> str:
        return f"RedisRegistry(prefix={self.prefix!r})"

    async def aclose(self) -> None:
        await self._r.aclose()

    def key(self, name: str, *parts: str) -> str:
        """The Redis key of a model's ``parts`` (see the module docstring)."""
        return self.prefix + ":".join((name, *parts))

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except RedisError as exc:
            raise ServiceError(f"redis model registry: {type(exc).__name__}: {exc}") from exc

    # -- reads -----------------------------------------------------------------

    async def _read_catalog(self, conn: Any, name: str) -> Catalog:
        raw_stages = await conn.hgetall(self.key(name, "stages"))
        raw_history = await conn.lrange(self.key(name, "history"), 0, -1)
        stages = {_text(k): check_stage(_text(v)) for k, v in raw_stages.items()}
        versions = sorted(stages, key=int)
        history = [StageChange.from_json(c) for c in raw_history]
        return Catalog(versions, stages, history, str(max(map(int, versions), default=0) + 1))

    async def _catalog(self, name: str) -> Catalog:
        async with self._errors():
            cat = await self._read_catalog(self._r, name)
        if not cat.versions:
            raise ModelNotFoundError(f"no model {name!r} in {self!r}")
        return cat

    async def _version_records(self, name: str, versions: list[str]) -> dict[str, VersionInfo]:
        if not versions:
            return {}
        async with self._errors():
            raw = await self._r.hmget(self.key(name, "versions"), versions)
        records = {}
        for v, r in zip(versions, raw, strict=True):
            if r is None:
                raise ModelNotFoundError(f"model {name!r}: no record of version {v!r}")
            records[v] = VersionInfo.from_json(_bytes(r))
        return records

    async def _model_names(self) -> list[str]:
        async with self._errors():
            return [_text(n) for n in await self._r.smembers(self.prefix + "models")]

    async def _snapshot_records(self, name: str, version: str) -> dict[int, bytes]:
        async with self._errors():
            raw = await self._r.hgetall(self.key(name, version, "snaps"))
        return {int(k): _bytes(v) for k, v in raw.items()}

    async def _checkpoint(self, name: str, version: str, snapshot_id: int) -> bytes | None:
        async with self._errors():
            blob = await self._r.get(self.key(name, version, f"ckpt:{snapshot_id}"))
        return None if blob is None else _bytes(blob)

    # -- writes ----------------------------------------------------------------

    async def _transact(self, name: str, plan_fn: PlanFn, *, create: bool) -> Plan:
        versions, stages, history = (self.key(name, k) for k in ("versions", "stages", "history"))
        async with self._errors(), self._r.pipeline(transaction=True) as pipe:
            for _ in range(_ATTEMPTS):
                try:
                    await pipe.watch(versions, stages, history)
                    cat = await self._read_catalog(pipe, name)
                    if not create and not cat.versions:
                        raise ModelNotFoundError(f"no model {name!r} in {self!r}")
                    plan = plan_fn(cat)
                    pipe.multi()
                    if plan.new_version is not None:
                        pipe.hset(versions, plan.new_version.version, plan.new_version.to_json())
                        pipe.sadd(self.prefix + "models", name)
                    if plan.changes:
                        pipe.hset(stages, mapping={c.version: c.to_stage for c in plan.changes})
                        pipe.rpush(history, *(c.to_json() for c in plan.changes))
                    await pipe.execute()
                    return plan
                except WatchError:
                    continue
        raise ServiceError(f"redis model registry: {name!r} changed {_ATTEMPTS} times under us")

    async def _delete_snapshots(self, name: str, version: str, ids: list[int]) -> None:
        async with self._errors(), self._r.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key(name, version, "snaps"), *(str(i) for i in ids))
            pipe.delete(*(self.key(name, version, f"ckpt:{i}") for i in ids))
            await pipe.execute()

    async def _take_lease(self, name: str) -> int:
        async with self._errors():
            return int(await self._r.incr(self.key(name, "lease")))

    async def _lease(self, name: str) -> int:
        async with self._errors():
            return int(await self._r.get(self.key(name, "lease")) or 0)

    async def _commit_snapshot(self, name: str, version: str, blob: bytes,
                               make_record: MakeRecord, lease: int | None) -> bytes:
        versions, stages = self.key(name, "versions"), self.key(name, "stages")
        snaps, lease_key = self.key(name, version, "snaps"), self.key(name, "lease")
        async with self._errors(), self._r.pipeline(transaction=True) as pipe:
            for _ in range(_ATTEMPTS):
                try:
                    await pipe.watch(stages, snaps, lease_key)
                    newest = int(await pipe.get(lease_key) or 0)
                    if lease is not None and lease < newest:
                        raise FencedError(f"model {name!r}: lease {lease} was taken over by "
                                          f"lease {newest}; this learner's checkpoint is "
                                          "refused")
                    raw_info = await pipe.hget(versions, version)
                    stage = await pipe.hget(stages, version)
                    if raw_info is None or stage is None:
                        raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
                    ids = [int(i) for i in await pipe.hkeys(snaps)]
                    snapshot_id = max(ids, default=0) + 1
                    record = make_record(snapshot_id, check_stage(_text(stage)),
                                         VersionInfo.from_json(_bytes(raw_info)))
                    pipe.multi()
                    pipe.set(self.key(name, version, f"ckpt:{snapshot_id}"), blob)
                    pipe.hset(snaps, str(snapshot_id), record)
                    await pipe.execute()
                    return record
                except WatchError:
                    continue
        raise ServiceError(f"redis model registry: {name!r} v{version} changed "
                           f"{_ATTEMPTS} times under us")


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
