"""CPU cost of the engine alone (``stream_app.pipeline.engine.Engine``), without Kafka or Faust.

Feeds the same synthetic events and labels the throughput benchmark publishes straight into
``Engine.process_events`` / ``Engine.process_labels`` in batches of ``--batch`` (events first,
then that batch's labels; ``--labels-first`` for the other order, which is what pre-published
labels mostly do in the worker: they park and ``commit_batch`` learns them), against the real
Redis online store (or ``--store-url memory://``). Prints microseconds per event for each call
and for each stage the engine times itself (store read, score, store write), the size of the
biggest entity states, and optionally a cProfile of the whole run.

Subtract from the full pipeline's time per event to see what Faust costs:
``1e6 / full_events_per_s - engine_us_per_event``.

    python bench/engine_cost.py                           # 100k events, bench/fraud-bench.toml
    python bench/engine_cost.py --no-features --cprofile 25
    python bench/engine_cost.py --drift-features 20       # drift's share, 20 monitored features
    python bench/engine_cost.py --config bench/peers.toml --numeric 20 --batch 500  # peers' work

``--drift-features N`` replays events with ``N`` numeric features (``f0..``) and monitors all of
them (``drift.features``; the ``channel`` category and the score are monitored too, as by
default). It times the drift stage where the engine calls it (``DriftStage.observe`` per event,
``observe_label`` per label, checks included) and prints it per event; ``--drift off`` runs the
same with ``drift.enabled = false`` and ``drift.performance = false``, to compare whole-engine
figures (an A/B of two runs is noisier than the direct timing).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from benchlib import DEFAULT_CONFIG, Dataset, make_dataset, new_tag  # noqa: E402

from features.store import encode_state  # noqa: E402
from stream_app.pipeline.drift import DriftStage  # noqa: E402
from stream_app.pipeline.engine import Engine  # noqa: E402
from stream_app.pipeline.records import Record, encode  # noqa: E402
from stream_app.settings import DriftSettings, FeatureSettings, load_settings  # noqa: E402
from stream_app.tools.datasets import synthetic  # noqa: E402


def records(topic: str, pairs: list[tuple[bytes, bytes]], partitions: int) -> list[Record]:
    offsets = [0] * partitions
    out = []
    now = time.time()
    for key, value in pairs:
        p = zlib.crc32(key) % partitions
        out.append(Record(topic, p, offsets[p], key, value, now))
        offsets[p] += 1
    return out


async def run(args: argparse.Namespace) -> None:
    tag = new_tag()
    overrides: dict[str, object] = dict(app_id=f"bench-{tag}-engine", topic_prefix=f"bench-{tag}.")
    if args.store_url:
        overrides["feature_store_url"] = args.store_url
    if args.no_features:
        overrides["features"] = FeatureSettings()
    if args.drift_features:
        names = tuple(f"f{j}" for j in range(args.drift_features))
        overrides["drift"] = DriftSettings(features=names) if args.drift == "on" else \
            DriftSettings(enabled=False, performance=False)
    settings = load_settings(args.config, **overrides)
    if args.drift_features:
        ds = wide_dataset(args)
    elif args.numeric:  # the peers' events: N numeric features, no category
        ds = make_dataset(args.events, seed=args.seed, entities=args.entities,
                          spacing_s=args.spacing_ms / 1000.0, zipf=args.zipf,
                          n_features=args.numeric, numeric_only=True)
    else:
        ds = make_dataset(args.events, seed=args.seed, entities=args.entities,
                          spacing_s=args.spacing_ms / 1000.0, zipf=args.zipf)
    evs = records(settings.topic("events"), ds.events, settings.partitions)
    labs = records(settings.topic("labels"), ds.labels, settings.partitions)
    drift_s = time_drift_stage()
    engine = Engine(settings)
    await engine.start()
    gc.collect()
    gc.freeze()  # the harness's 2N records must not make the worker's GC look slower
    pauses: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append((time.perf_counter() - started.pop(), info["generation"]))

    gc.callbacks.append(on_gc)
    t_events = t_labels = 0.0
    prof = cProfile.Profile() if args.cprofile else None
    cpu0, redis0 = time.process_time(), await redis_cpu(engine)
    try:
        if prof:
            prof.enable()
        for i in range(0, len(evs), args.batch):
            if args.labels_first and not args.no_labels:  # labels park, commit_batch learns
                t0 = time.perf_counter()
                encode(await engine.process_labels(labs[i:i + args.batch]))
                t_labels += time.perf_counter() - t0
            t0 = time.perf_counter()
            encode(await engine.process_events(evs[i:i + args.batch]))  # serialised, as at emit
            t_events += time.perf_counter() - t0
            if not args.labels_first and not args.no_labels:  # labels join stored snapshots
                t0 = time.perf_counter()
                encode(await engine.process_labels(labs[i:i + args.batch]))
                t_labels += time.perf_counter() - t0
        if prof:
            prof.disable()
        cpu = time.process_time() - cpu0
        redis_s = (await redis_cpu(engine)) - redis0 if redis0 is not None else None
        snap = engine.metrics.snapshot()
        top = [k.decode() for k, _ in Counter(k for k, _ in ds.events).most_common(3)]
        states = await engine.store.read_entities(top)
    finally:
        gc.callbacks.remove(on_gc)
        await cleanup(engine, settings.app_id)
    n = len(evs)
    print(f"{n:,} events, batch {args.batch}, store {settings.store_url}, "
          f"features {len(engine.spec.names)}, labels {'no' if args.no_labels else 'yes'}")
    print(f"process_events : {1e6 * t_events / n:8.1f} us/event")
    if not args.no_labels:
        print(f"process_labels : {1e6 * t_labels / n:8.1f} us/label")
    print(f"engine total   : {1e6 * (t_events + t_labels) / n:8.1f} us/event wall "
          f"-> {n / (t_events + t_labels):,.0f} events/s, before Kafka/Faust")
    print(f"engine CPU     : {1e6 * cpu / n:8.1f} us/event in this process"
          + (f"; Redis server CPU {1e6 * redis_s / n:.1f} us/event" if redis_s is not None else ""))
    batches = snap["stage_ms"]["batch"]["n"]
    print("stage p50 / p99 ms per batch:", "  ".join(
        f"{k} {v['p50']:.2f}/{v['p99']:.2f}" for k, v in snap["stage_ms"].items() if v["n"]),
        f"({batches} batches)")
    total_gc = sum(p for p, _ in pauses)
    worst = max(pauses, default=(0.0, 0))
    print(f"cyclic GC: {len(pauses)} collections, {1e3 * total_gc:.0f} ms in total "
          f"({100 * total_gc / (t_events + t_labels):.1f}% of engine time), longest "
          f"{1e3 * worst[0]:.1f} ms (gen {worst[1]})")
    if args.drift_features:
        monitor = engine.drift.monitor
        subjects = len(monitor.subjects) if monitor is not None else 0
        print(f"drift stage    : {1e6 * drift_s[0] / n:8.2f} us/event (observe + observe_label, "
              f"{subjects} subjects, {monitor.n_checks if monitor else 0} checks; "
              f"drift {args.drift})")
    for entity, state in zip(top, states, strict=True):
        if state:
            print(f"state {entity}: {len(encode_state(state)):,} bytes")
    if prof:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).sort_stats("cumulative")
        stats.print_stats(args.cprofile)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.cprofile)
        print(out.getvalue())


def wide_dataset(args: argparse.Namespace) -> Dataset:
    """``make_dataset`` with ``--drift-features`` numeric features per event."""
    start = time.time()
    ids, events, labels = [], [], []
    for item in synthetic(args.seed, args.events, n_features=args.drift_features,
                          n_entities=args.entities, zipf_s=args.zipf, start=start,
                          step_s=args.spacing_ms / 1000.0):
        ev = item.event
        ids.append(ev["event_id"])
        events.append((ev["entity_id"].encode(), orjson.dumps(ev)))
        labels.append((ev["event_id"].encode(), orjson.dumps(
            {"event_id": ev["event_id"], "label": item.label, "timestamp": ev["timestamp"]})))
    return Dataset(ids, events, labels)


def time_drift_stage() -> list[float]:
    """Time ``DriftStage.observe`` / ``observe_label`` (on the class: the engine builds a new
    stage when its model version changes); the returned cell accumulates seconds."""
    cell = [0.0]

    def timed(method):  # type: ignore[no-untyped-def]
        def wrapper(self, *a, **kw):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return method(self, *a, **kw)
            finally:
                cell[0] += time.perf_counter() - t
        return wrapper

    DriftStage.observe = timed(DriftStage.observe)  # type: ignore[method-assign]
    DriftStage.observe_label = timed(DriftStage.observe_label)  # type: ignore[method-assign]
    return cell


async def redis_cpu(engine: Engine) -> float | None:
    """CPU seconds the Redis server has used so far (``INFO cpu``), or None for memory://."""
    r = getattr(engine.store, "_r", None)
    if r is None:
        return None
    info = await r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def cleanup(engine: Engine, app_id: str) -> None:
    store = engine._store
    if store is not None and hasattr(store, "_r"):
        r = store._r
        keys = [k async for k in r.scan_iter(match=f"stream:{app_id}:*", count=5000)]
        for i in range(0, len(keys), 5000):
            await r.unlink(*keys[i:i + 5000])
    await engine.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=300, help="events per batch (Faust gave ~300)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--no-features", action="store_true")
    p.add_argument("--no-labels", action="store_true")
    p.add_argument("--labels-first", action="store_true",
                   help="each batch's labels before its events (they park; commit_batch learns)")
    p.add_argument("--store-url", default=None, help="e.g. memory://")
    p.add_argument("--entities", type=int, default=500)
    p.add_argument("--zipf", type=float, default=1.1, help="entity skew (0 = uniform)")
    p.add_argument("--spacing-ms", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--drift-features", type=int, default=0, metavar="N",
                   help="events with N numeric features, all monitored for drift")
    p.add_argument("--numeric", type=int, default=0, metavar="N",
                   help="events with N numeric features and no category, as bench/peers.py "
                        "(with --config bench/peers.toml: the peers' work)")
    p.add_argument("--drift", choices=["on", "off"], default="on",
                   help="with --drift-features: drift monitoring on (timed) or off")
    p.add_argument("--cprofile", type=int, default=0, metavar="N", help="print the top N")
    args = p.parse_args(argv)
    try:
        import uvloop
        uvloop.run(run(args))
    except ImportError:  # pragma: no cover
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
