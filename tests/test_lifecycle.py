"""The model lifecycle in process: the Engine on the memory store, the registry in files.

Restore after a crash relearns exactly what the lost model had learned after its snapshot;
scorers follow the learner's snapshots; a challenger that beats the champion is promoted.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app import contract
from stream_app.errors import ConfigError
from stream_app.lifecycle import ModelKeeper, require_key
from stream_app.pipeline.engine import Engine
from stream_app.pipeline.records import Record, encode
from stream_app.settings import Settings, load_settings
from tests.conftest import TEST_REGISTRY_KEY
from tests.kafka_helpers import event, label


def settings_for(tmp_path: Path, **lifecycle: Any) -> Settings:
    return load_settings(
        environ={}, feature_store_url="memory://", registry_url=f"file://{tmp_path}/registry",
        registry_key=TEST_REGISTRY_KEY, lifecycle=lifecycle,
        drift={"enabled": False})


class Worker:
    """One worker's Engine and ModelKeeper, sharing the store and registry of the test."""

    def __init__(self, settings: Settings, store: Any = None) -> None:
        self.engine = Engine(settings, store=store)
        self.keeper = ModelKeeper(settings, self.engine)
        self.engine.learning_enabled = False

    async def start(self, *, learner: bool) -> dict[int, int]:
        await self.engine.start()
        if learner:
            return await self.keeper.become_learner()
        await self.keeper.start()
        return {}


def stream(n: int, seed: int = 3, flip_at: int | None = None) -> list[tuple[bytes, bytes]]:
    """(event, label) pairs: the label is ``a + b > 1``, inverted from ``flip_at`` on."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.random(), rng.random()
        y = (a + b > 1.0) != (flip_at is not None and i >= flip_at)
        out.append((event(f"e{i}", entity_id=f"u{i % 7}", a=a, b=b), label(f"e{i}", y)))
    return out


async def feed(worker: Worker, pairs: list[tuple[bytes, bytes]], first: int,
               batch: int = 50) -> list[tuple[str, bytes | None, bytes]]:
    """Events then their labels, in batches; offsets count from ``first`` in both topics."""
    outs = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        off = first + start
        outs += await worker.engine.process_events(
            [Record("events", 0, off + i, b"k", ev, time.time()) for i, (ev, _) in enumerate(chunk)])
        outs += await worker.engine.process_labels(
            [Record("labels", 0, off + i, b"k", lb, time.time()) for i, (_, lb) in enumerate(chunk)])
        await worker.keeper.maybe_checkpoint()
        outs += await worker.keeper.judge()
    return outs


def weights(engine: Engine) -> dict[str, float]:
    return dict(engine.model.pipeline.steps["LogisticRegression"].weights)


def topic_values(outs: list[tuple[str, bytes | None, bytes]], topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for t, _, v in encode(outs) if t == topic]


async def test_first_start_creates_version_1_in_production_and_says_so(tmp_path: Path) -> None:
    w = Worker(settings_for(tmp_path))
    await w.start(learner=True)
    prod = await w.keeper.registry.production("default")
    assert (prod.version, prod.parent, prod.spec["steps"][-1]["name"]) == (
        "1", None, "LogisticRegression")
    (change,) = topic_values(await w.keeper.refresh(), contract.MODELS)
    assert (change["version"], change["from_stage"], change["to_stage"]) == (
        "1", None, "production")
    assert w.engine.snapshot_id == 0 and w.keeper.learner


async def test_kill_then_restore_relearns_exactly_what_was_lost(tmp_path: Path) -> None:
    s = settings_for(tmp_path, snapshot_every_learns=100, snapshot_interval_s=3600)
    pairs = stream(400)
    # the uninterrupted run
    ref = Worker(s)
    ref.keeper = ModelKeeper(s.model_copy(update={"registry_url": f"file://{tmp_path}/ref"}),
                             ref.engine)
    await ref.start(learner=True)
    await feed(ref, pairs, 0)

    # a learner that dies (no final checkpoint) after 350 labels: snapshots at 100, 200, 300
    a = Worker(s)
    await a.start(learner=True)
    await feed(a, pairs[:350], 0)
    assert a.engine.metrics.learned == 350 and a.engine.snapshot_id == 3
    store = a.engine.store  # Redis outlives the worker: share the memory store

    b = Worker(s, store=store)
    offsets = await b.start(learner=True)
    assert b.engine.metrics.learned == 300  # at most one interval (100 learns) behind
    assert offsets == {0: 300}              # seek the labels back to the snapshot's offset
    # Kafka redelivers labels 300.. (their events were scored already)
    await b.engine.process_labels(
        [Record("labels", 0, i, b"k", lb, time.time()) for i, (_, lb) in enumerate(pairs[:350])
         if i >= 300])
    assert b.engine.metrics.labels_relearned == 50
    assert b.engine.metrics.learned == 350
    await feed(b, pairs[350:], 350)
    assert b.engine.metrics.learned == 400
    # the same learning, in the same order: the same model and the same training-data hash
    assert weights(b.engine) == pytest.approx(weights(ref.engine), abs=1e-12)
    assert b.engine.data_hash.hexdigest() == ref.engine.data_hash.hexdigest()
    assert b.engine.metrics.prequential.snapshot() == ref.engine.metrics.prequential.snapshot()


async def test_records_fetched_before_the_rewind_took_effect_do_not_hide_lost_labels(
        tmp_path: Path) -> None:
    s = settings_for(tmp_path, snapshot_every_learns=100, snapshot_interval_s=3600)
    pairs = stream(350)
    a = Worker(s)
    await a.start(learner=True)
    await feed(a, pairs, 0)
    b = Worker(s, store=a.engine.store)
    assert await b.start(learner=True) == {0: 300}
    labels = [Record("labels", 0, i, b"k", lb, time.time()) for i, (_, lb) in enumerate(pairs)]
    # Faust's own seek to the committed offset (330) won the race: 330.. come first, then 300..
    await b.engine.process_labels(labels[330:350])
    await b.engine.process_labels(labels[300:350])
    m = b.engine.metrics
    assert (m.learned, m.labels_relearned, m.labels_duplicate) == (350, 50, 20)
    assert b.engine.label_next == {0: 350} and b.engine.label_ahead == {0: set()}


async def test_a_label_and_its_sent_back_copy_in_one_replayed_batch(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    a = Worker(s)
    await a.start(learner=True)
    early = label("e1", True)
    await a.engine.process_labels([Record("labels", 0, 0, b"e1", early, 0.0)])  # parked
    outs = await a.engine.process_events([Record("events", 0, 0, b"k", event("e1", a=1.0, b=1.0),
                                                 time.time())])
    (copy,) = [v for t, _, v in encode(outs) if t == contract.LABELS]
    await a.engine.process_labels([Record("labels", 0, 1, b"e1", copy, 0.0)])
    assert a.engine.metrics.learned == 1  # learned from the copy, at offset 1
    b = Worker(s, store=a.engine.store)
    await b.start(learner=True)  # no snapshot yet: nothing learned, replay from the start
    await b.engine.process_labels([Record("labels", 0, 0, b"e1", early, 0.0),
                                   Record("labels", 0, 1, b"e1", copy, 0.0)])
    m = b.engine.metrics
    assert (m.learned, m.labels_relearned, m.labels_duplicate) == (1, 1, 1)


async def test_a_redelivered_label_batch_is_not_learned_twice(tmp_path: Path) -> None:
    w = Worker(settings_for(tmp_path))
    await w.start(learner=True)
    pairs = stream(20)
    await feed(w, pairs, 0)
    labels = [Record("labels", 0, i, b"k", lb, time.time()) for i, (_, lb) in enumerate(pairs)]
    await w.engine.process_labels(labels)  # the same records again, same positions
    assert w.engine.metrics.learned == 20 and w.engine.metrics.labels_relearned == 0
    assert w.engine.metrics.labels_duplicate == 20


async def test_restore_skips_a_tampered_snapshot_for_the_previous_good_one(
        tmp_path: Path) -> None:
    s = settings_for(tmp_path, snapshot_every_learns=50, snapshot_interval_s=3600)
    a = Worker(s)
    await a.start(learner=True)
    await feed(a, stream(100), 0)
    assert a.engine.snapshot_id == 2
    ckpt = next((tmp_path / "registry/default/1/snapshots").glob("00000002.ckpt"))
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))
    b = Worker(s, store=a.engine.store)
    assert await b.start(learner=True) == {0: 50}
    assert (b.engine.snapshot_id, b.engine.metrics.learned) == (1, 50)


async def test_a_scorer_serves_the_learners_newest_snapshot(tmp_path: Path) -> None:
    s = settings_for(tmp_path, snapshot_every_learns=40, snapshot_interval_s=3600)
    learner = Worker(s)
    await learner.start(learner=True)
    scorer = Worker(s, store=learner.engine.store)
    await scorer.start(learner=False)
    pairs = stream(120)
    await feed(learner, pairs, 0)
    assert learner.engine.snapshot_id == 2  # after batches 1 and 2 (50, 100 learns)
    await scorer.keeper.refresh()
    assert scorer.engine.snapshot_id == 2 and not scorer.engine.learning_enabled
    await learner.keeper.checkpoint()  # the last 20 learns
    await scorer.keeper.refresh()
    assert scorer.engine.snapshot_id == 3
    assert weights(scorer.engine) == weights(learner.engine)
    outs = await scorer.engine.process_events([Record("events", 1, 0, b"k",
                                                      event("z1", a=0.9, b=0.8), time.time())])
    (pred,) = topic_values(outs, contract.PREDICTIONS)
    assert (pred["model_version"], pred["model_snapshot"]) == ("1", 3)
    assert 0 <= scorer.keeper.max_swap_delay_s < 1.0


async def test_a_scorer_forwards_an_early_label_to_the_learner(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    learner = Worker(s)
    await learner.start(learner=True)
    scorer = Worker(s, store=learner.engine.store)
    await scorer.start(learner=False)
    await learner.engine.process_labels([Record("labels", 0, 0, b"e1", label("e1", True), 0.0)])
    outs = await scorer.engine.process_events([Record("events", 2, 0, b"k",
                                                      event("e1", a=1.0, b=1.0), time.time())])
    (fwd,) = [(k, v) for t, k, v in encode(outs) if t == contract.LABELS]
    assert fwd[0] == b"e1" and scorer.engine.metrics.learned == 0
    await learner.engine.process_labels([Record("labels", 0, 1, fwd[0], fwd[1], 0.0)])
    assert learner.engine.metrics.learned == 1


async def test_a_challenger_that_wins_is_promoted_and_shadow_never_reaches_predictions(
        tmp_path: Path) -> None:
    s = settings_for(tmp_path, warm_start_window=100, compare_labels=200, promote_margin=0.05,
                     snapshot_interval_s=3600)
    w = Worker(s)
    await w.start(learner=True)
    pairs = stream(3000, flip_at=2000)
    outs = await feed(w, pairs[:2100], 0)           # the concept flips at 2000
    outs += w.keeper.pending
    outs += await w.keeper.challenge("retrain signal s1: performance_drift")
    assert w.engine.challenger is not None and w.engine.challenger.learned == 100
    staging = await w.keeper.registry.get_version("default", "2")
    assert (staging.stage, staging.parent) == ("staging", "1")
    outs += await feed(w, pairs[2100:], 2100)
    shadow = topic_values(outs, contract.PREDICTIONS_SHADOW)
    predictions = topic_values(outs, contract.PREDICTIONS)
    assert shadow and all(p["model_version"] == "2" for p in shadow)
    assert {p["model_version"] for p in predictions} == {"1", "2"}
    changes = [(c["version"], c["from_stage"], c["to_stage"])
               for c in topic_values(outs, contract.MODELS)]
    assert changes == [("1", None, "production"), ("2", None, "staging"),
                       ("1", "production", "archived"),
                       ("2", "staging", "production")]
    assert (await w.keeper.registry.production("default")).version == "2"
    assert w.engine.model.version == "2" and w.engine.challenger is None
    # after the promotion the served model is the challenger, checkpointed at once
    assert w.engine.snapshot_id >= 1 and w.engine.drift.model_version == "2"


async def test_scorers_shadow_the_learners_challenger_from_the_registry(tmp_path: Path) -> None:
    s = settings_for(tmp_path, warm_start_window=50)
    learner = Worker(s)
    await learner.start(learner=True)
    scorer = Worker(s, store=learner.engine.store)
    await scorer.start(learner=False)
    await feed(learner, stream(100), 0)
    await learner.keeper.challenge("manual")
    await learner.keeper.checkpoint()  # the challenger's first snapshot
    await scorer.keeper.refresh()
    assert scorer.engine.challenger is not None
    assert scorer.engine.challenger.model.version == "2"
    outs = await scorer.engine.process_events([Record("events", 3, 0, b"k",
                                                      event("z9", a=0.2, b=0.1), time.time())])
    (shadow,) = topic_values(outs, contract.PREDICTIONS_SHADOW)
    (pred,) = topic_values(outs, contract.PREDICTIONS)
    assert (shadow["model_version"], pred["model_version"]) == ("2", "1")
    assert shadow["model_snapshot"] == scorer.engine.challenger.snapshot_id > 0


async def test_without_auto_promote_a_winner_is_reported_ready_once(tmp_path: Path) -> None:
    s = settings_for(tmp_path, warm_start_window=100, compare_labels=200, auto_promote=False)
    w = Worker(s)
    await w.start(learner=True)
    pairs = stream(3000, flip_at=2000)
    await feed(w, pairs[:2100], 0)
    await w.keeper.challenge("manual")
    outs = await feed(w, pairs[2100:], 2100)
    ready = [c for c in topic_values(outs, contract.MODELS) if c["reason"].startswith("ready")]
    assert len(ready) == 1 and ready[0]["version"] == "2"
    assert (await w.keeper.registry.production("default")).version == "1"


async def test_a_promotion_elsewhere_is_followed_by_every_worker(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    w = Worker(s)
    await w.start(learner=False)
    reg = w.keeper.registry
    await reg.create_version("default", spec={"steps": [{"name": "GaussianNB", "params": {}}]},
                             params={}, parent="1")
    await reg.promote("default", "2", reason="manual")
    await w.keeper.refresh()
    assert w.engine.model.version == "2"
    assert type(w.engine.model.pipeline.steps[list(w.engine.model.pipeline.steps)[-1]]
                ).__name__ == "GaussianNB"


def test_a_worker_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    s = load_settings(environ={}, registry_url=f"file://{tmp_path}")
    with pytest.raises(ConfigError, match="STREAM_REGISTRY_KEY"):
        require_key(s)
    require_key(s.model_copy(update={"lifecycle": s.lifecycle.model_copy(
        update={"enabled": False})}))  # explicitly without checkpoints: allowed
