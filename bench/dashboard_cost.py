"""What the live dashboard costs the worker's event loop, and how much memory its rings hold.

    python bench/dashboard_cost.py [--features 10] [--samples 600]

An engine on the memory store with a drift subject per feature and latency sketches holding
state; a :class:`Dashboard` sampled ``--samples`` times (a batch of 500 events between two
samples, so every series moves); then the median time of one sample (what a request costs at
most once a second), the bytes of one ``/dashboard/data`` answer for the whole ring and for the
last sample (what the page fetches each second), and the memory a second dashboard holds
after as many samples (tracemalloc, traces allocated under ``stream_app/ops`` frames).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc

import orjson
from ops_cost import events  # the same synthetic batches

from stream_app.ops.dashboard import Dashboard
from stream_app.ops.view import WorkerView
from stream_app.pipeline.engine import Engine
from stream_app.settings import load_settings


async def main(features: int, samples: int) -> None:
    settings = load_settings(environ={}, feature_store_url="memory://", lifecycle={"enabled": False},
                             drift={"window": 200, "check_every": 100})
    engine = Engine(settings)
    await engine.start()
    view = WorkerView(settings=settings, engine=lambda: engine, consumer=lambda: None)
    board = Dashboard(view, interval_s=0.0, points=samples)
    spent = []
    for b in range(samples):  # timed without tracemalloc
        await engine.process_events(events(500, features, b, start=b * 500))
        t0 = time.perf_counter()
        await board.sample()
        spent.append(time.perf_counter() - t0)
    tracemalloc.start(30)  # a second board, counting what is allocated under its own frames
    second = Dashboard(view, interval_s=0.0, points=samples)
    for b in range(samples, 2 * samples):
        await engine.process_events(events(100, features, b, start=b * 500))
        await second.sample()
    ops = tracemalloc.Filter(True, "*/stream_app/ops/*", all_frames=True)
    rings_bytes = sum(t.size for t in tracemalloc.take_snapshot().filter_traces([ops]).traces)
    tracemalloc.stop()
    full = orjson.dumps(board.rings.since(None))
    last = orjson.dumps(await board.payload(board.rings.t[-2]))
    series = len(board.rings.since(None)["series"])  # type: ignore[arg-type]
    await engine.aclose()
    print(f"features {features}, {series} series x {samples} samples")
    print(f"one sample: median {statistics.median(spent) * 1e3:.2f} ms, "
          f"max {max(spent) * 1e3:.2f} ms")
    print(f"/dashboard/data: whole ring {len(full) / 1024:.0f} KiB, one new sample "
          f"{len(last) / 1024:.1f} KiB (state included)")
    print(f"memory the dashboard holds (rings, state; allocated under its frames) "
          f"{rings_bytes / 1024:.0f} KiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--samples", type=int, default=600)
    args = ap.parse_args()
    asyncio.run(main(args.features, args.samples))
