"""Two more faults on a real worker, judged by the checker (``tests/faults/checker.py``):

* **a label flood**: labels for thousands of event ids that never come, past the parked
  labels' cap. Each flood label must end as exactly one dead letter (``label_flood`` at once
  past the cap, ``label_orphaned`` once a parked one's ``labels.park_ttl_s`` is over), none
  vanishes and none is learned, while the real events keep their one prediction each and their
  labels are learned once;
* **a tampered checkpoint**: the learner is killed with -9 and a byte of its newest checkpoint
  flipped. The next worker must refuse that snapshot (never unpickle it), restore the one
  before, learn the labels after it again, and end with every label learned exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson
import pytest

from stream_app import contract
from stream_app.kafka_io import ensure_topics
from tests.conftest import WorkerProcess, make_settings
from tests.faults.checker import read
from tests.faults.harness import learned_count, progress, publish
from tests.kafka_helpers import collect, label, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_PARKED = 500
FLOOD = 2000


async def test_a_label_flood_is_dead_lettered_label_by_label(_service_urls, tmp_path: Path
                                                             ) -> None:
    kafka, redis, embedded = _service_urls
    settings = make_settings(kafka, redis, embedded, tmp_path,
                             labels={"max_parked": MAX_PARKED, "park_ttl_s": 5})
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    flood = {f"never-{i}" for i in range(FLOOD)}
    publisher = asyncio.ensure_future(publish(settings, n=1500, rate=300.0, prefix="flood"))
    try:
        await progress(settings)
        await produce(settings, contract.LABELS,
                      [(eid.encode(), label(eid, True)) for eid in sorted(flood)])
        good, _ = await publisher
        report = await read(settings, good, labels_dead=flood, timeout_s=180.0)
        learned = await learned_count(settings, len(good))
        dead = [orjson.loads(r.value) for r in await collect(
            settings, contract.DEAD_LETTERS, until=lambda rs: False, timeout_s=3.0)]
    finally:
        publisher.cancel()
        code = worker.stop()
    reasons = Counter(d["reason"] for d in dead)
    report.record("label flood", guarantee="exactly_once" if settings.exactly_once
                  else "at_least_once", kills=0, label_flood=reasons["label_flood"],
                  label_orphaned=reasons["label_orphaned"])
    assert report.ok, report.summary()  # one dead letter per flood label, by its position,
    assert report.label_dead_ids == flood  # and none for a real event's label
    assert len(report.predictions) == len(good)
    assert learned == len(good)  # the real labels, once each; no flood label learned
    assert set(reasons) == {"label_flood", "label_orphaned"}, reasons
    assert reasons["label_flood"] + reasons["label_orphaned"] == FLOOD
    assert 0 < reasons["label_orphaned"] <= MAX_PARKED, reasons
    assert all(d["source_topic"] == settings.topic(contract.LABELS) for d in dead)
    assert code == 0



async def test_a_tampered_checkpoint_is_refused_and_the_one_before_restored(
        _service_urls, tmp_path: Path) -> None:
    kafka, redis, embedded = _service_urls
    settings = make_settings(kafka, redis, embedded, tmp_path,
                             lifecycle={"snapshot_interval_s": 0.5})
    await ensure_topics(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = WorkerProcess(settings, logs / "worker-0.log")
    publisher = asyncio.ensure_future(publish(settings, n=2400, rate=300.0, prefix="tamper"))
    registry = Path(settings.registry_url.removeprefix("file://"))
    try:
        await progress(settings, more=600)
        for _ in range(300):  # two checkpoints: one to refuse, one before it
            if len(await asyncio.to_thread(_checkpoints, registry)) >= 2:
                break
            await asyncio.sleep(0.2)
        worker.kill()
        newest = _checkpoints(registry)[-1]
        _flip_a_byte(newest)
        worker = WorkerProcess(settings, logs / "worker-1.log")
        good, _ = await publisher
        report = await read(settings, good, timeout_s=180.0)
        report.record("tampered checkpoint", guarantee="exactly_once" if settings.exactly_once
                      else "at_least_once", kills=1)
        learned = await learned_count(settings, len(good))
    finally:
        publisher.cancel()
        code = worker.stop()
    assert report.ok, report.summary()
    assert learned == len(good)  # the labels after the good snapshot learned again, once
    log = worker.log()
    sid = int(newest.stem)
    assert f"#{sid} rejected" in log, log[-3000:]
    assert code == 0


def _checkpoints(registry: Path) -> list[Path]:
    """The file registry's checkpoints, oldest first (``{id:08d}.ckpt``)."""
    return sorted(registry.rglob("*.ckpt"), key=lambda p: p.name)


def _flip_a_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
