"""Load the HTTP API from a second process; the seed's pattern side by side in the same run.

    python bench/http_load.py [--rate 500] [--seconds 10] [--rounds 2] [--stream 20000]

Starts a real worker (``bench/fraud-bench.toml``: 49 per-entity aggregates read from and
written to Redis for every event) serving the HTTP API, and ``bench/seed_http.py`` (FastAPI, a
pickled River model, no features, no key) on the same model spec; then, from this process:

1. **single**: open loop at ``--rate`` requests/s of one fresh event each, against ours and the
   seed's in turn, ``--rounds`` times. A request's latency counts from when it was due, so a
   server that falls behind is charged its queue (no coordinated omission).
2. **batch**: ``{"events": [100 events]}``, closed loop, 2 in flight: events/s.
3. **stream**: ``--stream`` events published to Kafka, the worker's events/s from its
   ``predictions`` record timestamps, without and then with the single-event load at ``--rate``.

This process runs no cyclic GC while it measures an open loop (its own full passes were
charged to the servers as latency). Prints throughput and p50/p95/p99 (ms); figures go to
``bench/RESULTS.md`` by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import pickle
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import (  # noqa: E402
    DEFAULT_CONFIG,
    Proc,
    bench_settings,
    busy_neighbours,
    cleanup,
    ensure,
    new_tag,
    percentiles,
    publish_all,
    rate_between,
    read_topic,
    start_worker,
)
from models.spec import build_model  # noqa: E402
from stream_app import contract  # noqa: E402
from stream_app.http.auth import new_key  # noqa: E402
from stream_app.tools.datasets import synthetic  # noqa: E402

_URL = re.compile(r"HTTP API on (http://[0-9.]+:[0-9]+)")


def _events(prefix: str, n: int, seed: int) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(synthetic(seed, n, n_entities=500, start=time.time(), step_s=0.001)):
        ev = dict(item.event)
        ev["event_id"] = f"{prefix}-{i}"
        out.append(ev)
    return out


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """No cyclic GC in this process while it measures: its own full passes (100-160 ms here,
    over the requests it keeps) were charged to the server as latency."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def _open_loop(url: str, headers: dict[str, str], bodies: Iterable[bytes], rate: float,
                     stop: asyncio.Event | None = None) -> dict[str, Any]:
    """One request per body at ``rate``/s (until ``stop``); latency from each one's due time."""
    with _no_gc_pauses():
        return await _open_loop_measured(url, headers, bodies, rate, stop)


async def _open_loop_measured(url: str, headers: dict[str, str], bodies: Iterable[bytes],
                              rate: float, stop: asyncio.Event | None) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
        loop = asyncio.get_running_loop()

        async def one(due: float, body: bytes) -> None:
            async with session.post(url, data=body,
                                    headers={"content-type": "application/json"}) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            latencies.append((loop.time() - due) * 1000.0)

        tasks = []
        t0 = loop.time() + 0.05
        for i, body in enumerate(bodies):
            if stop is not None and stop.is_set():
                break
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            tasks.append(asyncio.ensure_future(one(due, body)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - t0
    return {"rps": len(tasks) / elapsed, "statuses": statuses, **percentiles(latencies)}


def _lazy(prefix: str, seed: int) -> Iterator[bytes]:
    """Fresh events for ever, made as they are sent."""
    for i, item in enumerate(synthetic(seed, 10**9, n_entities=500, start=time.time(),
                                       step_s=0.001)):
        yield orjson.dumps(dict(item.event, event_id=f"{prefix}-{i}"))


async def _closed_loop(url: str, headers: dict[str, str], bodies: list[bytes], in_flight: int
                       ) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession(headers=headers) as session:
        async def runner() -> None:
            while queue:
                body = queue.pop()
                t = time.perf_counter()
                async with session.post(url, data=body,
                                        headers={"content-type": "application/json"}) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append((time.perf_counter() - t) * 1000.0)

        t0 = time.perf_counter()
        await asyncio.gather(*(runner() for _ in range(in_flight)))
        elapsed = time.perf_counter() - t0
    return {"requests_per_s": len(bodies) / elapsed, "statuses": statuses,
            **percentiles(latencies)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_url(proc: Proc, pattern: re.Pattern[str] | None, url: str | None,
                    timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline and proc.alive():
            if pattern is not None:
                found = pattern.findall(proc.tail(200_000))
                if found:
                    return found[0]
            else:
                try:
                    async with session.get(f"{url}/openapi.json") as r:
                        if r.status == 200:
                            return url  # type: ignore[return-value]
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"server did not come up:\n{proc.tail()}")


def _line(name: str, r: dict[str, Any]) -> str:
    rate = r.get("rps") or r.get("requests_per_s")
    return (f"{name:34} {rate:8.1f} req/s  p50 {r['p50']:7.2f}  p95 {r['p95']:7.2f}  "
            f"p99 {r['p99']:7.2f}  max {r['max']:7.1f} ms  {r['statuses']}")


async def _stream_rate(settings: Any, prefix: str, n: int, seed: int) -> float:
    events = _events(prefix, n, seed)
    topic = settings.topic(contract.EVENTS)
    await publish_all(settings, [(topic, e["entity_id"].encode(), orjson.dumps(e))
                                 for e in events])
    deadline = time.monotonic() + 300
    stamps: list[int] = []
    while len(stamps) < n and time.monotonic() < deadline:  # until the worker has them all
        got = await read_topic(settings, settings.topic(contract.PREDICTIONS), timeout_s=120,
                               idle_s=2)
        stamps = [ts for k, ts in zip(got.keys, got.timestamps_ms, strict=True)
                  if k and k.startswith(prefix.encode())]
    if len(stamps) < n:
        print(f"  (only {len(stamps)} of {n} {prefix} predictions seen)")
    return rate_between(stamps)[0]


async def amain(args: argparse.Namespace) -> None:
    tag = new_tag()
    tmp = Path(tempfile.mkdtemp(prefix="http-bench-"))
    key, entry = new_key("bench")
    settings = bench_settings(tag, "http", config=str(DEFAULT_CONFIG), no_features=False,
                              data_dir=tmp, http_enabled=True, http_port=0, api_keys=(entry,),
                              log_level="info", http={"rate_per_s": 1e6, "burst": 1_000_000,
                                                     "await_delivery": not args.no_wait})
    await ensure(settings)
    model = build_model(settings.model)
    for item in synthetic(1, 500, n_entities=50, start=time.time(), step_s=0.01):
        model.learn_one({k: float(v) for k, v in item.event["features"].items()
                         if type(v) in (int, float)}, bool(item.label))
    model_path = tmp / "model.pkl"
    model_path.write_bytes(pickle.dumps(model.pipeline))
    seed_port = _free_port()
    worker = start_worker(settings, tmp / "worker.log")
    seed = Proc([sys.executable, str(Path(__file__).with_name("seed_http.py")), str(model_path),
                 str(seed_port)], {}, tmp / "seed.log")
    try:
        ours = await _wait_url(worker, _URL, None)
        theirs = await _wait_url(seed, None, f"http://127.0.0.1:{seed_port}")
        print(f"busy neighbours: {busy_neighbours() or 'none'}\n"
              f"http.await_delivery = {not args.no_wait}")
        auth = {"Authorization": f"Bearer {key}"}
        n = int(args.rate * args.seconds)
        targets = [("stream-app /v1/predict (Redis features)", f"{ours}/v1/predict", auth),
                   ("seed pattern /predict (no features)", f"{theirs}/predict", {})]
        for name, url, headers in targets:  # warm up both
            await _open_loop(url, headers, [orjson.dumps(e) for e in _events(
                f"w{len(name)}", 300, 3)], 200)
        print(f"single events, open loop at {args.rate:g}/s for {args.seconds:g} s:")
        for rnd in range(args.rounds):
            for j, (name, url, headers) in enumerate(targets):
                bodies = [orjson.dumps(e) for e in _events(f"s{rnd}{j}", n, 10 + rnd)]
                print("  " + _line(name, await _open_loop(url, headers, bodies, args.rate)))
        batches = [orjson.dumps({"events": _events(f"b{i}", 100, 100 + i)})
                   for i in range(args.batches)]
        r = await _closed_loop(f"{ours}/v1/predict", auth, batches, 2)
        print(f"batches of 100, closed loop, 2 in flight: {r['requests_per_s'] * 100:,.0f} "
              f"events/s\n  " + _line("stream-app /v1/predict x100", r))
        if args.stream:
            alone = await _stream_rate(settings, "q0", args.stream, 7)
            stop = asyncio.Event()
            load = asyncio.create_task(_open_loop(f"{ours}/v1/predict", auth, _lazy("hq", 8),
                                                  args.rate, stop))
            await asyncio.sleep(1.0)
            loaded = await _stream_rate(settings, "q1", args.stream, 9)
            stop.set()
            during = await load
            print(f"stream: {alone:,.0f} events/s alone, {loaded:,.0f} events/s with HTTP at "
                  f"{args.rate:g}/s ({loaded / max(alone, 1e-9):.0%})\n  " + _line("HTTP meanwhile", during))
    finally:
        seed.stop()
        worker.stop()
        await cleanup(settings, tag, [settings.app_id])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batches", type=int, default=300, help="batches of 100 in the batch phase")
    p.add_argument("--no-wait", action="store_true",
                   help="http.await_delivery = false: answer once committed in Redis")
    p.add_argument("--stream", type=int, default=20_000,
                   help="events per stream phase (0: skip the stream phases)")
    asyncio.run(amain(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
