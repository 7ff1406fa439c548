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
import pickle
import random
import threading
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["PICKLE_PROTOCOL", "Pickled", "dumps", "loads", "restore_random"]

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


def loads(blob: bytes) -> Any:
    """Unpickle checkpoint bytes (only ever ones whose signature verified)."""
    with _gc_paused():
        return pickle.loads(blob)  # noqa: S301 (the caller verified the bytes first)


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
