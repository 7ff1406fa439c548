"""A real worker serving the HTTP API on a free port, and its key, for the HTTP tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from stream_app.http.auth import new_key
from stream_app.kafka_io import ensure_topics
from stream_app.settings import Settings
from tests.conftest import WorkerProcess, make_settings, wait_until

_URL = re.compile(r"HTTP API on (http://[0-9.]+:[0-9]+)")


class Served:
    """A worker process, its HTTP base URL and a valid key."""

    def __init__(self, settings: Settings, worker: WorkerProcess, url: str, key: str) -> None:
        self.settings, self.worker, self.url, self.key = settings, worker, url, key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=30.0, **kw)


@contextmanager
def serving(services: tuple[str, str, bool], data_dir: Path, **overrides: Any
            ) -> Iterator[Served]:
    """Start a worker with the HTTP API on port 0; yield once it answers."""
    import asyncio

    kafka, redis, embedded = services
    key, entry = new_key("tests")
    settings = make_settings(kafka, redis, embedded, data_dir, http_enabled=True, http_port=0,
                             api_keys=(entry,), **overrides)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, data_dir / "worker.log")
    try:
        found: list[str] = []

        def listening() -> bool:
            found.extend(_URL.findall(worker.log()))
            return bool(found) or not worker.alive()

        assert wait_until(listening, 90), worker.log()[-3000:]
        assert found, worker.log()[-3000:]
        yield Served(settings, worker, found[0], key)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
