"""Drift detection: our ``DriftMonitor`` against River's ``KSWIN`` on the very same streams.

Every stream is ``stream_app.tools.datasets.synthetic`` with 20 correlated numeric features
(``f0..f19``, correlation ``0.5 ** |i - j|``), one seed per run. Each detector sees the same
events in the same order:

- ``ours``: one ``DriftMonitor(numeric=[f0..f19], window=1000, check_every=250, alpha=0.01,
  correction="bh")`` with its defaults (an episode opens at 2 consecutive failing checks, a
  closed episode re-learns the fixed reference; ``--confirm-checks 1 --no-relearn`` for the
  behaviour without them); an alarm is an episode that opens;
- ``kswin-default``: one ``river.drift.KSWIN()`` per feature (alpha 0.005, window_size 100,
  stat_size 30), seeded; an alarm is ``drift_detected`` on any feature;
- ``kswin-1000``: the same with a window comparable to ours (window_size 1000, stat_size 250).

Figures:

1. false alarms per 100,000 events on stationary streams: alarms / exposure * 1e5, where the
   exposure counts the events from the first one at which the detector can fire (ours: index
   ``2 * window - 1``; KSWIN: ``window_size - 1``). KSWIN costs milliseconds per event with 20
   features, so it runs on the first ``--kswin-events`` events of each stream; ours runs on
   ``--fa-events``. 95 % intervals are exact Poisson intervals;
2. detection delay after a ``--sigmas`` standard-deviation mean shift of ``--feature`` at index
   ``--shift-at + phase`` (``phase`` in ``[0, check_every)`` drawn from the seed, so the shift
   does not always land just after one of our checks): the index of the first alarm on that
   feature at or after the shift, minus the shift index. Alarms on other features after the
   shift (until that detection) and on any feature before it are counted as false;
3. amortised cost per event: time inside the detectors' ``update`` calls on the stationary
   streams after warm-up (when every event is tested, or every ``check_every`` for ours),
   divided by those events (µs; KSWIN's is for all 20 features together).

``--budget-s`` bounds the run: once it has passed, KSWIN detectors are fed no more events (the
table says so) and the remaining delay runs are skipped for them.

    python bench/drift_harness.py                  # the figures in bench/results-drift.md
    python bench/drift_harness.py --quick          # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from river.drift import KSWIN
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.drift import DriftMonitor  # noqa: E402
from stream_app.tools.datasets import Concept, drift_schedule, synthetic  # noqa: E402


# -- detectors ------------------------------------------------------------------------
@dataclass
class Detector:
    """One contender over all features: ``update(features)`` returns the features that alarmed."""

    name: str
    warmup: int  # index of the first event at which it can raise an alarm
    expensive: bool
    limit: int = 0  # feed events with index < limit
    seconds: float = 0.0  # inside update, from the warm-up index on
    events: int = 0
    alarms: list[tuple[int, str]] = field(default_factory=list)
    truncated: bool = False

    def update(self, x: Mapping[str, float]) -> list[str]:
        raise NotImplementedError

    def feed(self, i: int, x: Mapping[str, float]) -> list[str]:
        t = time.perf_counter()
        fired = self.update(x)
        if i >= self.warmup:
            self.seconds += time.perf_counter() - t
        self.events += 1
        self.alarms.extend((i, name) for name in fired)
        return fired

    @property
    def exposure(self) -> int:
        return max(0, self.events - self.warmup)


class Ours(Detector):
    def __init__(self, names: list[str], window: int, check_every: int, alpha: float,
                 confirm_checks: int, relearn: bool) -> None:
        super().__init__("ours", 2 * window - 1, expensive=False)
        self.monitor = DriftMonitor(numeric=names, window=window, check_every=check_every,
                                    alpha=alpha, correction="bh", confirm_checks=confirm_checks,
                                    relearn_on_close=relearn)
        self.open: set[str] = set()

    def update(self, x: Mapping[str, float]) -> list[str]:
        fired = []
        for e in self.monitor.update(x):
            if e.event == "open":
                self.open.add(e.subject)
                fired.append(e.subject)
            else:
                self.open.discard(e.subject)
        return fired


class Kswin(Detector):
    def __init__(self, name: str, names: list[str], window_size: int, stat_size: int,
                 seed: int) -> None:
        super().__init__(name, window_size - 1, expensive=True)
        self.bank = [(f, KSWIN(window_size=window_size, stat_size=stat_size,
                               seed=seed * 1000 + j)) for j, f in enumerate(names)]

    def update(self, x: Mapping[str, float]) -> list[str]:
        fired = []
        for f, d in self.bank:
            d.update(x[f])
            if d.drift_detected:
                fired.append(f)
        return fired


def contenders(args: argparse.Namespace, seed: int) -> list[Detector]:
    names = [f"f{j}" for j in range(args.features)]
    return [Ours(names, args.window, args.check_every, args.alpha, args.confirm_checks,
                 args.relearn),
            Kswin("kswin-default", names, 100, 30, seed),
            Kswin("kswin-1000", names, 1000, 250, seed)]


# -- runs -----------------------------------------------------------------------------
def run(detectors: list[Detector], events, deadline: float,
        stop: Callable[[Detector, int, list[str]], bool] | None = None) -> None:
    """Feed each event to every detector still below its limit, until none is left."""
    for i, item in enumerate(events):
        x = item.event["features"]
        live = [d for d in detectors if i < d.limit]
        if not live:
            break
        for d in live:
            fired = d.feed(i, x)
            if stop is not None and stop(d, i, fired):
                d.limit = i + 1
        if i % 500 == 0 and time.monotonic() > deadline:
            for d in live:
                if d.expensive:
                    d.limit, d.truncated = i + 1, True


def false_alarms(args: argparse.Namespace, deadline: float) -> dict[str, list[Detector]]:
    out: dict[str, list[Detector]] = {}
    for seed in args.seed_list:
        detectors = contenders(args, seed)
        for d in detectors:
            d.limit = args.kswin_events if d.expensive else args.fa_events
        if time.monotonic() > deadline:
            for d in detectors:
                if d.expensive:
                    d.limit, d.truncated = 0, True
        n = max(d.limit for d in detectors)
        run(detectors, synthetic(seed, n, n_features=args.features), deadline)
        for d in detectors:
            out.setdefault(d.name, []).append(d)
        print(f"  stationary seed {seed}: " + ", ".join(
            f"{d.name} {len(d.alarms)} alarms / {d.exposure} events" for d in detectors),
            file=sys.stderr)
    return out


@dataclass
class DelayResult:
    seed: int
    shift_at: int
    delay: int | None  # None: not detected within the horizon (or not run)
    false_after: int  # alarms on other features from the shift to the detection
    false_before: int  # alarms on any feature before the shift
    note: str = ""


def delays(args: argparse.Namespace, deadline: float) -> dict[str, list[DelayResult]]:
    out: dict[str, list[DelayResult]] = {}
    for seed in args.seed_list[:args.delay_seeds]:
        for name, result in delay_run(args, seed, deadline).items():
            out.setdefault(name, []).append(result)
        print(f"  shift seed {seed} at {result.shift_at}: " + ", ".join(
            f"{name} {r[-1].delay}" for name, r in out.items()), file=sys.stderr)
    return out


def delay_run(args: argparse.Namespace, seed: int, deadline: float) -> dict[str, DelayResult]:
    """One shifted stream: each detector runs until it alarms on the shifted feature."""
    feature = args.feature
    shift_at = args.shift_at + int(np.random.default_rng(seed).integers(args.check_every))
    detectors = contenders(args, seed)
    n = shift_at + args.horizon
    for d in detectors:
        d.limit = 0 if d.expensive and time.monotonic() > deadline else n
    ours = detectors[0]
    assert isinstance(ours, Ours)
    open_at_shift: set[str] = set()

    def stop(d: Detector, i: int, fired: list[str]) -> bool:
        if d is ours and i == shift_at - 1:
            open_at_shift.update(ours.open)
        return i >= shift_at and feature in fired

    schedule = drift_schedule(Concept.default(args.features), at=shift_at,
                              mean_shift={feature: args.sigmas})
    run(detectors, synthetic(seed, n, n_features=args.features, schedule=schedule), deadline,
        stop)
    out = {}
    for d in detectors:
        hits = [i for i, f in d.alarms if i >= shift_at and f == feature]
        end = hits[0] if hits else n
        note = ""
        if d.events == 0 or d.truncated:
            note = "not run (budget)"
        elif d is ours and feature in open_at_shift:
            note = "episode already open at the shift"
        out[d.name] = DelayResult(
            seed, shift_at, hits[0] - shift_at if hits else None,
            sum(1 for i, f in d.alarms if shift_at <= i <= end and f != feature),
            sum(1 for i, _ in d.alarms if i < shift_at), note)
    return out


# -- report ---------------------------------------------------------------------------
def poisson_interval(k: int, exposure: float) -> tuple[float, float]:
    lo = stats.chi2.ppf(0.025, 2 * k) / 2 if k else 0.0
    hi = stats.chi2.ppf(0.975, 2 * k + 2) / 2
    return lo / exposure * 1e5, hi / exposure * 1e5


def report(args: argparse.Namespace, fa: dict[str, list[Detector]],
           dl: dict[str, list[DelayResult]], elapsed: float) -> str:
    lines = ["| detector | stationary events (after warm-up) | false alarms | per 100k events "
             "(95 % CI) | µs / event | delay median | delay max | detected | false alarms "
             "after shift (total) | before shift (total) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, runs in fa.items():
        exposure = sum(d.exposure for d in runs)
        alarms = sum(len([a for a in d.alarms if a[0] >= d.warmup]) for d in runs)
        cost = sum(d.seconds for d in runs) / exposure * 1e6 if exposure else float("nan")
        if exposure:
            lo, hi = poisson_interval(alarms, exposure)
            rate = f"{alarms / exposure * 1e5:.1f} ({lo:.1f}–{hi:.1f})"
        else:
            rate = "not run"
        rate += " *truncated*" if any(d.truncated for d in runs) else ""
        results = [r for r in dl.get(name, []) if not r.note]
        found = [r.delay for r in results if r.delay is not None]
        med = f"{statistics.median(found):.0f}" if found else "–"
        worst = f"{max(found)}" if found else "–"
        cells = [f"{exposure:,}", str(alarms) if exposure else "–", rate,
                 f"{cost:.1f}" if exposure else "–", med, worst, f"{len(found)}/{len(results)}",
                 str(sum(r.false_after for r in results)),
                 str(sum(r.false_before for r in results))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per-seed false alarms on the stationary streams (alarms / events after "
              "warm-up; a fixed reference that happens to be atypical makes ours fail "
              "checks of one subject again and again, so watch for clusters by seed):", "", "| seed | " + " | ".join(fa) + " |", "|---:|" + "---:|" * len(fa)]
    for k, seed in enumerate(args.seed_list):
        lines.append(f"| {seed} | " + " | ".join(
            f"{len(fa[name][k].alarms)} / {fa[name][k].exposure:,}" for name in fa) + " |")
    lines += ["", "Per-seed delays (events; '-' = not detected within the horizon):", ""]
    lines.append("| seed | shift at | " + " | ".join(dl) + " |")
    lines.append("|---:|---:|" + "---:|" * len(dl))
    for k, seed in enumerate(args.seed_list[:args.delay_seeds]):
        rows = [dl[name][k] for name in dl]
        cells = [(str(r.delay) if r.delay is not None else "-") + (f" ({r.note})" if r.note else "")
                 for r in rows]
        lines.append(f"| {seed} | {rows[0].shift_at} | " + " | ".join(cells) + " |")
    lines += ["", f"elapsed {elapsed:.0f} s; python {platform.python_version()}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--seeds", type=int, default=10, help="stationary streams (seeds 1..N)")
    p.add_argument("--fa-events", type=int, default=300_000,
                   help="events per stationary stream for ours")
    p.add_argument("--kswin-events", type=int, default=3000,
                   help="events per stationary stream for KSWIN (its first ones)")
    p.add_argument("--delay-seeds", type=int, default=10, help="shifted streams")
    p.add_argument("--shift-at", type=int, default=2500, help="shift index before the phase")
    p.add_argument("--horizon", type=int, default=5000, help="events after the shift")
    p.add_argument("--feature", default="f7")
    p.add_argument("--sigmas", type=float, default=0.5)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--check-every", type=int, default=250)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--confirm-checks", type=int, default=2,
                   help="ours: consecutive failing checks that open an episode")
    p.add_argument("--no-relearn", dest="relearn", action="store_false",
                   help="ours: keep the fixed reference when an episode closes")
    p.add_argument("--budget-s", type=float, default=1200.0,
                   help="stop feeding KSWIN after this long")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 2 seeds, 5 features, short streams")
    if p.parse_args(argv).quick:  # smaller defaults; flags given explicitly still win
        p.set_defaults(seeds=2, delay_seeds=2, fa_events=20_000, kswin_events=1500,
                       horizon=2000, features=5, feature="f2")
    args = p.parse_args(argv)
    args.seed_list = list(range(1, args.seeds + 1))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_s
    print(f"$ python bench/drift_harness.py {shlex.join(sys.argv[1:])}", file=sys.stderr)
    fa = false_alarms(args, deadline)
    dl = delays(args, deadline)
    print(report(args, fa, dl, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
