"""Secured Kafka and Redis, for real: the worker and the CLI over SASL_SSL, SSL (mTLS) and TLS Redis.

The services are started by the session fixtures (``tests/secure_services.py``), beside the
shared plaintext ones: Apache Kafka from ``scripts/kafka-local start --secure`` (SCRAM-SHA-512
and PLAIN on SASL_SSL, client certificates on SSL) and ``redis-server`` on TLS only, with
client certificates and an ACL user (the default user is off).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app.settings import Settings
from stream_app.tools.services import worker_env
from tests.conftest import WorkerProcess, make_settings, wait_until
from tests.secure_services import SecureKafka, TlsRedis

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: the issue's promise for a wrong credential, start-up included
FAIL_WITHIN_S = 15.0


def secure_settings(kafka: dict[str, Any], redis: TlsRedis, tmp_path: Path,
                    **overrides: Any) -> Settings:
    kafka = dict(kafka)
    url = kafka.pop("kafka_url")
    values = {"registry_url": redis.url(db=1), "partitions": 2} | kafka | overrides
    redis_url = values.pop("redis_url", redis.url(db=0))
    return make_settings(url, redis_url, False, tmp_path, **values)


def cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream_app", *args], env=worker_env(settings),
                          capture_output=True, text=True, timeout=timeout)


def models(settings: Settings, action: str) -> Any:
    out = cli(settings, "models", action, timeout=60)
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def test_worker_replay_tail_and_models_over_sasl_ssl_and_tls_redis(
        secure_kafka: SecureKafka, tls_redis: TlsRedis, tmp_path: Path) -> None:
    settings = secure_settings(secure_kafka.sasl("SCRAM-SHA-512"), tls_redis, tmp_path)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        out = cli(settings, "replay", "synthetic", "--limit", "300", "--label-delay", "0")
        assert out.returncode == 0, out.stderr
        out = cli(settings, "tail", "predictions", "--from-beginning", "--limit", "300")
        assert out.returncode == 0, out.stderr + worker.log()
        predictions = [orjson.loads(line) for line in out.stdout.splitlines()]
        assert len({p["event_id"] for p in predictions}) == 300
        # the learner checkpoints to the registry on TLS Redis: signed snapshots that verify
        assert wait_until(lambda: models(settings, "verify"), 120, 1.0), worker.log()
        assert all(r["ok"] for r in models(settings, "verify"))
        assert settings.model.name in models(settings, "list")
        assert worker.alive(), worker.log()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    assert "Authentication failed" not in worker.log()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_replay_and_tail_over_sasl_ssl(secure_kafka: SecureKafka, tls_redis: TlsRedis,
                                       tmp_path: Path, mechanism: str) -> None:
    settings = secure_settings(secure_kafka.sasl(mechanism), tls_redis, tmp_path)
    _replay_then_tail(settings)


def test_replay_and_tail_over_mutual_tls(secure_kafka: SecureKafka, tls_redis: TlsRedis,
                                         tmp_path: Path) -> None:
    _replay_then_tail(secure_settings(secure_kafka.mtls(), tls_redis, tmp_path))


def _replay_then_tail(settings: Settings) -> None:
    out = cli(settings, "replay", "phishing", "--limit", "50")
    assert out.returncode == 0, out.stderr
    out = cli(settings, "tail", "events", "--from-beginning", "--limit", "50")
    assert out.returncode == 0, out.stderr
    assert len({orjson.loads(line)["event_id"] for line in out.stdout.splitlines()}) == 50


def _one_line_failure(settings: Settings, *args: str) -> tuple[str, float]:
    t0 = time.monotonic()
    out = cli(settings, *args, timeout=60)
    elapsed = time.monotonic() - t0
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stdout + out.stderr
    assert lines[0].startswith("stream-app: error: ")
    return lines[0], elapsed


@pytest.mark.parametrize("command", [("worker",), ("replay", "phishing", "--limit", "5"),
                                     ("tail", "events", "--limit", "1")],
                         ids=["worker", "replay", "tail"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_a_wrong_kafka_password_is_one_line_and_exit_2_at_once(
        secure_kafka: SecureKafka, tls_redis: TlsRedis, tmp_path: Path, mechanism: str,
        command: tuple[str, ...]) -> None:
    settings = secure_settings(secure_kafka.sasl(mechanism, password="wrong-password"),
                               tls_redis, tmp_path)
    line, elapsed = _one_line_failure(settings, *command)
    assert elapsed < FAIL_WITHIN_S
    assert f"refused {mechanism} credentials for user 'stream'" in line
    assert "wrong-password" not in line


def test_an_untrusted_kafka_certificate_is_one_line(secure_kafka: SecureKafka,
                                                    tls_redis: TlsRedis, tmp_path: Path) -> None:
    kafka = secure_kafka.sasl()
    kafka["kafka"] = kafka["kafka"] | {"ssl_cafile": str(tls_redis.certs / "ca.crt")}  # another CA
    line, elapsed = _one_line_failure(secure_settings(kafka, tls_redis, tmp_path), "worker")
    assert elapsed < FAIL_WITHIN_S
    assert "TLS certificate does not verify" in line


def test_a_wrong_redis_password_is_one_line_and_exit_2(secure_kafka: SecureKafka,
                                                       tls_redis: TlsRedis,
                                                       tmp_path: Path) -> None:
    settings = secure_settings(secure_kafka.sasl(), tls_redis, tmp_path,
                               redis_url=tls_redis.url(password="wrong-password"))
    line, elapsed = _one_line_failure(settings, "worker")
    assert elapsed < FAIL_WITHIN_S
    assert "refused the connection" in line and "invalid username-password pair" in line
    assert "wrong-password" not in line
