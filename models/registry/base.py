"""The registry's behaviour, once, over a few storage primitives each backend provides.

A backend implements reading (``_catalog``, ``_version_records``, ``_model_names``,
``_snapshot_records``, ``_checkpoint``) and two atomic writes: ``_transact`` (run a
:data:`~models.registry.lifecycle.PlanFn` on the model's catalog under a lock or a Redis WATCH,
then write its stage changes and new version together) and ``_commit_snapshot`` (allocate the
next snapshot id, then make checkpoint and record visible together).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import orjson

from models.registry.lifecycle import (
    Catalog,
    Plan,
    PlanFn,
    production_of,
    rollback_target,
    stage_changes,
)
from models.registry.pickling import PICKLE_PROTOCOL, Pickled, dumps, loads
from models.registry.signing import Signer, check_snapshot, normalize, require_signer
from models.registry.types import (
    PRODUCTION,
    SnapshotInfo,
    Stage,
    StageChange,
    VerifyResult,
    VersionInfo,
    check_name,
    check_stage,
    check_version,
    dependency_versions,
    utc_now,
)
from stream_app.errors import CheckpointError, ModelNotFoundError

__all__ = ["PICKLE_PROTOCOL", "MakeRecord", "RegistryBase"]

log = logging.getLogger(__name__)

#: builds the signed snapshot record (JSON bytes) for (snapshot id, stage now, version info)
MakeRecord = Callable[[int, Stage, VersionInfo], bytes]


class RegistryBase(ABC):
    """Everything in :class:`~models.registry.protocol.ModelRegistry`, over the primitives."""

    def __init__(self, key: bytes | None) -> None:
        if key is not None:
            Signer(key)  # a key that is given must be usable: fail at open, not at first save
        self._key = key

    # -- primitives -----------------------------------------------------------

    @abstractmethod
    async def _transact(self, name: str, plan_fn: PlanFn, *, create: bool) -> Plan:
        """Read the catalog, run ``plan_fn``, write its plan atomically; retry on conflict.

        Without ``create``, a model that does not exist raises ``ModelNotFoundError``.
        """

    @abstractmethod
    async def _catalog(self, name: str) -> Catalog:
        """The model's committed catalog; ``ModelNotFoundError`` if it has no version."""

    @abstractmethod
    async def _version_records(self, name: str, versions: list[str]) -> dict[str, VersionInfo]:
        """Stored version records (stage as created), for committed ``versions``."""

    @abstractmethod
    async def _model_names(self) -> list[str]: ...

    @abstractmethod
    async def _snapshot_records(self, name: str, version: str) -> dict[int, bytes]:
        """Raw snapshot records (JSON) by snapshot id; only snapshots fully committed."""

    @abstractmethod
    async def _checkpoint(self, name: str, version: str, snapshot_id: int) -> bytes | None: ...

    @abstractmethod
    async def _commit_snapshot(self, name: str, version: str, blob: bytes,
                               make_record: MakeRecord, lease: int | None) -> bytes:
        """Store ``blob`` and its record under the next id, atomically; return the record.

        With ``lease``: first check, in the same atomic step, that it is the newest
        (``FencedError`` if not)."""

    @abstractmethod
    async def _take_lease(self, name: str) -> int: ...

    @abstractmethod
    async def _lease(self, name: str) -> int: ...

    @abstractmethod
    async def _delete_snapshots(self, name: str, version: str, ids: list[int]) -> None:
        """Remove these snapshots, each record before its checkpoint (never half-visible)."""

    @abstractmethod
    async def aclose(self) -> None: ...

    # -- versions and stages ---------------------------------------------------

    async def create_version(self, name: str, *, spec: dict[str, Any], params: dict[str, Any],
                             parent: str | None, stage: Stage = "development",
                             reason: str = "") -> VersionInfo:
        check_name(name)
        check_stage(stage)
        if parent is not None:
            check_version(parent)
        at = utc_now()
        spec, params = normalize(spec), normalize(params)

        def plan(cat: Catalog) -> Plan:
            if parent is not None and parent not in cat.stages:
                raise ModelNotFoundError(f"parent: model {name!r} has no version {parent!r}")
            v = cat.next_version
            info = VersionInfo(name, v, stage, parent, spec, params, reason, at)
            return Plan(stage_changes(cat, name, v, stage, reason, at, new=True), info)

        made = await self._transact(name, plan, create=True)
        assert made.new_version is not None
        return made.new_version

    async def ensure_production(self, name: str, *, spec: dict[str, Any], params: dict[str, Any],
                                reason: str) -> tuple[VersionInfo, bool]:
        check_name(name)
        at = utc_now()
        spec, params = normalize(spec), normalize(params)

        def plan(cat: Catalog) -> Plan:
            if production_of(cat.stages) is not None:
                return Plan([])
            v = cat.next_version
            info = VersionInfo(name, v, PRODUCTION, None, spec, params, reason, at)
            return Plan(stage_changes(cat, name, v, PRODUCTION, reason, at, new=True), info)

        made = await self._transact(name, plan, create=True)
        if made.new_version is None:
            return await self.production(name), False
        return dataclasses.replace(made.new_version, stage=PRODUCTION), True

    async def set_stage(self, name: str, version: str, stage: Stage, reason: str) -> StageChange:
        check_name(name)
        check_version(version)
        check_stage(stage)

        def plan(cat: Catalog) -> Plan:
            return Plan(stage_changes(cat, name, version, stage, reason, utc_now()))

        return (await self._transact(name, plan, create=False)).changes[-1]

    async def promote(self, name: str, version: str, reason: str = "manual") -> StageChange:
        return await self.set_stage(name, version, PRODUCTION, reason)

    async def rollback(self, name: str, reason: str = "rollback") -> StageChange:
        check_name(name)

        def plan(cat: Catalog) -> Plan:
            target = rollback_target(cat, name)
            return Plan(stage_changes(cat, name, target, PRODUCTION, reason, utc_now()))

        return (await self._transact(name, plan, create=False)).changes[-1]

    async def models(self) -> list[str]:
        return sorted(await self._model_names())

    async def versions(self, name: str) -> list[VersionInfo]:
        cat = await self._catalog(check_name(name))
        records = await self._version_records(name, cat.versions)
        return [dataclasses.replace(records[v], stage=cat.stages[v]) for v in cat.versions]

    async def get_version(self, name: str, version: str) -> VersionInfo:
        cat = await self._catalog(check_name(name))
        if check_version(version) not in cat.stages:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
        records = await self._version_records(name, [version])
        return dataclasses.replace(records[version], stage=cat.stages[version])

    async def production(self, name: str) -> VersionInfo:
        cat = await self._catalog(check_name(name))
        version = production_of(cat.stages)
        if version is None:
            raise ModelNotFoundError(f"model {name!r} has no production version")
        records = await self._version_records(name, [version])
        return dataclasses.replace(records[version], stage=PRODUCTION)

    async def history(self, name: str) -> list[StageChange]:
        return list((await self._catalog(check_name(name))).history)

    # -- snapshots -------------------------------------------------------------

    async def save_snapshot(self, name: str, version: str, model_obj: Any, *, learn_count: int,
                            label_offsets: dict[str, int], data_hash: str,
                            metrics: dict[str, Any], lease: int | None = None) -> SnapshotInfo:
        signer = require_signer(self._key)
        check_name(name)
        check_version(version)
        if isinstance(learn_count, bool) or not isinstance(learn_count, int) or learn_count < 0:
            raise ValueError(f"learn_count must be an int >= 0, got {learn_count!r}")
        offsets = {str(k): int(v) for k, v in label_offsets.items()}
        # off the event loop (models.registry.pickling): the caller keeps model_obj still
        blob = model_obj.data if isinstance(model_obj, Pickled) \
            else await asyncio.to_thread(dumps, model_obj)
        digest = await asyncio.to_thread(lambda: hashlib.sha256(blob).hexdigest())
        created_at, deps = utc_now(), dependency_versions()

        def make_record(snapshot_id: int, stage: Stage, info: VersionInfo) -> bytes:
            doc = normalize({
                "model": name, "version": version, "snapshot_id": snapshot_id, "stage": stage,
                "parent": info.parent, "spec": info.spec, "params": info.params,
                "learn_count": learn_count, "label_offsets": offsets, "data_hash": str(data_hash),
                "metrics": metrics, "dependencies": deps, "checkpoint_sha256": digest,
                "checkpoint_size": len(blob), "pickle_protocol": PICKLE_PROTOCOL,
                "created_at": created_at,
            })
            doc["signature"] = signer.sign(doc)
            return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

        record = await self._commit_snapshot(name, version, blob, make_record, lease)
        return SnapshotInfo.from_json(record)

    async def take_lease(self, name: str) -> int:
        check_name(name)
        return await self._take_lease(name)

    async def lease(self, name: str) -> int:
        check_name(name)
        return await self._lease(name)

    async def snapshots(self, name: str, version: str) -> list[SnapshotInfo]:
        await self.get_version(name, version)
        out = []
        for snapshot_id, raw in sorted((await self._snapshot_records(name, version)).items()):
            try:
                out.append(SnapshotInfo.from_json(raw))
            except (orjson.JSONDecodeError, TypeError, AttributeError):
                log.warning("registry: snapshot %s v%s #%d: unreadable record, not listed",
                            name, version, snapshot_id)
        return out

    async def prune_snapshots(self, name: str, version: str, keep: int, *,
                              keep_bytes: int | None = None) -> list[int]:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep!r}")
        if keep_bytes is not None and keep_bytes < 0:
            raise ValueError(f"keep_bytes must be >= 0, got {keep_bytes!r}")
        await self.get_version(name, version)
        records = await self._snapshot_records(name, version)
        kept = _newest_within(records, keep, keep_bytes)
        if self._key is not None:  # whatever the limits, the newest snapshot that verifies stays
            good = await self._newest_good(name, version, records)
            if good is not None:
                kept.add(good)
        old = sorted(set(records) - kept)
        if old:
            await self._delete_snapshots(name, version, old)
        return old

    async def _newest_good(self, name: str, version: str, records: dict[int, bytes]) -> int | None:
        signer = require_signer(self._key)
        for sid in sorted(records, reverse=True):
            blob = await self._checkpoint(name, version, sid)
            _, problem = await asyncio.to_thread(check_snapshot, records[sid], blob, signer,
                                                 (name, version, sid))
            if not problem:
                return sid
        return None

    async def load_snapshot(self, name: str, version: str, snapshot_id: int | None = None,
                            *, freeze_bytes: int | None = None) -> tuple[Any, SnapshotInfo]:
        signer = require_signer(self._key)
        candidates = await self._candidates(name, version, snapshot_id)
        problems = []
        for sid, raw in candidates:
            loaded = await self._open(name, version, sid, raw, signer, freeze_bytes)
            if not isinstance(loaded, str):
                return loaded
            log.warning("registry: snapshot %s v%s #%d rejected: %s; not unpickled%s",
                        name, version, sid, loaded,
                        "" if sid == candidates[-1][0] else ", trying the previous one")
            problems.append(f"#{sid}: {loaded}")
        raise CheckpointError(f"no snapshot of model {name!r} v{version} verifies "
                              f"({'; '.join(problems)})")

    async def _candidates(self, name: str, version: str,
                          snapshot_id: int | None) -> list[tuple[int, bytes]]:
        """The records to try, newest first: all of them, or just ``snapshot_id``."""
        await self.get_version(name, version)
        records = await self._snapshot_records(name, version)
        if snapshot_id is not None:
            if snapshot_id not in records:
                raise ModelNotFoundError(f"model {name!r} v{version} has no snapshot {snapshot_id}")
            return [(snapshot_id, records[snapshot_id])]
        if not records:
            raise ModelNotFoundError(f"model {name!r} v{version} has no snapshot")
        return sorted(records.items(), reverse=True)

    async def _open(self, name: str, version: str, sid: int, raw: bytes,
                    signer: Signer, freeze_bytes: int | None = None
                    ) -> tuple[Any, SnapshotInfo] | str:
        """The unpickled checkpoint and its record, or why it was refused."""
        blob = await self._checkpoint(name, version, sid)
        doc, problem = await asyncio.to_thread(check_snapshot, raw, blob, signer,
                                               (name, version, sid))
        if problem or blob is None or doc is None:
            return problem or "checkpoint missing"
        try:  # verified: these are bytes this registry's key signed
            obj = await asyncio.to_thread(
                loads, blob, freeze=freeze_bytes is not None and len(blob) >= freeze_bytes)
            info = SnapshotInfo.from_dict(doc)
        except Exception as exc:  # signed, but this runtime cannot rebuild it
            return f"unpickling failed ({type(exc).__name__}: {exc})"
        _warn_if_dependencies_differ(info)
        return obj, info

    async def verify(self) -> list[VerifyResult]:
        signer = require_signer(self._key)
        results = []
        for name in await self.models():
            for version in (await self._catalog(name)).versions:
                records = await self._snapshot_records(name, version)
                for sid in sorted(records):
                    blob = await self._checkpoint(name, version, sid)
                    _, problem = await asyncio.to_thread(
                        check_snapshot, records[sid], blob, signer, (name, version, sid))
                    results.append(VerifyResult(name, version, sid, not problem, problem))
        return results


def _newest_within(records: dict[int, bytes], keep: int, keep_bytes: int | None) -> set[int]:
    """The newest ``keep`` snapshot ids whose checkpoints add up to ``keep_bytes`` at most;
    the newest one always.

    >>> rec = lambda size: orjson.dumps({"checkpoint_size": size})
    >>> records = {1: rec(50), 2: rec(50), 3: rec(30), 4: rec(20)}
    >>> sorted(_newest_within(records, 3, None)), sorted(_newest_within(records, 9, 99))
    ([2, 3, 4], [3, 4])
    >>> sorted(_newest_within(records, 9, 10)), sorted(_newest_within({}, 9, 10))
    ([4], [])
    """
    kept: set[int] = set()
    total = 0
    for sid in sorted(records, reverse=True):
        try:
            size = int(orjson.loads(records[sid]).get("checkpoint_size", 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            size = 0  # an unreadable record: only the count limits it
        if len(kept) >= keep or (kept and keep_bytes is not None and total + size > keep_bytes):
            break
        kept.add(sid)
        total += size
    return kept


def _warn_if_dependencies_differ(info: SnapshotInfo) -> None:
    now = dependency_versions()
    differ = {k: (v, now.get(k)) for k, v in info.dependencies.items()
              if k in ("python", "river", "numpy", "scipy") and now.get(k) != v}
    if differ:
        log.warning("registry: snapshot %s v%s #%d was saved with other versions %s",
                    info.model, info.version, info.snapshot_id, differ)
