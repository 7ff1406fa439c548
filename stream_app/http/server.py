"""The HTTP API on the worker's own event loop: the ASGI app and the Mode service that serves it.

FastAPI builds the OpenAPI document (``/openapi.json``, ``/docs``) and routes; the hot path
reads raw bodies and checks them with the stream's own validation (``stream_app.http.predict``).
uvicorn serves it as a Mode service that the Faust app starts once it is up (after its
engine and model are ready) and stops before the engine closes: one process, one loop, one
``Engine``, one producer.

:class:`Guard` (pure ASGI, in front of everything under ``/v1/``) answers 401 without a valid
key and 429 past the key's token bucket, and writes one audit line per request: key name,
method, path, status, latency; never the key. Other routes (``extra_routes``, e.g. health and
metrics) are not guarded: they bring their own policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mode import Service

from stream_app.errors import ConfigError, ServiceError
from stream_app.http.auth import KeyRing, RateLimiter
from stream_app.http.predict import Predictor
from stream_app.settings import Settings

__all__ = ["Guard", "HttpService", "bind", "create_http_app"]

log = logging.getLogger(__name__)
audit = logging.getLogger("stream_app.http.audit")

_UNAUTHORIZED = (b'{"detail":"a valid API key is needed: Authorization: Bearer KEY or '
                 b'X-API-Key: KEY"}')


def _key_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1")
        if name == b"x-api-key":
            return value.strip().decode("latin-1")
    return None


class Guard:
    """Keys, token buckets and the audit log, in front of ``/v1/``.

    ``POST /v1/predict`` goes straight to ``fast`` (its handler, taking the body) instead of
    through FastAPI's middleware and routing, which cost as much CPU as the engine's work
    for one event; the route stays in FastAPI for the document and answers the same.
    """

    def __init__(self, app: Any, settings: Settings,
                 fast: Callable[[bytes], Awaitable[Any]] | None = None) -> None:
        self.app = app
        self.keys = KeyRing(settings.api_keys)
        self.limits = RateLimiter(settings.http.rate_per_s, settings.http.burst)
        self._fast = fast
        self._limit = settings.http.max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        name = self.keys.name_of(_key_of(scope["headers"]))
        status = [0]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if name is None:
                await _plain(sending, 401, _UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
                return
            wait = self.limits.retry_after(name)
            if wait:
                await _plain(sending, 429, b'{"detail":"rate limit: http.rate_per_s, '
                             b'http.burst"}', [(b"retry-after", str(wait).encode())])
                return
            if self._fast is not None and scope["path"] == "/v1/predict" \
                    and scope["method"] == "POST":
                await self._predict(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            audit.info("key=%s %s %s status=%d latency_ms=%.2f", name or "-", scope["method"],
                       scope["path"], status[0], (time.perf_counter() - t0) * 1000.0)


    async def _predict(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from aiokafka.errors import KafkaError

        from stream_app.http.routes import TooLarge, read_asgi

        assert self._fast is not None
        try:
            response = await self._fast(await read_asgi(scope, receive, self._limit))
        except TooLarge:
            await _plain(send, 413, b'{"detail":"body over http.max_body_bytes"}', [])
            return
        except (ServiceError, KafkaError, OSError) as exc:
            log.warning("POST /v1/predict: %s: %s", type(exc).__name__, exc)
            await _plain(send, 503, b'{"detail":"a service is unavailable; try again"}', [])
            return
        await response(scope, receive, send)


async def _plain(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
                 ) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def create_http_app(settings: Settings, predictor: Predictor, *,
                    extra_routes: Sequence[Any] = ()) -> Any:
    """The ASGI app: ``/v1`` (guarded), ``/openapi.json``, ``/docs`` and ``extra_routes``
    (Starlette routes, mounted as they are)."""
    from aiokafka.errors import KafkaError
    from fastapi import FastAPI, Request

    from stream_app.errors import RegistryError
    from stream_app.http.routes import TooLarge, build_router, json_response

    api = FastAPI(title="stream-app", version="1",
                  description="Real-time scoring on the stream's own engine (README, HTTP API).")
    router = build_router(settings, predictor)
    api.include_router(router)
    api.router.routes.extend(extra_routes)
    plain_openapi = api.openapi

    def openapi() -> dict[str, Any]:  # the key, as Guard takes it, on every /v1 operation
        if api.openapi_schema is None:
            spec = plain_openapi()
            spec.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
            for path, ops in spec["paths"].items():
                if path.startswith("/v1/"):
                    for op in ops.values():
                        op["security"] = [{"bearer": []}, {"apiKey": []}]
        return api.openapi_schema or spec

    api.openapi = openapi  # type: ignore[method-assign]

    @api.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge) -> Any:
        return json_response({"detail": f"body over http.max_body_bytes "
                              f"({settings.http.max_body_bytes})"}, 413)

    async def unavailable(request: Request, exc: Exception) -> Any:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return json_response({"detail": "a service is unavailable; try again"}, 503)

    for kind in (ServiceError, KafkaError, OSError, RegistryError):
        api.add_exception_handler(kind, unavailable)
    return Guard(api, settings, fast=router.predict_answer)


def _plain_audit_log(settings: Settings) -> None:
    """Audit lines go to stderr through a plain formatter of their own (the worker's colour
    formatter cost ~5 % of a request), still redacted."""
    import sys

    from stream_app.redact import Redactor

    if audit.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [AUDIT] %(message)s"))
    redactor = Redactor(settings.http.redact_fields, settings.http.redact_patterns)
    handler.addFilter(redactor.log_filter())
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    audit.propagate = False


def bind(settings: Settings) -> socket.socket:
    """The listening socket for ``http_host:http_port`` (port 0: any free one); a taken port
    is a :class:`ConfigError`, one line before anything starts."""
    host, port = settings.http_host, settings.http_port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        raise ConfigError(f"http_host/http_port (STREAM_HTTP_HOST/STREAM_HTTP_PORT): cannot "
                          f"listen on {host}:{port}: {exc.strerror or exc}; set another port "
                          "or STREAM_HTTP_ENABLED=false") from None
    sock.setblocking(False)
    return sock


class HttpService(Service):
    """uvicorn serving ``asgi_app`` on ``sock`` (bound at start if None), on the running loop,
    once ``ready()`` is done."""

    def __init__(self, asgi_app: Any, settings: Settings, sock: socket.socket | None,
                 ready: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        self.asgi_app, self.settings, self.sock, self._ready = asgi_app, settings, sock, ready
        self._server: Any = None
        self._serving: asyncio.Future[Any] | None = None
        super().__init__(**kwargs)

    @property
    def url(self) -> str:
        if self.sock is None:
            return "(not bound)"
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def on_start(self) -> None:
        import uvicorn

        if self.sock is None:
            self.sock = bind(self.settings)
        await self._ready()
        config = uvicorn.Config(self.asgi_app, loop="none", lifespan="off", log_config=None,
                                access_log=False, server_header=False, http="auto")
        server = uvicorn.Server(config)
        # signals belong to the Faust worker (mode.Worker): one owner, one shutdown path
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self._server = server
        _plain_audit_log(self.settings)
        self._serving = self.add_future(server.serve(sockets=[self.sock]))
        log.info("HTTP API on %s (OpenAPI at %s/openapi.json)", self.url, self.url)

    async def on_stop(self) -> None:
        server, serving = self._server, self._serving
        self._server = self._serving = None
        if server is not None:
            server.should_exit = True
        if serving is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(serving, timeout=10.0)
