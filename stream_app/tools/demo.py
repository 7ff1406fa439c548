"""``stream-app demo``: the one-command tour.

Uses the configured Kafka and Redis when both answer, otherwise starts the embedded pair; starts a
worker process, replays ``phishing`` with delayed labels, shows live progress and ends with a
summary. Whatever it started, it stops, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr
from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream_app import contract
from stream_app.kafka_io import ensure_topics, make_consumer
from stream_app.settings import Settings
from stream_app.tools import services as svc
from stream_app.tools.replay import replay

__all__ = ["run_demo"]


@dataclass
class Progress:
    started: float = field(default_factory=time.monotonic)
    events_sent: int = 0
    predictions: int = 0
    dead_letters: int = 0
    latencies: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    replay_done: bool = False
    last_prediction_at: float | None = None
    peak_worker_rate: float = 0.0
    labels_sent: int = 0

    def pct(self, q: float) -> float | None:
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _table(p: Progress, title: str) -> Table:
    m = p.metrics
    labels = m.get("labels", {})
    preq = m.get("prequential", {})
    rolling = preq.get("rolling", {})
    cumulative = preq.get("cumulative", {})
    elapsed = max(1e-9, (p.last_prediction_at or time.monotonic()) - p.started)
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("events published", str(p.events_sent)),
        ("predictions received", str(p.predictions)),
        ("dead letters", str(p.dead_letters)),
        ("throughput (predictions/s, replay start to last)", f"{p.predictions / elapsed:.0f}"),
        ("worker events/s (now / peak)",
         f"{_fmt(m.get('events', {}).get('per_s'), '.0f')} / {p.peak_worker_rate:.0f}"),
        ("labels published / joined", f"{p.labels_sent} / {labels.get('joined', 0)}"),
        ("label coverage (joined / predictions)", _fmt(labels.get("coverage"))),
        ("rolling accuracy", _fmt(rolling.get("accuracy"))),
        ("rolling ROC AUC", _fmt(rolling.get("roc_auc"))),
        ("cumulative accuracy", _fmt(cumulative.get("accuracy"))),
        ("cumulative F1", _fmt(cumulative.get("f1"))),
        ("latency p50 / p95 / p99 (ms)",
         " / ".join(_fmt(p.pct(q), ".1f") for q in (0.5, 0.95, 0.99))),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


async def _watch(settings: Settings, progress: Progress, stop: asyncio.Event) -> None:
    topics = [settings.topic(n) for n in (contract.PREDICTIONS, contract.METRICS,
                                          contract.DEAD_LETTERS)]
    consumer = make_consumer(settings, *topics, from_beginning=True)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for r in records:
                    if tp.topic == topics[0]:
                        progress.predictions += 1
                        progress.last_prediction_at = time.monotonic()
                        progress.latencies.append(orjson.loads(r.value)["latency_ms"])
                    elif tp.topic == topics[1]:
                        progress.metrics = orjson.loads(r.value)
                        rate = progress.metrics.get("events", {}).get("per_s") or 0.0
                        progress.peak_worker_rate = max(progress.peak_worker_rate, rate)
                    else:
                        progress.dead_letters += 1
    finally:
        await consumer.stop()


async def _tour(settings: Settings, console: Console, limit: int | None, rate: float,
                label_delay_s: float, worker: subprocess.Popen[bytes]) -> Progress:
    await ensure_topics(settings)
    progress = Progress()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(settings, progress, stop))

    async def publish() -> None:
        report = await replay(settings, "phishing", rate=rate, limit=limit,
                              label_delay_s=label_delay_s, label_fraction=1.0, seed=42,
                              on_progress=lambda sent, labels: _sent(progress, sent, labels))
        progress.events_sent, progress.labels_sent = report.events_sent, report.labels_sent
        progress.replay_done = True

    await _wait_ready(progress, worker)
    progress.started = time.monotonic()
    publisher = asyncio.create_task(publish())
    with Live(_table(progress, "stream-app demo (live)"), console=console,
              refresh_per_second=4, transient=True) as live:
        while True:
            await asyncio.sleep(0.25)
            live.update(_table(progress, "stream-app demo (live)"))
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode}")
            if publisher.done() and publisher.exception():
                raise publisher.exception()  # type: ignore[misc]
            if progress.replay_done and _finished(progress):
                break
    stop.set()
    await watcher
    return progress


async def _wait_ready(progress: Progress, worker: subprocess.Popen[bytes],
                      timeout_s: float = 90.0) -> None:
    """Wait until the worker reports that the group gave it partitions."""
    deadline = time.monotonic() + timeout_s
    while not progress.metrics.get("partitions_assigned"):
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not get partitions within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


def _sent(progress: Progress, events: int, labels: int) -> None:
    progress.events_sent, progress.labels_sent = events, labels


def _finished(p: Progress) -> bool:
    done = p.predictions + p.dead_letters >= p.events_sent
    joined = p.metrics.get("labels", {}).get("joined", 0)
    return done and joined >= p.labels_sent


def run_demo(settings: Settings, *, limit: int | None, rate: float, label_delay_s: float,
             embedded: bool) -> int:
    console = Console()
    with ExitStack() as stack:
        use_configured = not embedded and all(
            svc.port_open(*svc.host_port(u), timeout=1.0)
            for u in (settings.kafka_url, settings.redis_url))
        updates: dict[str, Any] = {"topic_prefix": f"demo-{uuid.uuid4().hex[:6]}.",
                                   "app_id": f"stream-app-demo-{uuid.uuid4().hex[:6]}",
                                   # the tour is the stream; a taken 8080 must not stop it
                                   "http_enabled": False}
        if not use_configured:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stream-demo-")))
            console.print("[bold]starting the embedded pair[/] (tansu broker + redis-server) …")
            pair = stack.enter_context(svc.embedded_pair(tmp))
            updates.update(kafka_url=pair.kafka_url, redis_url=pair.redis_url, embedded=True,
                           data_dir=str(tmp))
        if settings.registry_key is None:  # the demo's own ephemeral key, never written down
            updates["registry_key"] = SecretStr(secrets.token_hex(32))
            reg = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stream-reg-")))
            updates["registry_url"] = f"file://{reg}"
        demo_settings = settings.model_copy(update=updates)
        console.print(f"Kafka {demo_settings.kafka_url}  Redis {demo_settings.redis_url}  "
                      f"topics '{demo_settings.topic_prefix}*'")
        log_path = Path(demo_settings.data_dir) / "demo-worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        worker = _start_worker(demo_settings, log_path)
        stack.callback(_stop_worker, worker)
        console.print(f"worker pid {worker.pid} (log: {log_path}); replaying phishing "
                      f"at {rate:g} events/s with labels {label_delay_s:g} s later …")
        try:
            progress = asyncio.run(_tour(demo_settings, console, limit, rate, label_delay_s,
                                         worker))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; stopping what the demo started[/]")
            return 130
        except Exception as exc:
            console.print(f"[red]demo failed:[/] {exc}\n--- worker log (tail) ---")
            console.print(log_path.read_text(errors="replace")[-3000:], markup=False)
            return 1
        console.print(_table(progress, "stream-app demo: summary"))
    return 0


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return svc.start_worker(settings, log)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    svc.stop_process(worker, timeout_s=20)
