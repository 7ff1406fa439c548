"""The ``ModelRegistry`` contract, and ``open_registry``: the backend is chosen by URL.

``file://PATH`` (default ``file://./registry``) keeps one folder per model and version on a local
or shared disk; ``redis://host:port/db`` (also ``rediss://``, ``unix://``) serves workers on
several hosts. Both implement every method below, with the same contract tests.

A key (``STREAM_REGISTRY_KEY``, at least 16 bytes) is needed to save, load or verify
checkpoints; versions and stages work without one.

>>> import asyncio, tempfile
>>> from river import linear_model, preprocessing
>>> async def demo(root):
...     reg = open_registry(f"file://{root}", key=b"0123456789abcdef")
...     v = await reg.create_version("fraud", spec={"steps": []}, params={}, parent=None)
...     model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
...     model.learn_one({"amount": 10.0}, True)
...     snap = await reg.save_snapshot("fraud", v.version, model, learn_count=1,
...                                    label_offsets={"labels:0": 1}, data_hash="", metrics={})
...     loaded, info = await reg.load_snapshot("fraud", "1")
...     await reg.promote("fraud", "1", reason="first")
...     prod = await reg.production("fraud")
...     await reg.aclose()
...     return v.version, snap.snapshot_id, info == snap, prod.version, prod.stage
>>> with tempfile.TemporaryDirectory() as root:
...     asyncio.run(demo(root))
('1', 1, True, '1', 'production')
>>> open_registry("s3://bucket", key=None)
Traceback (most recent call last):
...
stream_app.errors.ConfigError: registry URL must start with file://, redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://, got 's3://bucket'
"""

from __future__ import annotations

from typing import Any, Final, Protocol, runtime_checkable

from models.registry.types import SnapshotInfo, Stage, StageChange, VerifyResult, VersionInfo
from stream_app.errors import ConfigError

__all__ = ["DEFAULT_REGISTRY_URL", "ModelRegistry", "open_registry"]

DEFAULT_REGISTRY_URL: Final = "file://./registry"


@runtime_checkable
class ModelRegistry(Protocol):
    """Versions (lineages) of models, their signed snapshots, and their lifecycle stages.

    Lookups of a missing model, version or snapshot raise
    :class:`~stream_app.errors.ModelNotFoundError`; nothing returns ``None`` for a miss.
    """

    async def create_version(self, name: str, *, spec: dict[str, Any], params: dict[str, Any],
                             parent: str | None, stage: Stage = "development",
                             reason: str = "") -> VersionInfo:
        """A new version "1", "2", ... of ``name``, from ``parent`` (a version of it) or scratch."""
        ...

    async def take_lease(self, name: str) -> int:
        """Become the model's one learner: a new lease, higher than every earlier one.

        A learner passes its lease to :meth:`save_snapshot`; once a later lease is taken, the
        earlier learner's checkpoints are refused (``FencedError``), so a learner that was
        paused and replaced cannot write its older model over its successor's.
        """
        ...

    async def lease(self, name: str) -> int:
        """The model's newest lease (0: none taken)."""
        ...

    async def save_snapshot(self, name: str, version: str, model_obj: Any, *, learn_count: int,
                            label_offsets: dict[str, int], data_hash: str,
                            metrics: dict[str, Any], lease: int | None = None) -> SnapshotInfo:
        """Pickle (protocol 5), sign and store ``model_obj``; ids increase per version.

        With ``lease``, refused with ``FencedError`` unless it is the model's newest lease.

        The object is pickled in a worker thread (``models.registry.pickling``), so the event
        loop keeps running: keep it unchanged until the call returns. A
        :class:`~models.registry.pickling.Pickled` is stored as it is, for a caller that
        pickles while its model is held still and lets it learn again before the write.
        """
        ...

    async def load_snapshot(self, name: str, version: str, snapshot_id: int | None = None,
                            *, freeze_bytes: int | None = None) -> tuple[Any, SnapshotInfo]:
        """The newest snapshot that verifies (or exactly ``snapshot_id``), unpickled.

        Size, SHA-256 and signature are checked before unpickling; a snapshot that fails is
        logged and skipped. Raises ``CheckpointError`` when none verifies. A checkpoint of
        ``freeze_bytes`` or more is unpickled out of the cyclic GC's reach
        (``pickling.loads(freeze=True)``: a long-lived model, and no GIL held for a pass over
        its objects).
        """
        ...

    async def prune_snapshots(self, name: str, version: str, keep: int, *,
                              keep_bytes: int | None = None) -> list[int]:
        """Keep the newest ``keep`` snapshots of a version whose checkpoints add up to at most
        ``keep_bytes``, delete the others; return the ids removed.

        The newest snapshot always stays, and so does the newest one that verifies (with a
        key): a restore always has a good snapshot to fall back to.
        """
        ...

    async def models(self) -> list[str]:
        """Names of the models with at least one version, sorted."""
        ...

    async def versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, in numeric order, each with its current stage."""
        ...

    async def get_version(self, name: str, version: str) -> VersionInfo:
        ...

    async def production(self, name: str) -> VersionInfo:
        """The version in production; raises ``ModelNotFoundError`` when there is none."""
        ...

    async def snapshots(self, name: str, version: str) -> list[SnapshotInfo]:
        """The snapshots' records as stored (not verified: see :meth:`verify`), oldest first."""
        ...

    async def ensure_production(self, name: str, *, spec: dict[str, Any], params: dict[str, Any],
                                reason: str) -> tuple[VersionInfo, bool]:
        """The production version, created from scratch in one atomic step if there is none.

        ``(version, created)``: of several workers starting at once exactly one creates it.
        """
        ...

    async def set_stage(self, name: str, version: str, stage: Stage, reason: str) -> StageChange:
        """Move a version; to ``production`` archives the version that was there."""
        ...

    async def promote(self, name: str, version: str, reason: str = "manual") -> StageChange:
        ...

    async def rollback(self, name: str, reason: str = "rollback") -> StageChange:
        """Promote the version that was in production before the current one."""
        ...

    async def history(self, name: str) -> list[StageChange]:
        """Every stage change of ``name``, oldest first (creation included)."""
        ...

    async def verify(self) -> list[VerifyResult]:
        """Check every snapshot's record, size, SHA-256 and signature, unpickling nothing."""
        ...

    async def aclose(self) -> None:
        ...


def open_registry(url: str = DEFAULT_REGISTRY_URL, *, key: bytes | None,
                  namespace: str = "") -> ModelRegistry:
    """The registry at ``url``: ``file://PATH`` or ``redis://``, ``rediss://``, ``unix://``.

    ``key`` signs and checks checkpoints (``None``: stages and versions only). ``namespace``
    separates registries sharing one Redis (keys ``stream:{namespace}:reg:...``); the file
    backend ignores it.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "file":
        from models.registry.file_backend import FileRegistry

        if not rest:
            raise ConfigError(f"file registry URL needs a path, got {url!r}")
        return FileRegistry(rest, key=key)
    if sep and scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        from models.registry.redis_backend import RedisRegistry

        return RedisRegistry.from_url(url, key=key, namespace=namespace)
    raise ConfigError("registry URL must start with file://, redis://, rediss://, unix://, "
                      f"redis+cluster:// or rediss+cluster://, got {url!r}")
