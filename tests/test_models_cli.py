"""``stream-app models``: list, show, promote, rollback, verify, challenge over a real file
registry; stage changes and challenges also reach Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aredis
from river import linear_model, preprocessing

from models.registry import open_registry
from stream_app import contract
from stream_app.settings import Settings
from tests.kafka_helpers import collect, values

KEY = "0123456789abcdef-test-key"


async def _two_versions(root: Path) -> None:
    reg = open_registry(f"file://{root}", key=KEY.encode())
    for _ in range(2):
        v = await reg.create_version("fraud", spec={"steps": []}, params={}, parent=None)
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        await reg.save_snapshot("fraud", v.version, model, learn_count=0, label_offsets={},
                                data_hash="", metrics={})
    await reg.aclose()


def models(root: Path, *args: str, kafka: Settings | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env |= {"STREAM_REGISTRY_URL": f"file://{root}", "STREAM_REGISTRY_KEY": KEY}
    if kafka is not None:
        env |= {"STREAM_KAFKA_URL": kafka.kafka_url, "STREAM_TOPIC_PREFIX": kafka.topic_prefix,
                "STREAM_EMBEDDED": str(kafka.embedded).lower()}
    return subprocess.run([sys.executable, "-m", "stream_app", "models", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_models_cli_lifecycle(tmp_path: Path) -> None:
    await _two_versions(tmp_path)
    listed = orjson.loads(models(tmp_path, "list").stdout)
    assert [v["version"] for v in listed["fraud"]] == ["1", "2"]
    assert orjson.loads(models(tmp_path, "promote", "fraud", "1").stdout)["to_stage"] == "production"
    change = orjson.loads(models(tmp_path, "promote", "fraud", "2").stdout)
    assert (change["version"], change["from_stage"], change["to_stage"]) == ("2", "development",
                                                                             "production")
    back = orjson.loads(models(tmp_path, "rollback", "fraud").stdout)
    assert (back["version"], back["to_stage"]) == ("1", "production")
    shown = orjson.loads(models(tmp_path, "show", "fraud@2").stdout)
    assert [v["stage"] for v in shown["versions"]] == ["archived"]
    last = shown["history"][-1]
    assert (last["version"], last["to_stage"], last["reason"]) == ("1", "production", "rollback")
    ok = models(tmp_path, "verify")
    assert ok.returncode == 0 and all(r["ok"] for r in orjson.loads(ok.stdout))


async def test_verify_fails_on_a_tampered_checkpoint(tmp_path: Path) -> None:
    await _two_versions(tmp_path)
    ckpt = next((tmp_path / "fraud" / "2" / "snapshots").glob("*.ckpt"))
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))
    out = models(tmp_path, "verify")
    assert out.returncode == 1
    bad = [r for r in orjson.loads(out.stdout) if not r["ok"]]
    assert [(r["version"], r["snapshot_id"]) for r in bad] == [("2", 1)]


def test_missing_arguments_are_a_clear_error(tmp_path: Path) -> None:
    out = models(tmp_path, "promote", "fraud")
    assert out.returncode == 2 and "models promote needs NAME VERSION" in out.stderr


async def test_stage_changes_go_to_the_models_topic_and_challenge_signals_the_learner(
        tmp_path: Path, kafka_settings: Settings) -> None:
    await _two_versions(tmp_path)
    for args in (("promote", "fraud", "1"), ("promote", "fraud", "2"), ("rollback", "fraud")):
        out = models(tmp_path, *args, kafka=kafka_settings)
        assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
    recs = await collect(kafka_settings, contract.MODELS, until=lambda rs: len(rs) >= 5)
    assert [(r["version"], r["from_stage"], r["to_stage"]) for r in values(recs)] == [
        ("1", "development", "production"), ("1", "production", "archived"),
        ("2", "development", "production"), ("2", "production", "archived"),
        ("1", "archived", "production")]
    out = models(tmp_path, "challenge", "fraud", kafka=kafka_settings)
    assert out.returncode == 0, out.stderr
    (signal,) = values(await collect(kafka_settings, contract.RETRAIN_SIGNALS,
                                     until=lambda rs: len(rs) >= 1))
    assert (signal["model"], signal["reason"]) == ("fraud", "manual")


@pytest.mark.integration
async def test_models_cli_reads_the_redis_registry_the_workers_write(redis_url: str) -> None:
    from stream_app.settings import load_settings
    from stream_app.tools.operate import registry_call

    app_id = f"cli-reg-{uuid.uuid4().hex[:8]}"
    url = redis_url.rsplit("/", 1)[0] + "/1"  # a database of its own, as in docker-compose.yml
    settings = load_settings(environ={}, registry_url=url, registry_key=KEY, app_id=app_id)
    worker_side = open_registry(url, key=KEY.encode(), namespace=app_id)  # as ModelKeeper opens it
    try:
        await worker_side.create_version("fraud", spec={"steps": []}, params={}, parent=None)
        listed = await registry_call(settings, "list")
        assert [v["version"] for v in listed["fraud"]] == ["1"]
    finally:
        await worker_side.aclose()
        raw = aredis.Redis.from_url(url)
        keys = [k async for k in raw.scan_iter(match=f"stream:{app_id}:*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()
