"""Stage rules, as pure functions over a model's catalog (both backends apply them in a transaction).

Rules: a version is ``development``, ``staging``, ``production`` or ``archived``; at most one
version of a model is in production (promoting one archives the one before, so after the first
promotion there is always exactly one unless it is demoted by hand); every change is recorded in
the model's history. ``rollback`` promotes the version that was in production before the
current one, read from that history (so two rollbacks in a row return to where they started).

>>> cat = Catalog(versions=["1", "2"], stages={"1": "production", "2": "staging"}, history=[
...     StageChange("m", "1", "staging", "production", "manual", "t0")], next_version="3")
>>> [(c.version, c.from_stage, c.to_stage) for c in stage_changes(cat, "m", "2", "production", "ok", "t1")]
[('1', 'production', 'archived'), ('2', 'staging', 'production')]
>>> cat = cat.apply(stage_changes(cat, "m", "2", "production", "ok", "t1"))
>>> cat.stages, rollback_target(cat, "m")
({'1': 'archived', '2': 'production'}, '1')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from models.registry.types import (
    ARCHIVED,
    PRODUCTION,
    Stage,
    StageChange,
    VersionInfo,
    check_stage,
)
from stream_app.errors import ModelNotFoundError

__all__ = ["Catalog", "Plan", "PlanFn", "production_of", "rollback_target", "stage_changes"]


@dataclasses.dataclass(frozen=True, slots=True)
class Catalog:
    """What a backend read of one model, under its lock or WATCH."""

    versions: list[str]  # committed versions, in numeric order
    stages: dict[str, Stage]  # current stage of each committed version
    history: list[StageChange]  # oldest first
    next_version: str  # the number a new version would get

    def apply(self, changes: Sequence[StageChange]) -> Catalog:
        """The catalog after ``changes`` (the new version, if any, included)."""
        stages = dict(self.stages)
        versions = list(self.versions)
        for change in changes:
            if change.version not in stages:
                versions.append(change.version)
            stages[change.version] = change.to_stage
        return Catalog(versions, stages, [*self.history, *changes], self.next_version)


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What to write: stage changes (in order) and, when creating one, the new version."""

    changes: list[StageChange]
    new_version: VersionInfo | None = None


#: computes a Plan from a Catalog, or raises; runs inside the backend's transaction
PlanFn = Callable[[Catalog], Plan]


def production_of(stages: dict[str, Stage]) -> str | None:
    """The version in production, or ``None``."""
    return next((v for v, s in stages.items() if s == PRODUCTION), None)


def stage_changes(cat: Catalog, model: str, version: str, stage: str, reason: str, at: str,
                  *, new: bool = False) -> list[StageChange]:
    """The changes that move ``version`` to ``stage`` (``new``: it is being created)."""
    to_stage = check_stage(stage)
    if not new and version not in cat.stages:
        raise ModelNotFoundError(f"model {model!r} has no version {version!r}")
    changes = []
    if to_stage == PRODUCTION:
        changes = [StageChange(model, v, PRODUCTION, ARCHIVED, reason, at)
                   for v, s in cat.stages.items() if s == PRODUCTION and v != version]
    from_stage = None if new else cat.stages[version]
    changes.append(StageChange(model, version, from_stage, to_stage, reason, at))
    return changes


def rollback_target(cat: Catalog, model: str) -> str:
    """The version that was in production before the current one, by the stage history."""
    current = production_of(cat.stages)
    for change in reversed(cat.history):
        if change.to_stage == PRODUCTION and change.version != current:
            return change.version
    raise ModelNotFoundError(f"model {model!r} has no earlier production version to roll back to")
