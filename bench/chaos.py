"""The fault suite's long loop: every scenario of ``tests/faults`` several times, more kills.

Runs ``pytest tests/faults`` ``--loops`` times (default 3) with ``FAULTS_KILLS`` (default 10)
and ``FAULTS_GUARANTEE`` (default ``exactly_once``), collects the checker's figures per run
(``FAULTS_REPORT``), and prints a Markdown table per scenario: runs, passed, events, and the
missing, duplicate, unexpected and misrouted outcomes summed over the runs. Needs the services
of the test suite (``STREAM_KAFKA_URL``/``STREAM_REDIS_URL``, as ``./scripts/test``).

    . .venv/bin/activate
    python bench/chaos.py --loops 3 --kills 10
    python bench/chaos.py --guarantee at_least_once --loops 1   # what exactly once prevents
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", type=int, default=3)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--guarantee", choices=("exactly_once", "at_least_once"),
                   default="exactly_once")
    p.add_argument("-k", default=None, help="pytest -k expression (a subset of scenarios)")
    args = p.parse_args(argv)
    report = Path(tempfile.mkstemp(prefix="faults-", suffix=".jsonl")[1])
    env = os.environ | {"FAULTS_REPORT": str(report), "FAULTS_KILLS": str(args.kills),
                        "FAULTS_GUARANTEE": args.guarantee}
    started = time.monotonic()
    failed_runs = 0
    for loop in range(args.loops):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "faults")] + (["-k", args.k] if args.k else [])
        print(f"loop {loop + 1}/{args.loops}: {' '.join(cmd[2:])}", flush=True)
        failed_runs += subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode != 0
    rows: dict[str, list[dict]] = defaultdict(list)
    for line in report.read_bytes().splitlines():
        r = orjson.loads(line)
        rows[r["scenario"]].append(r)
    print(f"\n{args.loops} loop(s), {args.guarantee}, {args.kills} kills per kill -9 scenario, "
          f"{time.monotonic() - started:.0f} s\n")
    print("| scenario | runs | passed | events | missing | duplicate ids | unexpected | "
          "poison misrouted |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in sorted(rows.items()):
        total = {k: sum(r[k] for r in rs) for k in ("expected", "missing", "duplicates",
                                                    "unexpected", "misrouted")}
        print(f"| {name} | {len(rs)} | {sum(r['ok'] for r in rs)} | {total['expected']:,} | "
              f"{total['missing']} | {total['duplicates']} | {total['unexpected']} | "
              f"{total['misrouted']} |")
    return 1 if failed_runs else 0


if __name__ == "__main__":
    raise SystemExit(main())
