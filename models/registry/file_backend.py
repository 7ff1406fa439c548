"""The registry in a directory: one folder per model and per version, crash-safe writes.

::

    {root}/{model}/.lock                          flock: writers of this model take turns
    {root}/{model}/catalog.json                   {"stages": {version: stage}, "history": [...]}
    {root}/{model}/{version}/version.json         VersionInfo as created (immutable)
    {root}/{model}/{version}/snapshots/{id:08d}.ckpt   pickled model (protocol 5)
    {root}/{model}/{version}/snapshots/{id:08d}.json   SnapshotInfo, signed (the commit mark)

Every file is written to a temporary file in the same folder, fsynced, moved into place with
``os.replace`` and the folder fsynced, so a reader sees the old file or the new one, never half
of one. A snapshot is visible only once its ``.json`` is in place, and that is written after
its ``.ckpt``: a writer killed at any point leaves at most an invisible ``.ckpt`` (overwritten
by the next save) and temporary files (removed by the next save). A version is visible once
``catalog.json`` lists it (an orphan folder left by a killed ``create_version`` is reused by the
next one); ``catalog.json`` is the single place stages live, so promoting one version and
archiving another is one replace. Blocking I/O runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import orjson

from models.registry.base import MakeRecord, RegistryBase
from models.registry.lifecycle import Catalog, Plan, PlanFn
from models.registry.types import StageChange, VersionInfo
from stream_app.errors import FencedError, ModelNotFoundError

__all__ = ["FileRegistry", "atomic_write"]

CATALOG: Final = "catalog.json"
VERSION: Final = "version.json"
#: the newest learner lease (see ``ModelRegistry.take_lease``)
LEASE: Final = "lease"
SNAPSHOTS: Final = "snapshots"
_RECORD = re.compile(r"([0-9]{8,})\.json")
_CHUNK: Final = 1 << 20


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never a mix.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     atomic_write(Path(d) / "a.json", b"{}")
    ...     sorted(os.listdir(d)), (Path(d) / "a.json").read_bytes()
    (['a.json'], b'{}')
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:_CHUNK]):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileRegistry(RegistryBase):
    """:class:`~models.registry.protocol.ModelRegistry` in a folder (POSIX: uses ``flock``)."""

    def __init__(self, root: str | os.PathLike[str], *, key: bytes | None) -> None:
        super().__init__(key)
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"FileRegistry({str(self.root)!r})"

    async def aclose(self) -> None:
        return None

    # -- paths and locking -------------------------------------------------------

    def _snapshot_dir(self, name: str, version: str) -> Path:
        return self.root / name / version / SNAPSHOTS

    @contextlib.contextmanager
    def _locked(self, name: str, *, create: bool) -> Iterator[Path]:
        folder = self.root / name
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not (folder / CATALOG).is_file():
            raise ModelNotFoundError(f"no model {name!r} in {self!r}")
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield folder
        finally:
            os.close(fd)  # releases the lock

    # -- reads -----------------------------------------------------------------

    def _read_catalog(self, name: str, *, missing_ok: bool = False) -> Catalog:
        folder = self.root / name
        try:
            doc = orjson.loads((folder / CATALOG).read_bytes())
        except FileNotFoundError:
            if not missing_ok:
                raise ModelNotFoundError(f"no model {name!r} in {self!r}") from None
            doc = {"stages": {}, "history": []}
        stages = doc["stages"]
        versions = sorted(stages, key=int)
        history = [StageChange.from_dict(c) for c in doc["history"]]
        return Catalog(versions, stages, history, str(max(map(int, versions), default=0) + 1))

    async def _catalog(self, name: str) -> Catalog:
        return await asyncio.to_thread(self._read_catalog, name)

    async def _version_records(self, name: str, versions: list[str]) -> dict[str, VersionInfo]:
        def read() -> dict[str, VersionInfo]:
            return {v: VersionInfo.from_json((self.root / name / v / VERSION).read_bytes())
                    for v in versions}

        return await asyncio.to_thread(read)

    async def _model_names(self) -> list[str]:
        def names() -> list[str]:
            if not self.root.is_dir():
                return []
            return [p.name for p in self.root.iterdir() if (p / CATALOG).is_file()]

        return await asyncio.to_thread(names)

    async def _snapshot_records(self, name: str, version: str) -> dict[int, bytes]:
        def read() -> dict[int, bytes]:
            folder = self._snapshot_dir(name, version)
            if not folder.is_dir():
                return {}
            out = {}
            for entry in folder.iterdir():
                match = _RECORD.fullmatch(entry.name)
                if match:
                    with contextlib.suppress(FileNotFoundError):
                        out[int(match[1])] = entry.read_bytes()
            return out

        return await asyncio.to_thread(read)

    async def _checkpoint(self, name: str, version: str, snapshot_id: int) -> bytes | None:
        path = self._snapshot_dir(name, version) / f"{snapshot_id:08d}.ckpt"

        def read() -> bytes | None:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    # -- writes ----------------------------------------------------------------

    async def _transact(self, name: str, plan_fn: PlanFn, *, create: bool) -> Plan:
        return await asyncio.to_thread(self._transact_sync, name, plan_fn, create)

    def _transact_sync(self, name: str, plan_fn: PlanFn, create: bool) -> Plan:
        with self._locked(name, create=create) as folder:
            cat = self._read_catalog(name, missing_ok=create)
            plan = plan_fn(cat)
            if plan.new_version is not None:
                vdir = folder / plan.new_version.version
                vdir.mkdir(exist_ok=True)  # an orphan of a create killed before its catalog write
                atomic_write(vdir / VERSION, plan.new_version.to_json())
            after = cat.apply(plan.changes)
            doc = {"stages": after.stages, "history": [c.to_dict() for c in after.history]}
            atomic_write(folder / CATALOG, orjson.dumps(doc))
            return plan

    async def _delete_snapshots(self, name: str, version: str, ids: list[int]) -> None:
        def delete() -> None:
            with self._locked(name, create=False):
                snaps = self._snapshot_dir(name, version)
                for sid in ids:  # the record first: a kill in between leaves an invisible .ckpt
                    (snaps / f"{sid:08d}.json").unlink(missing_ok=True)
                    (snaps / f"{sid:08d}.ckpt").unlink(missing_ok=True)
                _fsync_dir(snaps)

        await asyncio.to_thread(delete)

    async def _commit_snapshot(self, name: str, version: str, blob: bytes,
                               make_record: MakeRecord, lease: int | None) -> bytes:
        return await asyncio.to_thread(self._commit_snapshot_sync, name, version, blob,
                                       make_record, lease)

    @staticmethod
    def _read_lease(folder: Path) -> int:
        try:
            return int((folder / LEASE).read_text() or 0)
        except FileNotFoundError:
            return 0

    async def _take_lease(self, name: str) -> int:
        def take() -> int:
            with self._locked(name, create=True) as folder:
                lease = self._read_lease(folder) + 1
                atomic_write(folder / LEASE, str(lease).encode())
                return lease
        return await asyncio.to_thread(take)

    async def _lease(self, name: str) -> int:
        return await asyncio.to_thread(self._read_lease, self.root / name)

    def _commit_snapshot_sync(self, name: str, version: str, blob: bytes,
                              make_record: MakeRecord, lease: int | None) -> bytes:
        with self._locked(name, create=False) as folder:
            if lease is not None and lease < (newest := self._read_lease(folder)):
                raise FencedError(f"model {name!r}: lease {lease} was taken over by lease "
                                  f"{newest}; this learner's checkpoint is refused")
            cat = self._read_catalog(name)
            if version not in cat.stages:
                raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
            info = VersionInfo.from_json((folder / version / VERSION).read_bytes())
            snaps = self._snapshot_dir(name, version)
            snaps.mkdir(exist_ok=True)
            for stale in snaps.glob(".*.tmp"):  # left by a writer killed mid-write (we hold the lock)
                stale.unlink(missing_ok=True)
            ids = [int(m[1]) for p in snaps.iterdir() if (m := _RECORD.fullmatch(p.name))]
            snapshot_id = max(ids, default=0) + 1
            record = make_record(snapshot_id, cat.stages[version], info)
            atomic_write(snaps / f"{snapshot_id:08d}.ckpt", blob)
            atomic_write(snaps / f"{snapshot_id:08d}.json", record)  # now it is visible
            return record
