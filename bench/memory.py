"""Is the worker's memory flat over a long stream?

Pre-publishes ``--events`` synthetic events (default 1,000,000) and a label for each to a fresh
topic prefix (streamed: the script never holds the data set), then runs one real
``python -m stream_app worker`` over them for at most ``--max-seconds`` (default 600). Every
``--interval`` seconds it samples the worker's RSS, the predictions produced so far (end offsets
of ``predictions``) and Redis ``used_memory``. At the end it prints the samples, the RSS growth
per 100k events after the first ``--warmup-events`` (least squares), and a verdict: flat when
that slope is below ``--flat-mib`` MiB per 100k events. Redis growth per event is printed too
(snapshots and claims live for the label horizon, so Redis is *expected* to grow).

    python bench/memory.py                         # 1M events, features from bench/fraud-bench.toml
    python bench/memory.py --events 300000 --max-seconds 240 --no-features
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from benchlib import (  # noqa: E402
    DEFAULT_CONFIG,
    bench_settings,
    cleanup,
    latest_metrics,
    new_tag,
    publish_all,
    start_worker,
)

from stream_app import contract  # noqa: E402
from stream_app.kafka_io import ensure_topics  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.tools.datasets import synthetic  # noqa: E402


async def publish_stream(settings: Settings, n: int, *, seed: int, entities: int,
                         spacing_s: float, labels: bool) -> float:
    """Stream ``n`` synthetic events (and labels) to the topics; return seconds taken."""
    events_topic, labels_topic = settings.topic(contract.EVENTS), settings.topic(contract.LABELS)

    def records() -> Iterator[tuple[str, bytes, bytes]]:  # generated as sent: 1M would not fit
        for item in synthetic(seed, n, n_entities=entities, start=time.time(), step_s=spacing_s):
            ev = item.event
            yield events_topic, ev["entity_id"].encode(), orjson.dumps(ev)
            if labels:
                yield labels_topic, ev["event_id"].encode(), orjson.dumps(
                    {"event_id": ev["event_id"], "label": item.label,
                     "timestamp": ev["timestamp"]})

    return await publish_all(settings, records())


async def redis_used(url: str) -> int | None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis.asyncio as aredis

    r = aredis.Redis.from_url(url)
    try:
        return int((await r.info("memory"))["used_memory"])
    finally:
        await r.aclose()


async def predictions_so_far(consumer: Any, tps: list[Any]) -> int:
    ends = await consumer.end_offsets(tps)
    return sum(ends.values())


def slope_per_100k(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys (MiB) against xs (events), scaled to MiB per 100k events."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx * 100_000


async def amain(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tag = new_tag()
    with tempfile.TemporaryDirectory(prefix="stream-mem-") as tmpdir:
        tmp = Path(tmpdir)
        settings = bench_settings(tag, "memory", config=args.config, no_features=args.no_features,
                                  data_dir=tmp, partitions=args.partitions)
        try:
            await ensure_topics(settings)
            secs = await publish_stream(settings, args.events, seed=args.seed,
                                        entities=args.entities, spacing_s=args.spacing_ms / 1000,
                                        labels=not args.no_labels)
            print(f"published {args.events:,} events{'' if args.no_labels else ' + labels'} "
                  f"in {secs:.0f} s", flush=True)
            redis0 = await redis_used(settings.store_url)
            worker = start_worker(settings, tmp / "memory-worker.log")
            consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                        group_id=None, enable_auto_commit=False)
            await consumer.start()
            samples: list[tuple[float, int, int, int | None]] = []
            t0 = time.monotonic()
            try:
                topic = settings.topic(contract.PREDICTIONS)
                tps = [TopicPartition(topic, p) for p in range(args.partitions)]
                print(f"{'t_s':>6} {'predictions':>12} {'rss_MiB':>8} {'redis_MiB':>10}")
                while worker.alive() and time.monotonic() - t0 < args.max_seconds:
                    done = await predictions_so_far(consumer, tps)
                    rss = worker.rss()
                    used = await redis_used(settings.store_url)
                    samples.append((time.monotonic() - t0, done, rss, used))
                    print(f"{samples[-1][0]:6.0f} {done:12,d} {rss / 2**20:8.1f} "
                          f"{(used or 0) / 2**20:10.1f}", flush=True)
                    if done >= args.events:
                        break
                    await asyncio.sleep(args.interval)
                snap = await latest_metrics(settings, timeout_s=10, alive=worker.alive,
                                            until=lambda s: True)
            finally:
                await consumer.stop()
                worker.stop()
            report(args, samples, redis0, snap)
        finally:
            if not args.keep:
                await cleanup(settings, tag, [settings.app_id])
    return 0


def report(args: argparse.Namespace, samples: list[tuple[float, int, int, int | None]],
           redis0: int | None, snap: dict[str, Any] | None) -> None:
    steady = [s for s in samples if s[1] >= args.warmup_events]
    xs = [float(s[1]) for s in steady]
    ys = [s[2] / 2**20 for s in steady]
    slope = slope_per_100k(xs, ys)
    done = samples[-1][1] if samples else 0
    elapsed = samples[-1][0] if samples else 0.0
    print()
    print(f"processed {done:,} events in {elapsed:.0f} s ({done / max(elapsed, 1e-9):,.0f} ev/s "
          f"incl. startup)")
    if ys:
        print(f"worker RSS after {args.warmup_events:,} events: first {ys[0]:.1f} MiB, "
              f"last {ys[-1]:.1f} MiB, min {min(ys):.1f}, max {max(ys):.1f}")
        half = [s for s in samples if s[1] >= done / 2]
        late = slope_per_100k([float(s[1]) for s in half], [s[2] / 2**20 for s in half])
        flat = late == late and abs(late) < args.flat_mib
        print(f"RSS slope: {slope:+.2f} MiB per 100k events after the warm-up, {late:+.2f} over "
              f"the second half of the run -> {'FLAT' if flat else 'GROWING'} (second half; "
              f"threshold {args.flat_mib} MiB / 100k)")
    marks = list(range(0, done + 1, 100_000))
    rates = []
    for a, b in zip(marks, marks[1:], strict=False):
        ta = next((s[0] for s in samples if s[1] >= a), None)
        tb = next((s[0] for s in samples if s[1] >= b), None)
        if ta is not None and tb is not None and tb > ta:
            rates.append(f"{a // 1000}k-{b // 1000}k: {(b - a) / (tb - ta):,.0f}")
    if rates:
        print("throughput per 100k events (ev/s): " + ", ".join(rates))
    if redis0 is not None and samples and samples[-1][3] is not None and done:
        per_event = (samples[-1][3] - redis0) / done
        print(f"Redis used_memory grew {(samples[-1][3] - redis0) / 2**20:.0f} MiB: "
              f"{per_event:.0f} bytes per event (snapshots + claims + learned marks, kept for "
              "the label horizon)")
    if snap:
        print(f"worker metrics: predicted {snap['events']['predicted']:,}, "
              f"labels learned {snap['labels']['learned']:,}, "
              f"batch ms p50/p99 {snap['stage_ms']['batch']['p50']:.1f}/"
              f"{snap['stage_ms']['batch']['p99']:.1f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="stop the worker after this long, whatever it processed")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup-events", type=int, default=100_000,
                   help="ignore samples before this many predictions for the slope")
    p.add_argument("--flat-mib", type=float, default=1.0,
                   help="|slope| below this many MiB per 100k events counts as flat")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--no-features", action="store_true")
    p.add_argument("--no-labels", action="store_true")
    p.add_argument("--entities", type=int, default=500)
    p.add_argument("--spacing-ms", type=float, default=1.0)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep topics and Redis keys")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        return uvloop.run(amain(args))
    except ImportError:  # pragma: no cover
        return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
