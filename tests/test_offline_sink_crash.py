"""The sink killed with -9 while it writes: no reader sees a partial file, and after a restart
the store holds every ``event_id`` exactly once (real Kafka, a real ``offline-sink`` process)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from stream_app.offline.store import OfflineStore
from stream_app.pipeline.records import FeatureLog, LabelLog
from stream_app.tools import services as svc
from tests.conftest import make_settings
from tests.kafka_helpers import produce

pytestmark = pytest.mark.integration

N = 120_000
KILLS = 3


def _records(n: int) -> list[tuple[bytes | None, bytes]]:
    out = []
    for i in range(n):
        ts = 1_700_000_000.0 + i * 2.0  # 67 hours: four dates
        snap = orjson.dumps({"x": {"f0": float(i), "f1": -1.0}, "s": 0.25, "v": "1", "t": ts,
                             "l": 1.0, "n": 0})
        _, key, value = FeatureLog("t", f"e{i}", f"u{i % 97}", "m", ts, snap).encode()
        out.append((key, value))
        if i % 3 == 0:
            _, key, value = LabelLog("t", f"e{i}", "m", "1", True, True, ts + 1, ts + 1).encode()
            out.append((key, value))
    return out


def _tmp_files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs if f.endswith(".tmp")]


def _every_visible_file_is_whole(store: OfflineStore) -> int:
    files = store.files("features") + store.files("labels")
    for path in files:
        pq.read_table(path)  # raises on a partial file
    return len(files)


def test_kill_9_mid_write_loses_and_doubles_nothing(_service_urls, tmp_path: Path) -> None:
    kafka, redis, embedded = _service_urls
    root = tmp_path / "offline"
    settings = make_settings(kafka, redis, embedded, tmp_path, offline_url=f"file://{root}",
                             offline={"sink_batch_max": 30_000, "sink_flush_s": 0.2})

    async def publish() -> None:
        await ensure_topics(settings, [contract.FEATURE_LOG, contract.DEAD_LETTERS])
        await produce(settings, contract.FEATURE_LOG, _records(N))

    asyncio.run(publish())
    store = OfflineStore(settings.offline_url)
    env = svc.worker_env(settings)
    caught = 0
    for _ in range(KILLS * 4):  # each round: start, wait for a write in progress, kill -9
        if caught >= KILLS:
            break
        proc = subprocess.Popen([sys.executable, "-m", "stream_app", "offline-sink"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None \
                    and not _tmp_files(root):
                time.sleep(0.001)
        finally:
            proc.kill()
            proc.wait()
        caught += bool(_tmp_files(root))  # it died holding a half-written file
        _every_visible_file_is_whole(store)
        if store.count("features") == N:
            break  # it finished everything before we caught it mid-write again
    assert caught >= 1, "never caught the sink mid-write"
    assert _tmp_files(root)  # the half file is there, and hidden
    proc = subprocess.run([sys.executable, "-m", "stream_app", "offline-sink", "--idle-exit",
                           "3"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _every_visible_file_is_whole(store) > 0
    ids = store.read("features", columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == N and set(ids) == {f"e{i}" for i in range(N)}
    labels = store.read("labels", columns=["event_id"]).column("event_id").to_pylist()
    assert sorted(labels) == sorted(f"e{i}" for i in range(0, N, 3))
