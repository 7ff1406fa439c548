"""A real worker that also serves ``/metrics``, ``/healthz`` and ``/readyz`` on a given port.

``python -m tests.ops_worker PORT`` with the worker's ``STREAM_*`` environment: the same
``create_app`` as ``stream-app worker``, plus a task that serves the ops routes with uvicorn
on the worker's own event loop, the way the worker's HTTP server mounts them
(``app.ops.routes()``). Only the tests use it, until that server is merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import uvicorn
from faust import Worker
from starlette.applications import Starlette

from stream_app.app import create_app
from stream_app.kafka_io import ensure_topics
from stream_app.settings import load_settings


def main(port: int) -> None:
    settings = load_settings()
    asyncio.run(ensure_topics(settings))
    app = create_app(settings)
    routes = app.ops.routes()

    @app.task
    async def serve_ops() -> None:
        config = uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=port,
                                loop="none", lifespan="off", log_level="warning")
        server = uvicorn.Server(config)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        await server.serve()  # SIGTERM is Faust's: it stops the worker, and this task

    Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(int(sys.argv[1]))
