"""A worker whose online store and registry are a real 3-master Redis Cluster, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app.settings import Settings
from stream_app.tools.services import worker_env
from tests.conftest import WorkerProcess, make_settings, wait_until
from tests.secure_services import RedisClusterNodes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream_app", *args], env=worker_env(settings),
                          capture_output=True, text=True, timeout=timeout)


def verify(settings: Settings) -> list[dict[str, Any]]:
    out = cli(settings, "models", "verify", timeout=60)
    assert out.returncode == 0, out.stderr
    return list(orjson.loads(out.stdout))


def test_a_worker_scores_learns_and_checkpoints_on_a_redis_cluster(
        kafka_url: str, redis_cluster: RedisClusterNodes, tmp_path: Path) -> None:
    url = redis_cluster.url()
    settings = make_settings(kafka_url, url, False, tmp_path, registry_url=url, partitions=2)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        out = cli(settings, "replay", "synthetic", "--limit", "300", "--label-delay", "0")
        assert out.returncode == 0, out.stderr
        out = cli(settings, "tail", "predictions", "--from-beginning", "--limit", "300")
        assert out.returncode == 0, out.stderr + worker.log()
        assert len({orjson.loads(line)["event_id"] for line in out.stdout.splitlines()}) == 300
        assert wait_until(lambda: verify(settings), 120, 1.0), worker.log()
        assert all(r["ok"] for r in verify(settings))
        assert worker.alive(), worker.log()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
