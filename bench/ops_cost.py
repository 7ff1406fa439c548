"""What the ops layer costs: the quality monitors per batch, and one /metrics scrape.

    python bench/ops_cost.py [--batches 200] [--batch 500] [--features 10] [--rounds 3]

1. ``QualityMonitor.observe`` alone, per batch (every event's time, a sample's names);
2. ``Engine.process_events`` on the memory store, quality on vs off, interleaved rounds: the
   monitors' share of the whole flow;
3. ``generate_latest`` of a worker's registry once drift, latency sketches and quality hold
   state (what a scrape costs the event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import orjson
from prometheus_client import generate_latest

from stream_app.ops.prometheus import make_registry
from stream_app.ops.quality import QualityMonitor
from stream_app.ops.settings import QualitySettings
from stream_app.ops.view import WorkerView
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record
from stream_app.settings import load_settings


def events(n: int, features: int, seed: int, start: int = 0) -> list[Record]:
    """``n`` event records with ``features`` Gaussian features, ids from ``start`` (also used by
    ``bench/dashboard_cost.py``)."""
    rng = random.Random(seed)
    now = time.time()
    out = []
    for i in range(start, start + n):
        f = {f"f{j}": rng.gauss(0, 1) for j in range(features)}
        body = {"event_id": f"e{i}", "entity_id": f"u{i % 1000}", "timestamp": now, "features": f}
        out.append(Record("events", 0, i, b"k", orjson.dumps(body), now))
    return out


def monitor_alone(batches: int, batch: int, features: int) -> float:
    recs = events(batch, features, 1)
    feats = [orjson.loads(r.value)["features"] for r in recs]
    ts = [time.time()] * batch
    q = QualityMonitor(QualitySettings(), topic="drift")
    t0 = time.perf_counter()
    for _ in range(batches):
        q.observe(feats, ts, now=time.time())
    return (time.perf_counter() - t0) / batches * 1e6


async def engine_round(quality: bool, batches: int, batch: int, features: int) -> float:
    settings = load_settings(environ={}, feature_store_url="memory://", lifecycle={"enabled": False},
                             quality={"enabled": quality})
    engine = Engine(settings)
    engine.learning_enabled = True
    await engine.start()
    spent = 0.0
    for b in range(batches):
        recs = events(batch, features, b, start=b * batch)
        t0 = time.perf_counter()
        await engine.process_events(recs)
        spent += time.perf_counter() - t0
    await engine.aclose()
    return spent / (batches * batch) * 1e6


async def scrape_cost(features: int) -> tuple[float, int]:
    settings = load_settings(environ={}, feature_store_url="memory://", lifecycle={"enabled": False},
                             drift={"window": 200, "check_every": 100})
    engine = Engine(settings)
    await engine.start()
    for b in range(20):
        await engine.process_events(events(500, features, b, start=b * 500))
    registry = make_registry(WorkerView(settings=settings, engine=lambda: engine,
                                        consumer=lambda: None))
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        text = generate_latest(registry)
    await engine.aclose()
    return (time.perf_counter() - t0) / n * 1e3, len(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    alone = [monitor_alone(a.batches, a.batch, a.features) for _ in range(a.rounds)]
    print(f"QualityMonitor.observe, batch of {a.batch}, {a.features} features: "
          f"median {statistics.median(alone):.0f} us/batch "
          f"({statistics.median(alone) / a.batch:.3f} us/event); rounds {[round(x) for x in alone]}")
    on, off = [], []
    for _ in range(a.rounds):  # interleaved: the machine's noise hits both alike
        off.append(asyncio.run(engine_round(False, a.batches // 4, a.batch, a.features)))
        on.append(asyncio.run(engine_round(True, a.batches // 4, a.batch, a.features)))
    mon, moff = statistics.median(on), statistics.median(off)
    print(f"Engine.process_events (memory store): quality off {moff:.2f} us/event, on "
          f"{mon:.2f} us/event ({(mon / moff - 1) * 100:+.1f} %); rounds off "
          f"{[round(x, 2) for x in off]} on {[round(x, 2) for x in on]}")
    ms, size = asyncio.run(scrape_cost(a.features))
    print(f"one /metrics scrape (generate_latest, {a.features} drift subjects): {ms:.2f} ms, "
          f"{size:,} bytes")


if __name__ == "__main__":
    main()
