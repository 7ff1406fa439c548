"""Prometheus metrics of one worker, read at scrape time from what it already counts.

Nothing is added to the hot path: :class:`WorkerCollector` turns the engine's counters
(``stream_app.engine_metrics``), the drift stage, the quality monitor and the consumer's
high waters into metric families when ``/metrics`` is scraped. The latency histograms come
from the engine's log-bucket sketches (``models.percentiles``): a sketch bucket counts below
a bound when the value it reports is (so bucket counts are within the sketch's 1 %), and
``_sum`` is the sum of those values (within 1 % too).

Conventions: base units (seconds), ``_total`` on counters, histograms for latencies, labels
from fixed vocabularies or bounded sets (``topic``/``partition`` of the assignment, ``reason``
of dead letters, ``subject`` of the drift and quality monitors, bounded by
``drift.max_subjects`` and the schema's caps), never one value per entity or per event.

Each app has its own registry (:func:`make_registry`): no global state, so tests can build many.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import numpy as np
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from models.percentiles import Percentiles
from stream_app.ops.quality import LAG_BOUNDS_S
from stream_app.ops.view import WorkerView

__all__ = ["LATENCY_BOUNDS_S", "WorkerCollector", "histogram_of", "make_registry"]

#: upper bounds of the latency histograms, in seconds
LATENCY_BOUNDS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                           1.0, 2.5, 5.0, 10.0)
_P = "stream_"


def make_registry(view: WorkerView) -> CollectorRegistry:
    """A registry of its own with the worker's families and the process's CPU and memory."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(view))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def histogram_of(sketch: Percentiles, bounds: Sequence[float], scale: float = 1.0
                 ) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` buckets and the sum of a sketch, its values times ``scale``.

    >>> p = Percentiles(); p.add_many([1.0, 2.0, 30.0])  # milliseconds
    >>> buckets, total = histogram_of(p, (0.005, 0.05), scale=1e-3)
    >>> buckets, round(total, 3)
    ([('0.005', 2.0), ('0.05', 3.0), ('+Inf', 3.0)], 0.033)
    """
    items = sketch.buckets()
    values = np.fromiter((v for v, _ in items), dtype=np.float64, count=len(items)) * scale
    counts = np.fromiter((c for _, c in items), dtype=np.int64, count=len(items))
    cumulative = np.concatenate(([0], np.cumsum(counts)))
    below = cumulative[np.searchsorted(values, bounds, side="right")]
    buckets = [(_le(b), float(n)) for b, n in zip(bounds, below, strict=True)]
    buckets.append(("+Inf", float(cumulative[-1])))
    return buckets, float(values @ counts) if len(items) else 0.0


def _le(bound: float) -> str:
    return repr(float(bound))


class WorkerCollector(Collector):
    """Every ``stream_*`` family of one worker (see the module docstring)."""

    def __init__(self, view: WorkerView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        engine = self.view.engine()
        yield from _events(engine.metrics)
        yield from _labels(engine.metrics)
        yield from _latencies(engine.metrics)
        yield from _model(engine, self.view)
        yield from _drift(engine.drift)
        yield from _quality(engine.quality)
        yield from _consumer(self.view, engine.metrics)
        yield from _services(engine.metrics)


def _counter(name: str, doc: str, value: float, labels: Sequence[str] = (),
             samples: Iterable[tuple[Sequence[str], float]] = ()) -> CounterMetricFamily:
    family = CounterMetricFamily(_P + name, doc, labels=labels or None)
    if labels:
        for values, v in samples:
            family.add_metric(list(values), v)
    else:
        family.add_metric([], value)
    return family


def _gauge(name: str, doc: str, labels: Sequence[str],
           samples: Iterable[tuple[Sequence[str], float | None]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(_P + name, doc, labels=labels)
    for values, v in samples:
        if v is not None:
            family.add_metric(list(values), float(v))
    return family


def _events(m: Any) -> Iterator[Metric]:
    yield _counter("events_received", "Event records consumed.", m.events_received)
    yield _counter("events_predicted", "Events scored (a prediction sent).", m.predictions)
    yield _counter("events_duplicate", "Events dropped as duplicates of an event_id.",
                   m.duplicate_events)
    yield _counter("events_redelivered", "Events seen again from the same position (their "
                   "stored prediction re-sent).", m.redelivered)
    yield _counter("batches", "Batches of events processed.", m.batches)
    yield _counter("store_state_losses", "Times the feature store was found to have lost its "
                   "state (Redis restarted empty or flushed).", m.state_losses)
    yield _counter("dead_letters", "Records sent to dead-letters, by reason.", 0, ["reason"],
                   (((r,), n) for r, n in sorted(m.dead_letters.items())))


def _labels(m: Any) -> Iterator[Metric]:
    for name, value, doc in (
            ("received", m.labels_received, "Label records consumed."),
            ("joined", m.labels_joined, "Labels joined to the features their event was scored on."),
            ("expired", m.labels_expired, "Labels whose scored features had expired."),
            ("duplicate", m.labels_duplicate, "Labels seen again (learned once)."),
            ("parked", m.labels_parked, "Labels parked for an event not scored yet."),
            ("orphaned", m.labels_orphaned, "Parked labels whose event was not scored within "
                                            "labels.park_ttl_s (dead-lettered)."),
            ("learned", m.learned, "Learns of the serving model (labels, or events for an "
                                   "anomaly detector).")):
        yield _counter(f"labels_{name}", doc, value)
    yield _gauge("label_coverage_ratio", "Labels joined per prediction.", [],
                 [((), m.labels_joined / m.predictions if m.predictions else None)])


def _latencies(m: Any) -> Iterator[Metric]:
    e2e = HistogramMetricFamily(_P + "end_to_end_latency_seconds",
                                "From the event's Kafka timestamp to its prediction.")
    e2e.add_metric([], *histogram_of(m.latency, LATENCY_BOUNDS_S, 1e-3))
    yield e2e
    stage = HistogramMetricFamily(_P + "stage_latency_seconds",
                                  "Time per batch in each stage of the flow.", labels=["stage"])
    for name, sketch in m.stage.items():
        stage.add_metric([name], *histogram_of(sketch, LATENCY_BOUNDS_S, 1e-3))
    yield stage
    delay = HistogramMetricFamily(_P + "label_delay_seconds",
                                  "From a prediction to its label's join.")
    delay.add_metric([], *histogram_of(m.label_delay, LAG_BOUNDS_S))
    yield delay


def _model(engine: Any, view: WorkerView) -> Iterator[Metric]:
    m = engine.metrics
    model = m.model
    yield _gauge("model_info", "The model this worker serves (value 1).", ["model", "version"],
                 [((model, m.model_version), 1.0)])
    yield _gauge("model_snapshot", "The registry snapshot the serving model descends from.",
                 ["model"], [((model,), m.snapshot_id)])
    yield _gauge("model_snapshot_age_seconds", "Since the serving snapshot was saved.",
                 ["model"], [((model,), None if m.snapshot_at is None
                              else max(0.0, time.time() - m.snapshot_at))])
    yield _gauge("learner", "1 on the worker that learns (holds the labels partition).", [],
                 [((), float(m.learning_enabled))])
    keeper = view.keeper()
    yield _counter("model_swaps", "Models swapped in while serving.",
                   0 if keeper is None else keeper.swaps)
    snap = m.prequential.snapshot()
    for key, doc in (("accuracy", "Prequential accuracy."), ("roc_auc", "Prequential ROC AUC."),
                     ("log_loss", "Prequential log loss.")):
        yield _gauge(f"prequential_{key}", f"{doc} Rolling over the last labels, and cumulative.",
                     ["model", "window"],
                     [((model, w), snap[w][key]) for w in ("rolling", "cumulative")])
    yield _gauge("prequential_window_labels", "Labels in the rolling window.", ["model"],
                 [((model,), snap["rolling"]["n"])])
    signals = engine.drift.signals_raised
    yield _counter("retrain_signals", "Retrain signals raised, by reason.", 0, ["reason"],
                   (((r,), n) for r, n in sorted(signals.items())))
    yield _counter("retrain_signals_suppressed", "Retrain signals held back by the cooldown.",
                   engine.drift.signals_suppressed)
    yield _counter("performance_drift_unconfirmed", "Rises of the loss found by ADWIN that the "
                   "labels after them did not confirm (no retrain signal).",
                   engine.drift.unconfirmed)


def _drift(drift: Any) -> Iterator[Metric]:
    summary = drift.monitor.summary() if drift.monitor is not None else []
    rows = [(("score" if s.subject == "__score__" else s.subject,
              "prediction" if s.kind == "prediction" else "feature",
              "chi2" if s.kind == "categorical" else "ks"), s) for s in summary]
    labels = ["subject", "kind", "test"]
    yield _gauge("drift_statistic", "The last check's test statistic, per subject.", labels,
                 [(k, s.statistic) for k, s in rows])
    yield _gauge("drift_p_value", "The last check's p-value, per subject.", labels,
                 [(k, s.p_value) for k, s in rows])
    yield _gauge("drift_adjusted_p_value", "The last check's p-value after the correction "
                 "for many subjects.", labels, [(k, s.adjusted_p_value) for k, s in rows])
    yield _gauge("drift_active", "1 while the subject's drift episode is open.", labels,
                 [(k, float(s.in_drift)) for k, s in rows])
    yield _gauge("drift_open_episodes", "Drift episodes open now.", [],
                 [((), float(sum(s.in_drift for _, s in rows)))])


def _quality(q: Any) -> Iterator[Metric]:
    yield _gauge("feature_missing_ratio", "Share of the last window's events missing the "
                 "feature (absent or null).", ["subject"],
                 [((name,), rate) for name, rate in sorted(q.missing_rate.items())])
    lag = HistogramMetricFamily(_P + "event_time_lag_seconds",
                                "From an event's own timestamp to its processing.")
    cumulative = np.cumsum(q.lag_buckets)
    lag.add_metric([], [(_le(b), float(n)) for b, n in zip(LAG_BOUNDS_S, cumulative, strict=False)]
                   + [("+Inf", float(cumulative[-1]))], q.lag_sum_s)
    yield lag
    yield _counter("events_stale", "Events older than quality.max_event_age_s.", q.stale_total)
    yield _gauge("stale_events_ratio", "Share of the last window's events that were stale.", [],
                 [((), q.stale_rate)])
    yield _counter("schema_changes", "Schema changes met, by change.", 0, ["change"],
                   (((c,), n) for c, n in sorted(q.schema_changes.items())))
    kinds = ("missing_rate", "freshness")
    yield _gauge("quality_open_episodes", "Data-quality episodes open now, by kind.", ["kind"],
                 [((k,), float(sum(kind == k for kind, _ in q.open))) for k in kinds])


def _consumer(view: WorkerView, m: Any) -> Iterator[Metric]:
    yield _gauge("consumer_lag", "Records behind the high water, per assigned partition.",
                 ["topic", "partition"],
                 [((t, str(p)), n) for (t, p), n in sorted(view.lag().items())])
    yield _gauge("consumer_committed_lag", "Records behind the high water from the group's "
                 "committed offsets, per topic: what a restart would replay (updated every "
                 "metrics_interval_s).", ["topic"],
                 [((t,), float(n)) for t, n in sorted(m.committed_lag.items())])
    yield _gauge("partitions_assigned", "Partitions assigned to this worker, per topic.",
                 ["topic"], [((t,), float(n)) for t, n in _per_topic(view.assignment())])
    yield _gauge("seconds_since_consumed", "Since a batch was last consumed.", [],
                 [((), time.monotonic() - m.last_consumed)])


def _per_topic(assignment: list[tuple[str, int]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for topic, _ in assignment:
        counts[topic] = counts.get(topic, 0) + 1
    return sorted(counts.items())


def _services(m: Any) -> Iterator[Metric]:
    yield _counter("service_errors", "Failed attempts at Kafka or Redis, by service and "
                   "stage; each is retried with backoff.", 0, ["service", "stage"],
                   ((k, n) for k, n in sorted(m.service_errors.items())))
