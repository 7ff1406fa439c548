"""Throughput and latency of the streaming engine against a trivial Faust forward agent.

What is measured, in one invocation, on the broker and Redis named by ``STREAM_KAFKA_URL`` /
``STREAM_REDIS_URL`` (default loopback), per repeat:

1. **Pre-publish**: N synthetic events (``stream_app.tools.datasets.synthetic``, keyed by entity) and
   one label per event to a fresh topic prefix ``bench-<tag>.``, before any worker starts, so
   both workers below measure pure consumption.
2. **Forward agent** (``bench/forward_app.py``): a Faust app with our app class and options whose
   one agent sends every event's bytes to another topic (``producer.send``, delivery not awaited
   per record). Throughput = (N - 1) / (last - first output record timestamp): startup and
   group join are excluded because the clock starts at the first output record.
3. **Full pipeline**: a real ``python -m stream_app worker`` (settings through ``STREAM_*``, as
   the tests' ``WorkerProcess``) over the same N events and N labels. Predictions/s measured the
   same way; every event must get exactly one prediction. Also reported: the worker's last
   ``metrics`` snapshot (per-stage ms, latency), its RSS, and the CPU used by worker, broker and
   Redis between the first and the last output record (1.0 = one core).
4. **Latency at a fixed rate**: a fresh worker; once its metrics say it holds partitions,
   events are published at ``--rate`` for ``--duration`` seconds (labels ``--label-delay`` s
   later). Reported: p50/p95/p99 of the predictions' own ``latency_ms`` (Kafka event record
   timestamp -> scoring), of prediction record timestamp - event send time, and of prediction
   arrival at a consumer - event send time, next to the transport floor (the same events'
   arrival at a plain consumer). The first ``--warmup`` seconds are left out. The CPU of every
   process (this script's publisher and readers included) is printed: 2 shared cores saturate.

Diagnostics: ``--runner raw`` runs the same Engine on plain aiokafka (bench/raw_engine_app.py)
and ``--runner forward`` measures the forward agent's latency; ``--gc-probe`` logs the worker's
GC pauses; ``--profile-dir`` records py-spy stacks (summarise with bench/profile_top.py).

With ``--repeat K`` everything runs K times on fresh topics and the medians are printed.
Every wait is bounded; topics and Redis keys of the run are deleted at the end.

    python bench/throughput.py                                   # 100k events, bench/fraud-bench.toml
    python bench/throughput.py --repeat 3 --json /tmp/bench.json
    python bench/throughput.py --no-features --events 50000 --skip-latency
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import psutil  # noqa: E402
from benchlib import (  # noqa: E402
    DEFAULT_CONFIG,
    CpuSampler,
    LiveReader,
    Proc,
    bench_settings,
    busy_neighbours,
    child_env,
    cleanup,
    fmt_stage,
    latest_metrics,
    make_dataset,
    median,
    new_tag,
    percentiles,
    publish_all,
    publish_paced,
    py_spy,
    rate_between,
    read_topic,
    service_processes,
    start_worker,
    wait_for_count,
)

from stream_app import contract  # noqa: E402
from stream_app.kafka_io import ensure_topics  # noqa: E402
from stream_app.settings import Settings  # noqa: E402

BENCH = Path(__file__).resolve().parent


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"partitions": args.partitions}
    if args.batch_max is not None:
        out["batch_max"] = args.batch_max
    if args.batch_within is not None:
        out["batch_within_s"] = args.batch_within
    if args.store_url:
        out["feature_store_url"] = args.store_url
    return out


def _settings(args: argparse.Namespace, tag: str, role: str, tmp: Path, **kw: Any) -> Settings:
    return bench_settings(tag, role, config=args.config, no_features=args.no_features,
                          data_dir=tmp, **(_overrides(args) | kw))


async def _maybe_profile(args: argparse.Namespace, settings: Settings, topic: str, proc: Proc,
                         name: str) -> Proc | None:
    """With ``--profile-dir``: py-spy ``proc`` from its first output record on (no startup)."""
    if not args.profile_dir:
        return None
    await wait_for_count(settings, topic, 1, timeout_s=args.timeout, alive=proc.alive,
                         interval_s=0.05)
    out = Path(args.profile_dir) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    return py_spy(proc.pid, out, args.profile_seconds, nonblocking=args.profile_nonblocking)


def _start_runner(args: argparse.Namespace, settings: Settings, log: Path) -> Proc:
    """The full pipeline: the real worker, or (``--runner raw``) the engine on plain aiokafka."""
    extra = {}
    if args.gc_probe:  # bench/gcprobe/sitecustomize.py logs GC pauses to the worker's log
        extra["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(BENCH / "gcprobe"), os.environ.get("PYTHONPATH")) if p)
        for name in ("BENCH_GC_THRESHOLD", "BENCH_GC_FREEZE_AFTER_S"):  # see sitecustomize.py
            if os.environ.get(name):
                extra[name] = os.environ[name]
    if args.runner == "raw":
        return Proc([sys.executable, str(BENCH / "raw_engine_app.py")],
                    child_env(settings, extra), log)
    if args.runner == "forward":  # latency of the trivial agent: events copied to predictions
        return Proc([sys.executable, str(BENCH / "forward_app.py"), "--source",
                     settings.topic(contract.EVENTS), "--sink", settings.topic(contract.PREDICTIONS),
                     "--mode", args.forward_mode], child_env(settings, extra), log)
    return start_worker(settings, log, extra)


def _gc_line(proc: Proc) -> str | None:
    lines = [ln for ln in proc.log_path.read_text(errors="replace").splitlines()
             if ln.startswith("gcprobe:")]
    return lines[-1] if lines else None


# -- phases -----------------------------------------------------------------------------------
async def prepublish(args: argparse.Namespace, settings: Settings, forward_topic: str
                     ) -> tuple[list[str], float]:
    await ensure_topics(settings)
    await ensure_topics(settings, [forward_topic])
    ds = make_dataset(args.events, seed=args.seed, entities=args.entities, zipf=args.zipf,
                      spacing_s=args.spacing_ms / 1000.0)
    records = [(settings.topic(contract.EVENTS), k, v) for k, v in ds.events]
    if not args.no_labels:
        records += [(settings.topic(contract.LABELS), k, v) for k, v in ds.labels]
    seconds = await publish_all(settings, records)
    return ds.event_ids, seconds


async def forward_phase(args: argparse.Namespace, settings: Settings, source: str, sink: str,
                        logdir: Path, rep: int) -> dict[str, Any]:
    proc = Proc([sys.executable, str(BENCH / "forward_app.py"), "--source", source,
                 "--sink", sink, "--mode", args.forward_mode], child_env(settings),
                logdir / "forward.log")
    sampler = CpuSampler({"worker": proc.ps, **service_processes()})
    sampler.start()
    profiler: Proc | None = None
    try:
        profiler = await _maybe_profile(args, settings, sink, proc, f"forward-rep{rep}")
        got = await wait_for_count(settings, sink, args.events, timeout_s=args.timeout,
                                   alive=proc.alive)
        rss = proc.rss()
    finally:
        await sampler.stop()
        proc.stop()
        if profiler is not None:  # py-spy writes its output once the profiled process is gone
            profiler.wait(timeout_s=60)
    if got < args.events:
        raise RuntimeError(f"forward agent produced {got}/{args.events}; log:\n{proc.tail()}")
    read = await read_topic(settings, sink, want=args.events)
    rate, first, last = rate_between(read.timestamps_ms)
    return {"events_per_s": rate, "records": len(read.values), "seconds": last - first,
            "rss_mb": rss / 2**20, "cpu": sampler.cpu_share(first, last)}


async def full_phase(args: argparse.Namespace, settings: Settings, event_ids: list[str],
                     logdir: Path, rep: int) -> dict[str, Any]:
    n = len(event_ids)
    proc = _start_runner(args, settings, logdir / "full.log")
    sampler = CpuSampler({"worker": proc.ps, **service_processes()})
    sampler.start()
    profiler: Proc | None = None
    try:
        topic = settings.topic(contract.PREDICTIONS)
        profiler = await _maybe_profile(args, settings, topic, proc, f"full-rep{rep}")
        got = await wait_for_count(settings, topic, n, timeout_s=args.timeout, alive=proc.alive)
        want_labels = 0 if args.no_labels else n
        snap = await latest_metrics(
            settings, timeout_s=30, alive=proc.alive,
            until=lambda s: s["events"]["predicted"] >= n and s["labels"]["received"] >= want_labels)
        rss = proc.rss()
    finally:
        await sampler.stop()
        proc.stop()
        if profiler is not None:  # py-spy writes its output once the profiled process is gone
            profiler.wait(timeout_s=60)
    if got < n:
        raise RuntimeError(f"worker produced {got}/{n} predictions; log:\n{proc.tail()}")
    read = await read_topic(settings, topic, want=n)
    rate, first, last = rate_between(read.timestamps_ms)
    counts = Counter(orjson.loads(v)["event_id"] for v in read.values)
    missing = len(set(event_ids) - counts.keys())
    duplicated = sum(1 for c in counts.values() if c > 1)
    dead = await read_topic(settings, settings.topic(contract.DEAD_LETTERS), idle_s=1.0)
    return {"events_per_s": rate, "records": len(read.values), "seconds": last - first,
            "missing": missing, "duplicated": duplicated, "dead_letters": len(dead.values),
            "exactly_one": missing == 0 and duplicated == 0 and len(read.values) == n,
            "rss_mb": rss / 2**20, "peak_rss_mb": sampler.peak_rss("worker") / 2**20,
            "cpu": sampler.cpu_share(first, last), "metrics": snap, "gc": _gc_line(proc)}


async def _wait_forwarding(settings: Settings, proc: Proc, timeout_s: float = 120.0) -> None:
    """Send a probe event every second until the forward agent has copied one."""
    topic = settings.topic(contract.PREDICTIONS)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.alive():
        await publish_all(settings, [(settings.topic(contract.EVENTS), b"probe", orjson.dumps(
            {"event_id": "probe", "entity_id": "probe", "timestamp": time.time(),
             "features": {}}))])
        if await wait_for_count(settings, topic, 1, timeout_s=1.0, interval_s=0.1) >= 1:
            return
    raise RuntimeError(f"forward agent never forwarded; log:\n{proc.tail()}")


async def latency_phase(args: argparse.Namespace, settings: Settings, logdir: Path
                        ) -> dict[str, Any]:
    await ensure_topics(settings)
    proc = _start_runner(args, settings, logdir / "latency.log")
    sampler = CpuSampler({"worker": proc.ps, "bench": psutil.Process(), **service_processes()})
    try:
        if args.runner == "forward":  # no metrics topic: wait until it forwards a probe
            await _wait_forwarding(settings, proc)
        else:
            snap = await latest_metrics(settings, timeout_s=120, alive=proc.alive,
                                        until=lambda s: s.get("partitions_assigned", 0) > 0)
            if not snap or snap.get("partitions_assigned", 0) <= 0:
                raise RuntimeError(f"latency worker never held partitions; log:\n{proc.tail()}")
        reader = LiveReader(settings, settings.topic(contract.PREDICTIONS))
        reader.start()
        floor = LiveReader(settings, settings.topic(contract.EVENTS))  # the transport alone
        floor.start()
        sampler.start()
        n = int(args.rate * args.duration)
        t_start = time.time()
        sent = await publish_paced(settings, n, args.rate, seed=args.seed + 1,
                                   entities=args.entities, zipf=args.zipf,
                                   label_delay_s=args.label_delay, labels=not args.no_labels,
                                   stop_after_s=args.duration + 10)
        t_sent = time.time()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.alive():  # another task fills the list
            if len(reader.read.values) >= len(sent):
                break
            await asyncio.sleep(0.1)
        read = await reader.stop()
        floor_read = await floor.stop()
        final = None if args.runner == "forward" else await latest_metrics(
            settings, timeout_s=10, alive=proc.alive,
            until=lambda s: s["events"]["predicted"] >= len(sent))
        rss = proc.rss()
    finally:
        await sampler.stop()
        proc.stop()
    own, stamped, arrived = [], [], []
    per_second: dict[int, list[float]] = {}
    cut = t_start + args.warmup
    for value, ts_ms, arrival in zip(read.values, read.timestamps_ms, read.arrivals, strict=True):
        p = orjson.loads(value)
        t_send = sent.get(p["event_id"])
        if t_send is None or t_send < cut:
            continue
        own.append(p.get("latency_ms", math.nan))
        stamped.append(ts_ms - t_send * 1000.0)
        per_second.setdefault(int(t_send - t_start), []).append(stamped[-1])
        arrived.append((arrival - t_send) * 1000.0)
    transport = []
    for value, arrival in zip(floor_read.values, floor_read.arrivals, strict=True):
        t_send = sent.get(orjson.loads(value)["event_id"])
        if t_send is not None and t_send >= cut:
            transport.append((arrival - t_send) * 1000.0)
    return {"sent": len(sent), "transport_floor": percentiles(transport), "achieved_rate": len(sent) / max(t_sent - t_start, 1e-9),
            "predictions": len(read.values), "measured": len(own),
            "latency_ms_field": percentiles(own), "record_ts_minus_send": percentiles(stamped),
            "arrival_minus_send": percentiles(arrived), "rss_mb": rss / 2**20,
            "timeline_p99_ms": {sec: round(percentiles(v)["p99"], 1)
                                for sec, v in sorted(per_second.items())},
            "gc": _gc_line(proc),
            "cpu": sampler.cpu_share(t_start + args.warmup, t_sent), "metrics": final}


async def run_once(args: argparse.Namespace, rep: int, tmp: Path) -> dict[str, Any]:
    tag = new_tag()
    logdir = tmp / f"rep{rep}"
    full = _settings(args, tag, "full", logdir)
    forward = _settings(args, tag, "forward", logdir)
    sink = full.topic("forward")
    result: dict[str, Any] = {"tag": tag}
    app_ids = [full.app_id]
    try:
        if not args.skip_throughput:
            event_ids, secs = await prepublish(args, full, sink)
            result["publish"] = {"events": len(event_ids), "seconds": secs,
                                 "records_per_s": len(event_ids) * (1 + (not args.no_labels)) / secs}
            print(f"  published {len(event_ids)} events"
                  f"{'' if args.no_labels else ' + labels'} in {secs:.1f} s", flush=True)
            if not args.skip_forward:
                result["forward"] = await forward_phase(args, forward, full.topic(contract.EVENTS),
                                                        sink, logdir, rep)
                print(f"  forward agent: {result['forward']['events_per_s']:,.0f} ev/s", flush=True)
            result["full"] = await full_phase(args, full, event_ids, logdir, rep)
            print(f"  full pipeline: {result['full']['events_per_s']:,.0f} predictions/s "
                  f"(exactly one each: {result['full']['exactly_one']})", flush=True)
        if not args.skip_latency:
            lat = _settings(args, tag, "latency", logdir, topic_prefix=f"bench-{tag}-lat.")
            app_ids.append(lat.app_id)
            result["latency"] = await latency_phase(args, lat, logdir)
            lm = result["latency"]["record_ts_minus_send"]
            print(f"  latency @ {args.rate:g}/s: p50 {lm['p50']:.1f}  p95 {lm['p95']:.1f}  "
                  f"p99 {lm['p99']:.1f} ms (prediction record ts - send)", flush=True)
    finally:
        if not args.keep:
            await cleanup(full, tag, app_ids)
    return result


# -- report -----------------------------------------------------------------------------------
def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _med(results: list[dict[str, Any]], *path: str) -> float:
    return median([_get(r, *path) for r in results if _get(r, *path) is not None])


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    k = len(results)
    tag = f"median of {k}" if k > 1 else "1 run"
    print()
    print(f"== results ({tag}; runner {args.runner}; {args.events:,} events, {args.entities} entities (zipf "
          f"{args.zipf:g}), partitions "
          f"{args.partitions}, config {'none (--no-features)' if args.no_features else args.config})")
    if not args.skip_throughput:
        fwd = _med(results, "forward", "events_per_s")
        full = _med(results, "full", "events_per_s")
        if fwd == fwd:
            print(f"forward agent ({args.forward_mode}) : {fwd:12,.0f} events/s   "
                  f"runs: {[round(_get(r, 'forward', 'events_per_s') or 0) for r in results]}")
        print(f"full pipeline         : {full:12,.0f} predictions/s   "
              f"runs: {[round(_get(r, 'full', 'events_per_s') or 0) for r in results]}")
        if fwd == fwd and fwd > 0:
            print(f"ratio full / forward  : {full / fwd:12.2f}   (goal >= 0.8)")
        print(f"exactly one prediction per event: {[_get(r, 'full', 'exactly_one') for r in results]}"
              f"   dead letters: {[_get(r, 'full', 'dead_letters') for r in results]}")
        for name in ("forward", "full") if fwd == fwd else ("full",):
            cpu = [_get(r, name, "cpu") or {} for r in results]
            keys = sorted({c for d in cpu for c in d})
            print(f"CPU during {name:8s}   : " + "  ".join(
                f"{c} {median([d.get(c) for d in cpu if c in d]):.2f}" for c in keys)
                + "   (cores, between first and last output)")
        print(f"worker RSS at end     : forward {_med(results, 'forward', 'rss_mb'):.0f} MiB, "
              f"full {_med(results, 'full', 'rss_mb'):.0f} MiB "
              if fwd == fwd else f"worker RSS at end     : full {_med(results, 'full', 'rss_mb'):.0f} MiB "
              f"(peak {_med(results, 'full', 'peak_rss_mb'):.0f} MiB)")
        snap = _get(results[-1], "full", "metrics") or {}
        print("worker stage_ms (last run's final metrics snapshot, per batch):")
        for stage in ("batch", "store_read", "score", "store_write"):
            print(f"  {stage:12s} {fmt_stage(_get(snap, 'stage_ms', stage))}")
        batches = snap.get("events", {}).get("received", 0) / max(_get(snap, "stage_ms", "batch", "n") or 1, 1)
        print(f"  events per events-batch (mean): {batches:.0f}; labels learned "
              f"{_get(snap, 'labels', 'learned')}, joined {_get(snap, 'labels', 'joined')}; "
              f"GIL switch interval {_get(snap, 'gc', 'switch_interval_ms')} ms")
    if not args.skip_latency:
        print(f"latency at {args.rate:g} ev/s for {args.duration:g} s (first {args.warmup:g} s "
              f"excluded; achieved {_med(results, 'latency', 'achieved_rate'):,.0f} ev/s):")
        for key, label in (("latency_ms_field", "predictions' latency_ms field"),
                           ("record_ts_minus_send", "prediction record ts - event send"),
                           ("arrival_minus_send", "arrival at consumer - event send"),
                           ("transport_floor", "floor: event arrival at a consumer")):
            print(f"  {label:36s} p50 {_med(results, 'latency', key, 'p50'):6.1f}  "
                  f"p95 {_med(results, 'latency', key, 'p95'):6.1f}  "
                  f"p99 {_med(results, 'latency', key, 'p99'):6.1f}  "
                  f"max {_med(results, 'latency', key, 'max'):6.1f} ms")
        snap = _get(results[-1], "latency", "metrics") or {}
        print("  worker stage_ms at that rate (last run):")
        for stage in ("batch", "store_read", "score", "store_write"):
            print(f"    {stage:12s} {fmt_stage(_get(snap, 'stage_ms', stage))}")
        print(f"  GIL switch interval at the end: {_get(snap, 'gc', 'switch_interval_ms')} ms")
        cpu = [_get(r, "latency", "cpu") or {} for r in results]
        print("  CPU (cores): " + "  ".join(
            f"{c} {median([d.get(c) for d in cpu if c in d]):.2f}"
            for c in sorted({c for d in cpu for c in d}))
            + f"; worker RSS {_med(results, 'latency', 'rss_mb'):.0f} MiB")
        print(f"  p99 per second of the run (last run): "
              f"{list((_get(results[-1], 'latency', 'timeline_p99_ms') or {}).values())}")
    for r in results:
        for phase in ("full", "latency"):
            if _get(r, phase, "gc"):
                print(f"  {phase} worker {_get(r, phase, 'gc')}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000, help="events to pre-publish (N)")
    p.add_argument("--config", default=None,
                   help=f"features/model TOML for the full pipeline (default {DEFAULT_CONFIG.name})")
    p.add_argument("--no-features", action="store_true", help="no entity aggregates")
    p.add_argument("--no-labels", action="store_true", help="pre-publish events only")
    p.add_argument("--repeat", type=int, default=1, help="runs; medians are reported")
    p.add_argument("--entities", type=int, default=500,
                   help="synthetic entities (Zipf 1.1: the busiest gets ~19%% of events)")
    p.add_argument("--zipf", type=float, default=1.1,
                   help="entity popularity skew of the synthetic data (0 = uniform)")
    p.add_argument("--spacing-ms", type=float, default=1.0,
                   help="event-time spacing of pre-published events (as `replay` bursts)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch-max", type=int, default=None, help="override STREAM_BATCH_MAX")
    p.add_argument("--batch-within", type=float, default=None,
                   help="override STREAM_BATCH_WITHIN_S (seconds)")
    p.add_argument("--store-url", default=None, help="override STREAM_FEATURE_STORE_URL")
    p.add_argument("--forward-mode", choices=("take", "gather", "each", "raw"), default="take",
                   help="see bench/forward_app.py; `raw` is plain aiokafka, no Faust")
    p.add_argument("--runner", choices=("faust", "raw", "forward"), default="faust",
                   help="full pipeline: `faust` = python -m stream_app worker (the product); "
                        "`raw` = bench/raw_engine_app.py, the same Engine on plain aiokafka; "
                        "`forward` (latency phase only) = the forward agent of --forward-mode")
    p.add_argument("--rate", type=float, default=2000.0, help="latency phase: events/s")
    p.add_argument("--duration", type=float, default=20.0, help="latency phase: seconds")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="latency phase: leave out events sent in the first seconds")
    p.add_argument("--label-delay", type=float, default=1.0, help="latency phase: label delay")
    p.add_argument("--timeout", type=float, default=600.0, help="max wait per phase (s)")
    p.add_argument("--skip-forward", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--profile-dir", default=None,
                   help="py-spy the full worker (raw collapsed stacks); perturbs the figures")
    p.add_argument("--profile-seconds", type=float, default=15.0)
    p.add_argument("--profile-nonblocking", action="store_true",
                   help="py-spy without pausing the worker (less overhead, some bad samples)")
    p.add_argument("--gc-probe", action="store_true",
                   help="log the worker's GC pauses (bench/gcprobe/sitecustomize.py)")
    p.add_argument("--json", default=None, help="write every run's raw results here")
    p.add_argument("--keep", action="store_true", help="keep topics and Redis keys")
    p.add_argument("--logs", default=None, help="directory for worker logs (default: temp)")
    args = p.parse_args(argv)
    if args.config is None:
        args.config = str(DEFAULT_CONFIG)
    return args


async def amain(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    busy = busy_neighbours()
    print(f"load average {os.getloadavg()[0]:.2f}; busy processes before the run: "
          f"{busy or 'none'}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmpdir:
        tmp = Path(args.logs) if args.logs else Path(tmpdir)
        for rep in range(args.repeat):
            print(f"run {rep + 1}/{args.repeat}", flush=True)
            results.append(await run_once(args, rep, tmp))
    report(args, results)
    return results, busy


def write_json(path: str, args: argparse.Namespace, busy: list[str],
               results: list[dict[str, Any]]) -> None:
    Path(path).write_text(json.dumps({"args": vars(args), "busy_before": busy, "runs": results},
                                     indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        results, busy = uvloop.run(amain(args))
    except ImportError:  # pragma: no cover
        results, busy = asyncio.run(amain(args))
    if args.json:
        write_json(args.json, args, busy, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
