"""Event-loop lag while a big model is checkpointed: pickling on the loop, then off it.

An ARF (``--trees``, trained on ``--learns`` synthetic events; cached in ``--cache``) is
checkpointed by an in-process ``ModelKeeper`` to a registry (``--registry``: a temporary
``file://`` folder, or ``redis`` for ``STREAM_REDIS_URL``) on uvloop, as the worker runs, while a
task that sleeps 10 ms records how late it wakes up. On Linux every checkpoint is pickled by a
forked child (the first because its size is not known yet, the next past
``lifecycle.checkpoint_fork_bytes``); ``--first-in-thread`` pickles the first in a thread, as
before. Figures in ``bench/RESULTS.md``.

    python bench/checkpoint_lag.py                        # 100 trees, 10,000 learns (~3 min to train)
    python bench/checkpoint_lag.py --registry redis
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.registry.pickling import ForkedPickles, can_fork, dumps, loads  # noqa: E402
from stream_app.lifecycle import ModelKeeper  # noqa: E402
from stream_app.pipeline.engine import Engine  # noqa: E402
from stream_app.settings import load_settings  # noqa: E402


def forest(trees: int, learns: int, cache: Path) -> Any:
    path = cache / f"arf-{trees}-{learns}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    from river import forest as rf
    from river import preprocessing
    rng = random.Random(1)
    model = preprocessing.StandardScaler() | rf.ARFClassifier(n_models=trees, seed=1)
    t0 = time.perf_counter()
    for _ in range(learns):
        x = {f"f{j}": rng.gauss(0, 1) for j in range(20)}
        model.learn_one(x, (x["f0"] + 0.5 * x["f1"] + rng.gauss(0, 0.5)) > 0)
    print(f"trained {trees} trees on {learns} events in {time.perf_counter() - t0:.0f} s")
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model, protocol=5))
    return model


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Probe:
    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - t0 - 0.01)

    def summary(self) -> str:
        lags = sorted(self.lags)
        return (f"loop lag max {lags[-1] * 1000:.0f} ms, p99 {lags[int(len(lags) * .99)] * 1000:.0f}"
                f" ms, {sum(lag > 0.1 for lag in lags)} wake-ups > 100 ms")


async def probed(what: str, step: Any) -> Any:
    probe = Probe()
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.2)
    probe.lags.clear()
    t0 = time.perf_counter()
    result = await step()
    took = time.perf_counter() - t0
    await asyncio.sleep(0.05)
    task.cancel()
    print(f"{what}: {took:.2f} s, {probe.summary()}", flush=True)
    return result


async def main(args: argparse.Namespace) -> None:
    model = forest(args.trees, args.learns, args.cache)
    with tempfile.TemporaryDirectory() as root:
        url = os.environ.get("STREAM_REDIS_URL", "redis://127.0.0.1:6379/0") \
            if args.registry == "redis" else f"file://{root}/registry"
        settings = load_settings(environ={}, feature_store_url="memory://", registry_url=url,
                                 registry_key="bench-checkpoint-key-0123456789",
                                 app_id=f"bench-ckpt-{os.getpid()}", drift={"enabled": False})
        engine = Engine(settings)
        keeper = ModelKeeper(settings, engine)
        await engine.start()
        await keeper.become_learner()
        engine.model.pipeline = model
        engine.metrics.learned = engine.learns_since_snapshot = args.learns

        async def on_loop() -> int:  # what save_snapshot did before: pickle.dumps on the loop
            return len(pickle.dumps({"pipeline": model}, protocol=5))

        size = await probed("pickle.dumps on the loop (before)", on_loop)
        print(f"  {size / 1e6:.0f} MB")
        blob = await probed("registry pickler in a thread", lambda: asyncio.to_thread(
            dumps, {"pipeline": model}))
        print(f"  {len(blob) / 1e6:.0f} MB")
        if args.first_in_thread:
            keeper._last_bytes = 0
        for i in range(args.checkpoints):
            engine.learns_since_snapshot = 1
            how = "forked child" if keeper.forks_next else "thread"
            await probed(f"ModelKeeper.checkpoint #{i + 1} ({args.registry}, {how})",
                         lambda: keeper.checkpoint(force=True))
        if can_fork():
            t0 = time.perf_counter()
            with ForkedPickles.start([None]) as job:
                forked = time.perf_counter() - t0
                job.result()
            print(f"  os.fork() of this process (RSS {rss_mib():.0f} MiB): "
                  f"{forked * 1000:.1f} ms on the loop")
        print(f"  next checkpoint no sooner than "
              f"{keeper._last_bytes / settings.lifecycle.checkpoint_max_bytes_per_s:.0f} s")
        for _ in range(2):  # first: a later young collection would scan the unfrozen one's
            await probed("load_snapshot, frozen out of the GC (what a scorer does)",
                         lambda: keeper.registry.load_snapshot(
                             "default", engine.model.version,
                             freeze_bytes=settings.lifecycle.checkpoint_fork_bytes))
        await probed("load_snapshot, its objects left to the GC (before)",
                     lambda: keeper.registry.load_snapshot("default", engine.model.version))
        await probed("registry unpickler in a thread", lambda: asyncio.to_thread(loads, blob))
        reg: Any = keeper.registry
        if args.registry == "redis":  # this run's keys only (its own namespace)
            keys = [k async for k in reg._r.scan_iter(match=reg.prefix + "*", count=1000)]
            if keys:
                await reg._r.delete(*keys)
        await reg.aclose()
        await engine.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--learns", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--first-in-thread", action="store_true",
                        help="the first checkpoint in a thread (its size taken as known, small)")
    parser.add_argument("--registry", choices=["file", "redis"], default="file")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bench-arf")
    uvloop.run(main(parser.parse_args()))
