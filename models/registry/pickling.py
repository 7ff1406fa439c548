"""How the registry turns a model into checkpoint bytes and back, fit for a worker thread.

A checkpoint is pickled in a worker thread so that the event loop keeps running, but the
pickler holds the GIL while it runs C code, and hands it over only when it calls back into
Python. Three things keep those stretches short (a 100-tree River ARF, 226 MB, pickles in
2.3 to 3.6 s; the loop's longest wait was 47 to 87 ms, against 4 to 6 s on the loop; see
``bench/RESULTS.md``):

* ``reducer_override`` is a Python method, so the pickler enters the interpreter, where the
  GIL can change hands, at every object that is not a builtin container or scalar;
* ``random.Random`` is stored as its 2.5 KB Mersenne Twister state in bytes, not as a tuple of
  625 ints: River gives every Gaussian estimator its own generator (85,000 of them in that
  forest, two thirds of the pickle), and the pickler keeps each state it wrote alive until it
  ends, so freeing 52 million ints at the end held the GIL for half a second;
* the cyclic garbage collector is paused while a checkpoint is pickled or unpickled: the
  pickler's memo keeps every reduction alive, and a full collection over a big model's millions
  of objects held the GIL for 100 to 300 ms at a time (refcounting still frees memory).

One GIL hold still spans any single builtin container (a dict of a million floats is pickled
in one stretch; River's models are graphs of many small objects), and the pickler's end, when
it lets go of the million objects its memo holds (100 to 300 ms for that forest).

**Pickling in a forked child** (:class:`ForkedPickles`, POSIX with ``os.fork``; Linux only by
default) takes the GIL out of it: the child holds the objects as they were at the fork, pickles
them while the parent runs on, and hands the bytes back in a file. The parent pays the fork
(copying its page tables: a few ms for a few hundred MB) and later reads the file in a thread.
The caller needs to hold its objects still only for the fork, not for the whole pickle. The
child touches every object it pickles (reference counts), so the pages it reads are copied:
for as long as it runs the pair uses up to the model's size again, plus the pickle's.

>>> with ForkedPickles.start([{"w": [1.0, 2.0]}, {"b": 3}]) as job:
...     [loads(p.data) for p in job.result()]
[{'w': [1.0, 2.0]}, {'b': 3}]

>>> import random
>>> rng = random.Random(7)
>>> state = rng.getstate()
>>> blob = dumps({"rng": rng, "w": [1.0, 2.0]})
>>> back = loads(blob)
>>> back["rng"].getstate() == state, back["w"]
(True, [1.0, 2.0])
>>> Pickled.of({"a": 1}).data == dumps({"a": 1})
True
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import gc
import io
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["PICKLE_PROTOCOL", "ForkedPickles", "Pickled", "PicklingFailed", "can_fork", "dumps",
           "loads", "restore_random"]

PICKLE_PROTOCOL: Final = 5

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No automatic cyclic collection while any caller is inside (nesting and threads safe)."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def restore_random(version: int, words: bytes, gauss_next: float | None) -> random.Random:
    """A ``random.Random`` in the state :func:`dumps` stored (the unpickler calls this)."""
    rng = random.Random.__new__(random.Random)
    rng.setstate((version, tuple(array.array("I", words)), gauss_next))
    return rng


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is random.Random:
            version, internal, gauss_next = obj.getstate()
            return restore_random, (version, array.array("I", internal).tobytes(), gauss_next)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """``obj`` pickled (protocol 5), as :func:`loads` reads it back; safe to run in a thread."""
    buf = io.BytesIO()
    with _gc_paused():
        _Pickler(buf, protocol=PICKLE_PROTOCOL).dump(obj)
    return buf.getvalue()


def loads(blob: bytes, *, freeze: bool = False) -> Any:
    """Unpickle checkpoint bytes (only ever ones whose signature verified); safe to run in a
    thread.

    ``freeze``: the objects made are moved out of the cyclic GC's reach (``gc.freeze``) before
    it runs again, after a young collection of what was there before. Unpickled with the GC
    paused, they all sit in its youngest generation, and its next pass over them (850,000
    objects for a 100-tree forest) held the GIL ~0.6 s in whichever thread allocated next;
    ``gc.freeze`` itself takes no time. What it gives up: cycles among the objects frozen,
    those and any made by other threads while this one unpickled, are never collected.
    """
    if freeze:
        gc.collect(1)
    with _gc_paused():
        obj = pickle.loads(blob)  # noqa: S301 (the caller verified the bytes first)
        if freeze:
            gc.freeze()
    return obj


@dataclasses.dataclass(frozen=True, slots=True)
class Pickled:
    """Checkpoint bytes made by :func:`dumps`; ``save_snapshot`` stores them as they are.

    For a caller that must pickle while its model is held still and write after it moves on:
    ``Pickled.of`` runs in a worker thread under the caller's lock, the write after it.
    """

    data: bytes

    @classmethod
    def of(cls, obj: Any) -> Pickled:
        return cls(dumps(obj))


class PicklingFailed(RuntimeError):
    """The child that pickled a checkpoint did not finish: its exit status, or its error."""


def can_fork() -> bool:
    """Whether :class:`ForkedPickles` may run here: Linux (macOS's system libraries are not
    safe to use in the child of a process with threads)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


class ForkedPickles:
    """A forked child pickling ``objs`` as they were at :meth:`start` (module doc).

    ``start`` forks (call it while nothing changes the objects: on the event loop, under the
    caller's lock); :meth:`result` waits for the child and reads its bytes (blocking: run it in
    a thread); leaving the ``with`` block kills a child still running and removes its files.
    """

    def __init__(self, pid: int, folder: str, count: int) -> None:
        self._pid: int | None = pid
        self._folder = folder
        self._count = count

    @classmethod
    def start(cls, objs: list[Any]) -> ForkedPickles:
        folder = tempfile.mkdtemp(prefix="stream-app-pickle-")
        try:
            pid = os.fork()
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if pid == 0:  # the child: pickle, write, and leave without running anything else
            _child(objs, folder)
        return cls(pid, folder, len(objs))

    def result(self, timeout_s: float | None = None) -> list[Pickled]:
        """The pickles, in order, once the child is done; :class:`PicklingFailed` if it failed
        or (then killed) is still running after ``timeout_s``."""
        if self._pid is None:
            raise PicklingFailed("this child's result was taken already")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            pid, status = os.waitpid(self._pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:  # type: ignore[operator]
                self.close()
                raise PicklingFailed(f"the pickling child was still running after "
                                     f"{timeout_s:g} s")
            time.sleep(0.01)
        self._pid = None
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            error = os.path.join(self._folder, "error")
            why = open(error, encoding="utf-8").read().strip() if os.path.exists(error) else ""
            raise PicklingFailed(f"the pickling child exited with {code}" + (
                f": {why}" if why else ""))
        out = []
        for i in range(self._count):
            with open(os.path.join(self._folder, f"{i}.pickle"), "rb") as f:
                out.append(Pickled(f.read()))
        return out

    def close(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
            self._pid = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> ForkedPickles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child(objs: list[Any], folder: str) -> None:  # pragma: no cover (runs in the child)
    code = 1
    try:
        # the parent's signal handlers write to its event loop's wake-up pipe: not from here
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        gc.disable()
        for i, obj in enumerate(objs):  # straight to the file: no second copy in memory
            with open(os.path.join(folder, f"{i}.pickle"), "wb") as f:
                _Pickler(f, protocol=PICKLE_PROTOCOL).dump(obj)
        code = 0
    except BaseException as exc:  # noqa: BLE001 (reported to the parent, then the child exits)
        with contextlib.suppress(BaseException), \
                open(os.path.join(folder, "error"), "w", encoding="utf-8") as f:
            f.write(f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        os._exit(code)
