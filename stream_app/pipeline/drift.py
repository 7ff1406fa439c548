"""Drift stage: feeds ``models.drift`` from the flow and turns what it finds into records.

Per event the flow hands over the model input, the raw event features and the score; per label
the outcome and the score it was predicted with. Out come ``drift`` records (an episode opens
with ``drift: true`` and closes with ``drift: false``; a ``summary`` record of every subject
every ``summary_interval_s``) and ``retrain-signals`` records, raised by the retrain policy
with a cooldown so that a storm of drift yields one signal. No I/O: the agent sends them.

Retrain policy (issue 10: quiet on stationary streams): feature drift signals when
``retrain.min_feature_subjects`` (2) subjects are in drift at once, or one subject has failed
``retrain.persist_checks`` consecutive checks (a window plus one check): a chance excursion of
the current window passes within a window, a real shift fails every later check. A rise of the
loss found by ADWIN signals once the next window of labels confirms it against ADWIN's whole
window (``models.drift.performance.Confirmation``): ADWIN's cut biases its own means.

Warm-up: feature drift starts with the first events, but prediction and performance drift
compare the model with its own past, and a model learning from scratch moves its scores and
its loss by design. Both wait until it is warm (``models.drift.warmup``): it has learned
``drift.warmup.min_learned`` labels and its rolling prequential 0/1 loss (the loss ADWIN
watches) has stopped improving. Until then scores are not passed to the monitor, so the score
windows start filling at the warm point; ADWIN is created there, fresh, so the learning curve
is never in its window. Only the worker that learns sees labels, so only it becomes warm: on
scorers prediction drift stays off. A model that learns without labels (an anomaly detector)
has no loss to watch and is warm once it has learned ``min_learned`` events
(``observe_learns``). A new stage (a promoted model) warms up again. The score is tested
against a sliding reference by default (``drift.prediction_reference``): a model that keeps
learning moves its own score distribution slowly, which a fixed reference would report.

Scope: each worker monitors the events of the partitions it holds. Events are keyed by entity,
so a worker's windows see a hash-partitioned share of the entities: a random sample of them.
Every record says whose windows it describes: ``"scope": {"worker": "host:pid", "partitions":
[...]}``, the worker as in its ``metrics`` snapshots, and the events partitions it held
(``assign_partitions``; None until the worker has been told).

>>> from stream_app.settings import load_settings
>>> s = load_settings(environ={}, drift={"window": 50, "check_every": 25})
>>> stage = DriftStage(s, model="m", model_version="1")
>>> import random; rng = random.Random(1)
>>> outs = []
>>> for i in range(400):
...     v = rng.gauss(0, 1) + (3.0 if i >= 200 else 0.0)
...     outs += stage.observe({"v": v}, {"v": v, "c": "a"}, score=0.5, timestamp=float(i))
>>> [(t, orjson.loads(v)["subject"], orjson.loads(v)["drift"]) for t, _, v in
...  (o for o in outs if isinstance(o, tuple)) if t == "drift"]
[('drift', 'v', True)]
>>> [o.reason for o in outs if isinstance(o, RetrainSignal)]
['feature_drift']
>>> stage.assign_partitions({2, 0})
>>> _, _, summary = stage.summary()
>>> orjson.loads(summary)["scope"]["partitions"]
[0, 2]
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from models.drift import DriftEvent, DriftMonitor, PerformanceChange, PerformanceDrift
from models.drift.monitor import SubjectSummary
from models.drift.performance import Confirmation
from models.drift.warmup import WarmUp
from models.metrics import decide
from stream_app import contract
from stream_app.pipeline.records import Out, Output, RetrainSignal
from stream_app.settings import Settings

__all__ = ["DriftStage"]

log = logging.getLogger(__name__)

_PREDICTION = "__score__"


class DriftStage:
    def __init__(self, settings: Settings, *, model: str, model_version: str,
                 partitions: Iterable[int] | None = None) -> None:
        self.settings = settings
        self.conf = settings.drift
        self.model = model
        self.model_version = model_version
        self.monitor: DriftMonitor | None = None
        self._threshold = settings.model.threshold
        conf = self.conf
        watch = conf.enabled and (conf.prediction or conf.performance.enabled)
        #: early stopping on the prequential 0/1 loss: prediction and performance drift wait
        self.warmup = WarmUp(
            conf.window, conf.check_every, tolerance=conf.warmup.tolerance,
            patience=conf.warmup.patience, min_learned=conf.warmup.min_learned,
        ) if watch else None
        #: ADWIN on the prequential loss, created afresh at the warm point (None until then,
        #: and always with drift or performance drift switched off)
        self.performance: PerformanceDrift | None = None
        #: a rise ADWIN found, being confirmed on the next labels: (its drift_id, the test)
        self._confirming: tuple[str, Confirmation] | None = None
        #: performance rises refuted by their confirmation (no signal)
        self.unconfirmed = 0
        rule = conf.retrain
        #: a lone feature subject signals after this many consecutive low checks (0: never)
        self._persist = (-(-conf.window // conf.check_every) + 1 if rule.persist_checks is None
                         else rule.persist_checks)
        self._checks = 0  # the monitor's checks the retrain policy has seen
        self._signalled: set[str] = set()  # drift_ids already behind a signal (or held back)
        self._t_drift = settings.topic(contract.DRIFT)
        self._t_retrain = settings.topic(contract.RETRAIN_SIGNALS)
        self._open: dict[str, str] = {}  # subject -> drift_id of its open episode
        self._last_signal = -float("inf")
        self.signals_suppressed = 0
        #: retrain signals raised, by reason (carried over to a promoted model's stage)
        self.signals_raised: Counter[str] = Counter()
        self._derived = False  # some numeric subjects are model inputs, not event features
        self.worker = f"{socket.gethostname()}:{os.getpid()}"  # as EngineMetrics.worker
        self.partitions: list[int] | None = None
        if partitions is not None:
            self.assign_partitions(partitions)

    # -- inputs -------------------------------------------------------------------------------
    @property
    def warm(self) -> bool:
        """Prediction and performance drift are tested (see "Warm-up" above)."""
        return self.warmup is not None and self.warmup.warm

    def observe(self, x: Mapping[str, float], features: Mapping[str, Any], *,
                score: float | None, timestamp: float) -> list[Output]:
        """One scored event: ``x`` the model input, ``features`` the raw event features;
        ``score`` (None: not scored) reaches the monitor once the model is warm."""
        if not self.conf.enabled:
            return []
        if self.monitor is None:
            self.monitor = self._build(x, features)
        values = {**features, **x} if self._derived else features
        events = self.monitor.update(values, score=score if self.warm else None,
                                     timestamp=timestamp)
        if self.monitor.n_checks == self._checks:
            return []
        self._checks = self.monitor.n_checks
        out = self._episodes(events) if events else []
        return out + self._policy() if self._open else out

    def observe_label(self, y: bool, score: float, *, learned: int | None = None,
                      ) -> list[Output]:
        """One joined label and the score predicted before the model learned it; ``learned``
        is the model's learn count (None: the labels seen here)."""
        warmup = self.warmup
        if warmup is None:
            return []
        if not warmup.warm:
            loss = 0.0 if decide(score, self._threshold) == bool(y) else 1.0
            if warmup.update(loss, learned):
                self._warmed(labelled=True)
            return []
        if self.performance is None:
            return []
        change = self.performance.update(y, score)
        out = self._performance(change) if change is not None else []
        if self._confirming is not None and change is None:
            out.extend(self._confirm(self.performance.last_loss))
        return out

    def observe_learns(self, learned: int) -> None:
        """A model that learns without labels has learned ``learned`` events in all."""
        if self.warmup is not None and self.warmup.count_only(learned):
            self._warmed(labelled=False)

    def _warmed(self, *, labelled: bool) -> None:
        assert self.warmup is not None
        if labelled and self.conf.performance.enabled:
            self.performance = PerformanceDrift("zero_one", threshold=self._threshold)
        log.info("model %s v%s is warm after %d labels: prediction%s drift starts", self.model,
                 self.model_version, self.warmup.n, " and performance" if labelled else "")

    def assign_partitions(self, partitions: Iterable[int]) -> None:
        """The events partitions this worker now holds (named in every record's ``scope``)."""
        self.partitions = sorted(partitions)

    @property
    def scope(self) -> dict[str, Any]:
        return {"worker": self.worker, "partitions": self.partitions}

    def continue_cooldown(self, previous: DriftStage) -> None:
        """Keep ``previous``'s retrain-signal cooldown (a new stage for a promoted model)."""
        self._last_signal = previous._last_signal
        self.signals_raised = previous.signals_raised
        self.signals_suppressed = previous.signals_suppressed
        self.unconfirmed = previous.unconfirmed

    def reset(self) -> None:
        """Re-learn every reference window (after a model promotion, say); the open episodes
        are forgotten with them, so the retrain policy does not count them any more."""
        if self.monitor is not None:
            self.monitor.reset()
        self._open.clear()
        self._signalled.clear()

    # -- records ------------------------------------------------------------------------------
    def summary(self) -> Out | None:
        """Every subject's state as one compact record (for dashboards and ``stream-app drift``)."""
        if self.monitor is None:
            return None
        subjects = [{
            "subject": _public(s.subject), "kind": _kind(s.kind), "test": _test(s.kind),
            "statistic": s.statistic, "p_value": s.p_value,
            "adjusted_p_value": s.adjusted_p_value, "drift": s.in_drift,
            "since": s.since, "reference_size": s.reference_size,
            "current_size": s.current_size,
        } for s in self.monitor.summary()]
        record = {"record": "summary", "model": self.model, "model_version": self.model_version,
                  "alpha": self.conf.alpha, "correction": self.conf.correction,
                  "subjects": subjects, "signals_suppressed": self.signals_suppressed,
                  "performance_unconfirmed": self.unconfirmed,
                  "performance_confirming": self._confirming is not None,
                  "warm": self.warm,
                  "warm_after_labels": None if self.warmup is None else self.warmup.warm_at,
                  "scope": self.scope, "detected_at": time.time()}
        return (self._t_drift, b"summary", orjson.dumps(record))

    def _build(self, x: Mapping[str, float], features: Mapping[str, Any]) -> DriftMonitor:
        conf = self.conf
        numeric = list(conf.features) or [
            k for k, v in features.items() if type(v) in (int, float)][:conf.max_subjects]
        categorical = list(conf.categorical) or [
            k for k, v in features.items() if type(v) is str][:conf.max_subjects - len(numeric)]
        # decided once: an event feature missing from one event is missing from its x too
        self._derived = bool(set(numeric) - features.keys())
        return DriftMonitor(
            numeric=numeric, categorical=categorical,
            prediction=_PREDICTION if conf.prediction else None, window=conf.window,
            check_every=conf.check_every, reference=conf.reference, alpha=conf.alpha,
            correction=conf.correction, recovery_checks=conf.recovery_checks,
            confirm_checks=conf.confirm_checks, relearn_on_close=conf.relearn_on_close,
            prediction_reference=conf.prediction_reference)

    def _episodes(self, events: list[DriftEvent]) -> list[Output]:
        assert self.monitor is not None
        state = {s.subject: s for s in self.monitor.summary()}
        out: list[Output] = []
        for e in events:
            drift_id = uuid.uuid4().hex
            if e.event == "open":
                self._open[e.subject] = drift_id
            else:
                self._signalled.discard(self._open.pop(e.subject, ""))
            record = self._record(drift_id, e, state[e.subject])
            out.append((self._t_drift, _public(e.subject).encode(), orjson.dumps(record)))
        return out

    def _record(self, drift_id: str, e: DriftEvent, s: SubjectSummary) -> dict[str, Any]:
        return {
            "drift_id": drift_id, "record": "episode", "kind": _kind(e.kind),
            "subject": _public(e.subject), "test": _test(e.kind), "statistic": e.statistic,
            "p_value": e.p_value, "adjusted_p_value": e.adjusted_p_value,
            "alpha": self.conf.alpha, "correction": self.conf.correction,
            "drift": e.event == "open",
            "reference": {"size": s.reference_size, "first_timestamp": s.reference_first_ts,
                          "last_timestamp": s.reference_last_ts},
            "current": {"size": s.current_size, "first_timestamp": s.current_first_ts,
                        "last_timestamp": s.current_last_ts},
            "model": self.model, "model_version": self.model_version,
            "detected_at": time.time(), "check": e.check, "index": e.index,
            "scope": self.scope,
        }

    def _performance(self, c: PerformanceChange) -> list[Output]:
        drift_id = uuid.uuid4().hex
        record = {
            "drift_id": drift_id, "record": "episode", "kind": "performance",
            "subject": "prequential_loss", "test": "adwin", "statistic": c.mean_after,
            "p_value": None, "adjusted_p_value": None, "alpha": None,
            "drift": c.mean_after > c.mean_before,
            "reference": {"size": c.n_before, "mean_loss": c.mean_before,
                          "first_timestamp": None, "last_timestamp": None},
            "current": {"size": c.n_after, "mean_loss": c.mean_after,
                        "first_timestamp": None, "last_timestamp": None},
            "model": self.model, "model_version": self.model_version,
            "detected_at": time.time(), "loss": c.loss, "index": c.index,
            "scope": self.scope,
        }
        out: list[Output] = [(self._t_drift, b"prequential_loss", orjson.dumps(record))]
        # ADWIN's kept part still holds pre-change labels (its cut is coarse), so the effect
        # size is judged on the labels after the detection, not on ADWIN's own means
        if record["drift"] and self._confirming is None and self.conf.retrain.on_performance_drift:
            self._confirming = (drift_id, self._confirmation(c))
        return out

    def _confirmation(self, c: PerformanceChange) -> Confirmation:
        p, n = self.conf.performance, c.n_before + c.n_after
        return Confirmation(
            (c.mean_before * c.n_before + c.mean_after * c.n_after) / n, n,
            labels=p.confirm_labels or self.conf.window, every=self.conf.check_every,
            alpha=self.conf.alpha, min_increase=p.min_increase,
            min_relative_increase=p.min_relative_increase)

    def _confirm(self, loss: float) -> list[Output]:
        assert self._confirming is not None
        drift_id, confirmation = self._confirming
        verdict = confirmation.update(loss)
        if verdict is None:
            return []
        self._confirming = None
        if verdict:
            return self._signal("performance_drift", [drift_id])
        self.unconfirmed += 1
        log.info("performance drift %s not confirmed: mean loss %.3f over %d labels after it, "
                 "%.3f before", drift_id, confirmation.mean, confirmation.n,
                 confirmation.baseline)
        return []

    # -- retrain policy -----------------------------------------------------------------------
    def _policy(self) -> list[Output]:
        """After each check with an open episode: feature drift signals when
        ``min_feature_subjects`` (0: never) subjects are in drift at once, or one subject has
        been below alpha for ``persist_checks`` consecutive checks; each episode is behind one
        signal at most (one held back by the cooldown included)."""
        assert self.monitor is not None
        rule = self.conf.retrain
        features = {s: d for s, d in self._open.items() if s != _PREDICTION}
        if rule.min_feature_subjects and features.keys() - self._signalled_subjects():
            many = len(features) >= rule.min_feature_subjects
            persisting = self._persist and any(
                n >= self._persist for s, n in self.monitor.persisting().items() if s in features)
            if many or persisting:
                return self._signal("feature_drift", list(features.values()))
        score = self._open.get(_PREDICTION)
        if rule.on_prediction_drift and score is not None and score not in self._signalled:
            return self._signal("prediction_drift", [score])
        return []

    def _signalled_subjects(self) -> set[str]:
        return {s for s, d in self._open.items() if d in self._signalled}

    def _signal(self, reason: str, evidence: list[str]) -> list[Output]:
        self._signalled.update(evidence)
        now = time.monotonic()
        if now - self._last_signal < self.conf.retrain.cooldown_s:
            self.signals_suppressed += 1
            return []
        self._last_signal = now
        self.signals_raised[reason] += 1
        return [RetrainSignal(self._t_retrain, uuid.uuid4().hex, self.model, self.model_version,
                              reason, time.time(), evidence)]


def _kind(kind: str) -> str:
    return "prediction" if kind == "prediction" else "feature"


def _test(kind: str) -> str:
    return "chi2" if kind == "categorical" else "ks"


def _public(subject: str) -> str:
    return "score" if subject == _PREDICTION else subject
