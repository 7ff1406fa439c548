"""Checkpoints off the event loop (issue 10): no loop stall, no race with learning or scoring.

In process: the Engine on the memory store, the registry in files (``tests.test_lifecycle``).
A model made big with River state (30,000 ``proba.Gaussian``, each with its own
``random.Random``, as in a forest's leaves) takes about a second to pickle.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from river import proba

from models.allowlist import ANOMALY_DETECTORS, CLASSIFIERS
from models.registry.pickling import ForkedPickles, PicklingFailed, can_fork, dumps
from models.spec import ModelSettings, StepSettings, build_model
from stream_app.errors import ConfigError
from stream_app.pipeline.records import Record
from stream_app.settings import load_settings
from tests.kafka_helpers import event, label
from tests.test_lifecycle import Worker, feed, settings_for, stream, weights


def ballast(n: int = 30_000, seed: int = 5) -> list[Any]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        g = proba.Gaussian(seed=i)
        for _ in range(3):
            g.update(rng.random())
        out.append(g)
    return out


class LagProbe:
    """A task that sleeps 10 ms at a time and records the longest overshoot."""

    def __init__(self) -> None:
        self.max_lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            self.max_lag_s = max(self.max_lag_s, time.perf_counter() - t0 - 0.01)

    def __enter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def records(topic: str, first: int, values: list[bytes]) -> list[Record]:
    return [Record(topic, 0, first + i, b"k", v, time.time()) for i, v in enumerate(values)]


async def test_a_big_checkpoint_never_stalls_the_loop_and_learning_waits_for_it(
        tmp_path: Path) -> None:
    w = Worker(settings_for(tmp_path, snapshot_every_learns=10**6, snapshot_interval_s=3600))
    await w.start(learner=True)
    await feed(w, stream(100), 0)
    await w.keeper.checkpoint(force=True)  # small: the next is pickled in a thread
    assert not w.keeper.forks_next
    engine = w.engine
    engine.model.pipeline.ballast = ballast()  # River state, a second's pickling
    learned, taken_weights = engine.metrics.learned, weights(engine)
    more = [(event(f"m{i}", a=0.5, b=0.5), label(f"m{i}", True)) for i in range(40)]

    scored_during: list[float] = []
    with LagProbe() as probe:
        t0 = time.perf_counter()
        ckpt = asyncio.create_task(w.keeper.checkpoint(force=True))
        await asyncio.sleep(0)  # the checkpoint takes its locks and starts its thread
        assert engine.learn_lock.locked()
        # scoring goes on; these labels must wait for the pickle
        await engine.process_events(records("events", 100, [ev for ev, _ in more]))
        scored_during.append(time.perf_counter() - t0)
        learn = asyncio.create_task(engine.process_labels(records("labels", 100,
                                                                  [lb for _, lb in more])))
        sid = await ckpt
        took = time.perf_counter() - t0
        await learn
    assert took > 0.5, f"the checkpoint took {took:.2f} s: too small to prove anything"
    assert probe.max_lag_s < 0.1, f"event loop stalled {probe.max_lag_s * 1000:.0f} ms"
    assert scored_during[0] < took
    assert engine.metrics.learned == learned + len(more)  # learned, after the pickle

    state, info = await w.keeper.registry.load_snapshot("default", "1", sid)
    assert info.learn_count == learned and info.label_offsets == {"labels:0": 100}
    assert dict(state["pipeline"].steps["LogisticRegression"].weights) == taken_weights
    assert dumps(state["pipeline"].ballast) == dumps(engine.model.pipeline.ballast)


@pytest.mark.skipif(not can_fork(), reason="pickling in a forked child is for Linux")
async def test_a_big_checkpoint_pickled_by_a_child_lets_learning_go_on(tmp_path: Path) -> None:
    """Past ``checkpoint_fork_bytes`` a child pickles the model as it was at the fork: the
    labels that come meanwhile are learned at once, and the snapshot holds none of them."""
    w = Worker(settings_for(tmp_path, snapshot_every_learns=10**6, snapshot_interval_s=3600,
                            checkpoint_fork_bytes=0))
    await w.start(learner=True)
    await feed(w, stream(100), 0)
    engine = w.engine
    engine.model.pipeline.ballast = ballast()  # River state, a second's pickling
    learned, taken_weights = engine.metrics.learned, weights(engine)
    ballast_pickle = dumps(engine.model.pipeline.ballast)
    more = [(event(f"m{i}", a=0.5, b=0.5), label(f"m{i}", True)) for i in range(40)]
    gc.unfreeze()
    with LagProbe() as probe:
        t0 = time.perf_counter()
        ckpt = asyncio.create_task(w.keeper.checkpoint(force=True))
        await asyncio.sleep(0)  # the checkpoint forks under its locks, and lets them go
        await engine.process_events(records("events", 100, [ev for ev, _ in more]))
        await engine.process_labels(records("labels", 100, [lb for _, lb in more]))
        assert not ckpt.done()  # learned while the child pickles
        assert engine.metrics.learned == learned + len(more)
        sid = await ckpt
        took = time.perf_counter() - t0
    assert took > 0.5, f"the checkpoint took {took:.2f} s: too small to prove anything"
    assert probe.max_lag_s < 0.1, f"event loop stalled {probe.max_lag_s * 1000:.0f} ms"
    assert weights(engine) != taken_weights
    # a big model's objects are out of the cyclic GC's reach (``lifecycle.gc_freeze``)
    assert gc.get_freeze_count() > len(ballast_pickle) // 1000
    gc.unfreeze()
    state, info = await w.keeper.registry.load_snapshot("default", "1", sid)
    assert info.learn_count == learned and info.label_offsets == {"labels:0": 100}
    assert dict(state["pipeline"].steps["LogisticRegression"].weights) == taken_weights
    assert dumps(state["pipeline"].ballast) == ballast_pickle


@pytest.mark.skipif(not can_fork(), reason="pickling in a forked child is for Linux")
async def test_a_first_checkpoint_of_unknown_size_is_pickled_by_a_child(tmp_path: Path) -> None:
    """A fresh learner's first checkpoint may be of a big model: a child pickles it (a thread
    held the loop 174 ms for a 226 MB forest); once its size is known, a small model's next
    checkpoints go to a thread, and a restored model's size is known from the start."""
    settings = settings_for(tmp_path, snapshot_every_learns=10**6, snapshot_interval_s=3600)
    w = Worker(settings)
    await w.start(learner=True)
    await feed(w, stream(100), 0)
    assert w.keeper.forks_next
    forks: list[int] = []
    start = ForkedPickles.start

    def counted(objs: list[Any]) -> ForkedPickles:
        forks.append(len(objs))
        return start(objs)

    ForkedPickles.start = counted  # type: ignore[method-assign]
    try:
        first = await w.keeper.checkpoint(force=True)
        assert forks == [1] and first is not None
        assert not w.keeper.forks_next  # a few kB: a thread from now on
        await feed(w, stream(120)[100:], 100)
        assert await w.keeper.checkpoint(force=True) is not None
        assert forks == [1]
    finally:
        ForkedPickles.start = start  # type: ignore[method-assign]
    state, info = await w.keeper.registry.load_snapshot("default", "1", first)
    assert info.learn_count == 100 and "pipeline" in state
    again = Worker(settings)
    await again.start(learner=True)  # restores: the size is the snapshot's
    assert not again.keeper.forks_next


class _Stuck:
    """Pickles at once in this process; in a child of it, never returns."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __reduce__(self) -> tuple[Any, ...]:
        while os.getpid() != self.pid:
            time.sleep(1)
        return (_Stuck, ())


@pytest.mark.skipif(not can_fork(), reason="pickling in a forked child is for Linux")
def test_a_child_past_its_time_is_killed_and_says_so() -> None:
    job = ForkedPickles.start([_Stuck()])
    pid = job._pid
    t0 = time.monotonic()
    with job, pytest.raises(PicklingFailed, match="still running after 0.5 s"):
        job.result(timeout_s=0.5)
    assert time.monotonic() - t0 < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # killed and reaped: no zombie left behind


class _OnlyInTheParent:
    """Pickles in this process, and fails to in any child of it."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __reduce__(self) -> tuple[Any, ...]:
        if os.getpid() != self.pid:
            raise RuntimeError("pickled in a child")
        return (_OnlyInTheParent, ())


@pytest.mark.skipif(not can_fork(), reason="pickling in a forked child is for Linux")
async def test_a_failed_child_falls_back_to_a_thread_and_says_so(tmp_path: Path,
                                                                 caplog) -> None:
    w = Worker(settings_for(tmp_path, snapshot_every_learns=10**6, snapshot_interval_s=3600,
                            checkpoint_fork_bytes=0))
    await w.start(learner=True)
    await feed(w, stream(100), 0)
    w.engine.model.pipeline.odd = _OnlyInTheParent()
    with caplog.at_level("WARNING", logger="stream_app.lifecycle"):
        sid = await w.keeper.checkpoint(force=True)
    assert sid is not None
    state, info = await w.keeper.registry.load_snapshot("default", "1", sid)
    assert info.learn_count == w.engine.metrics.learned
    assert isinstance(state["pipeline"].odd, _OnlyInTheParent)
    assert "pickled in a child" in caplog.text and "in a thread from now on" in caplog.text
    w.engine.learns_since_snapshot = 1
    assert await w.keeper.checkpoint(force=True) is not None  # a thread's, with no warning
    assert caplog.text.count("forked checkpoint failed") == 1


def _pipelines() -> list[tuple[str, ...]]:
    return [("StandardScaler", name) for name in CLASSIFIERS] + \
           [("MinMaxScaler", name) for name in ANOMALY_DETECTORS]


@pytest.mark.parametrize("steps", _pipelines(), ids="|".join)
def test_scoring_leaves_a_learned_model_as_it_was(steps: tuple[str, ...]) -> None:
    """Why scoring may go on while another thread pickles (``stream_app.lifecycle``)."""
    model = build_model(ModelSettings(steps=tuple(StepSettings(name=s) for s in steps)))
    rng = random.Random(1)
    features = [f"f{i}" for i in range(6)]
    for _ in range(200):
        x = {f: rng.random() for f in features}
        model.learn_one(x, x["f0"] > 0.5 if model.kind == "classifier" else None)
    before = dumps(model.pipeline)
    for _ in range(100):
        model.predict_proba_one({f: rng.random() for f in features})
    assert dumps(model.pipeline) == before


async def test_the_next_checkpoint_waits_in_proportion_to_the_last_ones_size(
        tmp_path: Path) -> None:
    w = Worker(settings_for(tmp_path, snapshot_interval_s=0.01, checkpoint_max_bytes_per_s=1000))
    await w.start(learner=True)
    await feed(w, stream(50), 0)
    keeper = w.keeper
    await keeper.checkpoint()
    size = (await keeper.registry.snapshots("default", "1"))[-1].checkpoint_size
    w.engine.learns_since_snapshot = 1
    keeper._last_checkpoint = time.monotonic() - size / 1000 + 0.5
    assert not keeper.due()  # interval long passed, but not size / rate
    keeper._last_checkpoint -= 0.5
    assert keeper.due()


async def test_a_small_model_checkpoints_as_often_as_before(tmp_path: Path) -> None:
    w = Worker(settings_for(tmp_path))  # the defaults: 2 s, 4 MiB/s
    await w.start(learner=True)
    await feed(w, stream(50), 0)
    await w.keeper.checkpoint()
    w.engine.learns_since_snapshot = 1
    w.keeper._last_checkpoint = time.monotonic() - 2.0
    assert w.keeper.due()


async def test_retention_by_bytes_keeps_the_newest_within_keep_bytes(tmp_path: Path) -> None:
    w = Worker(settings_for(tmp_path, snapshot_every_learns=20, snapshot_interval_s=3600,
                            keep_bytes=1))
    await w.start(learner=True)
    await feed(w, stream(200), 0, batch=20)
    snaps = await w.keeper.registry.snapshots("default", "1")
    assert [s.snapshot_id for s in snaps] == [w.engine.snapshot_id] == [10]


@pytest.mark.parametrize("lifecycle", [{"checkpoint_max_bytes_per_s": 0}, {"keep_bytes": -1}])
def test_byte_limits_are_checked(lifecycle: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(lifecycle))):
        load_settings(environ={}, lifecycle=lifecycle)


@pytest.mark.parametrize("freeze", [True, False])
async def test_a_big_snapshot_is_unpickled_out_of_the_gcs_reach(tmp_path: Path,
                                                                freeze: bool) -> None:
    """Unpickled with the GC paused, a big model's objects all land in its youngest
    generation, whose next pass held the GIL ~0.6 s for a 100-tree forest: past
    ``freeze_bytes`` they are frozen before the GC runs again (``pickling.loads``)."""
    w = Worker(settings_for(tmp_path, snapshot_every_learns=10**6, snapshot_interval_s=3600))
    await w.start(learner=True)
    await feed(w, stream(50), 0)
    w.engine.model.pipeline.ballast = ballast(10_000)
    sid = await w.keeper.checkpoint(force=True)
    size = (await w.keeper.registry.snapshots("default", "1"))[-1].checkpoint_size
    gc.collect()
    gc.unfreeze()
    try:
        state, _ = await w.keeper.registry.load_snapshot(
            "default", "1", sid, freeze_bytes=size if freeze else size + 1)
        frozen = gc.get_freeze_count()
        assert len(state["pipeline"].ballast) == 10_000
        if freeze:  # every Gaussian, its Random and its dict at least
            assert frozen >= 3 * 10_000, frozen
        else:
            assert frozen == 0
    finally:
        gc.unfreeze()
