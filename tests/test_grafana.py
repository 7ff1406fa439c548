"""The Grafana dashboard (deploy/grafana/) queries only families the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_app.ops.prometheus import make_registry
from stream_app.ops.view import WorkerView
from stream_app.pipeline.engine import Engine
from stream_app.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "stream-app.json"


def _exported() -> set[str]:
    """Every sample name a worker's /metrics can hold (labelled counters have no sample until
    something is counted, so count one of each)."""
    settings = load_settings(environ={}, feature_store_url="memory://")
    engine = Engine(settings)
    engine.metrics.dead_letter("schema")
    engine.metrics.service_error("redis", "processing")
    engine.drift.signals_raised["manual"] += 1
    engine.quality.schema_changes["new"] += 1
    engine.quality.missing_rate["x"] = 0.0
    view = WorkerView(settings=settings, engine=lambda: engine, consumer=lambda: None)
    text = generate_latest(make_registry(view)).decode()
    families = list(text_string_to_metric_families(text))
    # a gauge with nothing to show yet (no consumer, drift check, snapshot or label) has its
    # HELP and TYPE lines but no sample
    return {s.name for fam in families for s in fam.samples} | {
        fam.name for fam in families if fam.type == "gauge"}


def _exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_every_query_names_an_exported_metric() -> None:
    exported = _exported()
    used = {n for e in _exprs() for n in re.findall(r"\b((?:stream|process)_[a-z_]+)\b", e)}
    assert used and used <= exported, used - exported


def test_the_dashboard_covers_what_operators_watch() -> None:
    text = " ".join(_exprs())
    for family in ("stream_events_received_total", "stream_dead_letters_total",
                   "stream_end_to_end_latency_seconds_bucket", "stream_stage_latency_seconds_bucket",
                   "stream_consumer_lag", "stream_prequential_accuracy", "stream_prequential_roc_auc",
                   "stream_prequential_log_loss", "stream_drift_adjusted_p_value",
                   "stream_drift_open_episodes", "stream_retrain_signals_total",
                   "stream_model_info", "stream_model_snapshot_age_seconds",
                   "stream_service_errors_total", "process_cpu_seconds_total",
                   "process_resident_memory_bytes", "stream_feature_missing_ratio",
                   "stream_event_time_lag_seconds_bucket", "stream_schema_changes_total"):
        assert family in text, family


def test_panels_do_not_overlap() -> None:
    dash = json.loads(DASHBOARD.read_text())
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine
