"""docker-compose.yml cannot run here (no Docker engine): check its services and wiring."""

from __future__ import annotations

from pathlib import Path

import yaml

from stream_app.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_kafka_redis_and_worker() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", "redis", "worker"}


def test_kafka_is_single_node_kraft() -> None:
    env = _compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_worker_env_is_valid_settings_pointing_at_the_other_services() -> None:
    worker = _compose()["services"]["worker"]
    env = worker["environment"]
    assert all(k.startswith("STREAM_") for k in env)
    settings = load_settings(environ={k: str(v) for k, v in env.items()})
    assert settings.kafka_url == "kafka://kafka:9092"
    assert settings.redis_url == "redis://redis:6379/0"
    # checkpoints shared by every worker host, signed with a key compose demands from the shell
    assert settings.registry_url.startswith("redis://redis:6379/")
    assert env["STREAM_REGISTRY_KEY"].startswith("${STREAM_REGISTRY_KEY:?")
    for name in ("kafka", "redis"):
        assert worker["depends_on"][name]["condition"] == "service_healthy"
    assert worker["command"][:2] == ["stream-app", "worker"]
    # every variable the worker is given is a real setting (no typos that would be ignored)
    fields = {f"STREAM_{n.upper()}" for n in Settings.model_fields}
    assert set(env) <= fields


def test_dockerfile_installs_the_packages_the_worker_imports() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("stream_app", "features", "models"):
        assert f"COPY {pkg} " in text
