"""The HTTP API through the real server (a worker process), on real Kafka and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from stream_app import contract
from tests.http_helpers import Served, serving
from tests.kafka_helpers import collect, label, latest_metrics, produce, values

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(_service_urls: tuple[str, str, bool],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(_service_urls, tmp_path_factory.mktemp("http"),
                 http={"max_body_bytes": 64 * 1024, "max_batch": 100},
                 features={"aggregates": [{"feature": "x", "stats": ["count", "mean"],
                                           "windows": []}]}) as s:
        yield s


def _event(event_id: str, entity: str = "alice", **features: object) -> dict[str, object]:
    return {"event_id": event_id, "entity_id": entity, "timestamp": time.time(),
            "features": features or {"x": 1.0}}


async def test_without_a_valid_key_every_v1_call_is_401(served: Served) -> None:
    async with served.client() as c:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer sk_00000000_nope"},
                        {"Authorization": f"Bearer {served.key}x"}):
            r = await c.post("/v1/predict", json=_event("k1"), headers=headers)
            assert r.status_code == 401, r.text
        assert (await c.get("/v1/models", headers={"Authorization": ""})).status_code == 401
        assert (await c.get("/v1/models", headers={"Authorization": "",
                                                   "X-API-Key": served.key})).status_code == 200
    assert served.key not in served.worker.log()
    assert "key=- POST /v1/predict status=401" in served.worker.log()


async def test_one_event_answers_with_its_prediction(served: Served) -> None:
    async with served.client() as c:
        r = await c.post("/v1/predict", json=_event("p1", x=3.0))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["event_id"] == "p1" and isinstance(body["predicted"], bool)
    assert set(body) == {"event_id", "score", "predicted", "model", "model_version",
                         "model_snapshot", "latency_ms"}
    assert body["score"] == round(body["score"], 3)  # http.score_precision
    got = await collect(served.settings, contract.PREDICTIONS,
                        until=lambda rs: any(v["event_id"] == "p1" for v in values(rs)))
    [stream] = [v for v in values(got) if v["event_id"] == "p1"]
    assert round(stream["score"], 3) == body["score"] and stream["entity_id"] == "alice"
    assert "key=tests POST /v1/predict status=200" in served.worker.log()


async def test_a_batch_answers_each_event_in_order(served: Served) -> None:
    events = [_event(f"b{i}", entity=f"e{i % 7}", x=float(i)) for i in range(100)]
    async with served.client() as c:
        r = await c.post("/v1/predict", json={"events": events})
        too_many = await c.post("/v1/predict", json={"events": events + [_event("b100")]})
    assert r.status_code == 200, r.text
    assert [p["event_id"] for p in r.json()["predictions"]] == [e["event_id"] for e in events]
    assert not any(p["duplicate"] for p in r.json()["predictions"])
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["type"] == "too_many"


async def test_a_repeated_id_is_409_with_the_first_prediction_and_scored_once(
        served: Served) -> None:
    async with served.client() as c:
        first = await c.post("/v1/predict", json=_event("d1", x=1.0))
        again = await c.post("/v1/predict", json=_event("d1", x=1000.0))
        await produce(served.settings, contract.EVENTS,
                      [(b"alice", orjson.dumps(_event("d1", x=5.0)))])
        # and the other way round: first from Kafka, then over HTTP
        await produce(served.settings, contract.EVENTS,
                      [(b"bob", orjson.dumps(_event("k-first", "bob", x=2.0)))])
        preds = await collect(served.settings, contract.PREDICTIONS, until=lambda rs: any(
            v["event_id"] == "k-first" for v in values(rs)))
        late = await c.post("/v1/predict", json=_event("k-first", "bob", x=9.0))
        batch = await c.post("/v1/predict", json={"events": [_event("d2"), _event("d1"),
                                                             _event("d2")]})
    assert first.status_code == 200 and again.status_code == 409, again.text
    assert again.json() == first.json()
    assert late.status_code == 409
    [k_first] = [v for v in values(preds) if v["event_id"] == "k-first"]
    assert late.json()["score"] == round(k_first["score"], 3)
    assert [p["duplicate"] for p in batch.json()["predictions"]] == [False, True, True]
    snap = await latest_metrics(served.settings, until=lambda m: m["events"]["duplicates"] >= 4)
    assert snap["events"]["duplicates"] >= 4
    preds = await collect(served.settings, contract.PREDICTIONS, until=lambda rs: any(
        v["event_id"] == "d2" for v in values(rs)))
    ids = [v["event_id"] for v in values(preds)]
    assert ids.count("d1") == 1 and ids.count("k-first") == 1 and ids.count("d2") == 1


async def test_an_http_scored_event_whose_label_comes_on_labels_is_learned_once(
        served: Served) -> None:
    async with served.client() as c:
        scored = await c.post("/v1/predict", json=_event("l1", "carol", x=2.0))
        before = await latest_metrics(served.settings, until=lambda m: m["learning_enabled"])
        sent = await c.post("/v1/labels", json={"event_id": "l1", "label": True,
                                                "timestamp": time.time()})
        # the same label once more, straight on the topic: still one learn
        await produce(served.settings, contract.LABELS, [(b"l1", label("l1", True))])
        bad = await c.post("/v1/labels", json=[{"event_id": "l2", "label": [1],
                                                "timestamp": 1.0}])
    assert scored.status_code == 200 and sent.status_code == 202, sent.text
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "label"]
    learned = before["labels"]["learned"]
    snap = await latest_metrics(served.settings, until=lambda m: (
        m["labels"]["learned"] >= learned + 1 and m["labels"]["duplicate"]
        >= before["labels"]["duplicate"] + 1))
    assert snap["labels"]["learned"] == learned + 1


async def test_bad_bodies_are_413_and_422_with_the_field_and_the_reason(served: Served) -> None:
    base = b'{"event_id": "v1", "entity_id": "a", "timestamp": 1, "features": {"x": %s}}'
    async with served.client() as c:
        big = await c.post("/v1/predict", content=b" " * (64 * 1024 + 1),
                           headers={"content-type": "application/json"})
        nan = await c.post("/v1/predict", content=base % b"NaN")
        inf = await c.post("/v1/predict", content=base % b"-Infinity")
        huge = await c.post("/v1/predict", content=base % b"1e13")
        extra = await c.post("/v1/predict", json=_event("v1") | {"admin": True})
        batch = await c.post("/v1/predict", json={"events": [_event("v2"), {"event_id": 3}]})
        garbage = await c.post("/v1/predict", content=b"{oops")
    assert big.status_code == 413
    for r, loc, reason in ((nan, ["body", "features", "x"], "non_finite"),
                           (inf, ["body", "features", "x"], "non_finite"),
                           (huge, ["body", "features", "x"], "out_of_range"),
                           (extra, ["body", "admin"], "extra_forbidden"),
                           (batch, ["body", "events", 1, "event_id"], "schema"),
                           (garbage, ["body"], "invalid_json")):
        assert r.status_code == 422, r.text
        assert (r.json()["detail"][0]["loc"], r.json()["detail"][0]["type"]) == (loc, reason)
    assert "v2" not in await _predicted(served, "v1")  # all or nothing: v2 was not scored


async def _predicted(served: Served, marker: str) -> list[str]:
    async with served.client() as c:  # a marker event, so the topic is read far enough
        await c.post("/v1/predict", json=_event(f"marker-{marker}"))
    got = await collect(served.settings, contract.PREDICTIONS, until=lambda rs: any(
        v["event_id"] == f"marker-{marker}" for v in values(rs)))
    return [v["event_id"] for v in values(got)]


async def test_a_redacted_field_never_appears_in_a_dead_letter(served: Served) -> None:
    secret, card = "mallory@example.com", "4111 1111 1111 1111"
    bad = (b'{"event_id": "r1", "entity_id": "a", "timestamp": 1, "features": {"x": NaN, '
           b'"email": "%s", "note": "card %s"}}' % (secret.encode(), card.encode()))
    async with served.client() as c:
        r = await c.post("/v1/predict", content=bad)
        schema = await c.post("/v1/predict", json=_event("r2", x=[1]) | {"email": secret})
    assert r.status_code == 422 and schema.status_code == 422
    await produce(served.settings, contract.EVENTS, [(b"a", bad.replace(b"r1", b"r3"))])
    letters = await collect(served.settings, contract.DEAD_LETTERS, until=lambda rs: {
        "r1", "r2", "r3"} <= {v["payload"] for v in values(rs)} or sum(
        any(f'"{i}"' in v["payload"] for i in ("r1", "r2", "r3")) for v in values(rs)) >= 3)
    mine = [v for v in values(letters) if any(f'"{i}"' in v["payload"] for i in ("r1", "r2",
                                                                                   "r3"))]
    assert len(mine) == 3, mine
    assert {v["source_topic"] for v in mine} == {"http", served.settings.topic("events")}
    for v in mine:
        text = orjson.dumps(v).decode()
        assert secret not in text and card not in text and "[redacted]" in text
    await asyncio.sleep(0)


async def test_features_models_and_drift_answer(served: Served) -> None:
    async with served.client() as c:
        await c.post("/v1/predict", json=_event("f1", "dave", x=4.0))
        feats = await c.get("/v1/features/dave")
        unknown = await c.get("/v1/features/nobody-at-all")
        models = await c.get("/v1/models")
        model = await c.get(f"/v1/models/{served.settings.model.name}")
        missing = await c.get("/v1/models/..")
        drift = await c.get("/v1/drift")
        spec = await c.get("/openapi.json", headers={"Authorization": ""})
    assert feats.status_code == 200 and feats.json()["entity_id"] == "dave"
    assert feats.json()["features"]["x_count_by_entity"] == 1.0
    assert unknown.status_code == 404
    assert models.status_code == 200 and served.settings.model.name in models.json()
    assert model.status_code == 200 and model.json()["versions"]
    assert missing.status_code == 404
    assert drift.status_code == 200 and "workers" in drift.json()
    assert spec.status_code == 200 and "/v1/predict" in spec.json()["paths"]


def test_past_the_bucket_is_429_with_retry_after(_service_urls: tuple[str, str, bool],
                                                 tmp_path: Path) -> None:
    import httpx

    with serving(_service_urls, tmp_path, http={"rate_per_s": 0.01, "burst": 3}) as s:
        with httpx.Client(base_url=s.url, headers=s.headers, timeout=30.0) as c:
            codes = [c.get("/v1/models").status_code for _ in range(4)]
            last = c.get("/v1/models")
    assert codes == [200, 200, 200, 429]
    assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1


async def test_metrics_and_probes_answer_on_the_api_port_without_a_key(served: Served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(base_url=served.url, timeout=30.0) as c:  # no key
        await c.post("/v1/predict", json=_event("m1", "erin", x=1.0),
                     headers=served.headers)
        metrics = await c.get("/metrics")
        alive = await c.get("/healthz")
        ready = await c.get("/readyz")
        refused = await c.post("/v1/predict", json=_event("m2", "erin", x=1.0))
    assert metrics.status_code == 200 and alive.status_code == 200
    families = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert "stream_events_predicted" in families  # counters are named without _total here
    assert ready.status_code in (200, 503) and "checks" in ready.json()
    assert refused.status_code == 401
