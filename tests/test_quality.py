"""Data-quality monitors: each injected fault gives its record once; a clean stream gives none.

The pure monitor is driven with plain values; then a real worker on real Kafka and Redis
gets a clean stream (no quality record on the drift topic) and then each fault.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from features.spec import FeatureSettings
from stream_app import contract
from stream_app.kafka_io import ensure_topics
from stream_app.ops.quality import QualityMonitor
from stream_app.ops.settings import QualitySettings
from stream_app.pipeline.schema import Schema
from tests.conftest import WorkerProcess, make_settings
from tests.kafka_helpers import collect, event, latest_metrics, produce, values

NOW = 1_800_000_000.0
FEATURES = ("f0", "f1", "f2")


def _clean(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [{f: rng.gauss(0, 1) for f in FEATURES} for _ in range(n)]


class _Flow:
    """The schema and the monitor as the engine drives them, batch by batch."""

    def __init__(self, **conf: Any) -> None:
        self.schema = Schema(FeatureSettings())
        self.monitor = QualityMonitor(QualitySettings(**({"window": 100} | conf)), topic="drift")
        self.records: list[dict[str, Any]] = []

    def batch(self, features: list[dict[str, Any]], age_s: float = 1.0) -> None:
        admitted = [f for f in features if self.schema.check(f) is None]
        out = self.monitor.observe(admitted, [NOW - age_s] * len(admitted), now=NOW,
                                   changes=self.schema.take_changes())
        self.records += [orjson.loads(v) for t, _, v in out if t == "drift"]

    def kinds(self) -> list[tuple[str, str, Any]]:
        return [(r["kind"], r["subject"], r.get("change", r.get("drift"))) for r in self.records]


def test_a_clean_stream_gives_no_record() -> None:
    rng, flow = random.Random(1), _Flow()
    for _ in range(50):
        flow.batch(_clean(rng, rng.randint(1, 200)), age_s=rng.uniform(0, 60))
    assert flow.records == []
    assert flow.monitor.stale_total == 0
    assert set(flow.monitor.missing_rate) == set(FEATURES)
    assert max(flow.monitor.missing_rate.values()) == 0.0


def test_missing_values_open_one_episode_and_close_it() -> None:
    rng, flow = random.Random(2), _Flow()
    for _ in range(5):
        flow.batch(_clean(rng, 100))
    for _ in range(5):  # f1 null in 30 % of the events
        flow.batch([f | {"f1": None} if rng.random() < 0.3 else f for f in _clean(rng, 100)])
    for _ in range(3):
        flow.batch(_clean(rng, 100))
    assert flow.kinds() == [("missing_rate", "f1", True), ("missing_rate", "f1", False)]
    opened, closed = flow.records
    assert opened["drift_id"] == closed["drift_id"]
    assert opened["statistic"] > opened["threshold"] == 0.05
    assert closed["statistic"] <= closed["threshold"]


def test_stale_events_open_a_freshness_episode() -> None:
    rng, flow = random.Random(3), _Flow(max_event_age_s=60)
    flow.batch(_clean(rng, 100), age_s=10)
    flow.batch(_clean(rng, 100), age_s=61)
    flow.batch(_clean(rng, 100), age_s=59)
    assert flow.kinds() == [("freshness", "event_time", True), ("freshness", "event_time", False)]
    assert flow.records[0]["oldest_s"] == pytest.approx(61)
    assert flow.monitor.stale_total == 100
    # every event's lag is in the histogram, stale or not
    assert int(flow.monitor.lag_buckets.sum()) == 300


def test_each_schema_change_is_reported_once() -> None:
    rng, flow = random.Random(4), _Flow(schema_warmup_events=100)
    flow.batch(_clean(rng, 100))
    for _ in range(4):  # a retyped f0 (dead-lettered by the schema), a new name, f2 gone
        batch = [{"f0": "oops", "f1": 1.0, "f2": 1.0}] * 10
        batch += [{"f0": 1.0, "f1": 1.0, "f9": 2.0}] * 90
        flow.batch(batch)
    assert sorted(flow.kinds()) == [("missing_rate", "f2", True),  # vanished: missing too
                                    ("schema_change", "f0", "retyped"),
                                    ("schema_change", "f2", "vanished"),
                                    ("schema_change", "f9", "new")]
    retyped = next(r for r in flow.records if r["change"] == "retyped")
    assert (retyped["expected"], retyped["got"], retyped["admitted"]) == ("number", "string", False)
    assert flow.monitor.schema_changes == {"retyped": 1, "new": 1, "vanished": 1}


def test_names_learned_while_warming_up_are_the_baseline() -> None:
    flow = _Flow(schema_warmup_events=100)
    flow.batch([{"a": 1.0}] * 60)
    flow.batch([{"a": 1.0, "b": 1.0}] * 60)  # still within the first 100 events
    flow.batch([{"a": 1.0, "b": 1.0, "c": 1.0}] * 60)
    assert flow.kinds() == [("schema_change", "c", "new")]


def test_schema_changes_past_the_cap_are_counted_not_reported() -> None:
    flow = _Flow(schema_warmup_events=0, max_schema_changes=3)
    for i in range(10):
        flow.batch([{f"n{i}": 1.0}])
    assert len(flow.records) == 3
    assert flow.monitor.schema_changes["new"] == 10


@pytest.mark.integration
@pytest.mark.slow
async def test_a_worker_reports_each_fault_and_nothing_on_a_clean_stream(
        _service_urls: tuple[str, str, bool], tmp_path: Path) -> None:
    kafka, redis, embedded = _service_urls
    settings = make_settings(kafka, redis, embedded, tmp_path, metrics_interval_s=0.5,
                             quality={"window": 100, "schema_warmup_events": 100,
                                      "max_event_age_s": 600, "sample_per_batch": 1000})
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    rng = random.Random(5)
    sent = 0

    async def send(features: list[dict[str, Any]], ts: float | None = None) -> None:
        nonlocal sent
        await produce(settings, contract.EVENTS, [
            (b"k", event(f"q-{sent + i}", f"u{i % 5}", ts, **f)) for i, f in enumerate(features)],
            partition=0)
        sent += len(features)

    def quality(records: list[Any]) -> list[dict[str, Any]]:
        return [v for v in values(records) if v.get("record") == "quality"]

    try:
        await latest_metrics(settings, until=lambda m: m["partitions_assigned"] > 0)
        await send(_clean(rng, 300))
        await latest_metrics(settings, until=lambda m: m["events"]["predicted"] >= 300)
        clean = quality(await collect(settings, contract.DRIFT, timeout_s=2,
                                      until=lambda rs: False))
        await send([f | {"f1": None} for f in _clean(rng, 200)])       # missing values
        await send(_clean(rng, 200), ts=time.time() - 3600)            # stale events
        await send([f | {"f0": "x"} for f in _clean(rng, 50)])         # f0 retyped
        await send([f | {"f9": 1.0} for f in _clean(rng, 100)])        # a new name

        wanted = {("missing_rate", "f1"), ("freshness", "event_time"),
                  ("schema_change", "f0"), ("schema_change", "f9")}

        def all_faults(records: list[Any]) -> bool:
            return wanted <= {(r["kind"], r["subject"]) for r in quality(records)}

        faults = quality(await collect(settings, contract.DRIFT, until=all_faults))
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert clean == []
    found = {(r["kind"], r["subject"]) for r in faults}
    assert found == wanted, faults  # and nothing from the clean part, even if it came late
    changes = [(r["subject"], r["change"]) for r in faults if r["kind"] == "schema_change"]
    assert changes.count(("f0", "retyped")) == 1  # 50 retyped events, one record
    assert ("f9", "new") in changes
    for r in faults:
        assert set(contract.QUALITY_FIELDS) <= set(r)
        assert r["kind"] in contract.QUALITY_KINDS
        assert r["scope"]["partitions"] is not None
