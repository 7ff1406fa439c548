"""Redaction: configured fields and patterns never reach a dead letter or a log line.

``http.redact_fields`` names fields whose values are replaced at any depth of a JSON payload;
``http.redact_patterns`` are regular expressions replaced in any text (a payload that is not
JSON, an error message, a log line). Pure, except :meth:`Redactor.install`, which adds a
logging filter to the root logger's handlers.

>>> r = Redactor(fields=("email",), patterns=(r"[\\w.+-]+@[\\w-]+(?:\\.[\\w-]+)+",))
>>> r.payload(b'{"event_id": "e1", "features": {"email": "a@b.io", "note": "mail c@d.org"}}')
b'{"event_id":"e1","features":{"email":"[redacted]","note":"mail [redacted]"}}'
>>> r.payload(b'{oops "email": "a@b.io"'), r.text("from a@b.io")
(b'{oops "email": "[redacted]"', 'from [redacted]')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Final

import orjson

__all__ = ["MASK", "Redactor"]

MASK: Final = "[redacted]"


class Redactor:
    """Replaces configured fields' values and pattern matches by :data:`MASK`."""

    def __init__(self, fields: Sequence[str] = (), patterns: Sequence[str] = ()) -> None:
        self.fields = frozenset(fields)
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
        # a field in text that is not JSON: its quoted string or bare value
        names = "|".join(re.escape(f) for f in fields)
        self._field_text = re.compile(
            '("(?:' + names + r')"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}\]\s]+)') if fields else None

    @property
    def enabled(self) -> bool:
        return bool(self.fields) or self._pattern is not None

    def text(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def payload(self, raw: bytes) -> bytes:
        """``raw`` with fields and patterns masked (JSON is re-encoded; other bytes as text)."""
        if not self.enabled or not raw:
            return raw
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._raw(raw)
        masked = self._value(obj)
        return raw if masked == obj else orjson.dumps(masked)  # untouched bytes stay as sent

    def _raw(self, raw: bytes) -> bytes:
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:  # latin-1 maps bytes 1:1: only the matches change
            text, encoding = raw.decode("latin-1"), "latin-1"
        masked = text
        if self._field_text is not None:
            masked = self._field_text.sub(lambda m: f'{m.group(1)}"{MASK}"', masked)
        masked = self.text(masked)
        return raw if masked == text else masked.encode(encoding)

    def _value(self, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: MASK if k in self.fields else self._value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self._value(x) for x in v]
        if isinstance(v, str):
            return self.text(v)
        return v

    def log_filter(self) -> logging.Filter:
        """A filter that masks the patterns in each record's message."""
        return _LogFilter(self)

    def install(self) -> None:
        """Mask patterns in every log record the root logger's handlers write."""
        if self._pattern is None:
            return
        flt = _LogFilter(self)
        for handler in logging.getLogger().handlers:
            handler.addFilter(flt)


class _LogFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self._redactor._pattern is None:  # noqa: SLF001
            return True
        message = record.getMessage()
        masked = self._redactor.text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True
