"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the worker's CPU goes.

Prints the share of samples (active, non-idle samples only, as py-spy records by default) that
each function holds inclusively (anywhere on the stack) and exclusively (top of the stack), and
the share of a few named stages of the engine, so profiles from different runs can be compared.

    py-spy record --pid PID --format raw --nonblocking --threads -o /tmp/full.txt --duration 30
    python bench/profile_top.py /tmp/full.txt [--top 30] [--match redis]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

#: stage name -> regular expression on a frame. A stack belongs to the consumer thread if any
#: frame says so; otherwise to the stage of the innermost frame matching a STAGES rule, else of
#: the innermost frame matching a FALLBACK rule (generic scheduling), else "other".
THREAD = ("faust: consumer thread (aiokafka fetch loop, its own thread)",
          r"^thread \(\d+\): (?!MainThread)|^Thread\._bootstrap|ServiceThread|mode/threads\.py")
STAGES: dict[str, str] = {
    "engine: parse/validate events": r"parse_event \(",
    "engine: aggregates (fold_events)": r"fold_events \(",
    "engine: model predict": r"predict_proba_one \(",
    "engine: store read (begin_batch + state decode)": r"begin_batch \(",
    "engine: store write (commit_batch + state encode)": r"commit_batch \(",
    "engine: rest of process_events (predictions, snapshots)": r"process_events \(",
    "labels: prequential metrics (River metrics)": r"label_joined \(",
    "labels: model learn_one (River)": r"learn_one \(",
    "labels: join_labels (Redis)": r"join_labels \(",
    "labels: rest of process_labels": r"process_labels \(",
    "agent: send_all (producer.send + gather)": r"send_all \(|forward \(",
    "metrics timer": r"publish_metrics",
    "faust: stream/take_events/acks/event objects":
        r"faust/streams\.py|faust/channels\.py|faust/transport/conductor\.py|"
        r"faust/events\.py|faust/serializers|faust/topics\.py|faust/app/base\.py",
    "faust: consumer (main loop side)": r"faust/transport/consumer\.py|faust/transport/drivers",
    "aiokafka producer": r"aiokafka/producer|aiokafka/record",
    "aiokafka client/conn": r"aiokafka/",
}
FALLBACK: dict[str, str] = {
    "agent: rest of the agent loop (records, retries)": r"_register_batch_agent|_retrying",
    "faust agents/mode services + asyncio scheduling": r"faust/|mode/(?!worker)|asyncio/",
}


def _frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (path/file.py)``: aggregate over line numbers."""
    return re.sub(r":\d+\)$", ")", frame.strip())


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([_frame_name(f) for f in stack.split(";")], int(count)))
    return stacks


def _classify(frames: list[str], thread: re.Pattern[str],
              rules: list[tuple[str, re.Pattern[str]]],
              fallback: list[tuple[str, re.Pattern[str]]]) -> str:
    if any(thread.search(f) for f in frames):
        return THREAD[0]
    for group in (rules, fallback):
        for f in reversed(frames):
            for name, rx in group:
                if rx.search(f):
                    return name
    return "event loop itself (uvloop, native: I/O polling, callbacks)"


def summarise(stacks: list[tuple[list[str], int]], top: int, match: str | None) -> str:
    total = sum(c for _, c in stacks)
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    thread = re.compile(THREAD[1])
    rules = [(name, re.compile(rx)) for name, rx in STAGES.items()]
    fallback = [(name, re.compile(rx)) for name, rx in FALLBACK.items()]
    for frames, count in stacks:
        for f in set(frames):
            inclusive[f] += count
        exclusive[frames[-1]] += count
        stage = _classify(frames, thread, rules, fallback)
        stages[stage] += count
    lines = [f"{total} samples"]
    lines.append("\nstages (first matching stage per stack, % of samples):")
    for name, c in stages.most_common():
        lines.append(f"  {100 * c / total:5.1f}%  {name}")
    lines.append(f"\ntop {top} inclusive:")
    filt = re.compile(match) if match else None
    shown = 0
    for f, c in inclusive.most_common():
        if filt and not filt.search(f):
            continue
        lines.append(f"  {100 * c / total:5.1f}%  {f}")
        shown += 1
        if shown >= top:
            break
    lines.append(f"\ntop {top} exclusive (self):")
    for f, c in exclusive.most_common(top):
        lines.append(f"  {100 * c / total:5.1f}%  {f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--match", default=None, help="only inclusive frames matching this regex")
    args = p.parse_args(argv)
    print(summarise(load(args.profile), args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
