"""The model registry contract, run against both backends: ``file://`` and ``redis://``.

The file backend lives in ``tmp_path``; the Redis backend uses the session fixture
``redis_url`` with a namespace of its own per test. ``Store`` reaches under the API (at the
documented file tree and Redis keys) to tamper with stored bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from river import linear_model, preprocessing

from features.store.connect import cluster_key_prefix, open_redis
from models.registry import DataHash, ModelRegistry, open_registry
from stream_app.errors import (
    CheckpointError,
    ConfigError,
    FencedError,
    ModelNotFoundError,
    StreamAppError,
)

KEY = b"contract-test-key-0123456789abcdef"
OTHER_KEY = b"another-key-that-is-long-enough!"
SPEC = {"steps": [{"name": "StandardScaler", "params": {}},
                  {"name": "LogisticRegression", "params": {"l2": 0.001}}]}


@dataclass
class Store:
    """One backend's storage, opened through the API or poked at directly."""

    url: str
    namespace: str = ""
    root: Path | None = None
    raw: Any = None  # a redis.asyncio Redis or RedisCluster
    prefix: str = ""

    def open(self, key: bytes | None = KEY) -> ModelRegistry:
        return open_registry(self.url, key=key, namespace=self.namespace)

    def _path(self, name: str, version: str, sid: int, ext: str) -> Path:
        assert self.root is not None
        return self.root / name / version / "snapshots" / f"{sid:08d}.{ext}"

    def _key(self, name: str, *parts: str) -> str:
        return self.prefix + ":".join((name, *parts))

    async def checkpoint(self, name: str, version: str, sid: int) -> bytes:
        if self.raw is None:
            return self._path(name, version, sid, "ckpt").read_bytes()
        blob = await self.raw.get(self._key(name, version, f"ckpt:{sid}"))
        assert isinstance(blob, bytes)
        return blob

    async def put_checkpoint(self, name: str, version: str, sid: int, blob: bytes) -> None:
        if self.raw is None:
            self._path(name, version, sid, "ckpt").write_bytes(blob)
        else:
            await self.raw.set(self._key(name, version, f"ckpt:{sid}"), blob)

    async def record(self, name: str, version: str, sid: int) -> dict[str, Any]:
        if self.raw is None:
            return orjson.loads(self._path(name, version, sid, "json").read_bytes())  # type: ignore[no-any-return]
        raw = await self.raw.hget(self._key(name, version, "snaps"), str(sid))
        assert raw is not None
        return orjson.loads(raw)  # type: ignore[no-any-return]

    async def put_record(self, name: str, version: str, sid: int, doc: dict[str, Any]) -> None:
        if self.raw is None:
            self._path(name, version, sid, "json").write_bytes(orjson.dumps(doc))
        else:
            await self.raw.hset(self._key(name, version, "snaps"), str(sid), orjson.dumps(doc))

    async def flip_byte(self, name: str, version: str, sid: int) -> None:
        blob = bytearray(await self.checkpoint(name, version, sid))
        blob[len(blob) // 2] ^= 0x01
        await self.put_checkpoint(name, version, sid, bytes(blob))


@pytest.fixture(params=["file", "redis", "cluster"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "file":
        yield Store(url=f"file://{tmp_path / 'registry'}", root=tmp_path / "registry")
        return
    ns = f"test-{uuid.uuid4().hex}"
    if request.param == "cluster":  # a real 3-master Redis Cluster, started for the session
        url = request.getfixturevalue("redis_cluster").url()
        prefix = cluster_key_prefix(ns, "reg")
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"stream:{ns}:reg:"
    raw = open_redis(url, protocol=2)
    yield Store(url=url, namespace=ns, raw=raw, prefix=prefix)
    keys = [k async for k in raw.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()


@pytest.fixture
async def reg(store: Store) -> AsyncIterator[ModelRegistry]:
    r = store.open()
    yield r
    await r.aclose()


def trained_pipeline(n: int = 300, seed: int = 7) -> tuple[Any, list[dict[str, float]]]:
    """A River pipeline that learned ``n`` seeded events, and some points to score."""
    rng = random.Random(seed)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for _ in range(n):
        x = {"amount": rng.expovariate(0.01), "hour": float(rng.randrange(24))}
        model.learn_one(x, x["amount"] > 150 or x["hour"] < 5)
    points = [{"amount": rng.expovariate(0.01), "hour": float(rng.randrange(24))} for _ in range(20)]
    return model, points


async def save(reg: ModelRegistry, obj: Any, name: str = "fraud", version: str = "1",
               learn_count: int = 1) -> Any:
    return await reg.save_snapshot(name, version, obj, learn_count=learn_count,
                                   label_offsets={"labels:0": learn_count}, data_hash="",
                                   metrics={"auc": 0.5})


async def test_is_a_model_registry_and_starts_empty(reg: ModelRegistry) -> None:
    assert isinstance(reg, ModelRegistry)
    assert await reg.models() == []
    assert await reg.verify() == []


async def test_versions_are_numbered_per_model_with_lineage(reg: ModelRegistry) -> None:
    v1 = await reg.create_version("fraud", spec=SPEC, params={"l2": 0.001}, parent=None,
                                  reason="first")
    v2 = await reg.create_version("fraud", spec=SPEC, params={"l2": 0.01}, parent="1",
                                  stage="staging", reason="retrain")
    other = await reg.create_version("churn", spec={}, params={}, parent=None)
    v3 = await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    assert [v.version for v in (v1, v2, other, v3)] == ["1", "2", "1", "3"]
    assert await reg.models() == ["churn", "fraud"]
    assert [(v.version, v.parent, v.stage) for v in await reg.versions("fraud")] == [
        ("1", None, "development"), ("2", "1", "staging"), ("3", None, "development")]
    got = await reg.get_version("fraud", "2")
    assert got == v2
    assert (got.model, got.spec, got.params, got.reason) == ("fraud", SPEC, {"l2": 0.01}, "retrain")
    with pytest.raises(ModelNotFoundError, match="parent"):
        await reg.create_version("fraud", spec={}, params={}, parent="9")
    with pytest.raises(ValueError, match="stage must be one of"):
        await reg.create_version("fraud", spec={}, params={}, parent=None, stage="live")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model name"):
        await reg.create_version("../escape", spec={}, params={}, parent=None)
    assert len(await reg.versions("fraud")) == 3


async def test_concurrent_writers_get_distinct_numbers(reg: ModelRegistry) -> None:
    made = await asyncio.gather(*(reg.create_version("m", spec={}, params={}, parent=None)
                                  for _ in range(8)))
    assert sorted(int(v.version) for v in made) == list(range(1, 9))
    snaps = await asyncio.gather(*(save(reg, {"i": i}, "m", "1", i) for i in range(5)))
    assert sorted(s.snapshot_id for s in snaps) == [1, 2, 3, 4, 5]
    assert [s.snapshot_id for s in await reg.snapshots("m", "1")] == [1, 2, 3, 4, 5]


async def test_snapshot_round_trip_predicts_identically(reg: ModelRegistry) -> None:
    await reg.create_version("fraud", spec=SPEC, params={"l2": 0.001}, parent=None)
    model, points = trained_pipeline()
    data_hash = DataHash().update_many([("e1", True), ("e2", False)]).hexdigest()
    saved = await reg.save_snapshot("fraud", "1", model, learn_count=300,
                                    label_offsets={"labels:0": 150, "labels:1": 151},
                                    data_hash=data_hash, metrics={"auc": 0.91, "n": 300})
    loaded, info = await reg.load_snapshot("fraud", "1")
    assert loaded is not model
    assert [loaded.predict_proba_one(x) for x in points] == [model.predict_proba_one(x) for x in points]
    x, y = points[0], True
    model.learn_one(x, y)
    loaded.learn_one(x, y)  # and it keeps learning the same way
    assert [loaded.predict_proba_one(x) for x in points] == [model.predict_proba_one(x) for x in points]

    assert info == saved
    assert (info.model, info.version, info.snapshot_id, info.stage, info.parent) == (
        "fraud", "1", 1, "development", None)
    assert (info.spec, info.params, info.learn_count) == (SPEC, {"l2": 0.001}, 300)
    assert info.label_offsets == {"labels:0": 150, "labels:1": 151}
    assert (info.data_hash, info.metrics) == (data_hash, {"auc": 0.91, "n": 300})
    assert set(info.dependencies) == {"python", "river", "numpy", "scipy", "stream-app"}
    assert info.pickle_protocol == 5 and info.checkpoint_size > 0
    assert len(info.checkpoint_sha256) == len(info.signature) == 64
    assert await reg.snapshots("fraud", "1") == [saved]


async def test_a_replaced_learner_cannot_checkpoint_over_its_successor(reg: ModelRegistry) -> None:
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    assert await reg.lease("fraud") == 0
    old = await reg.take_lease("fraud")
    first = await reg.save_snapshot("fraud", "1", {"w": 1}, learn_count=1, label_offsets={},
                                    data_hash="", metrics={}, lease=old)
    new = await reg.take_lease("fraud")  # a second worker became the learner (the first paused)
    assert new > old and await reg.lease("fraud") == new
    with pytest.raises(FencedError):  # the first wakes up and checkpoints its older model
        await reg.save_snapshot("fraud", "1", {"w": "stale"}, learn_count=5, label_offsets={},
                                data_hash="", metrics={}, lease=old)
    second = await reg.save_snapshot("fraud", "1", {"w": 2}, learn_count=2, label_offsets={},
                                     data_hash="", metrics={}, lease=new)
    assert [s.snapshot_id for s in await reg.snapshots("fraud", "1")] == [
        first.snapshot_id, second.snapshot_id]
    assert (await reg.load_snapshot("fraud", "1"))[0] == {"w": 2}
    leases = await asyncio.gather(*(reg.take_lease("fraud") for _ in range(6)))
    assert sorted(leases) == list(range(new + 1, new + 7))  # distinct, increasing


async def test_snapshot_ids_increase_and_record_the_stage_at_save_time(reg: ModelRegistry) -> None:
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    await reg.create_version("fraud", spec=SPEC, params={}, parent="1")
    first = await save(reg, {"w": 1}, version="2")
    await reg.promote("fraud", "2")
    second = await reg.save_snapshot("fraud", "2", {"w": 2}, learn_count=2, label_offsets={},
                                     data_hash="", metrics={"auc": np.float64(0.75), "n": np.int64(2)})
    assert (first.snapshot_id, first.stage, first.parent) == (1, "development", "1")
    assert (second.snapshot_id, second.stage, second.metrics) == (2, "production", {"auc": 0.75, "n": 2})
    assert (await reg.load_snapshot("fraud", "2"))[0] == {"w": 2}
    assert (await reg.load_snapshot("fraud", "2", snapshot_id=1))[0] == {"w": 1}
    assert await reg.snapshots("fraud", "1") == []


async def test_ensure_production_creates_once_among_concurrent_callers(
        reg: ModelRegistry) -> None:
    results = await asyncio.gather(*(reg.ensure_production(
        "fraud", spec=SPEC, params={}, reason="first start") for _ in range(5)))
    assert sorted(created for _, created in results) == [False] * 4 + [True]
    assert {(v.version, v.stage) for v, _ in results} == {("1", "production")}
    assert [v.version for v in await reg.versions("fraud")] == ["1"]
    await reg.create_version("fraud", spec=SPEC, params={}, parent="1")
    assert (await reg.ensure_production("fraud", spec=SPEC, params={}, reason="x"))[0].version == "1"


async def test_prune_keeps_the_newest_and_ids_keep_increasing(reg: ModelRegistry) -> None:
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    for i in range(5):
        await save(reg, {"w": i}, learn_count=i)
    assert await reg.prune_snapshots("fraud", "1", keep=2) == [1, 2, 3]
    assert [s.snapshot_id for s in await reg.snapshots("fraud", "1")] == [4, 5]
    assert await reg.prune_snapshots("fraud", "1", keep=2) == []
    assert (await save(reg, {"w": 9})).snapshot_id == 6  # never reuses a pruned id
    assert (await reg.load_snapshot("fraud", "1"))[0] == {"w": 9}
    with pytest.raises(ModelNotFoundError):
        await reg.load_snapshot("fraud", "1", snapshot_id=1)
    assert all(r.ok for r in await reg.verify())
    with pytest.raises(ValueError):
        await reg.prune_snapshots("fraud", "1", keep=0)


async def test_prune_by_bytes_keeps_the_newest_within_the_budget_and_the_newest_good(
        store: Store, reg: ModelRegistry) -> None:
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    for i in range(5):
        await save(reg, {"ballast": bytes(4000), "i": i}, learn_count=i)
    size = (await reg.snapshots("fraud", "1"))[-1].checkpoint_size
    assert size > 4000
    assert await reg.prune_snapshots("fraud", "1", keep=10, keep_bytes=2 * size + 1) == [1, 2, 3]
    assert await reg.prune_snapshots("fraud", "1", keep=10, keep_bytes=0) == [4]  # newest stays
    await save(reg, {"ballast": bytes(4000), "i": 6}, learn_count=6)
    await store.flip_byte("fraud", "1", 6)  # the newest is bad: the newest good one stays too
    assert await reg.prune_snapshots("fraud", "1", keep=1, keep_bytes=0) == []
    obj, info = await reg.load_snapshot("fraud", "1")
    assert (obj["i"], info.snapshot_id) == (4, 5)
    with pytest.raises(ValueError):
        await reg.prune_snapshots("fraud", "1", keep=1, keep_bytes=-1)


async def test_tampered_newest_falls_back_to_newest_good(
        store: Store, reg: ModelRegistry, caplog: pytest.LogCaptureFixture) -> None:
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    model, points = trained_pipeline()
    await save(reg, model)
    await save(reg, {"newer": True}, learn_count=2)
    await store.flip_byte("fraud", "1", 2)
    with caplog.at_level(logging.WARNING, logger="models.registry"):
        loaded, info = await reg.load_snapshot("fraud", "1")
    assert info.snapshot_id == 1
    assert [loaded.predict_proba_one(x) for x in points] == [model.predict_proba_one(x) for x in points]
    assert "#2 rejected: checkpoint sha256 mismatch" in caplog.text
    with pytest.raises(CheckpointError, match="#2: checkpoint sha256 mismatch"):
        await reg.load_snapshot("fraud", "1", snapshot_id=2)
    results = await reg.verify()
    assert [(r.snapshot_id, r.ok, r.problem) for r in results] == [
        (1, True, ""), (2, False, "checkpoint sha256 mismatch")]
    await store.flip_byte("fraud", "1", 1)
    with pytest.raises(CheckpointError, match="no snapshot of model 'fraud' v1 verifies"):
        await reg.load_snapshot("fraud", "1")


async def test_unsigned_and_re_hashed_checkpoints_are_rejected(store: Store, reg: ModelRegistry) -> None:
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    await save(reg, {"w": 1})
    await save(reg, {"w": 2})
    doc = await store.record("fraud", "1", 1)
    del doc["signature"]
    await store.put_record("fraud", "1", 1, doc)
    # snapshot 2: other bytes, with the size and hash in the record updated to match them
    forged = b"\x80\x05K*."  # pickle of 42
    doc = await store.record("fraud", "1", 2)
    doc.update(checkpoint_size=len(forged), checkpoint_sha256=hashlib.sha256(forged).hexdigest())
    await store.put_record("fraud", "1", 2, doc)
    await store.put_checkpoint("fraud", "1", 2, forged)
    assert [(r.snapshot_id, r.problem) for r in await reg.verify()] == [
        (1, "unsigned"), (2, "bad signature")]
    with pytest.raises(CheckpointError, match="#2: bad signature; #1: unsigned"):
        await reg.load_snapshot("fraud", "1")


async def test_a_record_moved_to_another_snapshot_is_rejected(store: Store, reg: ModelRegistry) -> None:
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    await save(reg, {"old": True})
    await save(reg, {"new": True})
    await store.put_record("fraud", "1", 2, await store.record("fraud", "1", 1))
    await store.put_checkpoint("fraud", "1", 2, await store.checkpoint("fraud", "1", 1))
    assert [r.problem for r in await reg.verify()] == ["", "record names another snapshot"]


async def test_wrong_key_and_no_key(store: Store, reg: ModelRegistry) -> None:
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    await save(reg, {"w": 1})
    other = store.open(key=OTHER_KEY)
    keyless = store.open(key=None)
    try:
        with pytest.raises(CheckpointError, match="#1: bad signature"):
            await other.load_snapshot("fraud", "1")
        assert [(r.ok, r.problem) for r in await other.verify()] == [(False, "bad signature")]
        for call in (keyless.load_snapshot("fraud", "1"), keyless.verify(),
                     keyless.save_snapshot("fraud", "1", {}, learn_count=0, label_offsets={},
                                           data_hash="", metrics={})):
            with pytest.raises(ConfigError, match="set STREAM_REGISTRY_KEY"):
                await call
        assert [v.version for v in await keyless.versions("fraud")] == ["1"]  # no key needed
        await keyless.promote("fraud", "1")
    finally:
        await other.aclose()
        await keyless.aclose()
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        store.open(key=b"short")


async def test_exactly_one_production_promote_archives_the_previous(reg: ModelRegistry) -> None:
    for _ in range(3):
        await reg.create_version("fraud", spec=SPEC, params={}, parent=None)

    async def stages() -> list[str]:
        return [v.stage for v in await reg.versions("fraud")]

    with pytest.raises(ModelNotFoundError, match="no production version"):
        await reg.production("fraud")
    change = await reg.promote("fraud", "1")
    assert (change.version, change.from_stage, change.to_stage, change.reason) == (
        "1", "development", "production", "manual")
    await reg.set_stage("fraud", "2", "staging", "canary")
    assert await stages() == ["production", "staging", "development"]
    await reg.promote("fraud", "2", reason="better auc")
    assert await stages() == ["archived", "production", "development"]
    await reg.set_stage("fraud", "3", "production", "hotfix")
    assert await stages() == ["archived", "archived", "production"]
    assert (await reg.production("fraud")).version == "3"
    v4 = await reg.create_version("fraud", spec=SPEC, params={}, parent="3", stage="production")
    assert v4.stage == "production"
    assert await stages() == ["archived", "archived", "archived", "production"]
    prod = await reg.production("fraud")
    assert (prod.version, prod.stage, prod.parent) == ("4", "production", "3")


async def test_rollback_and_history(reg: ModelRegistry) -> None:
    for _ in range(3):
        await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    with pytest.raises(ModelNotFoundError, match="no earlier production version"):
        await reg.rollback("fraud")
    await reg.promote("fraud", "1", reason="launch")
    with pytest.raises(ModelNotFoundError, match="no earlier production version"):
        await reg.rollback("fraud")
    await reg.promote("fraud", "2", reason="v2")
    change = await reg.rollback("fraud", reason="v2 regressed")
    assert (change.version, change.from_stage, change.to_stage) == ("1", "archived", "production")
    assert (await reg.production("fraud")).version == "1"
    assert (await reg.get_version("fraud", "2")).stage == "archived"
    assert (await reg.rollback("fraud")).version == "2"  # a second rollback undoes the first

    history = await reg.history("fraud")
    assert [(c.version, c.from_stage, c.to_stage, c.reason) for c in history] == [
        ("1", None, "development", ""),
        ("2", None, "development", ""),
        ("3", None, "development", ""),
        ("1", "development", "production", "launch"),
        ("1", "production", "archived", "v2"),
        ("2", "development", "production", "v2"),
        ("2", "production", "archived", "v2 regressed"),
        ("1", "archived", "production", "v2 regressed"),
        ("1", "production", "archived", "rollback"),
        ("2", "archived", "production", "rollback"),
    ]
    assert all(c.model == "fraud" and c.at for c in history)
    assert [c.at for c in history] == sorted(c.at for c in history)


async def test_missing_models_versions_and_snapshots_raise(reg: ModelRegistry) -> None:
    for call in (reg.versions("nope"), reg.get_version("nope", "1"), reg.production("nope"),
                 reg.history("nope"), reg.snapshots("nope", "1"), reg.load_snapshot("nope", "1"),
                 reg.promote("nope", "1"), reg.rollback("nope"), save(reg, {}, "nope", "1")):
        with pytest.raises(ModelNotFoundError):
            await call
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    for call in (reg.get_version("fraud", "2"), reg.snapshots("fraud", "2"),
                 reg.load_snapshot("fraud", "2"), reg.set_stage("fraud", "2", "staging", ""),
                 save(reg, {}, "fraud", "2"), reg.load_snapshot("fraud", "1")):
        with pytest.raises(ModelNotFoundError):
            await call
    await save(reg, {"w": 1})
    with pytest.raises(ModelNotFoundError, match="no snapshot 7"):
        await reg.load_snapshot("fraud", "1", snapshot_id=7)
    assert issubclass(ModelNotFoundError, StreamAppError) and issubclass(CheckpointError, StreamAppError)
    assert await reg.models() == ["fraud"]
