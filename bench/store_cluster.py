"""One store batch (begin_batch + commit_batch of 500 entities and events) on Redis and a Cluster.

    python bench/store_cluster.py redis://127.0.0.1:6379/0 redis+cluster://127.0.0.1:7000

Each URL gets a namespace of its own; keys expire after 30 s.
"""
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from features.store import open_feature_store  # noqa: E402


async def main(url, n=500, rounds=200):
    store = open_feature_store(url, namespace=f"bench-{uuid.uuid4().hex[:8]}")
    ents = [f"user-{i}" for i in range(n)]
    state = bytes(3244)
    times = []
    for r in range(rounds):
        evs = [f"ev-{r}-{i}" for i in range(n)]
        t = time.perf_counter()
        await store.begin_batch(ents, evs)
        await store.commit_batch({e: state for e in ents}, {e: b"p" * 120 for e in evs}, {e: b"s" * 200 for e in evs},
                                 entity_ttl_s=30, snapshot_ttl_s=30, claim_ttl_s=30)
        times.append(time.perf_counter() - t)
    await store.aclose()
    times.sort()
    print(f"{url.split('://')[0]:14} batch of {n}: begin+commit median {statistics.median(times)*1e3:.2f} ms, p90 {times[int(.9*len(times))]*1e3:.2f} ms")
for url in sys.argv[1:]:
    asyncio.run(main(url))
