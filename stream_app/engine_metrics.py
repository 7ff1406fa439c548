"""What one worker counts and measures; published as a snapshot on the ``metrics`` topic.

>>> m = EngineMetrics(model="m", model_version="1")
>>> m.dead_letter("schema"); m.batch(3, 2, 0.001)
>>> snap = m.snapshot()
>>> snap["events"]["received"], snap["events"]["predicted"], snap["dead_letters"]
(3, 2, {'schema': 1})
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from models.metrics import Percentiles, PrequentialMetrics

__all__ = ["EngineMetrics"]


class EngineMetrics:
    def __init__(self, *, model: str, model_version: str, window: int = 1000) -> None:
        self.model = model
        self.model_version = model_version
        self.started = time.time()
        self.events_received = 0
        self.predictions = 0
        self.duplicate_events = 0
        self.redelivered = 0
        #: events partitions this worker holds (0 until the group has assigned some)
        self.partitions_assigned = 0
        self.learning_enabled = True
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        #: next offset to process, per (topic, partition), and records behind the high water
        self.positions: dict[tuple[str, int], int] = {}
        self.consumer_lag: dict[str, int] = {}
        #: records behind the high water mark from the group's committed offsets, per topic:
        #: what a restart would replay, and what Kafka's group tooling shows as lag
        self.committed_lag: dict[str, int] = {}
        self.dead_letters: Counter[str] = Counter()
        self.labels_received = 0
        self.labels_joined = 0
        self.labels_duplicate = 0
        self.labels_expired = 0
        self.labels_parked = 0
        #: parked labels dead-lettered as ``label_orphaned``, and parked again after a loss
        self.labels_orphaned = 0
        self.labels_reparked = 0
        #: the feature store's state losses seen (``features.store.base``)
        self.state_losses = 0
        #: labels learned again after a restore (the snapshot predated them)
        self.labels_relearned = 0
        #: labels that arrived before their event, sent back to ``labels`` once it was scored
        #: (they are received a second time: ``received`` counts both)
        self.labels_forwarded = 0
        #: batches of labels that waited for their events to be scored (``label_wait_s``)
        self.label_batches_held = 0
        #: the registry snapshot the serving model descends from, and lifecycle facts
        self.snapshot_id = 0
        self.lifecycle: dict[str, Any] = {}
        self.learned = 0
        self.batches = 0
        self.prequential = PrequentialMetrics(window=window)
        self.latency = Percentiles()
        self.label_delay = Percentiles()
        self.stage: dict[str, Percentiles] = {
            k: Percentiles() for k in ("batch", "store_read", "score", "store_write")}
        self._rate_mark = (time.monotonic(), 0)
        self.events_per_s = 0.0
        #: when a batch was last consumed (monotonic; the start until then), and from each
        #: partition: the stall check (``stream_app.ops.health``)
        self.last_consumed = time.monotonic()
        self.consumed_at: dict[tuple[str, int], float] = {}
        #: when the serving snapshot was saved (epoch seconds; None before the first)
        self.snapshot_at: float | None = None
        #: failed attempts of infrastructure steps, by (service, stage); each is retried
        self.service_errors: Counter[tuple[str, str]] = Counter()

    # -- recording ----------------------------------------------------------------------------
    def batch(self, received: int, predicted: int, seconds: float, **stages: float) -> None:
        self.batches += 1
        self.events_received += received
        self.predictions += predicted
        self.stage["batch"].add(seconds * 1000.0)
        for name, s in stages.items():
            self.stage[name.removesuffix("_s")].add(s * 1000.0)

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self.last_consumed = self.consumed_at[key] = time.monotonic()
        if offset >= self.positions.get(key, 0):
            self.positions[key] = offset + 1

    def lag(self, highwaters: dict[tuple[str, int], int],
            committed: dict[tuple[str, int], int] | None = None) -> None:
        """Records behind the high water mark, summed per topic, from this worker's position
        (``consumer_lag``) and from the group's ``committed`` offsets (``committed_lag``).
        Partitions without a known position, or committed offset, are left out.

        >>> m = EngineMetrics(model="m", model_version="1")
        >>> m.consumed("events", 0, 9); m.lag({("events", 0): 25, ("events", 1): 3})
        >>> m.consumed("labels", 0, 0); m.lag({("events", 0): 25, ("labels", 0): None})
        >>> m.consumer_lag
        {'events': 15}
        >>> m.lag({("events", 0): 25, ("events", 1): 3}, committed={("events", 0): 7})
        >>> m.committed_lag
        {'events': 18}
        """
        lag: dict[str, int] = {}
        for (topic, partition), hw in highwaters.items():
            pos = self.positions.get((topic, partition))
            if pos is None or hw is None or hw < 0:  # None: nothing fetched there yet
                continue
            lag[topic] = lag.get(topic, 0) + max(0, hw - pos)
        self.consumer_lag = lag
        if committed is not None:
            behind: dict[str, int] = {}
            for (topic, partition), hw in highwaters.items():
                done = committed.get((topic, partition))
                if done is not None and hw is not None and hw >= 0:
                    behind[topic] = behind.get(topic, 0) + max(0, hw - done)
            self.committed_lag = behind

    def assigned(self, partitions: set[tuple[str, int]]) -> None:
        """A new assignment: positions of partitions held no longer are forgotten (another
        worker moved them on; a stale one would count as records waiting here).

        >>> m = EngineMetrics(model="m", model_version="1")
        >>> m.consumed("events", 0, 9); m.consumed("events", 1, 4)
        >>> m.assigned({("events", 1)}); m.positions, list(m.consumed_at)
        ({('events', 1): 5}, [('events', 1)])
        """
        self.positions = {k: v for k, v in self.positions.items() if k in partitions}
        self.consumed_at = {k: v for k, v in self.consumed_at.items() if k in partitions}

    def service_error(self, service: str, stage: str) -> None:
        """An infrastructure step failed (it is retried): ``service`` is ``kafka``, ``redis``
        or ``other``, ``stage`` what was being done (a fixed vocabulary)."""
        self.service_errors[(service, stage)] += 1

    def dead_letter(self, reason: str) -> None:
        self.dead_letters[reason] += 1

    def observe_latencies_ms(self, ms: Iterable[float]) -> None:
        """End-to-end latencies of a batch's predictions (never negative)."""
        self.latency.add_many(ms)

    def label_joined(self, y: bool, score: float, threshold: float, *, delay_s: float) -> None:
        self.labels_joined += 1
        self.prequential.update(y, score, threshold)
        self.label_delay.add(max(0.0, delay_s))

    # -- reading ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now_m = time.monotonic()
        mark_t, mark_n = self._rate_mark
        if now_m - mark_t > 0:
            self.events_per_s = (self.events_received - mark_n) / (now_m - mark_t)
        self._rate_mark = (now_m, self.events_received)
        return {
            "at": time.time(),
            "uptime_s": time.time() - self.started,
            "model": self.model,
            "model_version": self.model_version,
            "model_snapshot": self.snapshot_id,
            "lifecycle": dict(self.lifecycle),
            "worker": self.worker,
            "partitions_assigned": self.partitions_assigned,
            "learning_enabled": self.learning_enabled,
            "events": {
                "received": self.events_received,
                "predicted": self.predictions,
                "duplicates": self.duplicate_events,
                "redelivered": self.redelivered,
                "per_s": self.events_per_s,
            },
            "consumer_lag": dict(self.consumer_lag),
            "committed_lag": dict(self.committed_lag),
            "dead_letters": dict(self.dead_letters),
            "labels": {
                "received": self.labels_received,
                "joined": self.labels_joined,
                "duplicate": self.labels_duplicate,
                "expired": self.labels_expired,
                "parked": self.labels_parked,
                "orphaned": self.labels_orphaned,
                "reparked": self.labels_reparked,
                "relearned": self.labels_relearned,
                "forwarded": self.labels_forwarded,
                "batches_held": self.label_batches_held,
                "learned": self.learned,
                "coverage": self.labels_joined / self.predictions if self.predictions else None,
                "delay_s": self.label_delay.summary(),
            },
            "prequential": self.prequential.snapshot(),
            "latency_ms": self.latency.summary(),
            "stage_ms": {k: v.summary() for k, v in self.stage.items()},
            "store": {"state_losses": self.state_losses},
            # the cyclic GC: objects frozen out of its reach (``lifecycle.gc_freeze``) and
            # collections per generation (a full one pauses the loop over what is not frozen)
            "gc": {"frozen": gc.get_freeze_count(),
                   "collections": [g["collections"] for g in gc.get_stats()],
                   # the GIL switch interval in force (``stream_app.gil``)
                   "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3)},
        }
