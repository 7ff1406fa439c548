"""Shared plumbing for the benchmarks: settings, publishers, worker processes, topic readers.

Everything here talks to loopback services only (``STREAM_KAFKA_URL`` / ``STREAM_REDIS_URL``,
default ``127.0.0.1``). Every run uses a fresh topic prefix and app id (``bench-<tag>``), so
runs never see each other's records, offsets or Redis keys; :func:`cleanup` removes both.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_app import contract
from stream_app.kafka_io import ensure_topics, make_admin, make_producer
from stream_app.settings import FeatureSettings, Settings, load_settings
from stream_app.tools.datasets import synthetic

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = BENCH_DIR / "fraud-bench.toml"


# -- settings ---------------------------------------------------------------------------------
def new_tag() -> str:
    return uuid.uuid4().hex[:8]


def bench_settings(tag: str, role: str, *, config: str | None, no_features: bool,
                   data_dir: Path, **overrides: Any) -> Settings:
    """Settings for one benchmark process: its own topic prefix ``bench-<tag>.`` and app id.

    Kafka/Redis URLs come from the environment (``STREAM_*``) or the defaults (loopback).
    """
    values: dict[str, Any] = dict(
        topic_prefix=f"bench-{tag}.", app_id=f"bench-{tag}-{role}", web_enabled=False,
        http_enabled=False,
        data_dir=str(data_dir / role), metrics_interval_s=1.0, log_level="warning",
        registry_url=f"file://{data_dir / role}/registry-{tag}",
        registry_key=os.environ.get("STREAM_REGISTRY_KEY") or "bench-only-key-" + tag)
    if no_features:
        values["features"] = FeatureSettings()
    values.update(overrides)
    (data_dir / role).mkdir(parents=True, exist_ok=True)
    return load_settings(config, **values)


def child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process that must see exactly ``settings`` (as the tests do)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update(settings.to_env())
    env.update(extra or {})
    return env


# -- processes --------------------------------------------------------------------------------
class Proc:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(list(argv), env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> int:
        return self.ps.memory_info().rss if self.alive() else 0

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL, as a crash would: no shutdown hooks run."""
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def wait(self, timeout_s: float) -> int:
        """Let the process end by itself within ``timeout_s``, else stop it."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        return self.stop()

    def tail(self, n: int = 3000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]


def start_worker(settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> Proc:
    """A real ``python -m stream_app worker`` process, configured through the environment."""
    return Proc([sys.executable, "-m", "stream_app", "worker"], child_env(settings, extra_env),
                log_path)


def py_spy(pid: int, out: Path, seconds: float, *, nonblocking: bool = False) -> Proc:
    """py-spy ``pid`` for ``seconds`` into ``out`` (raw collapsed stacks, every thread; summarise
    with bench/profile_top.py). It writes ``out`` once the time is up or the process is gone."""
    argv = [shutil.which("py-spy") or "py-spy", "record", "--pid", str(pid), "--rate", "100",
            "--threads", "--format", "raw", "--duration", str(int(seconds)), "-o", str(out)]
    if nonblocking:
        argv.append("--nonblocking")
    return Proc(argv, dict(os.environ), out.with_suffix(".log"))


def service_processes() -> dict[str, psutil.Process]:
    """The local Kafka broker and redis-server processes (for CPU accounting only)."""
    found: dict[str, psutil.Process] = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "kafka" not in found and "java" in (p.info["name"] or "") and "kafka" in cmd.lower():
            found["kafka"] = p
        elif "redis" not in found and (p.info["name"] or "").startswith("redis-server") \
                and ":6379" in cmd:
            found["redis"] = p
    return found


def busy_neighbours(seconds: float = 1.0, threshold: float = 0.15) -> list[str]:
    """Other processes using more than ``threshold`` of a core right now (they skew results)."""
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid != me]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(seconds)
    busy = []
    for p in procs:
        try:
            share = p.cpu_percent(None) / 100.0
        except psutil.Error:
            continue
        if share > threshold:
            cmd = " ".join(p.info["cmdline"] or [p.info["name"] or "?"])[:80]
            busy.append(f"{share:.2f} cores: pid {p.pid} {cmd}")
    return busy


@dataclass
class CpuSampler:
    """Samples CPU seconds and RSS of named processes every ``interval_s`` (an asyncio task).

    The CPU of the processes named in ``tree`` includes their children's (live ones, and
    those they waited for).
    """

    procs: dict[str, psutil.Process]
    interval_s: float = 0.5
    samples: list[tuple[float, dict[str, float], dict[str, int]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    tree: frozenset[str] = frozenset()

    def _cpu(self, name: str, p: psutil.Process) -> float:
        t = p.cpu_times()
        total = t.user + t.system
        if name in self.tree:
            total += t.children_user + t.children_system
            for child in p.children(recursive=True):
                try:
                    c = child.cpu_times()
                    total += c.user + c.system
                except psutil.Error:
                    pass
        return total

    def sample(self) -> None:
        cpu, rss = {}, {}
        for name, p in self.procs.items():
            try:
                cpu[name] = self._cpu(name, p)
                rss[name] = p.memory_info().rss
            except psutil.Error:
                continue
        self.samples.append((time.time(), cpu, rss))

    def cpu_seconds(self, name: str, t0: float, t1: float) -> float:
        """CPU seconds ``name`` used between wall times t0 and t1 (linear between samples)."""
        points = [(s[0], s[1][name]) for s in self.samples if name in s[1]]

        def at(t: float) -> float:
            if not points:
                return math.nan
            if t <= points[0][0]:
                return points[0][1]
            for (ta, ca), (tb, cb) in zip(points, points[1:], strict=False):
                if ta <= t <= tb:
                    return ca + (cb - ca) * ((t - ta) / (tb - ta) if tb > ta else 1.0)
            return points[-1][1]

        return at(t1) - at(t0)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.sample()

    def cpu_share(self, t0: float, t1: float) -> dict[str, float]:
        """Average CPU use (1.0 = one full core) of each process between wall times t0 and t1."""
        if not self.samples or t1 <= t0:
            return {}
        before = max((s for s in self.samples if s[0] <= t0), default=self.samples[0],
                     key=lambda s: s[0])
        after = min((s for s in self.samples if s[0] >= t1), default=self.samples[-1],
                    key=lambda s: s[0])
        span = after[0] - before[0]
        if span <= 0:
            return {}
        return {name: (after[1][name] - before[1][name]) / span
                for name in after[1] if name in before[1]}

    def peak_rss(self, name: str) -> int:
        return max((s[2].get(name, 0) for s in self.samples), default=0)


# -- publishing -------------------------------------------------------------------------------
@dataclass
class Dataset:
    event_ids: list[str]
    events: list[tuple[bytes, bytes]]  # (key = entity_id, value)
    labels: list[tuple[bytes, bytes]]  # (key = event_id, value)
    truth: list[bool] = field(default_factory=list)  # each event's label, in event order


def _numeric_only(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its string features (``synthetic`` always adds ``channel``)."""
    return {**event, "features": {k: v for k, v in event["features"].items()
                                  if not isinstance(v, str)}}


def make_dataset(n: int, *, seed: int = 42, entities: int = 500, zipf: float = 1.1,
                 start: float | None = None, spacing_s: float = 0.001,
                 label_delay_s: float = 0.0, n_features: int = 4,
                 numeric_only: bool = False) -> Dataset:
    """``n`` synthetic events (stream_app.tools.datasets.synthetic, numeric ``f0..f{n_features-1}``
    plus ``channel`` unless ``numeric_only``) and one label per event."""
    start = time.time() if start is None else start
    ids, events, labels, truth = [], [], [], []
    for item in synthetic(seed, n, n_features=n_features, n_entities=entities, zipf_s=zipf,
                          start=start, step_s=spacing_s):
        ev = _numeric_only(item.event) if numeric_only else item.event
        ids.append(ev["event_id"])
        events.append((ev["entity_id"].encode(), orjson.dumps(ev)))
        labels.append((ev["event_id"].encode(), orjson.dumps(
            {"event_id": ev["event_id"], "label": item.label,
             "timestamp": round(ev["timestamp"] + label_delay_s, 6)})))
        truth.append(bool(item.label))
    return Dataset(ids, events, labels, truth)


async def publish_all(settings: Settings, records: Iterable[tuple[str, bytes, bytes]],
                      *, max_in_flight: int = 20_000) -> float:
    """Send ``(topic, key, value)`` records as fast as the producer goes; return seconds taken."""
    producer = make_producer(settings, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    t0 = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= max_in_flight:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def publish_paced(settings: Settings, n: int, rate: float, *, seed: int, entities: int,
                        label_delay_s: float, zipf: float = 1.1, labels: bool = True,
                        stop_after_s: float | None = None) -> dict[str, float]:
    """Publish ``n`` fresh synthetic events at ``rate``/s (event timestamp = send time), each
    label ``label_delay_s`` later; return ``{event_id: wall time just after producer.send}``.

    The producer lingers 1 ms (a record leaves at most 1 ms after its send time; with 0 ms
    every record is its own produce request, which costs the shared CPU more than the worker).
    """
    producer = make_producer(settings, linger_ms=1)
    await producer.start()
    events_topic, labels_topic = settings.topic(contract.EVENTS), settings.topic(contract.LABELS)
    sent: dict[str, float] = {}
    due_labels: list[tuple[float, bytes, bytes]] = []  # appended in due order
    li = 0
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Any]] = []
    gen = iter(synthetic(seed, n, n_entities=entities, zipf_s=zipf, start=time.time(),
                         step_s=1.0 / rate))
    t0 = loop.time()
    try:
        for i in range(n):
            due = t0 + i / rate
            now = loop.time()
            if due > now + 0.0005:
                await asyncio.sleep(due - now)
            item = next(gen)
            ev = dict(item.event)
            ev["timestamp"] = round(time.time(), 6)
            futures.append(await producer.send(events_topic, orjson.dumps(ev),
                                               key=ev["entity_id"].encode()))
            sent[ev["event_id"]] = time.time()
            if labels:
                label = {"event_id": ev["event_id"], "label": item.label,
                         "timestamp": round(ev["timestamp"] + label_delay_s, 6)}
                due_labels.append((loop.time() + label_delay_s, ev["event_id"].encode(),
                                   orjson.dumps(label)))
            while li < len(due_labels) and due_labels[li][0] <= loop.time():
                _, k, v = due_labels[li]
                futures.append(await producer.send(labels_topic, v, key=k))
                li += 1
            if len(futures) > 5000:
                await asyncio.gather(*futures)
                futures.clear()
            if stop_after_s is not None and loop.time() - t0 > stop_after_s:
                break
        while li < len(due_labels):
            wait = due_labels[li][0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            _, k, v = due_labels[li]
            futures.append(await producer.send(labels_topic, v, key=k))
            li += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


# -- reading ----------------------------------------------------------------------------------
def _consumer(settings: Settings, **kw: Any) -> AIOKafkaConsumer:
    # read_committed: with transactional outputs a record counts once its transaction commits
    # (the same as read_uncommitted for topics written without transactions)
    kw.setdefault("isolation_level", "read_committed")
    return AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                            enable_auto_commit=False, client_id="bench-reader", **kw)


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 30.0
                      ) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while True:
        cluster = await consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} never appeared")
        await asyncio.sleep(0.2)


async def count_records(settings: Settings, topic: str) -> int:
    """Records in ``topic`` (sum of end offsets; the bench topics are never compacted)."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def wait_for_count(settings: Settings, topic: str, want: int, *, timeout_s: float,
                         alive: Callable[[], bool] = lambda: True, interval_s: float = 0.5
                         ) -> int:
    """Poll the end offsets of ``topic`` until it holds ``want`` records (cheap: no fetching)."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        deadline = time.monotonic() + timeout_s
        got = 0
        while time.monotonic() < deadline and alive():
            ends = await consumer.end_offsets(tps)
            got = sum(ends.values())
            if got >= want:
                return got
            await asyncio.sleep(interval_s)
        return got
    finally:
        await consumer.stop()


@dataclass
class Read:
    keys: list[bytes | None]
    values: list[bytes]
    timestamps_ms: list[int]
    arrivals: list[float]


async def read_topic(settings: Settings, topic: str, *, want: int | None = None,
                     timeout_s: float = 120.0, idle_s: float = 3.0) -> Read:
    """Every record of ``topic`` from the beginning (until ``want`` records, or ``idle_s`` with
    nothing new once the end offsets are reached)."""
    consumer = _consumer(settings, max_partition_fetch_bytes=4 * 1024 * 1024,
                         fetch_max_bytes=16 * 1024 * 1024)
    await consumer.start()
    out = Read([], [], [], [])
    try:
        tps = await _partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        target = sum(ends.values()) if want is None else want
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline and len(out.values) < target:
            got = await consumer.getmany(timeout_ms=200, max_records=20_000)
            now = time.time()
            for batch in got.values():
                for r in batch:
                    out.keys.append(r.key)
                    out.values.append(r.value)
                    out.timestamps_ms.append(r.timestamp)
                    out.arrivals.append(now)
                last_new = time.monotonic()
            if not got and time.monotonic() - last_new > idle_s:
                break
    finally:
        await consumer.stop()
    return out


class LiveReader:
    """Consumes a topic from the beginning in the background, noting each record's arrival."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic
        self.read = Read([], [], [], [])
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _run(self) -> None:
        consumer = _consumer(self.settings, fetch_max_wait_ms=10)
        await consumer.start()
        try:
            tps = await _partitions(consumer, self.topic)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                got = await consumer.getmany(timeout_ms=50, max_records=5000)
                now = time.time()
                for batch in got.values():
                    for r in batch:
                        self.read.keys.append(r.key)
                        self.read.values.append(r.value)
                        self.read.timestamps_ms.append(r.timestamp)
                        self.read.arrivals.append(now)
        finally:
            await consumer.stop()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> Read:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.read


async def latest_metrics(settings: Settings, *, until: Callable[[dict[str, Any]], bool],
                         timeout_s: float, alive: Callable[[], bool] = lambda: True
                         ) -> dict[str, Any] | None:
    """The newest snapshot on the ``metrics`` topic once ``until(snapshot)`` holds (else the
    newest seen, or None)."""
    topic = settings.topic(contract.METRICS)
    consumer = _consumer(settings, fetch_max_wait_ms=100)
    await consumer.start()
    newest: dict[str, Any] | None = None
    try:
        tps = await _partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive():
            got = await consumer.getmany(timeout_ms=200)
            for batch in got.values():
                for r in batch:
                    snap = orjson.loads(r.value)
                    if newest is None or snap.get("at", 0) >= newest.get("at", 0):
                        newest = snap
            if newest is not None and until(newest):
                return newest
    finally:
        await consumer.stop()
    return newest


# -- cleanup ----------------------------------------------------------------------------------
async def cleanup(settings: Settings, tag: str, app_ids: Sequence[str]) -> None:
    """Delete the run's topics (``bench-<tag>*``) and its Redis keys (``stream:<app_id>:*``)."""
    admin = make_admin(settings)
    try:
        await admin.start()
        mine = [t for t in await admin.list_topics() if t.startswith(f"bench-{tag}")]
        if mine:
            await admin.delete_topics(mine)
    except Exception as exc:  # cleanup must not hide the results
        print(f"  (topic cleanup failed: {exc!r})", file=sys.stderr)
    finally:
        await admin.close()
    if settings.store_url.startswith(("redis://", "rediss://", "unix://")):
        for app_id in app_ids:
            await drop_redis_keys(settings.store_url, f"stream:{app_id}:*")


async def drop_redis_keys(redis_url: str, match: str, chunk: int = 5000) -> None:
    """Unlink every key matching ``match`` (SCAN, then UNLINK ``chunk`` keys at a time)."""
    import redis.asyncio as aredis

    r = aredis.Redis.from_url(redis_url)
    try:
        batch = []
        async for key in r.scan_iter(match=match, count=chunk):
            batch.append(key)
            if len(batch) >= chunk:
                await r.unlink(*batch)
                batch.clear()
        if batch:
            await r.unlink(*batch)
    finally:
        await r.aclose()


# -- statistics -------------------------------------------------------------------------------
def rate_between(timestamps_ms: Sequence[int]) -> tuple[float, float, float]:
    """``(events/s, first, last)`` from record timestamps: (n - 1) / (last - first)."""
    if len(timestamps_ms) < 2:
        return 0.0, 0.0, 0.0
    first, last = min(timestamps_ms) / 1000.0, max(timestamps_ms) / 1000.0
    return ((len(timestamps_ms) - 1) / (last - first) if last > first else math.inf), first, last


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    values = [v for v in values if v == v]  # NaN: not measured
    if not values:
        return {f"p{q:g}": math.nan for q in qs} | {"max": math.nan, "n": 0}
    s = sorted(values)
    out = {}
    for q in qs:  # nearest-rank
        k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
        out[f"p{q:g}"] = s[k]
    out["max"] = s[-1]
    out["n"] = len(s)
    return out


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def ensure(settings: Settings, names: Sequence[str] | None = None) -> Any:
    return ensure_topics(settings, names)


def fmt_stage(stage: dict[str, Any] | None) -> str:
    if not stage or not stage.get("n"):
        return "-"
    return (f"p50 {stage['p50']:.2f}  p95 {stage['p95']:.2f}  p99 {stage['p99']:.2f}  "
            f"max {stage['max']:.2f}  (n={stage['n']})")
