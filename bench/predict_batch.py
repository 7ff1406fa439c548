"""``predict-batch`` throughput and memory: N synthetic rows (default 1,000,000), no aggregates
(no Redis features), a trained ``StandardScaler | LogisticRegression``.

Writes the input once (JSONL, and Parquet with ``--parquet``), then scores it with
``stream_app.offline.batch.predict_file`` (what the CLI runs, minus the progress bar), sampling
this process's RSS every 0.2 s: flat memory means the run streams. ``--per-row`` scores with
River's ``predict_proba_one`` instead of the vectorised path, for comparison.

    python bench/predict_batch.py                  # 1M rows, JSONL in, Parquet out
    python bench/predict_batch.py --parquet --rows 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from models.spec import ModelSettings, build_model  # noqa: E402
from stream_app.offline import batch  # noqa: E402
from stream_app.pipeline.featurize import numeric  # noqa: E402
from stream_app.settings import load_settings  # noqa: E402
from stream_app.tools.datasets import synthetic  # noqa: E402


def write_input(path: Path, rows: int, parquet: bool) -> None:
    chunk: list[dict] = []
    writer = None
    with path.open("wb") if not parquet else open("/dev/null", "wb") as f:
        for item in synthetic(seed=11, n=rows, step_s=0.001):
            if not parquet:
                f.write(orjson.dumps(item.event) + b"\n")
                continue
            chunk.append(item.event)
            if len(chunk) == 100_000:
                t = pa.Table.from_pylist(chunk)
                writer = writer or pq.ParquetWriter(path, t.schema)
                writer.write_table(t)
                chunk = []
    if parquet:
        if chunk:
            t = pa.Table.from_pylist(chunk)
            writer = writer or pq.ParquetWriter(path, t.schema)
            writer.write_table(t)
        writer.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--parquet", action="store_true", help="Parquet input (default JSONL)")
    p.add_argument("--per-row", action="store_true", help="River's predict_proba_one per row")
    args = p.parse_args()
    settings = load_settings(environ={})
    model = build_model(ModelSettings())
    for item in synthetic(seed=1, n=5000):
        model.learn_one(numeric(item.event["features"]) | {
            f"channel={item.event['features']['channel']}": 1.0}, item.label)
    if args.per_row:
        batch.LinearScorer.of = classmethod(lambda cls, m: None)  # type: ignore[method-assign]
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / ("in.parquet" if args.parquet else "in.jsonl")
        t0 = time.perf_counter()
        write_input(src, args.rows, args.parquet)
        print(f"wrote {args.rows:,} rows ({src.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - t0:.1f} s")
        rss: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                rss.append(proc.memory_info().rss / 2**20)

        base = proc.memory_info().rss / 2**20
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = proc.cpu_times()
        report = batch.predict_file(settings, model, 1, src, Path(tmp) / "out.parquet")
        cpu1 = proc.cpu_times()
        done.set()
        sampler.join()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(f"{report.rows:,} rows, {report.predicted:,} predicted, {report.rejected} rejected, "
          f"vectorised={report.vectorised}")
    print(f"{report.elapsed_s:.1f} s wall -> {report.rows / report.elapsed_s:,.0f} rows/s; "
          f"CPU {cpu / report.rows * 1e6:.1f} us/row")
    if rss:
        third = max(1, len(rss) // 3)
        print(f"RSS MiB: before {base:.0f}, first third max {max(rss[:third]):.0f}, "
              f"last third max {max(rss[-third:]):.0f}, peak {max(rss):.0f}")


if __name__ == "__main__":
    main()
