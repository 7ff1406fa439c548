"""The CLI as users type it, as real processes: replay, tail, services, demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream_app.settings import Settings
from stream_app.tools.services import worker_env as settings_env

pytestmark = pytest.mark.integration


def cli(settings: Settings, *args: str, timeout: float = 120, env: dict | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream_app", *args],
                          env=env or settings_env(settings), capture_output=True, text=True,
                          timeout=timeout)


def test_replay_then_tail_shows_well_formed_events(kafka_settings: Settings) -> None:
    out = cli(kafka_settings, "replay", "phishing", "--limit", "100")
    assert out.returncode == 0, out.stderr
    assert "sent 100 events and 100 labels" in out.stderr
    out = cli(kafka_settings, "tail", "events", "--from-beginning", "--limit", "100")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 100
    events = [orjson.loads(line) for line in lines]
    assert len({e["event_id"] for e in events}) == 100
    for e in events:
        assert set(e) == {"event_id", "entity_id", "timestamp", "features"}
        assert isinstance(e["timestamp"], float) and isinstance(e["features"], dict)


def test_replay_reports_a_malformed_jsonl_line_and_loses_nothing_after_it(
        kafka_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps({"event_id": f"j{i}", "entity_id": "a", "timestamp": 1.0 + i,
                           "features": {"v": i}, "label": i % 2 == 0}).decode()
             for i in range(6)]
    lines.insert(2, '{"event_id": "broken", ')
    path.write_text("\n".join(lines) + "\n")
    out = cli(kafka_settings, "replay", str(path))
    assert out.returncode == 0, out.stderr
    assert "line 3:" in out.stderr
    out = cli(kafka_settings, "tail", "events", "--from-beginning", "--limit", "6")
    assert [orjson.loads(x)["event_id"] for x in out.stdout.splitlines()] == [
        f"j{i}" for i in range(6)]


def test_cli_errors_are_one_line_and_non_zero(kafka_settings: Settings) -> None:
    out = cli(kafka_settings, "replay", "no-such-dataset")
    assert out.returncode != 0 and "error" in out.stderr and "Traceback" not in out.stderr
    env = settings_env(kafka_settings) | {"STREAM_PARTITIONS": "zero"}
    out = cli(kafka_settings, "tail", "events", env=env)
    assert out.returncode == 2 and "STREAM_PARTITIONS" in out.stderr


@pytest.mark.embedded
def test_services_up_status_down_embedded(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env["STREAM_DATA_DIR"] = str(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stream_app", "services", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    up = run("up", "--embedded")
    try:
        assert up.returncode == 0, up.stderr
        assert "export STREAM_KAFKA_URL=kafka://127.0.0.1:" in up.stdout
        assert "export STREAM_REDIS_URL=redis://127.0.0.1:" in up.stdout
        status = run("status")
        assert status.returncode == 0 and status.stdout.count(" up") == 2, status.stdout
    finally:
        down = run("down")
    assert down.returncode == 0
    assert run("status").returncode == 1


@pytest.mark.embedded
@pytest.mark.slow
def test_demo_runs_to_its_summary_on_the_embedded_pair(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    out = subprocess.run([sys.executable, "-m", "stream_app", "demo", "--embedded", "--limit",
                          "300", "--rate", "600", "--label-delay", "0.2"],
                         env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "stream-app demo: summary" in out.stdout
    assert "300 / 300" in out.stdout  # labels published / joined
    assert "│ predictions received" in out.stdout and "300 │" in out.stdout
