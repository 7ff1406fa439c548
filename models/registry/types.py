"""The registry's records: versions, snapshots, stage changes, verify results; and ``DataHash``.

Every record is a frozen dataclass with ``to_dict``/``from_dict`` and ``to_json``/``from_json``
(orjson, sorted keys). ``from_dict`` ignores keys it does not know, so newer writers can add
fields without breaking older readers.

>>> change = StageChange("fraud", "2", "staging", "production", "manual", "2024-01-01T00:00:00+00:00")
>>> StageChange.from_json(change.to_json()) == change
True
>>> change.to_dict()["to_stage"]
'production'
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any, Final, Literal, Self, get_args

import orjson

__all__ = [
    "STAGES",
    "DataHash",
    "SnapshotInfo",
    "Stage",
    "StageChange",
    "VersionInfo",
    "VerifyResult",
    "check_name",
    "check_stage",
    "check_version",
    "dependency_versions",
    "utc_now",
]

Stage = Literal["development", "staging", "production", "archived"]
STAGES: Final[tuple[Stage, ...]] = get_args(Stage)
PRODUCTION: Final = "production"
ARCHIVED: Final = "archived"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


class _Record:
    """``to_dict``/``from_dict``/``to_json``/``from_json`` for the frozen dataclasses below."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in doc.items() if k in names})

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, blob: bytes) -> Self:
        return cls.from_dict(orjson.loads(blob))


@dataclasses.dataclass(frozen=True, slots=True)
class VersionInfo(_Record):
    """A lineage: a model spec, trained from ``parent`` (a version of the same model) or from scratch.

    ``stage`` is the current stage when read back from a registry.
    """

    model: str
    version: str
    stage: Stage
    parent: str | None
    spec: dict[str, Any]
    params: dict[str, Any]
    reason: str
    created_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotInfo(_Record):
    """A checkpoint of a version's learned state, as recorded (and signed) when it was saved."""

    model: str
    version: str
    snapshot_id: int
    stage: Stage  # at save time
    parent: str | None
    spec: dict[str, Any]
    params: dict[str, Any]
    learn_count: int
    label_offsets: dict[str, int]  # labels consumed, per partition
    data_hash: str  # see DataHash
    metrics: dict[str, Any]  # prequential metrics at save time
    dependencies: dict[str, str]
    checkpoint_sha256: str
    checkpoint_size: int
    pickle_protocol: int
    created_at: str
    signature: str  # HMAC-SHA256 hex over the rest of this record (see models.registry.signing)


@dataclasses.dataclass(frozen=True, slots=True)
class StageChange(_Record):
    """One stage transition; ``from_stage`` is ``None`` when the version was created."""

    model: str
    version: str
    from_stage: Stage | None
    to_stage: Stage
    reason: str
    at: str


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyResult(_Record):
    """One snapshot checked without unpickling: ``ok``, or why not in ``problem``."""

    model: str
    version: str
    snapshot_id: int
    ok: bool
    problem: str = ""


class DataHash:
    """A running SHA-256 over the ``(event_id, label)`` pairs a model learned from, in order.

    Chained (``h = sha256(h + pair)``) so it can resume from a stored hex digest.

    >>> h = DataHash().update("e1", True).update("e2", False)
    >>> resumed = DataHash(DataHash().update("e1", True).hexdigest()).update("e2", False)
    >>> h.hexdigest() == resumed.hexdigest() != DataHash().update_many([("e2", False), ("e1", True)]).hexdigest()
    True
    >>> DataHash().hexdigest() == hashlib.sha256(b"").hexdigest()
    True
    """

    __slots__ = ("_digest",)

    def __init__(self, start: str | None = None) -> None:
        self._digest = bytes.fromhex(start) if start else hashlib.sha256(b"").digest()
        if len(self._digest) != 32:
            raise ValueError(f"start must be a SHA-256 hex digest, got {start!r}")

    def update(self, event_id: str, label: Any) -> DataHash:
        pair = orjson.dumps([event_id, label], option=orjson.OPT_SORT_KEYS)
        self._digest = hashlib.sha256(self._digest + pair).digest()
        return self

    def update_many(self, pairs: Iterable[tuple[str, Any]]) -> DataHash:
        for event_id, label in pairs:
            self.update(event_id, label)
        return self

    def hexdigest(self) -> str:
        return self._digest.hex()


@cache
def dependency_versions() -> dict[str, str]:
    """Python and the installed versions of the packages a pickled model depends on.

    >>> sorted(dependency_versions())
    ['numpy', 'python', 'river', 'scipy', 'stream-app']
    """
    out = {"python": platform.python_version()}
    for dist in ("river", "numpy", "scipy", "stream-app"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def utc_now() -> str:
    """Now, as an ISO 8601 UTC timestamp with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def check_name(name: str) -> str:
    """A model name is a safe path segment and Redis key part.

    >>> check_name("fraud-lr.v2")
    'fraud-lr.v2'
    >>> check_name("../etc")
    Traceback (most recent call last):
    ...
    ValueError: model name must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}, got '../etc'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"model name must match {_NAME.pattern}, got {name!r}")
    return name


def check_version(version: str) -> str:
    """Versions are decimal strings "1", "2", ..."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(f"a version is a decimal string like '1', got {version!r}")
    return version


def check_stage(stage: str) -> Stage:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return stage  # type: ignore[return-value]
