"""Signing and checking snapshots: HMAC-SHA256 with the registry key, checked before unpickling.

The signature covers the whole snapshot record except ``signature`` itself, as canonical JSON
(orjson, sorted keys), under a domain tag. The record holds the checkpoint's SHA-256 and size,
so one signature binds the checkpoint bytes *and* their metadata (name, version, snapshot id,
label offsets, ...). :func:`check_snapshot` answers "may these bytes be unpickled?" without
unpickling anything.

>>> signer = Signer(b"k" * 32)
>>> blob = b"checkpoint bytes"
>>> doc = normalize({"model": "m", "version": "1", "snapshot_id": 1, "checkpoint_size": len(blob),
...                  "checkpoint_sha256": hashlib.sha256(blob).hexdigest()})
>>> doc["signature"] = signer.sign(doc)
>>> raw = orjson.dumps(doc)
>>> check_snapshot(raw, blob, signer, ("m", "1", 1))[1]
''
>>> check_snapshot(raw, b"Checkpoint bytes", signer, ("m", "1", 1))[1]
'checkpoint sha256 mismatch'
>>> check_snapshot(raw, blob, Signer(b"x" * 32), ("m", "1", 1))[1]
'bad signature'
>>> require_signer(None)
Traceback (most recent call last):
...
stream_app.errors.ConfigError: the model registry needs a signing key to save or load checkpoints: set STREAM_REGISTRY_KEY (at least 16 bytes)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Final

import orjson

from stream_app.errors import ConfigError

__all__ = ["MIN_KEY_BYTES", "Signer", "check_snapshot", "normalize", "require_signer"]

MIN_KEY_BYTES: Final = 16
_DOMAIN: Final = b"stream-app/model-registry/snapshot/v1\n"


class Signer:
    """HMAC-SHA256 over a record's canonical JSON, with the registry key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"the registry key must be at least {MIN_KEY_BYTES} bytes")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "Signer(<key hidden>)"

    def sign(self, doc: Mapping[str, Any]) -> str:
        """Hex HMAC of ``doc`` without its ``signature`` key."""
        body = {k: v for k, v in doc.items() if k != "signature"}
        message = _DOMAIN + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def verify(self, doc: Mapping[str, Any]) -> bool:
        """``True`` if ``doc["signature"]`` is present and right (constant-time compare)."""
        signature = doc.get("signature")
        if not isinstance(signature, str) or not signature:
            return False
        return hmac.compare_digest(signature.encode(), self.sign(doc).encode())


def require_signer(key: bytes | None) -> Signer:
    """A signer for ``key``; without a key, a ``ConfigError`` saying what to set."""
    if not key:
        raise ConfigError("the model registry needs a signing key to save or load checkpoints: "
                          f"set STREAM_REGISTRY_KEY (at least {MIN_KEY_BYTES} bytes)")
    return Signer(key)


def normalize(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` as it reads back from JSON, so what is signed is exactly what is stored.

    Values JSON cannot hold become strings (a class becomes its dotted name); NaN becomes null.

    >>> import numpy as np
    >>> normalize({"t": (1, 2), "cls": dict, "nan": float("nan"), "n": {1: 2}, "np": np.float64(0.5)})
    {'t': [1, 2], 'cls': 'builtins.dict', 'nan': None, 'n': {'1': 2}, 'np': 0.5}
    """
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    loaded = orjson.loads(orjson.dumps(doc, default=_json_default, option=options))
    if not isinstance(loaded, dict):
        raise TypeError("a record must be a mapping")
    return loaded


def _json_default(obj: Any) -> Any:
    if isinstance(obj, int | float | str):  # subclasses orjson declines
        return int(obj) if isinstance(obj, int) else float(obj) if isinstance(obj, float) else str(obj)
    if isinstance(obj, type) or callable(obj):
        module = getattr(obj, "__module__", None) or ""
        qualname = getattr(obj, "__qualname__", None) or repr(obj)
        return f"{module}.{qualname}" if module else qualname
    return repr(obj)


def check_snapshot(
    raw_doc: bytes | None, blob: bytes | None, signer: Signer, where: tuple[str, str, int]
) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` if ``blob`` may be unpickled, else ``(record or None, problem)``.

    ``where`` is the ``(model, version, snapshot_id)`` the record was stored under; a record
    naming another place is rejected (a validly signed snapshot copied elsewhere). Order: the
    record parses, is signed by our key, names this place, then the bytes match its size and hash.
    """
    if raw_doc is None:
        return None, "snapshot record missing"
    try:
        doc = orjson.loads(raw_doc)
    except orjson.JSONDecodeError:
        return None, "snapshot record unreadable"
    if not isinstance(doc, dict):
        return None, "snapshot record unreadable"
    if not doc.get("signature"):
        return doc, "unsigned"
    if not signer.verify(doc):
        return doc, "bad signature"
    if (doc.get("model"), doc.get("version"), doc.get("snapshot_id")) != where:
        return doc, "record names another snapshot"
    if blob is None:
        return doc, "checkpoint missing"
    if len(blob) != doc.get("checkpoint_size"):
        return doc, "checkpoint size mismatch"
    if not hmac.compare_digest(hashlib.sha256(blob).hexdigest(),
                               str(doc.get("checkpoint_sha256", ""))):
        return doc, "checkpoint sha256 mismatch"
    return doc, ""
