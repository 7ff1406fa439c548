"""docker-compose.yml cannot run here (no Docker engine): check its services and wiring."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from stream_app.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_kafka_redis_and_worker() -> None:
    services = _compose()["services"]
    assert {n for n, s in services.items() if "profiles" not in s} == {"kafka", "redis", "worker"}
    assert {n for n, s in services.items() if s.get("profiles") == ["monitoring"]} == {
        "prometheus", "grafana"}


def test_every_service_has_a_healthcheck() -> None:
    for name, service in _compose()["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test", [None])[0] in ("CMD", "CMD-SHELL"), name
    worker = _compose()["services"]["worker"]["healthcheck"]["test"]
    assert any("/readyz" in part for part in worker)


def test_prometheus_scrapes_the_workers_and_grafana_reads_prometheus() -> None:
    services = _compose()["services"]
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for s in ("prometheus", "grafana")
              for v in services[s]["volumes"]}
    assert all(path.exists() for path in mounts.values()), mounts
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    worker_env = {k: str(v) for k, v in services["worker"]["environment"].items()}
    worker = load_settings(environ=worker_env)
    assert job["dns_sd_configs"][0]["port"] == worker.http_port
    assert worker.http_enabled and worker.http_host == "0.0.0.0"  # reachable from Prometheus
    source = yaml.safe_load((mounts["/etc/grafana/provisioning"] / "datasources" /
                             "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    promtool = shutil.which("promtool")
    if promtool:
        done = subprocess.run([promtool, "check", "config", str(
            mounts["/etc/prometheus/prometheus.yml"])], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


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
