"""Liveness and readiness: is the worker alive, and is it doing its job?

Ready means all of:

* ``partitions``: the group has assigned this worker at least one partition;
* ``redis``: every Redis it uses (the feature store's, and the registry's if it is
  ``redis://``) answers a PING within ``health.redis_timeout_s``;
* ``model``: the model is loaded (with the lifecycle on: from the registry);
* ``consumer``: not stalled. Stalled means a partition has records waiting (its high water
  is past the next offset to process) and nothing was consumed from it for
  ``health.stall_s``: a consumer that stops silently is a known Faust/aiokafka failure. A
  partition that nothing was consumed from since it was assigned has no known position and
  does not count as waiting.

:func:`judge` is pure; :class:`Readiness` gathers the facts (the only I/O: the PINGs).

>>> facts = Facts(partitions=2, redis={"redis://r:6379/0": None}, model_loaded=True,
...               lag={("events", 0): 0, ("events", 1): 5}, idle_s={("events", 0): 120.0,
...                                                               ("events", 1): 2.0})
>>> judge(facts, stall_s=30)
(True, {'partitions': 'ok', 'redis': 'ok', 'model': 'ok', 'consumer': 'ok'})
>>> facts = facts._replace(idle_s={("events", 0): 1.0, ("events", 1): 45.0},
...                        redis={"redis://r:6379/0": "ConnectionError"})
>>> judge(facts, stall_s=30)[1]
{'partitions': 'ok', 'redis': 'redis://r:6379/0: ConnectionError', 'model': 'ok', 'consumer': 'stalled: events[1]: 5 records waiting, nothing consumed for 45 s'}
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

from stream_app.ops.view import WorkerView
from stream_app.settings import redact_url

__all__ = ["Facts", "Readiness", "judge"]


class Facts(NamedTuple):
    partitions: int
    #: each Redis URL (passwords hidden) -> None if it answered, else why not
    redis: dict[str, str | None]
    model_loaded: bool
    #: records behind the high water, per partition consumed from
    lag: dict[tuple[str, int], int]
    #: seconds since a batch was last consumed, per partition
    idle_s: dict[tuple[str, int], float]


def judge(facts: Facts, *, stall_s: float) -> tuple[bool, dict[str, str]]:
    """Ready or not, and each check's verdict (``ok``, or why not)."""
    failed = [f"{url}: {why}" for url, why in facts.redis.items() if why is not None]
    stalled = [f"{t}[{p}]: {n} records waiting, nothing consumed for "
               f"{facts.idle_s[(t, p)]:.0f} s" for (t, p), n in sorted(facts.lag.items())
               if n and facts.idle_s.get((t, p), 0.0) > stall_s]
    checks = {
        "partitions": "ok" if facts.partitions else "none assigned",
        "redis": "; ".join(failed) or "ok",
        "model": "ok" if facts.model_loaded else "not loaded",
        "consumer": "stalled: " + "; ".join(stalled) if stalled else "ok",
    }
    return all(v == "ok" for v in checks.values()), checks


class Readiness:
    """Gathers :class:`Facts` of a running worker and judges them."""

    def __init__(self, view: WorkerView) -> None:
        self.view = view
        conf = view.settings.health
        self._stall_s = conf.stall_s
        self._timeout_s = conf.redis_timeout_s
        urls = [view.settings.store_url]
        if not view.settings.registry_url.startswith("file://"):
            urls.append(view.settings.registry_url)
        self._urls = [u for u in dict.fromkeys(urls) if not u.startswith("memory://")]
        self._clients: dict[str, Any] = {}

    async def check(self) -> tuple[bool, dict[str, str]]:
        return judge(await self.facts(), stall_s=self._stall_s)

    async def facts(self) -> Facts:
        view = self.view
        engine = view.engine()
        keeper = view.keeper()
        pings = await asyncio.gather(*(self._ping(u) for u in self._urls))
        now = time.monotonic()
        return Facts(
            partitions=len(view.assignment()),
            redis={redact_url(u): why for u, why in zip(self._urls, pings, strict=True)},
            model_loaded=engine.model is not None and (keeper is None or keeper.started),
            lag=view.lag(),
            idle_s={k: now - t for k, t in engine.metrics.consumed_at.items()})

    async def _ping(self, url: str) -> str | None:
        client = self._clients.get(url)
        if client is None:  # as the start-up probe (stream_app.preflight): TLS and ACL in the URL
            import redis.asyncio as aioredis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            t = self._timeout_s
            client = self._clients[url] = aioredis.Redis.from_url(
                url, protocol=2, socket_timeout=t, socket_connect_timeout=t,
                retry=Retry(NoBackoff(), 0))
        try:
            await asyncio.wait_for(client.ping(), self._timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except Exception as exc:  # any failure is "not ready", never a crash of the probe
            return type(exc).__name__
        return None

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
