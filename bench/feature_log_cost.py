"""What the feature log adds per event on the hot path: building and serialising one
``FeatureLog`` record (and one ``LabelLog`` per joined label), next to the ``Prediction``
the engine emits anyway. Snapshots are the engine's own (``bench/fraud-bench.toml``'s 49
inputs by default).

    python bench/feature_log_cost.py [--inputs 49] [--n 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from stream_app.pipeline.records import FeatureLog, LabelLog, Prediction, encode  # noqa: E402


def per_item_us(make, n: int) -> float:
    items = [make(i) for i in range(n)]
    t0 = time.perf_counter()
    encode(items)
    t1 = time.perf_counter()
    return (t1 - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--inputs", type=int, default=49)
    p.add_argument("--n", type=int, default=200_000)
    args = p.parse_args()
    x = {f"f{i}_mean_by_entity_1h": 0.123456789 * i for i in range(args.inputs)}
    snap = orjson.dumps({"x": x, "s": 0.4321, "v": "3", "t": 1.7e9, "l": 1.25, "n": 12})
    best = {}
    for name, make in {
        "prediction (emitted anyway)": lambda i: Prediction(
            "predictions", f"e{i}", "u1", "fraud", "3", 0.4321, False, 1.7e9, 1.7e9, 1.25, 12),
        "feature log, per event": lambda i: FeatureLog(
            "feature-log", f"e{i}", "u1", "fraud", 1.7e9, snap),
        "label log, per joined label": lambda i: LabelLog(
            "feature-log", f"e{i}", "fraud", "3", True, True, 1.7e9, 1.7e9),
        "snapshot dump (what the log reuses)": lambda i: {"x": x, "s": 0.4, "v": "3"},
    }.items():
        if name.startswith("snapshot"):
            items = [make(i) for i in range(args.n)]
            t0 = time.perf_counter()
            for it in items:
                orjson.dumps(it)
            best[name] = min((time.perf_counter() - t0) / args.n * 1e6, 1e9)
            continue
        best[name] = min(per_item_us(make, args.n) for _ in range(5))
    print(f"{args.inputs} model inputs, {len(snap)} snapshot bytes, best of 5 x {args.n:,}")
    for name, us in best.items():
        print(f"  {name:38s} {us:6.2f} us (encode)" if "dump" not in name
              else f"  {name:38s} {us:6.2f} us (one orjson.dumps)")


if __name__ == "__main__":
    main()
