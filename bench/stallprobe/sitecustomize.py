"""Benchmark-only probe: say what holds the event loop when it is late, in a process started
with this directory on ``PYTHONPATH``.

A thread pings the process's uvloop loop (``call_soon_threadsafe``) every 5 ms. When a ping
has waited ``BENCH_STALL_MS`` (default 40), the thread samples the main thread's Python stack
(``sys._current_frames``) every 5 ms until the ping runs, and then writes one line to stderr:

    stallprobe: 112 ms; frames: engine.py:301 _process_events <- ... (x14), ...

with the most frequent stacks first (``BENCH_STALL_LOG=DIR`` writes to a file per process). A stall spent in C code holding the GIL (a
GC pass, a pickler) shows as few samples, or as the frame that called into C. GC pauses over
10 ms are logged as ``stallprobe: gc gen2 123 ms``.
"""

import collections
import gc
import os
import sys
import threading
import time

_THRESHOLD_S = float(os.environ.get("BENCH_STALL_MS", "40")) / 1000
_loops = []
#: ``BENCH_STALL_LOG=DIR``: write to DIR/stallprobe-PID.log instead of stderr
_out = open(os.path.join(os.environ["BENCH_STALL_LOG"], f"stallprobe-{os.getpid()}.log"), "a",
            buffering=1) if os.environ.get("BENCH_STALL_LOG") else sys.stderr


def _watch():
    main = threading.main_thread().ident
    while True:
        if not _loops or _loops[-1].is_closed() or not _loops[-1].is_running():
            time.sleep(0.05)
            continue
        loop = _loops[-1]  # the main thread's newest loop (asyncio.run's come and go)
        done = threading.Event()
        sent = time.perf_counter()
        try:
            loop.call_soon_threadsafe(done.set)
        except RuntimeError:  # closed meanwhile
            continue
        if done.wait(_THRESHOLD_S):
            time.sleep(0.005)
            continue
        samples = collections.Counter()
        while not done.wait(0.005):
            frame = sys._current_frames().get(main)
            stack = []
            while frame is not None and len(stack) < 6:
                code = frame.f_code
                stack.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}")
                frame = frame.f_back
            samples[" <- ".join(stack)] += 1
        took = time.perf_counter() - sent
        top = "; ".join(f"{s} (x{n})" for s, n in samples.most_common(3))
        _out.write(f"stallprobe: {took * 1000:.0f} ms; {sum(samples.values())} samples: {top}\n")
        _out.flush()


_gc_start = []


def _on_gc(phase, info):
    if phase == "start":
        _gc_start.append(time.perf_counter())
    elif _gc_start:
        pause = time.perf_counter() - _gc_start.pop()
        if pause > 0.01:
            gen = info.get("generation")
            _out.write(f"stallprobe: gc gen{gen} {pause * 1000:.0f} ms, "
                       f"{info.get('collected')} collected, counts {gc.get_count()}, "
                       f"frozen {gc.get_freeze_count()}\n")


try:
    import uvloop

    _factory = uvloop.Loop

    def _loop_factory():
        loop = _factory()
        if threading.current_thread() is threading.main_thread():
            _loops.append(loop)
        return loop

    uvloop.EventLoopPolicy._loop_factory = staticmethod(_loop_factory)
    _out.write(f"stallprobe: watching {' '.join(sys.argv)[:200]}\n")
    threading.Thread(target=_watch, name="stallprobe", daemon=True).start()
    gc.callbacks.append(_on_gc)
except ImportError:  # pragma: no cover
    pass

