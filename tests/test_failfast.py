"""A worker that cannot work says why at once: one line on stderr, exit code 2, no traceback.

Each test runs the real ``python -m stream_app worker`` in a fresh directory. Before, a missing
data dir was a FileNotFoundError traceback, an unreachable Kafka took 61 s, and an unreachable
or wrong Redis never failed (the worker logged errors and stayed up).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.settings import Settings
from stream_app.tools.services import worker_env
from tests.conftest import TEST_REGISTRY_KEY

#: the issue's promise, start-up included, for the default ``startup_timeout_s``
FAIL_WITHIN_S = 15.0
UNREACHABLE_KAFKA = "kafka://127.0.0.1:1"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def clean_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """No ``STREAM_*`` from outside; a registry key and a registry of this test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env |= {"STREAM_REGISTRY_KEY": TEST_REGISTRY_KEY, "STREAM_WEB_ENABLED": "false",
            "STREAM_HTTP_ENABLED": "false",
            "STREAM_REGISTRY_URL": f"file://{tmp_path}/registry"}
    return env | variables


def worker(env: dict[str, str], cwd: Path) -> tuple[str, int, float]:
    """Run a worker to its exit; its one stderr line, exit code and run time."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "stream_app", "worker"], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and out.stdout == "", out.stdout + out.stderr
    assert lines[0].startswith("stream-app: error: ")
    return lines[0], out.returncode, elapsed


# -- settings and the data dir: no service needed --------------------------------------------


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("STREAM_MODEL__THRESHOLD", "-0.5",
     "model.threshold (STREAM_MODEL__THRESHOLD): Input should be greater than or equal to 0"),
    ("STREAM_REDIS_URL", "redis://127.0.0.1:63x9/0", "redis_url (STREAM_REDIS_URL): Value error, bad port"),
    ("STREAM_FEATURES", '{"aggregates": [{"feature": "x", "windows": ["0s"]}]}', "bad window '0s'"),
    ("STREAM_LIFECYCLE__CHALLENGER_STEPS", '[{"name": "Nope"}]',
     "lifecycle.challenger_steps: unknown class 'Nope'"),
], ids=["negative-threshold", "redis-port", "zero-window", "challenger-step"])
def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path, variable: str, value: str,
                                              expected: str) -> None:
    line, code, _ = worker(clean_env(tmp_path, **{variable: value}), tmp_path)
    assert code == 2 and expected in line


def test_a_data_dir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    line, code, _ = worker(clean_env(tmp_path, STREAM_DATA_DIR=str(tmp_path / "a-file" / "state")),
                           tmp_path)
    assert code == 2
    assert line.endswith(f"data_dir (STREAM_DATA_DIR): cannot create {tmp_path}/a-file/state: "
                         "Not a directory")


@pytest.mark.parametrize("data_dir", [None, "deep/missing/parents/state"],
                         ids=["default", "missing-parents"])
def test_the_data_dir_and_its_parents_are_created_before_anything_else(
        tmp_path: Path, data_dir: str | None) -> None:
    """Gets past the data dir: what stops it then is the (unreachable) broker, not a traceback."""
    env = clean_env(tmp_path, STREAM_KAFKA_URL=UNREACHABLE_KAFKA, STREAM_STARTUP_TIMEOUT_S="0.5",
                    STREAM_FEATURE_STORE_URL="memory://")
    if data_dir is not None:
        env["STREAM_DATA_DIR"] = data_dir  # relative: to the worker's working directory
    line, code, _ = worker(env, tmp_path)
    assert code == 2 and "Kafka is not reachable at 127.0.0.1:1" in line
    assert "FileNotFoundError" not in line
    assert (tmp_path / (data_dir or ".stream-app")).is_dir()


@pytest.mark.slow
def test_unreachable_kafka_and_redis_fail_within_15_s_by_default(tmp_path: Path) -> None:
    """The default ``startup_timeout_s``; both probes run at once and both are reported."""
    env = clean_env(tmp_path, STREAM_KAFKA_URL=UNREACHABLE_KAFKA, STREAM_REDIS_URL=UNREACHABLE_REDIS)
    line, code, elapsed = worker(env, tmp_path)
    assert code == 2 and elapsed < FAIL_WITHIN_S, elapsed
    assert "Kafka is not reachable at 127.0.0.1:1 (kafka_url='kafka://127.0.0.1:1') after 8s" in line
    assert f"; Redis is not reachable at {UNREACHABLE_REDIS} (STREAM_REDIS_URL) after 8s" in line


# -- Redis, with a Kafka that answers ---------------------------------------------------------


def _with_redis(settings: Settings, tmp_path: Path, **variables: str) -> dict[str, str]:
    return worker_env(settings) | {"STREAM_STARTUP_TIMEOUT_S": "2"} | variables


@pytest.mark.integration
def test_unreachable_redis_is_one_line_and_exit_2(kafka_settings: Settings,
                                                  tmp_path: Path) -> None:
    env = _with_redis(kafka_settings, tmp_path, STREAM_REDIS_URL=UNREACHABLE_REDIS)
    line, code, elapsed = worker(env, tmp_path)
    assert code == 2 and elapsed < FAIL_WITHIN_S
    assert line.startswith(f"stream-app: error: Redis is not reachable at {UNREACHABLE_REDIS} "
                           "(STREAM_REDIS_URL) after 2s: ConnectionError: Error 111 connecting")
    assert "Kafka" not in line


@pytest.mark.integration
@pytest.mark.parametrize(("change", "expected"), [
    ("/99", "ResponseError: DB index is out of range"),
    ("password", "AuthenticationError: AUTH <password> called without any password configured"),
], ids=["database-out-of-range", "wrong-password"])
def test_a_redis_that_refuses_fails_at_once_without_showing_the_password(
        kafka_settings: Settings, tmp_path: Path, change: str, expected: str) -> None:
    base = kafka_settings.redis_url.rsplit("/", 1)[0]  # redis://host:port
    url = base + change if change.startswith("/") else base.replace("://", "://:s3cret@") + "/0"
    line, code, elapsed = worker(_with_redis(kafka_settings, tmp_path, STREAM_REDIS_URL=url),
                                 tmp_path)
    assert code == 2 and elapsed < FAIL_WITHIN_S
    assert "refused the connection" in line and expected in line
    assert "s3cret" not in line
