"""The peers benchmark: stream-app against Bytewax and a plain confluent-kafka loop, same work.

Each system, in the same invocation and in interleaved rounds (stream-app, bytewax,
confluent, stream-app, bytewax, ... ; ``--rounds``, default 3), on a fresh topic prefix
``bench-<tag>-r<i>-...`` per round:

* **stream-app**: a real ``python -m stream_app worker`` (``STREAM_*`` settings, as
  ``bench/throughput.py`` starts it) with ``bench/peers.toml``: one aggregate (f0 count, mean
  and std, no windows), River ``StandardScaler | LogisticRegression``. Events on ``events``
  (4 partitions, keyed by entity_id), labels on ``labels`` (1 partition, keyed by event_id),
  predictions on ``predictions``. Drift checks, checkpoints and metrics keep their defaults
  (``--no-drift`` turns the drift checks off).
* **bytewax**: Bytewax 0.21.1, ``python -m bytewax.run`` with one worker:
  ``KafkaSource(batch_size=1000)`` -> ``op.flat_map_batch`` (one Redis pipeline per batch that
  reads and writes each entity's f0 count/sum/sum of squares, then River predict then learn
  per event, the label riding inside the event) -> ``KafkaSink``. See ``bench/peers_worker.py``.
* **confluent** (``--no-confluent`` to skip): the same work in a ``consume(500, 5 ms)`` loop;
  produce every prediction, flush, then commit the offsets.

The work: N events (``--events``, default 100,000) from ``stream_app.tools.datasets.synthetic`` with
20 numeric features f0..f19 (its ``channel`` string dropped), seed 42, 500 entities with Zipf
1.1 (the busiest gets about 19 %), one label per event; all pre-published before the round's
first consumer starts. Every system gives the model the 20 features plus the entity's count,
mean and population std of f0 over its earlier events, scores, learns from the label and
writes one prediction per event. stream-app does more for it: its labels come through their
own topic and are joined in Redis to the stored feature snapshot, and it runs drift checks,
checkpoints and metrics. The peers run in their own venv, ``bench/.venv-peers``, made on
first use (``--peers-python`` names another); Bytewax never enters the project's venv.

Throughput mode (default), per system and round:

* events/s = (outputs - 1) / (last - first output record timestamp), as throughput.py: the
  clock starts at the first output, so start-up and group join are left out;
* worker CPU µs/event = the process's CPU time (psutil user + system, children included)
  between the first and the last output record, divided by the outputs. Redis and broker
  likewise, but theirs is the whole server's, other users of the shared Redis included;
* outcome counts: outputs, distinct event_ids, duplicate records, events without one,
  stream-app's dead letters (must be 0), and prequential accuracy (``predicted`` == label).

Medians over the rounds are printed with the ratios stream-app / bytewax (and / confluent).

Latency mode (``--rate R --duration S``): per round and system, the system starts on empty
topics and, once a probe event has come out, a confluent-kafka process
(``peers_worker.py publish``; aiokafka cannot send 5,000 events and 5,000 labels a second on
the shared cores) produces events at R/s for S s, stream-app's labels ``--label-delay`` s
after their events. Input and output topics stamp records with the broker's append time
(``LogAppendTime``), so latency = output record timestamp - input record timestamp is the time
from an event being readable to its prediction being readable, publisher delays left out.
Printed: p50/p95/p99/max (events of the first ``--warmup`` s left out), the achieved input
rate and the CPU of the worker and of this script. A system slower than R builds a queue, and
its latency then grows with the run.

Every wait is bounded (``--timeout``); the run's topics (``bench-<tag>*``) and Redis keys
(``stream:bench-<tag>-*``) are deleted at the end, and every process it started is stopped,
also on Ctrl-C.

    . .venv/bin/activate
    python bench/peers.py                                  # 100k events, 3 rounds
    python bench/peers.py --events 20000 --rounds 1        # a quick check
    python bench/peers.py --rate 5000 --duration 20        # latency at 5,000 events/s
    python bench/peers.py --json /tmp/peers.json --logs /tmp/peers-logs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import psutil  # noqa: E402
from aiokafka.admin import NewTopic  # noqa: E402
from benchlib import (  # noqa: E402
    CpuSampler,
    Proc,
    bench_settings,
    busy_neighbours,
    cleanup,
    count_records,
    make_dataset,
    median,
    new_tag,
    percentiles,
    publish_all,
    py_spy,
    rate_between,
    read_topic,
    service_processes,
    start_worker,
    wait_for_count,
)

from stream_app import contract  # noqa: E402
from stream_app.kafka_io import ensure_topics, make_admin  # noqa: E402
from stream_app.settings import Settings  # noqa: E402

BENCH = Path(__file__).resolve().parent
CONFIG = BENCH / "peers.toml"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_WORKER = BENCH / "peers_worker.py"
N_FEATURES = 20
STREAM, BYTEWAX, CONFLUENT = "stream-app", "bytewax", "confluent"
PEERS = (BYTEWAX, CONFLUENT)
#: started processes, stopped by main() whatever happens
_PROCS: list[Proc] = []
#: non-empty once Ctrl-C or SIGTERM came
_STOPPING: list[bool] = []


# -- the peers' venv ----------------------------------------------------------------------------
def peers_requirements() -> list[str]:
    """Bytewax 0.21.1 with its Kafka extra (confluent-kafka >= 2.0.2); River, redis-py and
    orjson pinned to the project venv's versions, so the model and client work is the same."""
    return ["bytewax[kafka]==0.21.1", "confluent-kafka",
            *(f"{name}=={metadata.version(name)}" for name in ("river", "redis", "orjson"))]


def ensure_peers_venv(venv: Path, timeout_s: float = 900.0) -> Path:
    """``venv``'s python, creating the venv and installing the peers' packages if needed."""
    python = venv / "bin" / "python"
    marker = venv / ".peers-requirements"
    wanted = "\n".join(peers_requirements())
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"setting up {venv} (once): {wanted.replace(chr(10), ', ')}", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *wanted.splitlines()], check=True, timeout=timeout_s)
    marker.write_text(wanted)
    return python


def peers_versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "('bytewax', 'confluent-kafka', 'river', 'redis', 'orjson')}))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                         timeout=60)
    return json.loads(out.stdout)


# -- systems ------------------------------------------------------------------------------------
def settings_for(args: argparse.Namespace, tag: str, label: str, tmp: Path) -> Settings:
    """Settings of one system in one round: topic prefix ``bench-<tag>-<label>.``."""
    extra: dict[str, Any] = {"drift": {"enabled": False}} if args.no_drift else {}
    if args.guarantee:
        extra["processing_guarantee"] = args.guarantee
    return bench_settings(tag, label, config=args.config, no_features=False, data_dir=tmp,
                          topic_prefix=f"bench-{tag}-{label}.", partitions=args.partitions,
                          **extra)


def output_topic(system: str, settings: Settings) -> str:
    return settings.topic(contract.PREDICTIONS if system == STREAM else f"predictions-{system}")


async def create_topics(system: str, settings: Settings, *, log_append_time: bool = False
                        ) -> None:
    """The system's topics; with ``log_append_time`` its input and output topics stamp each
    record with the broker's append time (the latency mode: when the record became readable)."""
    if log_append_time:
        admin = make_admin(settings)
        await admin.start()
        try:
            await admin.create_topics([
                NewTopic(settings.topic(name), settings.partitions_of(name),
                         settings.replication_factor,
                         topic_configs={"message.timestamp.type": "LogAppendTime"})
                for name in (contract.EVENTS, output_topic(system, settings)
                             .removeprefix(settings.topic_prefix))])
        finally:
            await admin.close()
    if system == STREAM:
        await ensure_topics(settings)
    else:
        await ensure_topics(settings, [contract.EVENTS, f"predictions-{system}"])


def start_system(system: str, settings: Settings, python: Path, log: Path) -> Proc:
    _check_stop()
    if system == STREAM:
        proc = start_worker(settings, log)
    else:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STREAM_", "PEERS_", "VIRTUAL_ENV"))}
        env.update(PYTHONUNBUFFERED="1", PEERS_BROKERS=settings.bootstrap_servers,
                   PEERS_SOURCE=settings.topic(contract.EVENTS),
                   PEERS_SINK=output_topic(system, settings), PEERS_REDIS_URL=settings.store_url,
                   PEERS_KEY_PREFIX=f"stream:{settings.app_id}:{system}:",
                   PEERS_GROUP=f"{settings.app_id}-{system}",
                   PEERS_BATCH="1000" if system == BYTEWAX else "500")
        argv = ([str(python), "-m", "bytewax.run", f"{PEERS_WORKER}:build_flow()"]
                if system == BYTEWAX else [str(python), str(PEERS_WORKER), "confluent"])
        proc = Proc(argv, env, log)
    _PROCS.append(proc)
    return proc


def with_label(event: bytes, label: bool) -> bytes:
    """The peers' event: the label rides inside it."""
    return orjson.dumps(orjson.loads(event) | {"label": label})


def _event_id(value: bytes) -> str:
    return orjson.loads(value)["event_id"]


def outcome(values: list[bytes], expected: dict[str, bool]) -> dict[str, Any]:
    """Counts of the output records against the ``{event_id: label}`` that should come out."""
    preds = [orjson.loads(v) for v in values]
    ids = Counter(p["event_id"] for p in preds if p["event_id"] in expected)
    first: dict[str, bool] = {}
    for p in preds:
        first.setdefault(p["event_id"], bool(p["predicted"]))
    right = sum(first[i] == y for i, y in expected.items() if i in first)
    return {"outputs": len(preds), "distinct": len(ids),
            "duplicates": sum(c - 1 for c in ids.values()),
            "missing": len(expected) - len(ids),
            "unexpected": sum(1 for p in preds if p["event_id"] not in expected),
            "accuracy": right / len(ids) if ids else None}


# -- throughput ---------------------------------------------------------------------------------
async def throughput_system(args: argparse.Namespace, system: str, settings: Settings,
                            expected: dict[str, bool], python: Path, logdir: Path
                            ) -> dict[str, Any]:
    n = len(expected)
    topic = output_topic(system, settings)
    proc = start_system(system, settings, python, logdir / f"{system}.log")
    sampler = CpuSampler({"worker": proc.ps, **service_processes()}, interval_s=0.25,
                         tree=frozenset({"worker"}))
    sampler.start()
    t0 = time.monotonic()
    profiler: Proc | None = None
    try:
        if args.profile_dir and system == STREAM:  # from its first output on: no start-up
            await wait_for_count(settings, topic, 1, timeout_s=args.timeout, alive=proc.alive,
                                 interval_s=0.05)
            out = Path(args.profile_dir) / f"{system}-{settings.topic_prefix}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            profiler = py_spy(proc.pid, out, args.profile_seconds, nonblocking=True)
        got = await wait_for_count(settings, topic, n, timeout_s=args.timeout, alive=proc.alive)
        if got >= n:  # every output: let a tail of duplicates show up too
            await asyncio.sleep(0.5)
        alive = proc.alive()
    finally:
        await sampler.stop()
        proc.stop()
        if profiler is not None:  # py-spy writes its output once the profiled process is gone
            profiler.wait(timeout_s=60)
    result: dict[str, Any] = {"wall_s": time.monotonic() - t0}
    if got < n:
        result["error"] = f"{got}/{n} outputs in {args.timeout:g} s (alive: {alive})"
        print(f"  {system}: {result['error']}; log tail:\n{proc.tail(2000)}", file=sys.stderr)
    read = await read_topic(settings, topic, timeout_s=args.timeout)
    rate, first, last = rate_between(read.timestamps_ms)
    outputs = max(len(read.values), 1)
    result |= {"events_per_s": rate, "seconds": last - first,
               "worker_us_per_event": sampler.cpu_seconds("worker", first, last) / outputs * 1e6,
               "redis_us_per_event": sampler.cpu_seconds("redis", first, last) / outputs * 1e6
               if "redis" in sampler.procs else None,
               "kafka_us_per_event": sampler.cpu_seconds("kafka", first, last) / outputs * 1e6
               if "kafka" in sampler.procs else None,
               "worker_cores": sampler.cpu_share(first, last).get("worker"),
               "peak_rss_mb": sampler.peak_rss("worker") / 2**20,
               **outcome(read.values, expected)}
    result["dead_letters"] = result["labels_requeued"] = None
    if system == STREAM:
        result["dead_letters"] = await count_records(settings,
                                                     settings.topic(contract.DEAD_LETTERS))
        # a label read before its event waits in Redis and goes back to `labels` once the event
        # is scored (README, "One learner"): records beyond the N published
        result["labels_requeued"] = await count_records(settings,
                                                        settings.topic(contract.LABELS)) - n
    return result


async def throughput_round(args: argparse.Namespace, tag: str, r: int, systems: list[str],
                           python: Path, tmp: Path, app_ids: list[str]) -> dict[str, Any]:
    logdir = tmp / f"round{r}"
    ds = make_dataset(args.events, seed=args.seed, entities=args.entities, zipf=args.zipf,
                      n_features=N_FEATURES, numeric_only=True)
    expected = dict(zip(ds.event_ids, ds.truth, strict=True))
    stream = settings_for(args, tag, f"r{r}-stream", logdir)
    peers = settings_for(args, tag, f"r{r}-peers", logdir)
    app_ids += [stream.app_id, peers.app_id]
    await create_topics(STREAM, stream)
    for system in systems[1:]:
        await create_topics(system, peers)
    records = [(stream.topic(contract.EVENTS), k, v) for k, v in ds.events]
    records += [(stream.topic(contract.LABELS), k, v) for k, v in ds.labels]
    secs = await publish_all(stream, records)
    print(f"  published {len(ds.events):,} events + labels for stream-app in {secs:.1f} s",
          flush=True)
    if systems[1:]:
        peer_records = [(peers.topic(contract.EVENTS), k, with_label(v, y))
                        for (k, v), y in zip(ds.events, ds.truth, strict=True)]
        secs = await publish_all(peers, peer_records)
        print(f"  published {len(peer_records):,} events with labels inside for the peers "
              f"in {secs:.1f} s", flush=True)
    out: dict[str, Any] = {"stream_prefix": stream.topic_prefix, "peers_prefix": peers.topic_prefix}
    for system in systems:
        _check_stop()
        res = await throughput_system(args, system, stream if system == STREAM else peers,
                                      expected, python, logdir)
        out[system] = res
        print(f"  {system:10s}: {res['events_per_s']:8,.0f} events/s  "
              f"{res['worker_us_per_event']:6.0f} µs CPU/event  outputs {res['outputs']:,}  "
              f"distinct {res['distinct']:,}  duplicates {res['duplicates']}"
              + (f"  dead letters {res['dead_letters']}  labels sent back to `labels` "
                 f"{res['labels_requeued']:,}" if system == STREAM else ""), flush=True)
    return out


# -- latency ------------------------------------------------------------------------------------
def probe_event(i: int, with_label: bool) -> bytes:
    ev: dict[str, Any] = {"event_id": f"probe-{i}", "entity_id": "probe",
                          "timestamp": round(time.time(), 6),
                          "features": {f"f{j}": 0.0 for j in range(N_FEATURES)}}
    if with_label:
        ev["label"] = False
    return orjson.dumps(ev)


async def wait_ready(system: str, settings: Settings, proc: Proc, timeout_s: float) -> int:
    """Send a probe event every second until one comes out; return the probes sent."""
    topic = output_topic(system, settings)
    deadline = time.monotonic() + timeout_s
    sent = 0
    while time.monotonic() < deadline and proc.alive():
        await publish_all(settings, [(settings.topic(contract.EVENTS), b"probe",
                                      probe_event(sent, system != STREAM))])
        sent += 1
        if await wait_for_count(settings, topic, 1, timeout_s=1.0, interval_s=0.1) >= 1:
            return sent
    raise RuntimeError(f"{system} never produced an output; log:\n{proc.tail()}")


def load_records(args: argparse.Namespace, system: str, settings: Settings, r: int
                 ) -> tuple[list[tuple[float, str, bytes, bytes]], set[str]]:
    """The latency mode's load, ``(due seconds after the start, topic, key, value)`` sorted by
    due time, and the event ids: stream-app's labels ``--label-delay`` after their events."""
    n = int(args.rate * args.duration)
    ds = make_dataset(n, seed=args.seed + 1 + r, entities=args.entities, zipf=args.zipf,
                      spacing_s=1.0 / args.rate, label_delay_s=args.label_delay,
                      n_features=N_FEATURES, numeric_only=True)
    events = settings.topic(contract.EVENTS)
    if system == STREAM:
        records = [(i / args.rate, events, k, v) for i, (k, v) in enumerate(ds.events)]
        labels = settings.topic(contract.LABELS)
        records += [(i / args.rate + args.label_delay, labels, k, v)
                    for i, (k, v) in enumerate(ds.labels)]
        records.sort(key=lambda rec: rec[0])
    else:
        records = [(i / args.rate, events, k, with_label(v, y))
                   for i, ((k, v), y) in enumerate(zip(ds.events, ds.truth, strict=True))]
    return records, set(ds.event_ids)


async def run_publisher(python: Path, settings: Settings, records: list[Any], logdir: Path,
                        name: str, sampler: CpuSampler, timeout_s: float) -> dict[str, Any]:
    """Produce ``records`` on time from a confluent-kafka process (``peers_worker.py publish``)."""
    path = logdir / f"{name}-load.pickle"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(records))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_", "PEERS_"))}
    env["PEERS_BROKERS"] = settings.bootstrap_servers
    pub = Proc([str(python), str(PEERS_WORKER), "publish", str(path)], env,
               logdir / f"{name}-publisher.log")
    _PROCS.append(pub)
    sampler.procs["publisher"] = pub.ps
    try:  # in a thread, so that the sampler goes on
        await asyncio.to_thread(pub.proc.wait, timeout_s)
    except subprocess.TimeoutExpired:
        pass
    code = pub.stop()
    path.unlink()
    lines = pub.log_path.read_text(errors="replace").strip().splitlines()
    if code != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"publisher failed (exit {code}):\n{pub.tail()}")
    return json.loads(lines[-1])


async def latency_system(args: argparse.Namespace, system: str, settings: Settings, r: int,
                         python: Path, logdir: Path) -> dict[str, Any]:
    records, event_ids = load_records(args, system, settings, r)
    await create_topics(system, settings, log_append_time=True)
    topic = output_topic(system, settings)
    proc = start_system(system, settings, python, logdir / f"{system}-latency.log")
    sampler = CpuSampler({"worker": proc.ps, "bench": psutil.Process(), **service_processes()},
                         interval_s=0.5, tree=frozenset({"worker"}))
    try:
        probes = await wait_ready(system, settings, proc, timeout_s=args.timeout)
        sampler.start()
        pub = await run_publisher(python, settings, records, logdir, system, sampler,
                                  timeout_s=args.duration + args.label_delay + args.timeout)
        got = await wait_for_count(settings, topic, len(event_ids) + probes,
                                   timeout_s=args.drain, alive=proc.alive)
        drained = time.time() - pub["last"]
    finally:
        await sampler.stop()
        proc.stop()
    inputs = await read_topic(settings, settings.topic(contract.EVENTS), timeout_s=args.timeout)
    outputs = await read_topic(settings, topic, timeout_s=args.timeout)
    in_ts = {}
    for value, ts in zip(inputs.values, inputs.timestamps_ms, strict=True):
        event_id = _event_id(value)
        if event_id in event_ids:
            in_ts[event_id] = ts
    rate, first_in, _ = rate_between(list(in_ts.values()))
    cut_ms = (first_in + args.warmup) * 1000.0
    latencies, seen = [], set()
    for value, ts in zip(outputs.values, outputs.timestamps_ms, strict=True):
        event_id = _event_id(value)
        t_in = in_ts.get(event_id)
        if t_in is None or event_id in seen:
            continue
        seen.add(event_id)
        if t_in >= cut_ms:
            latencies.append(ts - t_in)
    return {"sent": len(in_ts), "achieved_rate": rate, "outputs": len(seen),
            "missing": len(in_ts) - len(seen), "drain_s": drained,
            "all_out": got >= len(event_ids) + probes, "latency_ms": percentiles(latencies),
            "cpu_cores": sampler.cpu_share(pub["first"] + args.warmup, pub["last"])}


async def latency_round(args: argparse.Namespace, tag: str, r: int, systems: list[str],
                        python: Path, tmp: Path, app_ids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in systems:
        _check_stop()
        settings = settings_for(args, tag, f"lat-r{r}-{system}", tmp / f"round{r}")
        app_ids.append(settings.app_id)
        try:
            res = await latency_system(args, system, settings, r, python, tmp / f"round{r}")
        except RuntimeError as exc:  # one system failing does not lose the others' figures
            print(f"  {system}: {exc}", file=sys.stderr)
            out[system] = {"error": str(exc)[:2000]}
            continue
        out[system] = res
        lat = res["latency_ms"]
        print(f"  {system:10s}: sent {res['sent']:,} at {res['achieved_rate']:,.0f}/s, "
              f"{res['outputs']:,} out; p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  "
              f"p99 {lat['p99']:.1f} ms; worker {res['cpu_cores'].get('worker', float('nan')):.2f} "
              "cores", flush=True)
    return out


# -- report -------------------------------------------------------------------------------------
def _med(rounds: list[dict[str, Any]], system: str, *path: str) -> float:
    values = []
    for rnd in rounds:
        d: Any = rnd.get(system)
        for p in path:
            d = d.get(p) if isinstance(d, dict) else None
        if isinstance(d, (int, float)):
            values.append(float(d))
    return median(values)


def _counts(rounds: list[dict[str, Any]], system: str, key: str) -> str:
    values = [rnd[system].get(key) for rnd in rounds if system in rnd]
    if any(v is None for v in values):
        return "-"
    return str(values[0]) if len(set(values)) == 1 else "/".join(str(v) for v in values)


def summarise_throughput(rounds: list[dict[str, Any]], systems: list[str]) -> dict[str, Any]:
    keys = ("events_per_s", "worker_us_per_event", "redis_us_per_event", "kafka_us_per_event",
            "worker_cores", "accuracy")
    return {s: {k: _med(rounds, s, k) for k in keys} for s in systems}


def report_throughput(args: argparse.Namespace, rounds: list[dict[str, Any]],
                      systems: list[str]) -> dict[str, Any]:
    med = summarise_throughput(rounds, systems)
    print(f"\n== throughput: {args.events:,} events pre-published, {len(rounds)} round(s) "
          "interleaved, medians (counts per round)")
    print(f"{'system':11s} {'events/s':>9s} {'CPU µs/ev':>9s} {'Redis µs/ev':>11s} "
          f"{'outputs':>9s} {'distinct':>9s} {'dupl.':>6s} {'missing':>7s} {'dead l.':>7s} "
          f"{'accuracy':>8s}  events/s per round")
    for s in systems:
        m = med[s]
        print(f"{s:11s} {m['events_per_s']:9,.0f} {m['worker_us_per_event']:9.0f} "
              f"{m['redis_us_per_event']:11.1f} {_counts(rounds, s, 'outputs'):>9s} "
              f"{_counts(rounds, s, 'distinct'):>9s} {_counts(rounds, s, 'duplicates'):>6s} "
              f"{_counts(rounds, s, 'missing'):>7s} {_counts(rounds, s, 'dead_letters'):>7s} "
              f"{m['accuracy']:8.3f}  "
              f"{[round(r[s]['events_per_s']) for r in rounds if s in r]}")
    for peer in systems[1:]:
        a, b = med[STREAM], med[peer]
        med[f"stream-app / {peer}"] = ratio = {
            k: a[k] / b[k] if b[k] else float("nan")
            for k in ("events_per_s", "worker_us_per_event")}
        print(f"stream-app / {peer}: events/s {ratio['events_per_s']:.2f}, "
              f"CPU µs/event {ratio['worker_us_per_event']:.2f}")
    errors = [f"round {i + 1} {s}: {r[s]['error']}" for i, r in enumerate(rounds)
              for s in systems if r.get(s, {}).get("error")]
    for e in errors:
        print(f"  ! {e}")
    return med


def report_latency(args: argparse.Namespace, rounds: list[dict[str, Any]],
                   systems: list[str]) -> dict[str, Any]:
    print(f"\n== latency at {args.rate:g} events/s for {args.duration:g} s (first "
          f"{args.warmup:g} s left out), output record ts - input record ts, medians of "
          f"{len(rounds)} round(s)")
    print(f"{'system':11s} {'achieved/s':>10s} {'out/sent':>14s} {'p50 ms':>8s} {'p95 ms':>8s} "
          f"{'p99 ms':>8s} {'max ms':>8s} {'worker cores':>12s} {'bench cores':>11s}")
    med: dict[str, Any] = {}
    for s in systems:
        med[s] = {q: _med(rounds, s, "latency_ms", q) for q in ("p50", "p95", "p99", "max")}
        med[s]["achieved_rate"] = _med(rounds, s, "achieved_rate")
        med[s]["worker_cores"] = _med(rounds, s, "cpu_cores", "worker")
        med[s]["bench_cores"] = _med(rounds, s, "cpu_cores", "bench")
        outs = " ".join(f"{r[s]['outputs']}/{r[s]['sent']}" if "sent" in r.get(s, {}) else "error"
                        for r in rounds)
        print(f"{s:11s} {med[s]['achieved_rate']:10,.0f} {outs:>14s} {med[s]['p50']:8.1f} "
              f"{med[s]['p95']:8.1f} {med[s]['p99']:8.1f} {med[s]['max']:8.1f} "
              f"{med[s]['worker_cores']:12.2f} {med[s]['bench_cores']:11.2f}")
    return med


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000, help="events per round (N)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians printed")
    p.add_argument("--no-confluent", dest="confluent", action="store_false",
                   help="leave out the plain confluent-kafka loop")
    p.add_argument("--with-confluent", dest="confluent", action="store_true", default=True,
                   help="include the plain confluent-kafka loop (the default)")
    p.add_argument("--no-drift", action="store_true", help="stream-app without drift checks")
    p.add_argument("--guarantee", choices=("exactly_once", "at_least_once"), default=None,
                   help="stream-app's processing.guarantee (default: the worker's default)")
    p.add_argument("--config", default=str(CONFIG), help="stream-app's TOML (bench/peers.toml)")
    p.add_argument("--entities", type=int, default=500)
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--partitions", type=int, default=4, help="events topic partitions")
    p.add_argument("--rate", type=float, default=None,
                   help="latency mode: publish at this many events/s while each system runs")
    p.add_argument("--duration", type=float, default=20.0, help="latency mode: seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="latency mode: seconds left out")
    p.add_argument("--label-delay", type=float, default=1.0,
                   help="latency mode: stream-app's labels this many seconds after the event")
    p.add_argument("--drain", type=float, default=60.0,
                   help="latency mode: wait at most this long for the last outputs")
    p.add_argument("--timeout", type=float, default=600.0, help="max wait per system (s)")
    p.add_argument("--peers-python", default=None,
                   help=f"python of a venv with the peers' packages (default: {PEERS_VENV}, "
                        "made on first use)")
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("--logs", default=None, help="keep the processes' logs here (default: temp)")
    p.add_argument("--profile-dir", default=None,
                   help="py-spy stream-app's worker (raw stacks; bench/profile_top.py); "
                        "perturbs its figures")
    p.add_argument("--profile-seconds", type=float, default=8.0)
    p.add_argument("--keep", action="store_true", help="keep topics and Redis keys")
    return p.parse_args(argv)


def _on_signal(task: asyncio.Task[Any]) -> None:
    """Ctrl-C or SIGTERM: cancel the run (its ``finally`` blocks stop processes, clean up)."""
    _STOPPING.append(True)
    task.cancel()


def _check_stop() -> None:
    if _STOPPING:  # a library that swallowed the cancellation does not keep the run going
        raise asyncio.CancelledError


async def amain(args: argparse.Namespace, python: Path, tmp: Path) -> dict[str, Any]:
    task = asyncio.current_task()
    if task is not None:  # explicit: a shell's background job starts with SIGINT ignored
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, _on_signal, task)
    systems = [STREAM, BYTEWAX] + ([CONFLUENT] if args.confluent else [])
    busy = busy_neighbours()
    print(f"load average {os.getloadavg()[0]:.2f}; busy processes before the run: "
          f"{busy or 'none'}", flush=True)
    tag = new_tag()
    app_ids: list[str] = []
    rounds: list[dict[str, Any]] = []
    result: dict[str, Any] = {"tag": tag, "busy_before": busy, "systems": systems,
                              "rounds": rounds}
    admin = settings_for(args, tag, "admin", tmp)
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds} ({', '.join(systems)})", flush=True)
            run = latency_round if args.rate else throughput_round
            rounds.append(await run(args, tag, r, systems, python, tmp, app_ids))
    finally:
        for proc in _PROCS:
            if proc.alive():
                proc.stop(timeout_s=10)
        if not args.keep:
            await cleanup(admin, tag, app_ids)
    report = report_latency if args.rate else report_throughput
    result["median"] = report(args, rounds, systems)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    python = Path(args.peers_python) if args.peers_python else ensure_peers_venv(PEERS_VENV)
    versions = {"stream-app venv": {n: metadata.version(n) for n in ("river", "redis", "orjson")},
                "peers venv": peers_versions(python)}
    print(f"peers venv: {versions['peers venv']}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="stream-peers-") as tmpdir:
            tmp = Path(args.logs) if args.logs else Path(tmpdir)
            try:
                import uvloop
                run = uvloop.run
            except ImportError:  # pragma: no cover
                run = asyncio.run
            result = run(amain(args, python, tmp))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; processes stopped, topics and keys deleted", file=sys.stderr)
        return 130
    finally:
        for proc in _PROCS:  # never leave a worker behind, whatever went wrong
            if proc.alive():
                proc.kill()
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "versions": versions,
                                               **result}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
