"""Safety: a checkpoint that does not verify is never unpickled, and a kill -9 mid-write is harmless.

The malicious pickle's ``__reduce__`` runs ``touch MARKER``: if the marker file exists, something
unpickled it. The kill tests run the write in a child process that SIGKILLs itself at a chosen
point of the write (half-way through the checkpoint's temporary file, just before the record is
moved into place, half-way through sending the Redis MULTI/EXEC).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import shlex
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from models.registry.signing import Signer
from stream_app.errors import CheckpointError
from tests.test_registry_contract import KEY, SPEC, Store, save
from tests.test_registry_contract import store as store  # noqa: F401  (the fixture, both backends)

REPO = Path(__file__).resolve().parents[1]


class Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: unpickling the payload really does create the marker."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.exists()


def forge(good: dict[str, Any], evil: bytes, how: str) -> dict[str, Any]:
    """A record for ``evil`` as snapshot 2, forged in one of several ways."""
    doc = dict(good, snapshot_id=2, checkpoint_size=len(evil),
               checkpoint_sha256=hashlib.sha256(evil).hexdigest())
    if how == "unsigned":
        del doc["signature"]
    elif how == "empty-signature":
        doc["signature"] = ""
    elif how == "attacker-key":
        doc["signature"] = Signer(b"the attacker's own key, 32 bytes").sign(doc)
    elif how == "signature-of-another-record":
        doc["signature"] = good["signature"]
    elif how == "record-untouched":
        doc = dict(good, snapshot_id=2)
        doc["signature"] = Signer(KEY).sign(doc)  # a genuine record whose bytes were swapped
    return doc


@pytest.mark.parametrize("how", ["unsigned", "empty-signature", "attacker-key",
                                 "signature-of-another-record", "record-untouched"])
async def test_a_malicious_checkpoint_is_never_unpickled(store: Store, tmp_path: Path,  # noqa: F811
                                                         how: str) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Evil(marker), protocol=5)
    reg = store.open()
    try:
        await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
        await save(reg, {"w": 1})
        await store.put_record("fraud", "1", 2, forge(await store.record("fraud", "1", 1), evil, how))
        await store.put_checkpoint("fraud", "1", 2, evil)

        obj, info = await reg.load_snapshot("fraud", "1")  # newest is evil: skipped
        assert (obj, info.snapshot_id) == ({"w": 1}, 1)
        with pytest.raises(CheckpointError):
            await reg.load_snapshot("fraud", "1", snapshot_id=2)
        results = await reg.verify()
        assert [(r.snapshot_id, r.ok) for r in results] == [(1, True), (2, False)]
        await store.flip_byte("fraud", "1", 1)  # now nothing good is left
        with pytest.raises(CheckpointError):
            await reg.load_snapshot("fraud", "1")
        await reg.verify()
    finally:
        await reg.aclose()
    assert not marker.exists()


# A child process that starts a write and SIGKILLs itself part-way through it.
CHILD = r"""
import asyncio, os, signal, sys
from models.registry import open_registry

url, namespace, mode, key = sys.argv[1], sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "mid-checkpoint":            # the first MiB of the checkpoint's temp file is written
    real_write = os.write
    def write(fd, data):
        n = real_write(fd, data)
        if n >= 1 << 20:
            die()
        return n
    os.write = write
elif mode in ("before-record", "before-catalog"):   # everything before is written and fsynced
    target = ".json" if mode == "before-record" else "catalog.json"
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith(target) and not str(dst).endswith("version.json"):
            die()
        return real_replace(src, dst)
    os.replace = replace
elif mode == "redis-mid-send":          # half of MULTI ... EXEC is on the wire
    from redis.asyncio.connection import AbstractConnection
    real_send = AbstractConnection.send_packed_command
    async def send(self, command, check_health=True):
        parts = [command] if isinstance(command, (bytes, str)) else list(command)
        data = b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in parts)
        if len(data) > 1 << 20:
            self._writer.write(data[: len(data) // 2])
            await self._writer.drain()
            die()
        return await real_send(self, command, check_health)
    AbstractConnection.send_packed_command = send

async def main():
    reg = open_registry(url, key=key, namespace=namespace)
    if mode == "before-catalog":
        await reg.create_version("fraud", spec={"from": "child"}, params={}, parent="1")
    else:
        await reg.save_snapshot("fraud", "1", {"ballast": os.urandom(8 << 20)}, learn_count=2,
                                label_offsets={}, data_hash="", metrics={})
    print("not killed")

asyncio.run(main())
"""


async def run_killed_child(url: str, namespace: str, mode: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, namespace, mode, KEY.hex(), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == -signal.SIGKILL, (out + err).decode(errors="replace")[-2000:]


async def assert_previous_snapshot_intact(store: Store) -> None:
    reg = store.open()
    try:
        assert [s.snapshot_id for s in await reg.snapshots("fraud", "1")] == [1]
        obj, info = await reg.load_snapshot("fraud", "1")
        assert (obj, info.snapshot_id) == ({"w": 1}, 1)
        assert [(r.snapshot_id, r.ok) for r in await reg.verify()] == [(1, True)]
        after = await save(reg, {"w": 2}, learn_count=3)  # and the next save is clean
        assert after.snapshot_id == 2
        assert (await reg.load_snapshot("fraud", "1"))[0] == {"w": 2}
    finally:
        await reg.aclose()


async def prepared(store: Store) -> None:
    reg = store.open()
    await reg.create_version("fraud", spec=SPEC, params={}, parent=None)
    await save(reg, {"w": 1})
    await reg.aclose()


@pytest.mark.parametrize("mode", ["mid-checkpoint", "before-record"])
async def test_file_kill_9_during_a_snapshot_write(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "registry"
    store = Store(url=f"file://{root}", root=root)
    await prepared(store)
    await run_killed_child(store.url, "", mode)

    snaps = root / "fraud" / "1" / "snapshots"
    names = sorted(p.name for p in snaps.iterdir())
    assert "00000002.json" not in names  # the commit mark never landed
    assert any(n.endswith(".tmp") for n in names)  # the debris is there, and invisible
    if mode == "mid-checkpoint":
        partial = next(p for p in snaps.iterdir() if p.name.startswith(".00000002.ckpt"))
        assert 0 < partial.stat().st_size < 8 << 20
    await assert_previous_snapshot_intact(store)
    assert not [p for p in snaps.iterdir() if p.name.endswith(".tmp")]  # cleaned by that save


async def test_file_kill_9_during_create_version(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    store = Store(url=f"file://{root}", root=root)
    await prepared(store)
    await run_killed_child(store.url, "", "before-catalog")
    assert (root / "fraud" / "2" / "version.json").exists()  # written, never committed
    reg = store.open()
    try:
        assert [v.version for v in await reg.versions("fraud")] == ["1"]
        made = await reg.create_version("fraud", spec={"from": "parent"}, params={}, parent=None)
        assert made.version == "2"
        assert (await reg.get_version("fraud", "2")).spec == {"from": "parent"}
    finally:
        await reg.aclose()
    await assert_previous_snapshot_intact(store)


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[Store]:
    ns = f"test-{uuid.uuid4().hex}"
    raw = aredis.Redis.from_url(redis_url, protocol=2)
    yield Store(url=redis_url, namespace=ns, raw=raw)
    keys = [k async for k in raw.scan_iter(match=f"stream:{ns}:*", count=1000)]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()


async def test_redis_kill_9_while_sending_the_snapshot(redis_store: Store) -> None:
    await prepared(redis_store)
    assert redis_store.raw is not None
    before = sorted([k async for k in redis_store.raw.scan_iter(
        match=f"stream:{redis_store.namespace}:*")])
    await run_killed_child(redis_store.url, redis_store.namespace, "redis-mid-send")
    after = sorted([k async for k in redis_store.raw.scan_iter(
        match=f"stream:{redis_store.namespace}:*")])
    assert after == before  # neither the checkpoint nor its record: MULTI/EXEC never ran
    assert await redis_store.raw.hlen(f"stream:{redis_store.namespace}:reg:fraud:1:snaps") == 1
    await assert_previous_snapshot_intact(redis_store)
