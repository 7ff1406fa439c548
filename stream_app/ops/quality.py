"""Data-quality monitors: missing values, freshness and schema change, judged per batch.

The engine hands over each committed batch of admitted events (their features and event
times) and the schema changes :class:`~stream_app.pipeline.schema.Schema` met meanwhile. Out
come ``drift`` records with ``"record": "quality"`` and a ``kind``:

* ``missing_rate`` (subject: the feature): the share of events, in a window of
  ``quality.window`` events, in which a known feature is absent or null. An episode opens
  (``drift: true``) when it is above ``quality.max_missing_rate`` and closes (``drift:
  false``) at the first window back at or below it. A feature is judged over the events
  since it was first seen, so a new feature is not "missing" from the events before it.
* ``freshness`` (subject: ``event_time``): the share of a window's events whose event time is
  more than ``quality.max_event_age_s`` behind the clock, against ``quality.max_stale_rate``,
  as an episode in the same way. The event-time lag is also a histogram.
* ``schema_change`` (subject: the feature): a name new to the schema (``new``: after the first
  ``quality.schema_warmup_events`` events), a known name that came with another type
  (``retyped``; the schema dead-letters those events), a known name absent from a whole
  window (``vanished``) and back again (``returned``). Each change is reported once, never
  once per event, and at most ``quality.max_schema_changes`` of them.

Pure: no I/O, the clock is passed in. The per-batch work is one vectorised pass over the
event times (every event: the stale count is exact) and a count of the feature names present
in a systematic sample of at most ``quality.sample_per_batch`` of the batch's events: the
missing-value rates are estimated from the sample, ``vanished`` means absent from every
sampled event of a window.

>>> from stream_app.ops.settings import QualitySettings
>>> q = QualityMonitor(QualitySettings(window=10, schema_warmup_events=0), topic="drift")
>>> def batch(features, age_s=0.0):
...     out = q.observe(features, [1000.0 - age_s] * len(features), now=1000.0)
...     return [(r["kind"], r["subject"], r["drift"], r.get("change")) for r in map(_value, out)]
>>> batch([{"a": 1.0, "b": 2.0}] * 10)
[]
>>> batch([{"a": 1.0}] * 10)
[('missing_rate', 'b', True, None), ('schema_change', 'b', True, 'vanished')]
>>> batch([{"a": 1.0, "b": None}] * 10)  # still missing, but the name is back
[('schema_change', 'b', True, 'returned')]
>>> batch([{"a": 1.0, "b": 1.0}] * 10, age_s=900)
[('missing_rate', 'b', False, None), ('freshness', 'event_time', True, None)]
>>> batch([{"a": 1.0, "b": 1.0}] * 10), q.stale_total
([('freshness', 'event_time', False, None)], 10)
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, Final

import numpy as np
import orjson

from stream_app.ops.settings import QualitySettings
from stream_app.pipeline.schema import SchemaChange

__all__ = ["LAG_BOUNDS_S", "QualityMonitor"]

#: upper bounds of the event-time lag histogram, in seconds
LAG_BOUNDS_S: Final = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)
_FRESHNESS: Final = "event_time"

Out = tuple[str, bytes, bytes]


class QualityMonitor:
    """One worker's data-quality state (see the module docstring)."""

    def __init__(self, conf: QualitySettings, *, topic: str, model: str = "",
                 scope: Callable[[], Mapping[str, Any]] | None = None,
                 declared: Iterable[str] = ()) -> None:
        self.conf = conf
        self._topic = topic
        self._model = model
        worker = f"{socket.gethostname()}:{os.getpid()}"
        self._scope = scope or (lambda: {"worker": worker, "partitions": None})
        self.events = 0
        #: name -> the event count when it was first seen present (declared: from the start)
        self._first: dict[str, int] = dict.fromkeys(declared, 0)
        self._window_n = 0
        #: events looked at for missing values (at most ``sample_per_batch`` of a batch)
        self._sampled = self._window_sampled = 0
        self._present: Counter[str] = Counter()
        self._named: Counter[str] = Counter()
        self._stale_n = 0
        self._oldest_s = 0.0
        #: judged on the last full window: feature -> missing share
        self.missing_rate: dict[str, float] = {}
        self.stale_rate = 0.0
        self.open: dict[tuple[str, str], str] = {}  # (kind, subject) -> its episode's id
        self._vanished: set[str] = set()
        self.schema_changes: Counter[str] = Counter()  # by change, all of them
        self._reported = 0
        self.stale_total = 0
        self.lag_buckets = np.zeros(len(LAG_BOUNDS_S) + 1, dtype=np.int64)
        self.lag_sum_s = 0.0
        self._bounds = np.asarray(LAG_BOUNDS_S)

    def observe(self, features: Sequence[Mapping[str, Any]], timestamps: Sequence[float], *,
                now: float, changes: Sequence[SchemaChange] = ()) -> list[Out]:
        """One committed batch: the admitted events' features and event times, and the
        schema changes met; returns the ``drift`` records to send."""
        if not self.conf.enabled:
            return []
        out = self._schema(changes) if changes else []
        n = len(features)
        if not n:
            return out
        sample = features[::-(-n // self.conf.sample_per_batch)]  # a systematic sample
        first = self._first
        for name in self._count(sample):
            if name not in first:
                first[name] = self._sampled
        self._sampled += len(sample)
        self._window_sampled += len(sample)
        self._freshness(timestamps, now)
        self.events += n
        self._window_n += n
        if self._window_n >= self.conf.window:
            out.extend(self._judge())
        return out

    # -- per batch ----------------------------------------------------------------------------
    def _count(self, features: Sequence[Mapping[str, Any]]) -> Counter[str]:
        """How many events bring each name (``_named``) and with a value (``_present``:
        null counts as missing); returns the names."""
        named = Counter(chain.from_iterable(features))  # the names, counted in C
        self._named.update(named)
        self._present.update(named)
        for f in features:
            if None in f.values():
                self._present.subtract(k for k, v in f.items() if v is None)
        return named

    def _freshness(self, timestamps: Sequence[float], now: float) -> None:
        lag = now - np.fromiter(timestamps, dtype=np.float64, count=len(timestamps))
        np.maximum(lag, 0.0, out=lag)  # an event from the future is fresh
        self.lag_buckets += np.bincount(np.searchsorted(self._bounds, lag, side="left"),
                                        minlength=len(self.lag_buckets))
        self.lag_sum_s += float(lag.sum())
        stale = int(np.count_nonzero(lag > self.conf.max_event_age_s))
        self._stale_n += stale
        self.stale_total += stale
        self._oldest_s = max(self._oldest_s, float(lag.max()))

    # -- per window ---------------------------------------------------------------------------
    def _judge(self) -> list[Out]:
        conf, n = self.conf, self._window_n
        sampled, end = self._window_sampled, self._sampled
        out: list[Out] = []
        rates: dict[str, float] = {}
        for name, since in self._first.items():
            seen = min(sampled, end - since)
            if seen >= max(1, sampled // 2):  # judged once it was known for half a window
                rates[name] = 1.0 - self._present.get(name, 0) / seen
        for name, rate in rates.items():
            out.extend(self._episode("missing_rate", name, rate > conf.max_missing_rate,
                                     rate, conf.max_missing_rate, n))
            out.extend(self._presence(name, self._named.get(name, 0)))
        self.missing_rate = rates
        self.stale_rate = self._stale_n / n
        out.extend(self._episode("freshness", _FRESHNESS, self.stale_rate > conf.max_stale_rate,
                                 self.stale_rate, conf.max_stale_rate, n,
                                 max_event_age_s=conf.max_event_age_s,
                                 oldest_s=self._oldest_s))
        self._window_n = self._window_sampled = self._stale_n = 0
        self._oldest_s = 0.0
        self._present, self._named = Counter(), Counter()
        return out

    def _episode(self, kind: str, subject: str, bad: bool, statistic: float,
                 threshold: float, n: int, **extra: Any) -> list[Out]:
        key = (kind, subject)
        if bad == (key in self.open):
            return []
        drift_id = self.open.pop(key, None) or uuid.uuid4().hex
        if bad:
            self.open[key] = drift_id
        return [self._record(kind, subject, drift=bad, drift_id=drift_id, statistic=statistic,
                             threshold=threshold, window=n, **extra)]

    def _presence(self, name: str, named: int) -> list[Out]:
        """A known name absent (not even null) from a whole window has vanished; seen
        again, it returned."""
        if not named and name not in self._vanished:
            self._vanished.add(name)
            return self._change(SchemaChange(name, "vanished", None, "missing", admitted=True))
        if named and name in self._vanished:
            self._vanished.discard(name)
            return self._change(SchemaChange(name, "returned", None, "present", admitted=True))
        return []

    # -- schema -------------------------------------------------------------------------------
    def _schema(self, changes: Sequence[SchemaChange]) -> list[Out]:
        out: list[Out] = []
        for c in changes:
            if c.change == "new" and c.admitted and self.events < self.conf.schema_warmup_events:
                continue  # still learning the baseline
            out.extend(self._change(c))
        return out

    def _change(self, c: SchemaChange) -> list[Out]:
        self.schema_changes[c.change] += 1
        if self._reported >= self.conf.max_schema_changes:
            return []
        self._reported += 1
        return [self._record("schema_change", c.name, drift=True, drift_id=uuid.uuid4().hex,
                             change=c.change, expected=c.expected, got=c.got,
                             admitted=c.admitted)]

    def _record(self, kind: str, subject: str, **fields: Any) -> Out:
        record = {"record": "quality", "kind": kind, "subject": subject, **fields,
                  "model": self._model, "detected_at": time.time(), "scope": dict(self._scope())}
        return (self._topic, subject.encode(), orjson.dumps(record))


def _value(out: Out) -> dict[str, Any]:
    """The JSON of a record (for the doctests)."""
    return orjson.loads(out[2])
