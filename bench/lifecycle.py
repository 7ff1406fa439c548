"""Model lifecycle figures on real Kafka and Redis, with real worker processes.

1. ``concept``: a ``synthetic`` replay whose labelling rule flips sign at ``--at`` (the drift
   issue's generator, features unchanged), run twice per model: with the lifecycle (a retrain
   signal spawns a challenger; auto-promotion) and without (``lifecycle.challenger=false``).
   Prints the accuracy of the served predictions over the ``--after`` events after the drift
   and the event at which the challenger took over.
2. ``restart``: ``phishing`` replayed by one worker, and again with a ``kill -9`` after
   ``--cut`` events; prints both final prequential accuracies and the restored learn count.

    python bench/lifecycle.py                   # both, the figures in bench/RESULTS.md
    python bench/lifecycle.py concept --models GaussianNB

Kafka and Redis come from ``STREAM_KAFKA_URL`` / ``STREAM_REDIS_URL`` (default: loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import bench_settings, new_tag, start_worker  # noqa: E402
from stream_app import contract  # noqa: E402
from stream_app.kafka_io import ensure_topics, make_consumer, make_producer  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.tools.datasets import DriftSpec, open_dataset  # noqa: E402
from stream_app.tools.replay import _event_value, _label_record, replay  # noqa: E402

MODELS = {"LogisticRegression": [{"name": "StandardScaler"}, {"name": "LogisticRegression"}],
          "GaussianNB": [{"name": "GaussianNB"}]}


async def read_all(settings: Settings, topic: str, *, want: int = 0,
                   timeout_s: float = 180.0) -> list[dict[str, Any]]:
    """Every record of a contract topic (from the beginning), waiting for ``want`` of them."""
    consumer = make_consumer(settings, topic, from_beginning=True, group_id=None)
    await consumer.start()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    idle = 0
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            got = [orjson.loads(m.value) for msgs in batch.values() for m in msgs]
            out += got
            idle = 0 if got else idle + 1
            if (want and len(out) >= want) or (not want and idle >= 4):
                break
    finally:
        await consumer.stop()
    return out


async def metrics_until(settings: Settings, pred: Any, timeout_s: float = 180.0
                        ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [m for m in await read_all(settings, contract.METRICS, timeout_s=5) if pred(m)]
        if found:
            return found[-1]
        await asyncio.sleep(1.0)
    raise TimeoutError("metrics never reached the expected state")


async def concept_run(model: str, lifecycle: bool, n: int, at: int, rate: float,
                      root: Path) -> dict[str, Any]:
    tag = new_tag()
    s = bench_settings(tag, "worker", config=None, no_features=True, data_dir=root,
                       model={"steps": MODELS[model]},
                       lifecycle={"challenger": lifecycle, "compare_labels": 200},
                       drift={"window": 500, "check_every": 250})
    await ensure_topics(s)
    worker = start_worker(s, root / f"{tag}.log")
    spec = DriftSpec(at=at, concept_drift=True)
    truth = {str(it.event["event_id"]): bool(it.label)
             for it in open_dataset("synthetic", seed=5, limit=n, drift=spec)}
    try:
        await metrics_until(s, lambda m: m["lifecycle"].get("role") == "learner")
        await replay(s, "synthetic", seed=5, limit=n, drift=spec, rate=rate)
        preds = await read_all(s, contract.PREDICTIONS, want=n)
        changes = await read_all(s, contract.MODELS)
    finally:
        worker.stop()
    index = {p["event_id"]: int(p["event_id"].rsplit("-", 1)[1]) for p in preds}
    after = [p for p in preds if index[p["event_id"]] >= at]
    took_over = min((index[p["event_id"]] for p in after if p["model_version"] != "1"),
                    default=None)
    return {"accuracy": sum(p["predicted"] == truth[p["event_id"]] for p in after) / len(after),
            "events_after": len(after), "promoted_at_event": took_over,
            "stage_changes": [(c["version"], c["from_stage"], c["to_stage"]) for c in changes]}


async def restart_runs(cut: int, interval: int, root: Path) -> dict[str, Any]:
    items = list(open_dataset("phishing", seed=1, start=time.time(), step_s=0.002))
    n = len(items)
    lifecycle = {"snapshot_every_learns": interval, "snapshot_interval_s": 3600.0}

    async def paced(s: Settings, part: list[Any]) -> None:
        producer = make_producer(s)
        await producer.start()
        try:
            for i in range(0, len(part), 50):
                chunk = part[i:i + 50]
                for it in chunk:
                    await producer.send(s.topic(contract.EVENTS), _event_value(it),
                                        key=str(it.event["entity_id"]).encode())
                await producer.flush()
                for it in chunk:
                    key, value = _label_record(it, 0.0) or (b"", b"")
                    await producer.send(s.topic(contract.LABELS), value, key=key)
                await producer.flush()
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()

    out: dict[str, Any] = {"events": n, "cut": cut, "snapshot_every_learns": interval}
    for mode in ("whole", "killed"):
        tag = new_tag()
        s = bench_settings(tag, "worker", config="configs/phishing.toml", no_features=False,
                           data_dir=root, lifecycle=lifecycle)
        await ensure_topics(s)
        w = start_worker(s, root / f"{tag}.log")
        await metrics_until(s, lambda m: m["lifecycle"].get("role") == "learner")
        if mode == "whole":
            await paced(s, items)
            end = await metrics_until(s, lambda m: m["labels"]["learned"] >= n)
            w.stop()
        else:
            await paced(s, items[:cut])
            before = await metrics_until(s, lambda m: m["labels"]["learned"] >= cut)
            w.kill()
            t0 = time.monotonic()
            w = start_worker(s, root / f"{tag}-2.log")
            killed = before["worker"]
            back = await metrics_until(s, lambda m, killed=killed: m["worker"] != killed
                                       and m["labels"]["learned"] >= cut)
            out["resumed_after_s"] = round(time.monotonic() - t0, 1)
            out["restored_learn_count"] = back["lifecycle"]["restored"]["learn_count"]
            out["relearned"] = back["labels"]["relearned"]
            await paced(s, items[cut:])
            end = await metrics_until(s, lambda m, killed=killed: m["worker"] != killed
                                      and m["labels"]["learned"] >= n)
            w.stop()
        out[f"{mode}_accuracy"] = end["prequential"]["cumulative"]["accuracy"]
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", nargs="?", choices=["all", "concept", "restart"], default="all")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--at", type=int, default=2000)
    ap.add_argument("--after", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=1500.0)
    ap.add_argument("--cut", type=int, default=600)
    ap.add_argument("--interval", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        root = Path(tmp)
        if args.what in ("all", "concept"):
            for model in args.models:
                for on in (True, False):
                    r = await concept_run(model, on, args.at + args.after, args.at, args.rate,
                                          root)
                    print(orjson.dumps({"figure": "concept", "model": model, "lifecycle": on,
                                        **r}).decode(), flush=True)
        if args.what in ("all", "restart"):
            r = await restart_runs(args.cut, args.interval, root)
            print(orjson.dumps({"figure": "restart", **r}).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
