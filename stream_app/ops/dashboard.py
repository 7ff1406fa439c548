"""The live dashboard: ``GET /dashboard`` (the page), ``/dashboard/data`` (JSON) and its static files.

The page (``static/dashboard.html``, ``dashboard.js``, uPlot vendored beside them, see
``static/VENDORED.md``) polls ``/dashboard/data?since=T`` every second and plots throughput,
latency p50/p95/p99, rolling accuracy and AUC, label coverage, each drift subject's p-value with
the alpha line, a histogram of scores, the served model's timeline with the registry's stage
changes, and the open drift and data-quality episodes.

Nothing is added to the hot path: a request samples what the worker already counts (the
engine's metrics, its drift stage and quality monitor, the lifecycle keeper; the same reads as
``/metrics``) at most once per ``interval_s`` whoever asks, into bounded rings
(:class:`~stream_app.ops.series.Rings`: ``points`` samples of at most ``max_series`` series;
subjects are bounded by ``drift.max_subjects``). The registry's stage history is read at most
every ``history_every_s``, and its last ``max_changes`` are kept. The rings fill while
something polls the data (the page, or ``run()`` as a task of the worker).

>>> from stream_app.settings import load_settings
>>> from stream_app.pipeline.engine import Engine
>>> from stream_app.ops.view import WorkerView
>>> settings = load_settings(environ={}, feature_store_url="memory://")
>>> engine = Engine(settings)
>>> board = Dashboard(WorkerView(settings=settings, engine=lambda: engine, consumer=lambda: None))
>>> [getattr(r, "path", None) for r in board.routes()]
['/dashboard', '/dashboard/data', '/dashboard/static']
>>> import asyncio; payload = asyncio.run(board.payload(None))
>>> payload["state"]["events"]["received"], payload["rings"]["t"] != []
(0, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from stream_app.ops.series import Rings, interval_quantiles, rate
from stream_app.ops.view import WorkerView

__all__ = ["Dashboard", "dashboard_routes"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


class Dashboard:
    """The rings of one worker and the routes that serve them (see the module docstring)."""

    def __init__(self, view: WorkerView, *, points: int = 600, interval_s: float = 1.0,
                 history_every_s: float = 5.0, max_changes: int = 50) -> None:
        self.view = view
        self.interval_s, self.history_every_s = interval_s, history_every_s
        max_subjects = view.settings.drift.max_subjects
        self.rings = Rings(points, max_series=16 + max_subjects)
        self._last = -float("inf")
        self._counts: dict[str, tuple[float, float]] = {}
        self._latency: dict[float, int] = {}
        self._latency_of: int | None = None  # id() of the sketch _latency was read from
        self._opened: dict[str, float] = {}  # subject -> when the dashboard first saw it open
        self._versions: deque[dict[str, Any]] = deque(maxlen=max_changes)
        self._changes: list[dict[str, Any]] = []
        self._max_changes = max_changes
        self._history_at = -float("inf")
        self._history_error: str | None = None
        self._state: dict[str, Any] = {}

    def routes(self) -> list[BaseRoute]:
        return [Route("/dashboard", self.page, methods=["GET"]),
                Route("/dashboard/data", self.data, methods=["GET"]),
                Mount("/dashboard/static", StaticFiles(directory=STATIC))]

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html")

    async def data(self, request: Request) -> Response:
        """``{"state": ..., "rings": {"t": [...], "series": {...}}}``, the samples after ``since``."""
        since = _float(request.query_params.get("since"))
        body = orjson.dumps(await self.payload(since), option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    async def payload(self, since: float | None) -> dict[str, Any]:
        await self.sample()
        return {"state": self._state, "rings": self.rings.since(since),
                "points": self.rings.size, "interval_s": self.interval_s}

    async def run(self) -> None:
        """Sample every ``interval_s`` until cancelled (as a worker task, for history)."""
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)

    # -- sampling -----------------------------------------------------------------------------
    async def sample(self) -> None:
        """One sample, unless the last was less than ``interval_s`` ago (5 % slack for jitter)."""
        now = time.time()
        if now - self._last < 0.95 * self.interval_s:
            return
        self._last = now
        try:
            values, state = self._read(now)
        except Exception:  # a dashboard never takes the worker down; the next sample retries
            log.warning("dashboard: sampling failed", exc_info=True)
            return
        self.rings.add(now, values)
        await self._history(now)
        state["versions"] = list(self._versions)
        state["stage_changes"] = self._changes
        state["history_error"] = self._history_error
        self._state = state

    def _read(self, now: float) -> tuple[dict[str, float | None], dict[str, Any]]:
        engine = self.view.engine()
        m = engine.metrics
        counts = {"events": m.events_received, "predicted": m.predictions,
                  "labels": m.labels_joined, "dead_letters": sum(m.dead_letters.values())}
        values: dict[str, float | None] = {
            f"{k}_per_s": rate(self._counts.get(k), (now, v)) for k, v in counts.items()}
        self._counts = {k: (now, v) for k, v in counts.items()}
        values.update(zip(("p50_ms", "p95_ms", "p99_ms"), self._latencies(m.latency), strict=True))
        rolling = m.prequential.snapshot()["rolling"]
        values["accuracy"], values["roc_auc"] = rolling["accuracy"], rolling["roc_auc"]
        coverage = m.labels_joined / m.predictions if m.predictions else None
        values["coverage"], values["snapshot"] = coverage, float(m.snapshot_id)
        drift = _drift(engine.drift, now, self._opened)
        values.update({f"p:{s['subject']}": s["adjusted_p_value"] for s in drift["subjects"]})
        if not self._versions or self._versions[-1]["version"] != m.model_version:
            self._versions.append({"at": now, "version": m.model_version})
        state = {
            "at": now, "model": m.model, "version": m.model_version, "snapshot": m.snapshot_id,
            "role": "learner" if m.learning_enabled else "scorer", "worker": m.worker,
            "events": {"received": m.events_received, "predicted": m.predictions,
                       "labels_joined": m.labels_joined, "dead_letters": counts["dead_letters"],
                       "per_s": values["events_per_s"]},
            "latency_ms": m.latency.summary(), "rolling": rolling, "coverage": coverage,
            "histogram": m.prequential.score_histogram(), "drift": drift,
            "quality": [{"kind": k, "subject": s} for k, s in sorted(engine.quality.open)],
            "dropped_values": self.rings.dropped,
        }
        return values, state

    def _latencies(self, sketch: Any) -> list[float | None]:
        buckets = sketch.buckets()
        if self._latency_of != id(sketch):  # a new sketch: its first read is the baseline
            self._latency_of, self._latency = id(sketch), {}
        got = interval_quantiles(self._latency, buckets, (0.5, 0.95, 0.99))
        self._latency = dict(buckets)
        return got

    async def _history(self, now: float) -> None:
        keeper = self.view.keeper()
        if keeper is None or now - self._history_at < self.history_every_s:
            return
        self._history_at = now
        try:
            changes = await asyncio.wait_for(keeper.registry.history(keeper.name), timeout=2.0)
        except Exception as exc:  # the registry is away: keep what was read, say why
            self._history_error = f"{type(exc).__name__}: {exc}"[:200]
            return
        self._history_error = None
        self._changes = [{"version": c.version, "from": c.from_stage, "to": c.to_stage,
                          "reason": c.reason, "at": c.at} for c in changes[-self._max_changes:]]


def _drift(stage: Any, now: float, opened: dict[str, float]) -> dict[str, Any]:
    """Every subject's last test and the open episodes (``opened`` remembers when each was
    first seen open; closed ones are forgotten)."""
    summary = stage.monitor.summary() if stage.monitor is not None else []
    subjects = [{"subject": "score" if s.subject == "__score__" else s.subject,
                 "kind": s.kind, "test": "chi2" if s.kind == "categorical" else "ks",
                 "statistic": s.statistic, "p_value": s.p_value,
                 "adjusted_p_value": s.adjusted_p_value, "drift": s.in_drift,
                 "current_size": s.current_size} for s in summary]
    open_now = {s["subject"] for s in subjects if s["drift"]}
    for name in list(opened):
        if name not in open_now:
            del opened[name]
    for name in open_now:
        opened.setdefault(name, now)
    episodes = [{**s, "seen_open_at": opened[s["subject"]]} for s in subjects if s["drift"]]
    return {"alpha": stage.conf.alpha, "correction": stage.conf.correction, "warm": stage.warm,
            "subjects": subjects, "episodes": episodes}


def _float(text: str | None) -> float | None:
    """``since`` as a finite float, or None (absent or not a number: every sample).

    >>> _float("12.5"), _float(None), _float("x"), _float("nan")
    (12.5, None, None, None)
    """
    with contextlib.suppress(TypeError, ValueError):
        value = float(text)  # type: ignore[arg-type]
        return value if math.isfinite(value) else None
    return None


def dashboard_routes(view: WorkerView) -> list[BaseRoute]:
    """The routes of a new :class:`Dashboard` for ``view``."""
    return Dashboard(view).routes()
