"""The worker end to end, as a real process, on real Kafka and Redis (no mocks)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stream_app import contract
from stream_app.settings import Settings
from stream_app.tools.replay import replay
from tests.conftest import WorkerProcess, make_settings
from tests.kafka_helpers import collect, event, label, latest_metrics, produce, values

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(_service_urls: tuple[str, str, bool],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, WorkerProcess]]:
    """One worker for the module; every test uses its own event ids."""
    kafka, redis, embedded = _service_urls
    tmp = tmp_path_factory.mktemp("engine")
    settings = make_settings(kafka, redis, embedded, tmp, max_payload_bytes=4096)
    from stream_app.kafka_io import ensure_topics

    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, Path(tmp) / "worker.log")
    yield settings, worker
    code = worker.stop()
    assert code == 0, worker.log()[-3000:]


def _predicted_ids(records: list) -> Counter[str]:
    return Counter(orjson.loads(r.value)["event_id"] for r in records)


async def test_phishing_events_get_predictions_and_labels_teach_the_model(engine) -> None:
    settings, worker = engine
    # paced, so labels reach the model while later events are scored (a burst would be scored
    # entirely by the untrained model, and accuracy would say nothing about learning); and only
    # once this worker is the learner: until it holds the labels partition, nothing learns
    await latest_metrics(settings, until=lambda m: m["partitions_assigned"] > 0
                         and m["learning_enabled"])
    report = await replay(settings, "phishing", limit=200, rate=400.0, label_delay_s=0.0,
                          seed=1)
    assert report.events_sent == 200
    preds = await collect(settings, contract.PREDICTIONS,
                          until=lambda rs: len(_predicted_ids(rs)) >= 200, timeout_s=90)
    assert worker.alive(), worker.log()[-3000:]
    ids = _predicted_ids(preds)
    assert len(ids) == 200 and max(ids.values()) == 1
    for p in values(preds):
        assert tuple(p)[:len(contract.PREDICTION_FIELDS)] == contract.PREDICTION_FIELDS
        assert 0.0 <= p["score"] <= 1.0 and p["predicted"] == (p["score"] > 0.5)
        assert p["model"] == "default" and p["latency_ms"] >= 0
    snap = await latest_metrics(settings, until=lambda m: m["labels"]["learned"] >= 200)
    assert snap["labels"]["joined"] >= 200
    assert snap["prequential"]["cumulative"]["accuracy"] > 0.6
    # the worker's start-up objects were frozen out of the cyclic GC (``lifecycle.gc_freeze``)
    assert snap["gc"]["frozen"] > 10_000 and len(snap["gc"]["collections"]) == 3


async def test_every_bad_input_is_dead_lettered_with_its_source_position(engine) -> None:
    settings, _ = engine
    bad = {
        "invalid_json": b'{"event_id": "x",',
        "schema": orjson.dumps({"event_id": "dl-s", "entity_id": "a", "timestamp": 1.0}),
        "non_finite": b'{"event_id":"dl-n","entity_id":"a","timestamp":1,"features":{"v":NaN}}',
        "out_of_range": event("dl-o", v=1e300),
        "too_large": event("dl-t", pad="x" * 5000),
    }
    positions = await produce(settings, contract.EVENTS,
                              [(b"k", raw) for raw in bad.values()], partition=1)
    good = await produce(settings, contract.EVENTS, [(b"a", event("dl-good", v=1.0))], partition=1)
    dead = await collect(settings, contract.DEAD_LETTERS,
                         until=lambda rs: len(rs) >= len(bad), timeout_s=60)
    by_offset = {d["offset"]: d for d in values(dead) if d["partition"] == 1}
    for (reason, raw), (part, offset) in zip(bad.items(), positions, strict=True):
        d = by_offset[offset]
        assert d["reason"] == reason, d
        assert d["source_topic"] == settings.topic(contract.EVENTS) and d["partition"] == part
        assert d["error"]
        if reason == "too_large":
            assert raw.decode().startswith(d["payload"]) and len(d["payload"]) == 4096
        else:
            assert d["payload"] == raw.decode()
    preds = await collect(settings, contract.PREDICTIONS,
                          until=lambda rs: "dl-good" in _predicted_ids(rs), timeout_s=30)
    assert _predicted_ids(preds)["dl-good"] == 1
    assert good


async def test_duplicate_event_ids_get_one_prediction_and_are_counted(engine) -> None:
    settings, _ = engine
    before = await latest_metrics(settings, until=lambda m: True)
    await produce(settings, contract.EVENTS, [(b"d", event("dup-1", "d", v=1.0))])
    await produce(settings, contract.EVENTS, [(b"d", event("dup-1", "d", v=2.0)),
                                              (b"d", event("dup-2", "d", v=3.0))])
    preds = await collect(settings, contract.PREDICTIONS,
                          until=lambda rs: "dup-2" in _predicted_ids(rs), timeout_s=30)
    ids = _predicted_ids(preds)
    assert ids["dup-1"] == 1 and ids["dup-2"] == 1
    after = await latest_metrics(
        settings, until=lambda m: m["events"]["duplicates"] > before["events"]["duplicates"])
    assert after["events"]["duplicates"] == before["events"]["duplicates"] + 1


async def test_a_label_before_its_event_is_learned_once_the_event_is_scored(engine) -> None:
    settings, _ = engine
    before = await latest_metrics(settings, until=lambda m: True)
    await produce(settings, contract.LABELS, [(b"early-1", label("early-1", True))])
    parked = await latest_metrics(
        settings, until=lambda m: m["labels"]["parked"] > before["labels"]["parked"])
    assert parked["labels"]["learned"] == before["labels"]["learned"]
    await produce(settings, contract.EVENTS, [(b"e", event("early-1", "e", v=5.0))])
    after = await latest_metrics(
        settings, until=lambda m: m["labels"]["learned"] > before["labels"]["learned"])
    assert after["labels"]["learned"] == before["labels"]["learned"] + 1
    # the same label again is a duplicate, not a second lesson
    await produce(settings, contract.LABELS, [(b"early-1", label("early-1", True))])
    again = await latest_metrics(
        settings, until=lambda m: m["labels"]["duplicate"] > before["labels"]["duplicate"])
    assert again["labels"]["learned"] == after["labels"]["learned"]


async def test_exactly_one_outcome_per_event_over_mixed_traffic(engine) -> None:
    settings, worker = engine
    records: list[tuple[bytes, bytes]] = []
    expected_dead: set[str] = set()
    expected_pred: set[str] = set()
    for i in range(2000):
        eid = f"mix-{i}"
        kind = i % 10
        if kind == 3:
            raw = f'{{"event_id":"{eid}","entity_id":"m","timestamp":1,"features":{{"v":NaN}}}}'.encode()
            expected_dead.add(eid)
        elif kind == 7:
            raw = orjson.dumps({"event_id": eid, "entity_id": "m", "features": {}})
            expected_dead.add(eid)
        else:
            raw = event(eid, f"m{i % 17}", v=math.sin(i), c="red" if i % 2 else "blue")
            expected_pred.add(eid)
            if kind == 5:  # a repeat of an earlier id: no second outcome
                records.append((b"m", event(f"mix-{i - 1}", "m", v=0.0)))
        records.append((b"m", raw))
    await produce(settings, contract.EVENTS, records)

    def dead_ids(rs: list) -> set[str]:
        out = set()
        for d in values(rs):
            payload = d["payload"]
            for eid in expected_dead:
                if f'"{eid}"' in payload:
                    out.add(eid)
        return out

    preds = await collect(settings, contract.PREDICTIONS,
                          until=lambda rs: expected_pred <= set(_predicted_ids(rs)), timeout_s=90)
    ids = _predicted_ids(preds)
    mine = {k: v for k, v in ids.items() if k.startswith("mix-")}
    assert set(mine) == expected_pred
    assert max(mine.values()) == 1
    dead = await collect(settings, contract.DEAD_LETTERS,
                         until=lambda rs: len([1 for d in values(rs) if '"mix-' in d["payload"]])
                         >= len(expected_dead), timeout_s=60)
    mixed_dead = [d for d in values(dead) if '"mix-' in d["payload"]]
    assert len(mixed_dead) == len(expected_dead)
    assert dead_ids(dead) == expected_dead
    assert not (expected_dead & set(mine))
    assert worker.alive()
