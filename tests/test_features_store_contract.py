"""The online store contract, run against every backend (Feast's "universal" tests).

The Redis backend uses the session fixture ``redis_url`` (a running redis-server, possibly
shared); each test gets its own namespace so nothing collides.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from features.store import BatchRead, FeatureStore, open_feature_store
from features.store.base import park_cost
from features.store.redis import RedisFeatureStore
from stream_app.errors import ServiceError

TTL = 60
TTLS = dict(entity_ttl_s=TTL, snapshot_ttl_s=TTL, claim_ttl_s=TTL)
LABEL_TTLS = dict(pending_ttl_s=TTL, learned_ttl_s=TTL)
STATE = b"\xa5\x03" + bytes(range(256)) * 12   # entity states are opaque bytes to the store


def _redis_like(request: pytest.FixtureRequest, kind: str) -> str:
    """A Redis server (the session's) or a real 3-master Redis Cluster (started for it)."""
    if kind == "cluster":
        return str(request.getfixturevalue("redis_cluster").url())
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else _redis_like(request, request.param)


@pytest.fixture(params=["redis", "cluster"])
def redis_like_url(request: pytest.FixtureRequest) -> str:
    return _redis_like(request, request.param)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[FeatureStore]:
    s = open_feature_store(store_url, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    await s.aclose()


async def test_is_a_feature_store_and_answers_ping(store: FeatureStore) -> None:
    assert isinstance(store, FeatureStore)
    assert await store.ping() is True


async def test_misses_are_none_and_empty_calls_are_empty(store: FeatureStore) -> None:
    assert await store.read_entities(["nobody", "nobody-else"]) == [None, None]
    assert await store.get_snapshots(["e-missing"]) == [None]
    assert await store.begin_batch(["nobody"], ["e-missing"]) == BatchRead([None], [None])
    assert await store.read_entities([]) == []
    assert await store.get_snapshots([]) == []
    assert await store.begin_batch([], []) == BatchRead([], [])
    assert await store.commit_batch({}, {}, {}, **TTLS) == {}
    assert await store.join_labels({}, **LABEL_TTLS) == {}
    await store.write_entities({}, TTL)
    await store.put_snapshots({}, TTL)


async def test_entity_state_round_trip(store: FeatureStore) -> None:
    await store.write_entities({"alice": STATE, "bøb é/🙂": b"\x00\xff", "empty": b""}, TTL)
    got = await store.read_entities(["bøb é/🙂", "missing", "alice", "alice", "empty"])
    assert got == [b"\x00\xff", None, STATE, STATE, b""]
    assert all(type(s) is bytes for s in got if s is not None)
    mine = bytearray(STATE)
    await store.write_entities({"carol": mine}, TTL)
    mine[0] = 0   # the store keeps what it was given, not the caller's buffer
    assert (await store.read_entities(["carol"]))[0] == STATE
    await store.write_entities({"alice": b"\xa5\x02"}, TTL)
    assert await store.read_entities(["alice"]) == [b"\xa5\x02"]


async def test_a_state_that_is_not_bytes_is_refused_before_any_write(store: FeatureStore) -> None:
    with pytest.raises(TypeError, match="entity state is bytes"):
        await store.write_entities({"a": b"ok", "b": {"v": 1}}, TTL)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="entity state is bytes"):
        await store.commit_batch({"a": b"ok", "b": {"v": 1}}, {"e": b"p"}, {"e": b"v"},  # type: ignore[dict-item]
                                 **TTLS)
    assert await store.begin_batch(["a", "b"], ["e"]) == BatchRead([None, None], [None])


async def test_snapshots_round_trip_as_opaque_bytes(store: FeatureStore) -> None:
    blob = bytes(range(256))
    await store.put_snapshots({"e1": blob, "e2": b""}, TTL)
    assert await store.get_snapshots(["e2", "e1", "e3"]) == [b"", blob, None]


async def test_begin_batch_reads_states_and_claims_and_writes_nothing(store: FeatureStore) -> None:
    await store.commit_batch({"alice": STATE}, {"old": b"prediction", "e0": b""}, {}, **TTLS)
    for _ in range(2):  # reading twice reads the same: nothing is claimed
        read = await store.begin_batch(["alice", "bob"], ["e1", "old", "e1", "e0"])
        assert read == BatchRead(states=[STATE, None], seen=[None, b"prediction", None, b""])


async def test_commit_then_begin_shows_states_claims_and_snapshots(store: FeatureStore) -> None:
    assert await store.commit_batch(
        {"alice": b"n3", "bob": b"n1"}, {"e1": b"p1", "e2": b"p2"},
        {"e1": b"v1", "e2": b"v2"}, **TTLS) == {}
    read = await store.begin_batch(["bob", "alice", "carol"], ["e1", "e2", "e3"])
    assert read == BatchRead(states=[b"n1", b"n3", None], seen=[b"p1", b"p2", None])
    assert await store.get_snapshots(["e1", "e2"]) == [b"v1", b"v2"]
    # a retried commit overwrites, it does not fail
    assert await store.commit_batch({"bob": b"n2"}, {"e1": b"p1'"}, {"e1": b"v1'"}, **TTLS) == {}
    read = await store.begin_batch(["bob"], ["e1"])
    assert read == BatchRead(states=[b"n2"], seen=[b"p1'"])
    assert await store.get_snapshots(["e1"]) == [b"v1'"]


async def test_join_labels_joins_then_reports_duplicates(store: FeatureStore) -> None:
    await store.commit_batch({}, {"e1": b"p", "e2": b"p"}, {"e1": b"v1", "e2": b"v2"}, **TTLS)
    assert await store.join_labels({"e1": b"1"}, **LABEL_TTLS) == {"e1": ("joined", b"v1")}
    assert await store.join_labels({"e1": b"1", "e2": b"0"}, **LABEL_TTLS) == {
        "e1": ("duplicate", None), "e2": ("joined", b"v2")}
    assert await store.join_labels({"e2": b"0"}, **LABEL_TTLS) == {"e2": ("duplicate", None)}


async def test_parked_label_is_taken_by_commit_exactly_once(store: FeatureStore) -> None:
    assert await store.join_labels({"e1": b"0", "e2": b"x"}, **LABEL_TTLS) == {
        "e1": ("parked", None), "e2": ("parked", None)}
    assert await store.join_labels({"e1": b"1"}, **LABEL_TTLS) == {"e1": ("parked", None)}
    # labels are taken for snapshot ids only, never by put_snapshots
    assert await store.commit_batch({}, {"e2": b"p"}, {}, **TTLS) == {}
    await store.put_snapshots({"e2": b"v2"}, TTL)
    assert await store.commit_batch({}, {"e1": b"p"}, {"e1": b"v1", "e3": b"v3"}, **TTLS) == {
        "e1": b"1"}                       # the later of two parked labels wins
    assert await store.commit_batch({}, {"e1": b"p"}, {"e1": b"v1"}, **TTLS) == {}  # a retry
    assert await store.join_labels({"e1": b"1"}, **LABEL_TTLS) == {"e1": ("duplicate", None)}
    assert await store.commit_batch({}, {}, {"e2": b"v2"}, **TTLS) == {"e2": b"x"}
    assert await store.commit_batch({}, {}, {"e1": b"v1", "e2": b"v2"}, **TTLS) == {}
    # what was taken stays readable (claim ttl) for a replay whose first outputs were lost
    assert await store.taken_labels(["e1", "e2", "e3", "e4"]) == [b"1", b"x", None, None]
    assert await store.taken_labels([]) == []


async def test_the_same_label_record_again_is_redelivered_another_is_a_duplicate(
        store: FeatureStore) -> None:
    await store.commit_batch({}, {"e1": b"p", "e2": b"p"}, {"e1": b"v1", "e2": b"v2"}, **TTLS)
    at = {"e1": b"labels:0:7", "e2": b"labels:0:8"}
    assert await store.join_labels({"e1": b"1"}, **LABEL_TTLS, positions=at) == {
        "e1": ("joined", b"v1")}
    # the same record (a restored model may not have learned it): the snapshot comes back
    assert await store.join_labels({"e1": b"1", "e2": b"0"}, **LABEL_TTLS, positions=at) == {
        "e1": ("redelivered", b"v1"), "e2": ("joined", b"v2")}
    # the same event id from another record is a duplicate, as is a label without a position
    assert await store.join_labels({"e1": b"1"}, **LABEL_TTLS,
                                   positions={"e1": b"labels:0:99"}) == {"e1": ("duplicate", None)}
    assert await store.join_labels({"e2": b"0"}, **LABEL_TTLS) == {"e2": ("duplicate", None)}


async def test_a_scorer_takes_parked_labels_without_marking_them_learned(
        store: FeatureStore) -> None:
    await store.join_labels({"e1": b"1"}, **LABEL_TTLS)
    assert await store.commit_batch({}, {"e1": b"p"}, {"e1": b"v1"}, **TTLS,
                                    mark_learned=False) == {"e1": b"1"}
    assert await store.commit_batch({}, {"e1": b"p"}, {"e1": b"v1"}, **TTLS,
                                    mark_learned=False) == {}  # taken once
    # forwarded to the learner, the label now joins its snapshot
    assert await store.join_labels({"e1": b"1"}, **LABEL_TTLS) == {"e1": ("joined", b"v1")}


async def test_join_and_commit_racing_learn_each_label_exactly_once(store: FeatureStore) -> None:
    ids = [f"e{i}" for i in range(300)]
    chunks = [ids[k:k + 25] for k in range(0, len(ids), 25)]
    joins: list[asyncio.Task[dict[str, tuple[str, bytes | None]]]] = []
    commits: list[asyncio.Task[dict[str, bytes]]] = []
    for k, chunk in enumerate(chunks):  # alternate which of the two is sent first
        join = store.join_labels({i: i.encode() for i in chunk}, **LABEL_TTLS)
        commit = store.commit_batch({}, {i: b"p" for i in chunk}, {i: b"v" for i in chunk}, **TTLS)
        if k % 2:
            commits.append(asyncio.ensure_future(commit))
        joins.append(asyncio.ensure_future(join))
        if not k % 2:
            commits.append(asyncio.ensure_future(commit))
    learned = [i for j in await asyncio.gather(*joins)
               for i, (status, _) in j.items() if status == "joined"]
    learned += [i for c in await asyncio.gather(*commits)
                for i, label in c.items() if label == i.encode()]
    assert sorted(learned) == sorted(ids)


async def test_expired_snapshot_and_labels_of_learned_events(store: FeatureStore) -> None:
    await store.commit_batch({}, {"e1": b"p"}, {"e1": b"v"}, entity_ttl_s=TTL, snapshot_ttl_s=1,
                             claim_ttl_s=TTL)
    await store.put_snapshots({"e2": b"v"}, 1)          # scored without a claim
    assert await store.join_labels({"e2": b"1"}, **LABEL_TTLS) == {"e2": ("joined", b"v")}
    await asyncio.sleep(1.2)
    assert await store.join_labels({"e1": b"1", "e2": b"1"}, **LABEL_TTLS) == {
        "e1": ("expired", None), "e2": ("parked", None)}
    # e1's label was not parked; e2's was, but e2 was learned from already: neither comes back
    assert await store.commit_batch({}, {}, {"e1": b"v", "e2": b"v"}, **TTLS) == {}


async def test_ttls_expire_and_writes_refresh_them(store: FeatureStore) -> None:
    await store.write_entities({"short": b"a1", "kept": b"a2"}, 1)
    await store.write_entities({"kept": b"a3"}, TTL)
    await store.commit_batch({"committed": b"a4", "brief": b"a5"}, {"e1": b"p"},
                             {"e1": b"v"}, entity_ttl_s=TTL, snapshot_ttl_s=1, claim_ttl_s=1)
    await store.commit_batch({"brief": b"a6"}, {}, {}, entity_ttl_s=1, snapshot_ttl_s=TTL,
                             claim_ttl_s=TTL)
    await store.join_labels({"e2": b"1"}, pending_ttl_s=1, learned_ttl_s=TTL)
    await asyncio.sleep(1.3)
    read = await store.begin_batch(["short", "kept", "committed", "brief"], ["e1"])
    assert read == BatchRead(states=[None, b"a3", b"a4", None], seen=[None])
    assert await store.get_snapshots(["e1"]) == [None]
    assert await store.commit_batch({}, {}, {"e2": b"v"}, **TTLS) == {}   # parked label expired


@pytest.mark.parametrize("ttl", [0, -1, 1.5])
async def test_bad_ttl_is_rejected_before_any_write(store: FeatureStore, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await store.write_entities({"a": b""}, ttl)  # type: ignore[arg-type]
    for name in TTLS:
        with pytest.raises(ValueError, match="ttl_s"):
            await store.commit_batch({"a": b""}, {"e": b"p"}, {"e": b"v"},
                                     **{**TTLS, name: ttl})  # type: ignore[arg-type]
    for name in LABEL_TTLS:
        with pytest.raises(ValueError, match="ttl_s"):
            await store.join_labels({"e": b"1"}, **{**LABEL_TTLS, name: ttl})  # type: ignore[arg-type]
    assert await store.begin_batch(["a"], ["e"]) == BatchRead([None], [None])
    assert await store.commit_batch({}, {}, {"e": b"v"}, **TTLS) == {}


async def test_namespaces_do_not_see_each_other(store: FeatureStore, store_url: str) -> None:
    other = open_feature_store(store_url, namespace=f"test-{uuid.uuid4().hex}")
    try:
        await store.commit_batch({"alice": b"a1"}, {"e1": b"p"}, {"e1": b"v"}, **TTLS)
        await store.join_labels({"e2": b"1"}, **LABEL_TTLS)
        assert await other.begin_batch(["alice"], ["e1"]) == BatchRead([None], [None])
        assert await other.get_snapshots(["e1"]) == [None]
        assert await other.join_labels({"e1": b"1"}, **LABEL_TTLS) == {"e1": ("parked", None)}
        assert await other.commit_batch({}, {}, {"e2": b"v"}, **TTLS) == {}
        assert await store.join_labels({"e1": b"1"}, **LABEL_TTLS) == {"e1": ("joined", b"v")}
    finally:
        await other.aclose()


async def test_large_batches(store: FeatureStore) -> None:
    ids = [f"id-{i}" for i in range(2000)]
    labels = {i: i.encode() for i in ids}
    joined = await store.join_labels(labels, **LABEL_TTLS)
    assert set(joined.values()) == {("parked", None)} and list(joined) == ids
    early = await store.commit_batch({i: str(n).encode() for n, i in enumerate(ids)},
                                     {i: b"p" for i in ids}, {i: b"s" for i in ids}, **TTLS)
    assert early == labels
    read = await store.begin_batch(ids, ids)
    assert read.states == [str(n).encode() for n in range(2000)]
    assert read.seen == [b"p"] * 2000
    again = await store.join_labels(labels, **LABEL_TTLS)
    assert set(again.values()) == {("duplicate", None)} and len(again) == 2000


async def test_unreachable_redis_is_a_retriable_service_error() -> None:
    store = open_feature_store("redis://127.0.0.1:1/0")
    try:
        assert await store.ping() is False
        for call in (store.begin_batch(["a"], ["e"]),
                     store.commit_batch({"a": b""}, {"e": b"p"}, {"e": b"v"}, **TTLS),
                     store.join_labels({"e": b"1"}, **LABEL_TTLS)):
            with pytest.raises(ServiceError) as info:
                await call
            assert info.value.retriable
    finally:
        await store.aclose()


async def test_a_redis_that_never_answers_fails_at_the_deadline_not_never() -> None:
    """A peer that accepts and then stays silent (a stopped server: TCP alone waits forever)."""
    silent: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisFeatureStore.from_url(f"redis://127.0.0.1:{port}/0", deadline_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceError, match="no reply within 0.5 s") as info:
            await store.begin_batch(["a"], ["e"])
        assert info.value.retriable and time.monotonic() - started < 3.0
        assert await store.ping() is False
    finally:
        await store.aclose()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_the_redis_client_has_no_socket_timeout_but_a_connect_timeout_and_keepalive(
        ) -> None:
    tcp = RedisFeatureStore.from_url("redis://127.0.0.1:6379/0")
    unix = RedisFeatureStore.from_url("unix:///tmp/redis.sock")
    try:
        options = tcp._r.connection_pool.connection_kwargs
        assert options["socket_timeout"] is None and options["socket_connect_timeout"] == 5.0
        assert options["socket_keepalive"] is True and options["socket_keepalive_options"]
        options = unix._r.connection_pool.connection_kwargs
        assert options["socket_timeout"] is None and "socket_keepalive" not in options
    finally:
        await tcp.aclose()
        await unix.aclose()


async def test_without_parking_a_label_before_its_event_is_missing_and_nothing_is_kept(
        store: FeatureStore) -> None:
    got = await store.join_labels({"e1": b"1", "e2": b"0"}, **LABEL_TTLS, park=False)
    assert got == {"e1": ("missing", None), "e2": ("missing", None)}
    # nothing was parked: the event's commit hands back no label
    assert await store.commit_batch({}, {"e1": b"p"}, {"e1": b"x1"}, **TTLS) == {}
    # once scored, the same call joins it; the other is still missing, or parked when asked
    assert await store.join_labels({"e1": b"1", "e2": b"0"}, **LABEL_TTLS, park=False) == {
        "e1": ("joined", b"x1"), "e2": ("missing", None)}
    assert await store.join_labels({"e2": b"0"}, **LABEL_TTLS) == {"e2": ("parked", None)}
    assert await store.commit_batch({}, {"e2": b"p"}, {"e2": b"x2"}, **TTLS) == {"e2": b"0"}


# -- parked labels are bounded -----------------------------------------------------------------

def label_of(event_id: str, n: int = 0) -> bytes:
    return b'{"event_id": "%s", "label": true, "timestamp": %d}' % (event_id.encode(), n)


async def test_parked_labels_past_max_parked_are_flooded_and_nothing_is_kept(
        store: FeatureStore) -> None:
    cap = dict(LABEL_TTLS, max_parked=3)
    got = await store.join_labels({f"e{i}": label_of(f"e{i}") for i in range(5)}, **cap)
    assert [s for s, _ in got.values()] == ["parked"] * 3 + ["flooded"] * 2
    # at the cap a label for a parked id still replaces it; a new id still floods
    assert await store.join_labels({"e0": label_of("e0", 1), "e9": label_of("e9")}, **cap) == {
        "e0": ("parked", None), "e9": ("flooded", None)}
    # a flooded label was not kept: its event's commit takes nothing
    assert await store.commit_batch({}, {"e3": b"p"}, {"e3": b"v3"}, **TTLS) == {}
    # taking a parked label (a scorer's commit too) frees its place
    assert await store.commit_batch({}, {"e0": b"p"}, {"e0": b"v0"}, **TTLS,
                                    mark_learned=False) == {"e0": label_of("e0", 1)}
    assert await store.join_labels({"e9": label_of("e9")}, **cap) == {"e9": ("parked", None)}
    assert await store.join_labels({"e8": label_of("e8")}, **cap) == {"e8": ("flooded", None)}
    # joins, duplicates and misses are never flooded
    assert await store.join_labels({"e0": b"1", "e3": b"1", "e7": b"1"}, **cap, park=False) == {
        "e0": ("joined", b"v0"), "e3": ("joined", b"v3"), "e7": ("missing", None)}
    # without a limit (the default) nothing floods
    assert await store.join_labels({"e8": label_of("e8")}, **LABEL_TTLS) == {
        "e8": ("parked", None)}


async def test_parked_labels_past_max_parked_bytes_are_flooded(store: FeatureStore) -> None:
    small, big = label_of("a"), label_of("b") + b" " * 500
    prefix = store._prefix  # type: ignore[attr-defined]
    budget = park_cost(prefix, "a", small) + park_cost(prefix, "b", big)
    cap = dict(LABEL_TTLS, max_parked_bytes=budget)
    assert await store.join_labels({"a": small, "b": big, "c": small}, **cap) == {
        "a": ("parked", None), "b": ("parked", None), "c": ("flooded", None)}
    # a replacement counts only what it adds: a bigger one that does not fit leaves the old
    assert await store.join_labels({"a": small + b" "}, **cap) == {"a": ("flooded", None)}
    assert await store.join_labels({"b": label_of("b")}, **cap) == {"b": ("parked", None)}
    assert await store.join_labels({"c": small}, **cap) == {"c": ("parked", None)}
    assert await store.commit_batch({}, {}, {"a": b"v", "b": b"v"}, **TTLS) == {
        "a": small, "b": label_of("b")}
    assert await store.join_labels({"d": big}, **cap) == {"d": ("parked", None)}


async def test_expired_parked_labels_free_their_place(store: FeatureStore) -> None:
    cap = dict(pending_ttl_s=1, learned_ttl_s=TTL, max_parked=2)
    assert await store.join_labels({"a": b"1", "b": b"1", "c": b"1"}, **cap) == {
        "a": ("parked", None), "b": ("parked", None), "c": ("flooded", None)}
    await asyncio.sleep(1.2)
    assert await store.join_labels({"c": b"1", "d": b"1"}, **cap) == {
        "c": ("parked", None), "d": ("parked", None)}
    assert await store.commit_batch({}, {}, {"a": b"v", "c": b"v"}, **TTLS) == {"c": b"1"}


async def test_the_parked_limit_is_per_namespace(store: FeatureStore, store_url: str) -> None:
    other = open_feature_store(store_url, namespace=f"test-{uuid.uuid4().hex}")
    try:
        cap = dict(LABEL_TTLS, max_parked=1)
        assert await store.join_labels({"a": b"1"}, **cap) == {"a": ("parked", None)}
        assert await other.join_labels({"b": b"1"}, **cap) == {"b": ("parked", None)}
        assert await store.join_labels({"b": b"1"}, **cap) == {"b": ("flooded", None)}
    finally:
        await other.aclose()


async def test_the_redis_index_of_parked_labels_matches_the_labels(redis_like_url: str) -> None:
    ns = f"test-{uuid.uuid4().hex}"
    store = RedisFeatureStore.from_url(redis_like_url, namespace=ns)
    p = store._prefix  # stream:{ns}: (a cluster's is the namespace as hash tag)
    try:
        cap = dict(LABEL_TTLS, max_parked=50)
        await store.join_labels({f"e{i}": label_of(f"e{i}") for i in range(60)}, **cap)
        await store.join_labels({f"e{i}": label_of(f"e{i}", 7) + b"  " for i in range(5)}, **cap)
        await store.commit_batch({}, {}, {f"e{i}": b"v" for i in range(3, 10)}, **TTLS)
        r = store._r
        keys = [k async for k in r.scan_iter(match=f"{p}plabel:*", count=1000)]
        labels = dict(zip(keys, await r.mget(keys), strict=True))
        index = await r.zrange(f"{p}plabels", 0, -1)
        assert len(labels) == len(index) == 43
        costs = {m.split(b":", 1)[1]: int(m.split(b":", 1)[0]) for m in index}
        assert costs == {k.rsplit(b":", 1)[1]: park_cost(store._prefix, k.rsplit(b":", 1)[1].decode(), v)
                         for k, v in labels.items()}
        assert int(await r.get(f"{p}plabels:bytes")) == sum(costs.values())
        await store.commit_batch({}, {}, {f"e{i}": b"v" for i in range(60)}, **TTLS)
        assert await r.exists(f"{p}plabels", f"{p}plabels:bytes") == 0
    finally:
        await store.aclose()
