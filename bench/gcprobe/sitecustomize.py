"""Benchmark-only probe: log the cyclic GC's pauses of a process started with this directory on
``PYTHONPATH`` (``throughput.py --gc-probe``). Every 5 s one line goes to stderr:

    gcprobe: collections=N total_ms=T max_ms=M gen2=K gen2_max_ms=G tracked=O

Nothing else changes in the process, unless asked (to try GC tuning without touching the code):
``BENCH_GC_THRESHOLD=50000,20,100`` calls ``gc.set_threshold`` at startup, and
``BENCH_GC_FREEZE_AFTER_S=15`` calls ``gc.freeze()`` that many seconds after startup (once the
worker has imported everything and joined its group).
"""

import gc
import os
import sys
import threading
import time

_start: list[float] = []
_stats = {"n": 0, "total": 0.0, "max": 0.0, "gen2": 0, "gen2_max": 0.0}


def _on_gc(phase, info):
    if phase == "start":
        _start.append(time.perf_counter())
        return
    if not _start:
        return
    pause = time.perf_counter() - _start.pop()
    _stats["n"] += 1
    _stats["total"] += pause
    _stats["max"] = max(_stats["max"], pause)
    if info.get("generation") == 2:
        _stats["gen2"] += 1
        _stats["gen2_max"] = max(_stats["gen2_max"], pause)


def _report():
    while True:
        time.sleep(5)
        s = _stats
        sys.stderr.write(
            f"gcprobe: collections={s['n']} total_ms={1e3 * s['total']:.0f} "
            f"max_ms={1e3 * s['max']:.1f} gen2={s['gen2']} gen2_max_ms={1e3 * s['gen2_max']:.1f} "
            f"tracked={len(gc.get_objects())}\n")
        sys.stderr.flush()


def _freeze_later(delay_s):
    time.sleep(delay_s)
    gc.collect()
    gc.freeze()
    sys.stderr.write(f"gcprobe: froze {gc.get_freeze_count()} objects\n")


if os.environ.get("BENCH_GC_THRESHOLD"):
    gc.set_threshold(*(int(v) for v in os.environ["BENCH_GC_THRESHOLD"].split(",")))
if os.environ.get("BENCH_GC_FREEZE_AFTER_S"):
    threading.Thread(target=_freeze_later, args=(float(os.environ["BENCH_GC_FREEZE_AFTER_S"]),),
                     name="gcprobe-freeze", daemon=True).start()
gc.callbacks.append(_on_gc)
threading.Thread(target=_report, name="gcprobe", daemon=True).start()
