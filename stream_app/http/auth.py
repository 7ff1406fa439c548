"""API keys and a token bucket per key: who may call the HTTP API, and how often.

A key is ``sk_<id>_<secret>``: 8 hex characters that name its entry and 32 bytes of secret.
``STREAM_API_KEYS`` holds only ``NAME:ID:SALT:SHA256`` entries, the salted SHA-256 of the
whole key (:func:`new_key` makes both; ``stream-app keys add NAME`` prints them). The key has
256 bits of entropy, so one salted hash is as strong as a slow KDF would be, and it costs a
microsecond a request, where a KDF would cost the p99. The id picks the one entry to check,
and the check compares digests in constant time.

>>> key, entry = new_key("ci")
>>> keys = KeyRing([entry])
>>> keys.name_of(key), keys.name_of(key[:-1] + "x"), keys.name_of("nonsense"), keys.name_of(None)
('ci', None, None, None)
>>> bucket = TokenBucket(rate_per_s=1.0, burst=2)
>>> [bucket.take(now=10.0) for _ in range(3)], round(bucket.take(now=10.5), 3), bucket.take(now=11.0)
([0.0, 0.0, 1.0], 0.5, 0.0)
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Iterable
from typing import Final

__all__ = ["KeyRing", "RateLimiter", "TokenBucket", "new_key"]

_PREFIX: Final = "sk_"


def _digest(salt: bytes, key: str) -> bytes:
    return hashlib.sha256(salt + key.encode()).digest()


def new_key(name: str) -> tuple[str, str]:
    """A fresh key and its ``STREAM_API_KEYS`` entry (the salted hash, never the key)."""
    key_id = secrets.token_hex(4)
    key = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_bytes(16)
    return key, f"{name}:{key_id}:{salt.hex()}:{_digest(salt, key).hex()}"


class KeyRing:
    """The configured keys, by id: ``name_of(key)`` is the key's name, or ``None``."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._by_id: dict[str, tuple[str, bytes, bytes]] = {}
        for entry in entries:
            name, key_id, salt, digest = entry.split(":")
            self._by_id[key_id] = (name, bytes.fromhex(salt), bytes.fromhex(digest))

    def __len__(self) -> int:
        return len(self._by_id)

    def name_of(self, key: str | None) -> str | None:
        if not key or not key.startswith(_PREFIX) or len(key) > 128:
            return None
        found = self._by_id.get(key[len(_PREFIX):len(_PREFIX) + 8])
        if found is None:
            return None
        name, salt, digest = found
        return name if hmac.compare_digest(_digest(salt, key), digest) else None


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; :meth:`take` is 0 when a token was taken,
    else the seconds until one will be there."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate, self.burst = rate_per_s, burst
        self._tokens, self._last = float(burst), None  # type: float, float | None

    def take(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """One :class:`TokenBucket` per key name; :meth:`retry_after` is 0 (go on) or the whole
    seconds for ``Retry-After``."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate, self._burst = rate_per_s, burst
        self._buckets: dict[str, TokenBucket] = {}

    def retry_after(self, name: str) -> int:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(self._rate, self._burst)
        wait = bucket.take()
        return 0 if wait == 0.0 else max(1, math.ceil(wait))
