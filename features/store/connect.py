"""Redis clients from URLs: one server (``redis://``, ``rediss://``, ``unix://``) or a Cluster.

A Redis Cluster is ``redis+cluster://[user:password@]host:port[,host:port...]`` (TLS:
``rediss+cluster://``), with redis-py's connection parameters as the query, as for one server
(``?ssl_ca_certs=ca.crt&ssl_certfile=client.crt&ssl_keyfile=client.key``). The nodes listed
are only where discovery starts; the client learns the slot map and follows it.

On a cluster every key of one namespace carries the namespace as its hash tag
(:func:`cluster_key_prefix`), so all of them live in one slot: each store call stays one
``MGET`` or one Lua script, atomic across the batch's entities, claims, snapshots and the
parked labels' index, exactly as on one server (README, "Scaling out" says why this layout).

>>> parse_cluster_url("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001?ssl_keyfile=k")
([('10.0.0.1', 7000), ('10.0.0.2', 7001)], {'username': 'app', 'password': 's3cret', 'ssl_keyfile': 'k'})
>>> parse_cluster_url("rediss+cluster://h:7000/")[1]
{'ssl': True}
>>> cluster_key_prefix("t1"), cluster_key_prefix(""), cluster_key_prefix("t1:", "reg")
('stream:{t1}:', '{stream}:', 'stream:{t1:reg}:')
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, unquote

import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from stream_app.errors import ConfigError

__all__ = ["CLUSTER_SCHEMES", "cluster_key_prefix", "is_cluster", "is_cluster_url", "open_redis",
           "parse_cluster_url"]

CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")
#: query parameters that are not strings
_PARSERS: Final = {"socket_timeout": float, "socket_connect_timeout": float,
                   "ssl_check_hostname": lambda v: v.lower() in ("1", "true", "yes")}


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The startup nodes and the client options of a cluster URL (:class:`ConfigError` if bad)."""
    scheme, _, rest = url.partition("://")
    netloc, _, query = rest.partition("?")
    netloc, _, path = netloc.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ConfigError(f"a Redis Cluster has only database 0, got /{path}")
    options: dict[str, Any] = {}
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if colon:
            options["password"] = unquote(password)
    nodes = []
    for part in filter(None, hosts.split(",")):
        host, colon, port = part.rpartition(":")
        if not colon or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"bad cluster node {part!r}: needs host:port")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ConfigError("a Redis Cluster URL needs at least one host:port")
    if scheme == "rediss+cluster":
        options["ssl"] = True
    for name, value in parse_qsl(query):
        options[name] = _PARSERS.get(name, str)(value)  # type: ignore[operator]
    return nodes, options


class _Cluster(RedisCluster):
    """redis-py's cluster client, learning the slot map before its first command.

    redis-py 8.1 picks a command's nodes before it learns the slot map: a command issued
    before that (the first ones, concurrently) gets the default policy, and a script sent to
    every master ran on the right one and came back MOVED from the others, so it was retried
    and ran twice (a label joined twice reported ``duplicate``; found by the store contract).
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


def open_redis(url: str, **options: Any) -> aredis.Redis | RedisCluster:
    """A lazily connecting client for ``url``, bytes replies; ``options`` are the client's.

    A cluster client gets the URL's options over ``options``, and no ``db``.
    """
    if not is_cluster_url(url):
        return aredis.Redis.from_url(url, decode_responses=False, **options)
    nodes, from_url = parse_cluster_url(url)
    return _Cluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                        decode_responses=False, **(options | from_url))


def cluster_key_prefix(namespace: str, part: str = "") -> str:
    """The key prefix of a namespace on a cluster: the namespace (and ``part``) as hash tag.

    Redis hashes only the text between the first ``{`` and the next ``}``, so every key of a
    namespace maps to one slot; ``part`` gives a second slot to a second key family (the
    registry), so the two may live on different masters.
    """
    tag = ":".join(p for p in (namespace.rstrip(":"), part) if p)
    if "{" in tag or "}" in tag:
        raise ConfigError(f"a namespace on a Redis Cluster may not hold braces, got {tag!r}")
    return f"stream:{{{tag}}}:" if tag else "{stream}:"
