"""The promotion guard: a version trained offline goes to production only if it beats the
production version on the same holdout, or with ``--force``.

The candidate's newest snapshot records its holdout (``metrics.training``: the data set's path
and SHA-256, and the split timestamp; see ``offline.train``). The guard reads that file again
(refused if it is gone or its hash differs: "the same holdout" cannot be shown), restores the
production version's newest snapshot (a fresh model when it has none), scores the holdout with
both, frozen, and compares accuracy: the candidate must be strictly better. A version without
an offline holdout (one the stream trained, a challenger) is promoted as before: the
challenger's own comparison on live labels (``stream_app.lifecycle``) is its guard.

>>> verdict({"accuracy": 0.91}, {"accuracy": 0.90})
(True, 'candidate 0.9100 > production 0.9000 accuracy on the holdout')
>>> verdict({"accuracy": 0.90}, {"accuracy": 0.90})[0]
False
"""

from __future__ import annotations

from typing import Any

from models.online import OnlineModel
from models.registry import ModelRegistry
from models.spec import ModelSettings, StepSettings, build_model
from stream_app.errors import CheckpointError, ModelNotFoundError, PromotionRefused
from stream_app.offline.evaluate import holdout_metrics
from stream_app.offline.train import load_split

__all__ = ["check_promotion", "verdict"]


def verdict(candidate: dict[str, Any], production: dict[str, Any]) -> tuple[bool, str]:
    """Does the candidate win (strictly higher holdout accuracy), and why."""
    c, p = candidate["accuracy"], production["accuracy"]
    return c > p, (f"candidate {c:.4f} {'>' if c > p else '<='} production {p:.4f} "
                   "accuracy on the holdout")


async def _model(reg: ModelRegistry, name: str, version: str, base: ModelSettings
                 ) -> OnlineModel:
    info = await reg.get_version(name, version)
    steps = tuple(StepSettings(**s) for s in info.spec.get("steps", ()))
    model = build_model(ModelSettings(**{**base.model_dump(), "name": name, "steps": steps}))
    model.version = version
    try:
        state, _ = await reg.load_snapshot(name, version)
    except (ModelNotFoundError, CheckpointError):
        return model  # never learned: what the worker would serve
    model.pipeline = state["pipeline"]
    return model


async def check_promotion(reg: ModelRegistry, name: str, version: str,
                          base: ModelSettings) -> dict[str, Any]:
    """Raise :class:`PromotionRefused` unless ``name@version`` may go to production; returns
    the evidence (both models' holdout metrics) when it may."""
    snaps = await reg.snapshots(name, version)
    training = (snaps[-1].metrics.get("training") if snaps else None) or None
    if training is None:
        return {"guard": "none: this version has no offline holdout"}
    try:
        prod = await reg.production(name)
    except ModelNotFoundError:
        return {"guard": "no production version to beat"}
    if prod.version == version:
        return {"guard": "already in production"}
    try:
        split = load_split(training["dataset"], holdout_ts=training["holdout_ts"])
    except Exception as exc:  # noqa: BLE001 - gone, unreadable: no holdout to show
        raise PromotionRefused(f"{name}@{version}: its holdout data set "
                               f"{training['dataset']!r} cannot be read ({exc}); --force to "
                               "promote anyway") from exc
    if split.sha256 != training["dataset_sha256"]:
        raise PromotionRefused(f"{name}@{version}: its holdout data set "
                               f"{training['dataset']!r} changed since training; --force to "
                               "promote anyway")
    threshold = float(training.get("threshold", base.threshold))
    scored = {}
    for label, v in (("candidate", version), ("production", prod.version)):
        model = await _model(reg, name, v, base)
        scored[label] = holdout_metrics(model, split.test_x, split.test_y, threshold)
    wins, why = verdict(scored["candidate"], scored["production"])
    if not wins:
        raise PromotionRefused(f"{name}@{version} not promoted: {why} (version "
                               f"{prod.version}, {len(split.test_y)} rows); --force to "
                               "promote anyway")
    return {"guard": why, "production_version": prod.version, **scored}
