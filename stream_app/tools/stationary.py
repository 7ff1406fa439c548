"""The stationary drift harness: how often drift cries wolf on a stream where nothing changes.

One run is one seeded ``synthetic`` stream (``n_features`` correlated numeric features and the
``channel`` category, all stationary) through the drift stage, with a real River model learning
it from scratch, test-then-train: each event is scored, observed by ``DriftStage.observe`` (its
features and score), then its label is learned and observed by ``observe_label`` (0/1 loss for
the warm-up, then ADWIN). The stage has the default settings unless given others, so it picks
every feature as a subject (20 numeric + ``channel`` by default) and watches score and loss.
In process, no Kafka: the stage is the one the engine runs.

Everything the stage raises on such a stream is false: every episode that opens (feature,
prediction), every ADWIN change (either way), every retrain signal (the stage's cooldown
would hide all but the first in a run, so those it suppressed count too).

    python -m stream_app.tools.stationary                    # 10 seeds x 100,000 events
    python -m stream_app.tools.stationary --seeds 3 --events 20000

The budget (issue 10): at most one false episode per 100,000 events over all runs, and no
retrain signal. The command exits 1 when a run exceeds it. ``tests/test_drift_stationary.py``
runs the first seeds of it in CI.

>>> r = run_stationary(1, events=4000, n_features=3)
>>> r.seed, r.events, r.warm_after_labels
(1, 4000, 2750)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.spec import build_model, one_hot
from stream_app.pipeline.drift import DriftStage
from stream_app.pipeline.records import RetrainSignal
from stream_app.settings import Settings, load_settings
from stream_app.tools.datasets import Concept, DriftSpec, synthetic

__all__ = ["StationaryRun", "main", "run_stationary"]


@dataclass
class StationaryRun:
    """What the stage raised on one stationary stream."""

    seed: int
    events: int
    #: (index, kind, subject, drift) of every episode opened and every ADWIN change
    episodes: list[tuple[int, str, str, bool]] = field(default_factory=list)
    #: the reason of every retrain signal sent, then one entry per signal the cooldown held back
    signals: list[str] = field(default_factory=list)
    #: the event index of every retrain signal sent
    signal_at: list[int] = field(default_factory=list)
    warm_after_labels: int | None = None
    #: the subjects the stage monitored, and the labels ADWIN saw (from the warm point on)
    subjects: list[str] = field(default_factory=list)
    adwin_labels: int = 0
    #: ADWIN rises of the loss that the next labels did not confirm (no signal)
    unconfirmed: int = 0
    seconds: float = 0.0

    @property
    def false_episodes(self) -> int:
        return len(self.episodes)

    def by_kind(self, kind: str) -> int:
        return sum(1 for e in self.episodes if e[1] == kind)


def run_stationary(seed: int, events: int = 100_000, *, n_features: int = 20,
                   settings: Settings | None = None, drift: DriftSpec | None = None,
                   ) -> StationaryRun:
    """Feed one stationary stream (``drift``: one that changes, for the control measurements
    of ``bench/drift_signal.py``) through a fresh model and drift stage."""
    settings = settings or load_settings(environ={})
    schedule = drift.schedule(Concept.default(n_features)) if drift is not None else None
    model = build_model(settings.model)
    stage = DriftStage(settings, model=model.name, model_version=model.version)
    run = StationaryRun(seed, events)
    started = time.perf_counter()
    observe, observe_label = stage.observe, stage.observe_label
    predict, learn = model.predict_proba_one, model.learn_one
    for i, item in enumerate(synthetic(seed, events, n_features=n_features,
                                           schedule=schedule)):
        event = item.event
        features = event["features"]
        x = one_hot(features)
        score = predict(x)
        outs = observe(x, features, score=score, timestamp=event["timestamp"])
        y = bool(item.label)
        learn(x, y)
        outs += observe_label(y, score, learned=i + 1)
        if outs:
            _tally(run, i, outs)
    run.seconds = time.perf_counter() - started
    run.warm_after_labels = stage.warmup.warm_at if stage.warmup is not None else None
    run.subjects = stage.monitor.subjects if stage.monitor is not None else []
    run.adwin_labels = stage.performance.n if stage.performance is not None else 0
    run.unconfirmed = stage.unconfirmed
    run.signals += ["suppressed by the cooldown"] * stage.signals_suppressed
    return run


def _tally(run: StationaryRun, index: int, outs: list[Any]) -> None:
    for o in outs:
        if isinstance(o, RetrainSignal):
            run.signals.append(o.reason)
            run.signal_at.append(index)
            continue
        record = orjson.loads(o[2])
        if record.get("record") != "episode":
            continue
        if record["drift"] or record["kind"] == "performance":
            run.episodes.append((index, record["kind"], record["subject"], record["drift"]))


def report(runs: list[StationaryRun]) -> str:
    lines = ["| seed | events | warm after labels | feature | prediction | performance "
             "(unconfirmed) | retrain signals | seconds |",
             "|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in runs:
        lines.append(f"| {r.seed} | {r.events:,} | {r.warm_after_labels} | {r.by_kind('feature')} "
                     f"| {r.by_kind('prediction')} | {r.by_kind('performance')} "
                     f"({r.unconfirmed}) | {', '.join(r.signals) or '-'} | {r.seconds:.1f} |")
    total = sum(r.events for r in runs)
    false = sum(r.false_episodes for r in runs)
    lines += ["", f"false episodes: {false} in {total:,} events "
              f"({false / total * 1e5:.2f} per 100,000); retrain signals: "
              f"{sum(len(r.signals) for r in runs)}"]
    for r in runs:
        for e in r.episodes:
            lines.append(f"  seed {r.seed}: event {e[0]:,} {e[1]} {e[2]}"
                         + ("" if e[3] else " (loss fell)"))
    return "\n".join(lines)


def within_budget(runs: list[StationaryRun]) -> bool:
    """At most one false episode per 100,000 events in total, and no retrain signal."""
    total = sum(r.events for r in runs)
    return (sum(r.false_episodes for r in runs) * 100_000 <= total
            and not any(r.signals for r in runs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="runs, seeds 1..N")
    p.add_argument("--events", type=int, default=100_000, help="events per run")
    p.add_argument("--features", type=int, default=20, help="numeric features (+ channel)")
    args = p.parse_args(argv)
    runs = []
    for seed in range(1, args.seeds + 1):
        runs.append(run_stationary(seed, args.events, n_features=args.features))
        r = runs[-1]
        print(f"seed {seed}: {r.false_episodes} false episodes, signals {r.signals}, "
              f"warm after {r.warm_after_labels} labels, {r.seconds:.1f} s", file=sys.stderr)
    print(report(runs))
    return 0 if within_budget(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
