"""``GET /metrics``, ``/healthz`` and ``/readyz`` as Starlette routes for the worker's HTTP server.

>>> from stream_app.settings import load_settings
>>> from stream_app.pipeline.engine import Engine
>>> settings = load_settings(environ={}, feature_store_url="memory://")
>>> engine = Engine(settings)
>>> ops = Ops(WorkerView(settings=settings, engine=lambda: engine, consumer=lambda: None))
>>> [(r.path, sorted(r.methods)) for r in ops.routes()[:3]]
[('/metrics', ['GET', 'HEAD']), ('/healthz', ['GET', 'HEAD']), ('/readyz', ['GET', 'HEAD'])]
>>> [r.path for r in ops.routes()[3:]]  # the live dashboard (stream_app.ops.dashboard)
['/dashboard', '/dashboard/data', '/dashboard/static']

``create_app`` builds one for the worker, ``app.ops`` (closed on shutdown): mount
``app.ops.routes()`` on the HTTP server, e.g. ``create_http_app(..., extra_routes=app.ops.routes())``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from stream_app.ops.dashboard import Dashboard
from stream_app.ops.health import Readiness
from stream_app.ops.prometheus import make_registry
from stream_app.ops.view import WorkerView

__all__ = ["Ops", "WorkerView", "ops_routes"]


class Ops:
    """The registry and the readiness probe of one worker, and their routes."""

    def __init__(self, view: WorkerView, *, registry: CollectorRegistry | None = None) -> None:
        self.view = view
        self.registry = registry or make_registry(view)
        self.readiness = Readiness(view)
        self.dashboard = Dashboard(view)

    def routes(self) -> list[BaseRoute]:
        return [Route("/metrics", self.metrics, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]), *self.dashboard.routes()]

    async def metrics(self, request: Request) -> Response:
        """Every family, in the Prometheus text format (read now from the worker's counters)."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        """The process is alive and its event loop answers."""
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        """200 when ready, 503 when not; the body names each check's verdict."""
        ready, checks = await self.readiness.check()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def aclose(self) -> None:
        await self.readiness.aclose()


def ops_routes(view: WorkerView) -> list[BaseRoute]:
    """The routes of a new :class:`Ops` for ``view`` (the live dashboard's included)."""
    return Ops(view).routes()
