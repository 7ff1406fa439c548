"""Real drift still signals (issue 10): events from a change to its retrain signal.

The control for the stationary harness (``python -m stream_app.tools.stationary``): the same
stage with its defaults, the same model learning from scratch, test-then-train, the same
``synthetic`` streams (20 numeric features + ``channel``), but with one change at ``--at``
(default 20,000 plus a phase in [0, 250) from the seed, long after the model is warm):

- ``shift``: ``f7``'s mean moves by ``--sigmas`` (1) standard deviations (covariate shift: the
  loss does not move, so only the feature policy can signal: a lone subject whose episode
  persists);
- ``concept``: the labelling rule flips its weights, the features keep their distribution (only
  the loss moves: ADWIN, then the confirmation on the next labels).

For each seed: the reason and the events from the change to the first signal, to the first
episode of the changed subject (``f7``'s open, or ADWIN's rise: where the policy before issue
10 signalled), and the signals before the change (false).

    python bench/drift_signal.py                       # both kinds, 10 seeds
    python bench/drift_signal.py --kind shift --seeds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys

from stream_app.tools.datasets import DriftSpec
from stream_app.tools.stationary import run_stationary


def measure(kind: str, seed: int, at: int, events: int, sigmas: float,
            ) -> tuple[str, int | None, int | None, int]:
    """(reason, events to the first signal, to the first episode, signals before the change)."""
    spec = (DriftSpec(at=at, mean_shift={"f7": sigmas}) if kind == "shift"
            else DriftSpec(at=at, concept_drift=True))
    r = run_stationary(seed, events, drift=spec)
    before = sum(1 for i in r.signal_at if i < at)
    subject = "f7" if kind == "shift" else "prequential_loss"
    found = [e[0] - at for e in r.episodes if e[0] >= at and e[2] == subject and e[3]]
    episode = found[0] if found else None
    after = [(i, why) for i, why in zip(r.signal_at, r.signals, strict=False) if i >= at]
    if not after:
        return "-", None, episode, before
    return after[0][1], after[0][0] - at, episode, before


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=("shift", "concept", "both"), default="both")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--at", type=int, default=20_000)
    p.add_argument("--horizon", type=int, default=10_000, help="events after the change")
    p.add_argument("--sigmas", type=float, default=1.0)
    args = p.parse_args(argv)
    kinds = ("shift", "concept") if args.kind == "both" else (args.kind,)
    ok = True
    print("| change | seed | at | reason | events to signal | to the first episode | "
          "signals before the change |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for kind in kinds:
        delays = []
        for seed in range(1, args.seeds + 1):
            at = args.at + 97 * seed % 250  # so a change does not always land on a check
            reason, delay, episode, before = measure(kind, seed, at, at + args.horizon,
                                                     args.sigmas)
            ok &= delay is not None and before == 0
            if delay is not None:
                delays.append(delay)
            print(f"| {kind} | {seed} | {at:,} | {reason} | "
                  f"{'-' if delay is None else f'{delay:,}'} | "
                  f"{'-' if episode is None else f'{episode:,}'} | {before} |", flush=True)
        if delays:
            print(f"| {kind} | all | | {len(delays)}/{args.seeds} signalled | median "
                  f"{statistics.median(delays):,.0f}, max {max(delays):,} | | |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
