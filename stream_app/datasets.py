"""Replayable datasets: iterators of events in the ``events`` contract shape, with their labels.

Pure: nothing here touches the network, and the only I/O is reading a JSONL file. Every
iterator yields :class:`LabelledEvent` items; :func:`jsonl` also yields :class:`BadLine` items
for lines it could not parse, so one bad line never stops (or truncates) a replay.

>>> items = list(open_dataset("phishing", limit=2))
>>> [item.event["event_id"] for item in items], items[0].label
(['phishing-00000', 'phishing-00001'], True)
>>> sorted(items[0].event)
['entity_id', 'event_id', 'features', 'timestamp']
>>> a = [i.event for i in open_dataset("synthetic", seed=7, limit=3)]
>>> a == [i.event for i in synthetic(seed=7, n=3)], a[0]["event_id"]
(True, 'syn-7-000000')
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Final, Union

import numpy as np

from stream_app.errors import ConfigError

__all__ = [
    "EPOCH",
    "BadLine",
    "Concept",
    "Item",
    "LabelledEvent",
    "jsonl",
    "open_dataset",
    "phishing",
    "synthetic",
]

#: first event timestamp of the built-in datasets unless told otherwise (2023-11-14T22:13:20Z)
EPOCH: Final = 1_700_000_000.0
#: events in ``open_dataset("synthetic")`` when no limit is given
SYNTHETIC_DEFAULT_N: Final = 10_000
#: the built-in dataset names; anything else must be a path to a JSONL file
NAMES: Final = ("phishing", "synthetic")

Label = Union[bool, int, str]  # noqa: UP007 (evaluated at runtime on 3.10)


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    """One event (a dict in the ``events`` shape) and its label, if it has one.

    ``payload`` is the exact bytes to publish when the source had them (JSONL), so a replay
    does not normalise what it was given; otherwise the event is encoded as JSON.
    """

    event: dict[str, Any]
    label: Label | None = None
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class BadLine:
    """A JSONL line that is not a JSON object: reported with its 1-based number, then skipped.

    >>> str(BadLine(3, "invalid JSON (Expecting value at column 1)", "{oops"))
    'line 3: invalid JSON (Expecting value at column 1)'
    """

    lineno: int
    error: str
    raw: str

    def __str__(self) -> str:
        return f"line {self.lineno}: {self.error}"


Item = Union[LabelledEvent, BadLine]  # noqa: UP007


def _event(event_id: str, entity_id: str, timestamp: float, features: dict[str, Any]) -> dict:
    return {
        "event_id": event_id,
        "entity_id": entity_id,
        "timestamp": round(timestamp, 6),
        "features": features,
    }


# -- phishing -------------------------------------------------------------------------


def phishing(
    *, start: float = EPOCH, step_s: float = 1.0, n_entities: int = 50
) -> Iterator[LabelledEvent]:
    """River's bundled ``Phishing`` dataset: 1,250 rows, 9 numeric features, a bool label.

    Event ids are ``phishing-00000`` onwards; each row's entity is a fixed hash bucket of its
    index (``site-0`` .. ``site-49``); timestamps are ``start + i * step_s``.

    >>> first = next(phishing(start=0.0))
    >>> first.event["entity_id"], first.event["timestamp"], len(first.event["features"])
    ('site-9', 0.0, 9)
    """
    from river import datasets  # heavy import, deferred until used

    for i, (x, y) in enumerate(datasets.Phishing()):
        entity = f"site-{zlib.crc32(str(i).encode()) % n_entities}"
        yield LabelledEvent(_event(f"phishing-{i:05d}", entity, start + i * step_s, dict(x)), bool(y))


# -- synthetic ------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    """The rule that generates one synthetic event: feature distribution and labelling.

    Numeric features ``f0..f{k-1}`` are Gaussian with the given means and scales and an
    AR(1)-style correlation ``correlation ** |i - j|``; ``channel`` is categorical; the label is
    ``True`` with probability ``sigmoid(bias + sum(w_j * z_j) + effect[channel])`` where
    ``z_j`` is feature ``j`` standardised. A drift schedule is a function from the event index
    to a ``Concept`` (see :func:`synthetic`).
    """

    means: tuple[float, ...]
    scales: tuple[float, ...]
    correlation: float
    weights: tuple[float, ...]
    bias: float
    categories: tuple[str, ...] = ("web", "app", "pos", "atm")
    category_probs: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    category_effects: tuple[float, ...] = (0.0, -0.5, 0.3, 1.0)

    @classmethod
    def default(cls, n_features: int = 4) -> Concept:
        """The stationary concept ``synthetic`` uses unless given a schedule.

        >>> Concept.default(3).weights
        (1.5, -1.0, 0.75)
        """
        return cls(
            means=tuple(float(j) for j in range(n_features)),
            scales=tuple(1.0 + 0.5 * j for j in range(n_features)),
            correlation=0.5,
            weights=tuple((-1) ** j * 1.5 / (1 + 0.5 * j) for j in range(n_features)),
            bias=-1.0,
        )

    def sample(
        self, z: np.ndarray, u_channel: np.ndarray, u_label: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map standard normals and uniforms to (features, channel indices, labels)."""
        k = len(self.means)
        lags = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
        chol = np.linalg.cholesky(self.correlation**lags)
        std = z @ chol.T
        x = np.asarray(self.means) + std * np.asarray(self.scales)
        channel = np.searchsorted(np.cumsum(self.category_probs), u_channel * sum(self.category_probs))
        channel = np.minimum(channel, len(self.categories) - 1)
        logit = self.bias + std @ np.asarray(self.weights) + np.asarray(self.category_effects)[channel]
        return x, channel, u_label < 1.0 / (1.0 + np.exp(-logit))


Schedule = Callable[[int], Concept]
_BLOCK: Final = 1024


def synthetic(
    seed: int = 42,
    n: int | None = SYNTHETIC_DEFAULT_N,
    *,
    n_features: int = 4,
    n_entities: int = 500,
    zipf_s: float = 1.1,
    start: float = EPOCH,
    step_s: float = 1.0,
    schedule: Schedule | None = None,
) -> Iterator[LabelledEvent]:
    """A seeded stream: ``n`` events (``None``: endless) with numeric features ``f0..``, a
    ``channel`` string, entities ``user-0000..`` drawn Zipf-like, and a bool label.

    Deterministic for a seed, and a shorter stream is a prefix of a longer one. ``schedule``
    maps an event index to the :class:`Concept` generating it (default: one stationary concept);
    it is the seam for drift.

    >>> e = next(synthetic(seed=1, n=1))
    >>> sorted(e.event["features"]), type(e.label).__name__
    (['channel', 'f0', 'f1', 'f2', 'f3'], 'bool')
    >>> [x.event for x in synthetic(seed=1, n=5)][:2] == [x.event for x in synthetic(seed=1, n=2)]
    True
    """
    if n_features < 1 or n_entities < 1:
        raise ConfigError("synthetic needs n_features >= 1 and n_entities >= 1")
    base = Concept.default(n_features)
    concept_at = schedule or (lambda _i: base)
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_entities + 1) ** zipf_s
    entity_cdf = np.cumsum(popularity / popularity.sum())
    i = 0
    while n is None or i < n:
        z = rng.standard_normal((_BLOCK, n_features))
        u = rng.random((_BLOCK, 3))
        entities = np.minimum(np.searchsorted(entity_cdf, u[:, 0]), n_entities - 1)
        offsets = range(_BLOCK if n is None else min(_BLOCK, n - i))
        for concept, group in groupby(offsets, key=lambda j: concept_at(i + j)):
            rows = list(group)
            x, channel, label = concept.sample(z[rows], u[rows, 1], u[rows, 2])
            for r, j in enumerate(rows):
                features: dict[str, Any] = {f"f{c}": v for c, v in enumerate(x[r].round(6).tolist())}
                features["channel"] = concept.categories[channel[r]]
                event = _event(f"syn-{seed}-{i + j:06d}", f"user-{entities[j]:04d}",
                               start + (i + j) * step_s, features)
                yield LabelledEvent(event, bool(label[r]))
        i += _BLOCK


# -- jsonl ----------------------------------------------------------------------------


def jsonl(path: str | Path) -> Iterator[Item]:
    """Events from a JSON Lines file (``.gz`` is read compressed).

    Each line is an event object; an optional top-level ``label`` is taken out of it. A line
    that is not a JSON object yields a :class:`BadLine` and the stream goes on. A JSON object
    that breaks the event contract is yielded as-is (the engine dead-letters it), with its
    original bytes in ``payload``. Blank lines are skipped silently.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if line:
                yield parse_line(lineno, line)


def parse_line(lineno: int, line: bytes) -> Item:
    """Parse one JSONL line (stripped bytes) into an event or a :class:`BadLine`.

    >>> parse_line(1, b'{"event_id": "e1", "label": 1}')
    LabelledEvent(event={'event_id': 'e1'}, label=1, payload=b'{"event_id":"e1"}')
    >>> print(parse_line(2, b'[1, 2]'))
    line 2: not a JSON object (got list)
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadLine(lineno, f"not UTF-8 ({exc.reason} at byte {exc.start})",
                       line.decode("utf-8", "replace"))
    try:
        obj = json.loads(text)  # stdlib: keeps NaN/Infinity so the engine can dead-letter them
    except json.JSONDecodeError as exc:
        return BadLine(lineno, f"invalid JSON ({exc.msg} at column {exc.colno})", text)
    except RecursionError:
        return BadLine(lineno, "invalid JSON (nested too deeply)", text)
    if not isinstance(obj, dict):
        return BadLine(lineno, f"not a JSON object (got {_json_type(obj)})", text)
    if "label" not in obj:
        return LabelledEvent(obj, None, line)
    label = obj.pop("label")
    payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return LabelledEvent(obj, label, payload)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number" if math.isfinite(value) else "non-finite number"
    return "string" if isinstance(value, str) else "list"


# -- dispatch -------------------------------------------------------------------------


def open_dataset(
    name_or_path: str | Path,
    *,
    seed: int = 42,
    limit: int | None = None,
    start: float = EPOCH,
    step_s: float = 1.0,
) -> Iterator[Item]:
    """``"phishing"``, ``"synthetic"`` or the path of a JSONL file, cut at ``limit`` events.

    ``limit`` counts events, not bad lines. A built-in name wins over a file of the same name
    (write ``./phishing`` for the file). Raises :class:`ConfigError` for anything else.

    >>> open_dataset("nope")
    Traceback (most recent call last):
    ...
    stream_app.errors.ConfigError: unknown dataset 'nope': expected 'phishing', 'synthetic' or the path of a JSONL file
    """
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    if step_s < 0:
        raise ConfigError(f"step_s must be >= 0, got {step_s}")
    name = str(name_or_path)
    items: Iterable[Item]
    if name == "phishing":
        items = phishing(start=start, step_s=step_s)
    elif name == "synthetic":
        n = SYNTHETIC_DEFAULT_N if limit is None else limit
        items = synthetic(seed, n, start=start, step_s=step_s)
    elif Path(name).is_file():
        items = jsonl(name)
    elif Path(name).exists():
        raise ConfigError(f"dataset {name!r} is not a regular file")
    else:
        raise ConfigError(
            f"unknown dataset {name!r}: expected {NAMES[0]!r}, {NAMES[1]!r} "
            "or the path of a JSONL file"
        )
    return _limited(items, limit)


def _limited(items: Iterable[Item], limit: int | None) -> Iterator[Item]:
    iterator = iter(items)
    try:
        count = 0
        while limit is None or count < limit:
            item = next(iterator, None)
            if item is None:
                return
            yield item
            count += isinstance(item, LabelledEvent)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # releases a JSONL file now rather than at garbage collection
