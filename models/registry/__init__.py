"""The model registry: versions, signed snapshots and lifecycle stages, in files or in Redis.

A *version* is a lineage (a model spec, trained from a parent version or from scratch),
numbered "1", "2", ... per model. A *snapshot* is a checkpoint of a version's learned state:
the pickled River object plus a signed record (learn count, label offsets consumed, data hash,
metrics, dependency versions, checkpoint SHA-256 and size). A checkpoint is unpickled only after
its size, hash and HMAC signature check out. Stages: development, staging, production,
archived; at most one production version per model.

- ``models.registry.protocol``: ``ModelRegistry``, ``open_registry(url, key=...)``
- ``models.registry.types``: the records (``VersionInfo``, ``SnapshotInfo``, ``StageChange``,
  ``VerifyResult``) and ``DataHash``
- ``models.registry.signing``: HMAC signing and the pre-unpickling check
- ``models.registry.lifecycle``: the stage rules, pure
- ``models.registry.base``: the behaviour, over a backend's storage primitives
- ``models.registry.file_backend`` (``file://``) and ``models.registry.redis_backend`` (``redis://``)
"""

from __future__ import annotations

from models.registry.protocol import DEFAULT_REGISTRY_URL, ModelRegistry, open_registry
from models.registry.types import (
    STAGES,
    DataHash,
    SnapshotInfo,
    Stage,
    StageChange,
    VerifyResult,
    VersionInfo,
)

__all__ = [
    "DEFAULT_REGISTRY_URL",
    "STAGES",
    "DataHash",
    "ModelRegistry",
    "SnapshotInfo",
    "Stage",
    "StageChange",
    "VerifyResult",
    "VersionInfo",
    "open_registry",
]
