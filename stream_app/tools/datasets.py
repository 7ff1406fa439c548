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

Seeded drift of ``synthetic`` is a schedule over :class:`Concept` (:func:`drift_schedule`),
carried through ``open_dataset`` and ``replay`` as a :class:`DriftSpec`:

>>> spec = DriftSpec(at=2, mean_shift={"f0": 100.0})
>>> [round(i.event["features"]["f0"]) for i in open_dataset("synthetic", seed=7, limit=4, drift=spec)]
[0, 0, 100, 100]
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any, Final, Union

import numpy as np

from stream_app.errors import ConfigError

__all__ = [
    "EPOCH",
    "BadLine",
    "Concept",
    "DriftSpec",
    "Item",
    "LabelledEvent",
    "Schedule",
    "drift_schedule",
    "drifted",
    "jsonl",
    "open_dataset",
    "parse_drift",
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
    ``z_j`` is feature ``j`` standardised: ``(x_j - rule_means[j]) / rule_scales[j]``, by the
    concept's own means and scales when those are None. Keeping the rule's standardisation
    while means and scales move is covariate shift (``P(label | features)`` unchanged). A drift
    schedule is a function from the event index to a ``Concept`` (see :func:`synthetic` and
    :func:`drift_schedule`).
    """

    means: tuple[float, ...]
    scales: tuple[float, ...]
    correlation: float
    weights: tuple[float, ...]
    bias: float
    categories: tuple[str, ...] = ("web", "app", "pos", "atm")
    category_probs: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    category_effects: tuple[float, ...] = (0.0, -0.5, 0.3, 1.0)
    rule_means: tuple[float, ...] | None = None
    rule_scales: tuple[float, ...] | None = None

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
        if self.rule_means is not None and self.rule_scales is not None:
            std = (x - np.asarray(self.rule_means)) / np.asarray(self.rule_scales)
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


# -- seeded drift of synthetic ----------------------------------------------------------

#: share of the events a new category takes after the drift (the others keep their proportions)
NEW_CATEGORY_SHARE: Final = 0.2


def drifted(
    base: Concept,
    *,
    mean_shift: Mapping[str, float] | None = None,
    scale_factor: Mapping[str, float] | None = None,
    new_category: str | None = None,
    concept_drift: bool = False,
) -> Concept:
    """``base`` after a drift (pure; raises :class:`ConfigError` for a bad request).

    - ``mean_shift``: feature -> move of its mean, in ``base`` standard deviations;
    - ``scale_factor``: feature -> factor on its standard deviation;
    - ``new_category``: a ``channel`` value ``base`` never produces, which then takes
      ``NEW_CATEGORY_SHARE`` of the events (label effect 0; old categories keep theirs);
    - ``concept_drift``: the labelling weights change sign while the features keep their
      distribution. The standardised features are symmetric, so the label rate stays the same
      and only the rule changes.

    Mean and scale changes are covariate shift: the labelling rule keeps ``base``'s
    standardisation, so ``P(label | features)`` is unchanged.

    >>> base = Concept.default(3)
    >>> d = drifted(base, mean_shift={"f1": 2.0}, scale_factor={"f2": 3.0})
    >>> d.means, d.scales, d.rule_means == base.means
    ((0.0, 4.0, 2.0), (1.0, 1.5, 6.0), True)
    >>> drifted(base, concept_drift=True).weights
    (-1.5, 1.0, -0.75)
    >>> drifted(base, new_category="kiosk").categories
    ('web', 'app', 'pos', 'atm', 'kiosk')
    >>> drifted(base, mean_shift={"f3": 1.0})
    Traceback (most recent call last):
    ...
    stream_app.errors.ConfigError: unknown feature 'f3' to shift: the stream has f0..f2
    """
    means, scales = list(base.means), list(base.scales)
    for name, sigmas in (mean_shift or {}).items():
        j = _feature_index(base, name, "to shift")
        if not math.isfinite(sigmas):
            raise ConfigError(f"mean shift of {name} must be a finite number, got {sigmas}")
        means[j] += sigmas * base.scales[j]
    for name, factor in (scale_factor or {}).items():
        j = _feature_index(base, name, "to scale")
        if not (factor > 0 and math.isfinite(factor)):
            raise ConfigError(f"scale factor of {name} must be a positive number, got {factor}")
        scales[j] *= factor
    after = base
    if (tuple(means), tuple(scales)) != (base.means, base.scales):
        after = replace(after, means=tuple(means), scales=tuple(scales),
                        rule_means=base.rule_means or base.means,
                        rule_scales=base.rule_scales or base.scales)
    if new_category is not None:
        after = _with_category(after, new_category)
    if concept_drift:
        after = replace(after, weights=tuple(-w for w in base.weights))
    return after


def _feature_index(base: Concept, name: str, what: str) -> int:
    k = len(base.means)
    index = int(name[1:]) if name[:1] == "f" and name[1:].isdigit() else -1
    if not 0 <= index < k or name != f"f{index}":
        raise ConfigError(f"unknown feature {name!r} {what}: the stream has f0..f{k - 1}")
    return index


def _with_category(concept: Concept, name: str) -> Concept:
    if not name or name in concept.categories:
        raise ConfigError(f"new category must be a non-empty name not in "
                          f"{list(concept.categories)}, got {name!r}")
    total = sum(concept.category_probs)
    probs = [p / total * (1.0 - NEW_CATEGORY_SHARE) for p in concept.category_probs]
    return replace(concept, categories=(*concept.categories, name),
                   category_probs=(*probs, NEW_CATEGORY_SHARE),
                   category_effects=(*concept.category_effects, 0.0))


def drift_schedule(
    base: Concept,
    *,
    at: int,
    mean_shift: Mapping[str, float] | None = None,
    scale_factor: Mapping[str, float] | None = None,
    new_category: str | None = None,
    concept_drift: bool = False,
) -> Schedule:
    """A schedule for :func:`synthetic`: ``base`` before event index ``at``, then
    :func:`drifted` ``base`` (an abrupt drift). Validates eagerly.

    The random draws do not depend on the concept, so a drifted stream equals the stationary
    stream of the same seed before ``at``, event for event.

    >>> base = Concept.default(2)
    >>> concept_at = drift_schedule(base, at=100, scale_factor={"f1": 2.0})
    >>> concept_at(99) is base, concept_at(100).scales
    (True, (1.0, 3.0))
    """
    if at < 0:
        raise ConfigError(f"drift index must be >= 0, got {at}")
    after = drifted(base, mean_shift=mean_shift, scale_factor=scale_factor,
                    new_category=new_category, concept_drift=concept_drift)

    def concept_at(i: int) -> Concept:
        return after if i >= at else base

    return concept_at


@dataclass(frozen=True)
class DriftSpec:
    """The drift options of ``synthetic`` as ``open_dataset`` and ``replay`` take them.

    >>> DriftSpec(at=5000, mean_shift={"f3": 0.5}).schedule(Concept.default(4))(5000).means
    (0.0, 1.0, 2.0, 4.25)
    """

    at: int
    mean_shift: Mapping[str, float] = field(default_factory=dict)
    scale_factor: Mapping[str, float] = field(default_factory=dict)
    new_category: str | None = None
    concept_drift: bool = False

    def schedule(self, base: Concept) -> Schedule:
        return drift_schedule(base, at=self.at, mean_shift=self.mean_shift,
                              scale_factor=self.scale_factor, new_category=self.new_category,
                              concept_drift=self.concept_drift)


def parse_drift(
    at: int | None,
    shift: Sequence[str] = (),
    scale: Sequence[str] = (),
    new_category: str | None = None,
    concept_drift: bool = False,
) -> DriftSpec | None:
    """The ``replay`` flags ``--drift-at``, ``--shift F=SIGMAS``, ``--scale F=FACTOR``,
    ``--new-category`` and ``--concept-drift`` as a :class:`DriftSpec` (None: no drift).

    Feature names are checked later, against the stream's features.

    >>> parse_drift(3000, shift=["f2=0.5"], scale=["f0=2"], concept_drift=True)
    DriftSpec(at=3000, mean_shift={'f2': 0.5}, scale_factor={'f0': 2.0}, new_category=None, concept_drift=True)
    >>> parse_drift(3000, shift=["f2"])
    Traceback (most recent call last):
    ...
    stream_app.errors.ConfigError: --shift expects FEATURE=SIGMAS (e.g. f3=0.5), got 'f2'
    """
    changes = bool(shift or scale or concept_drift) or new_category is not None
    if at is None:
        if changes:
            raise ConfigError("--shift, --scale, --new-category and --concept-drift need "
                              "--drift-at INDEX")
        return None
    if not changes:
        raise ConfigError("--drift-at needs at least one of --shift, --scale, "
                          "--new-category, --concept-drift")
    if at < 0:
        raise ConfigError(f"--drift-at must be >= 0, got {at}")
    return DriftSpec(at, _assignments(shift, "--shift", "SIGMAS", "f3=0.5"),
                     _assignments(scale, "--scale", "FACTOR", "f3=2"), new_category,
                     concept_drift)


def _assignments(texts: Sequence[str], flag: str, value: str, example: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for text in texts:
        name, sep, number = text.partition("=")
        name = name.strip()
        try:
            parsed = float(number)
        except ValueError:
            parsed = math.nan
        if not sep or not name or not math.isfinite(parsed):
            raise ConfigError(f"{flag} expects FEATURE={value} (e.g. {example}), got {text!r}")
        if name in out:
            raise ConfigError(f"{flag} given twice for {name}")
        out[name] = parsed
    return out


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
    n_features: int | None = None,
    drift: DriftSpec | None = None,
) -> Iterator[Item]:
    """``"phishing"``, ``"synthetic"`` or the path of a JSONL file, cut at ``limit`` events.

    ``limit`` counts events, not bad lines. A built-in name wins over a file of the same name
    (write ``./phishing`` for the file). Raises :class:`ConfigError` for anything else.
    ``n_features`` (default 4) and ``drift`` apply to ``synthetic`` only, and are an error
    with any other dataset; both are validated here, before any event is made.

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
    if name != "synthetic" and (n_features is not None or drift is not None):
        raise ConfigError(f"the feature count and drift options (--features, --drift-at ...) "
                          f"apply only to the synthetic dataset, not {name!r}")
    items: Iterable[Item]
    if name == "phishing":
        items = phishing(start=start, step_s=step_s)
    elif name == "synthetic":
        n = SYNTHETIC_DEFAULT_N if limit is None else limit
        k = 4 if n_features is None else n_features
        if k < 1:
            raise ConfigError(f"synthetic needs at least 1 feature, got {k}")
        schedule = drift.schedule(Concept.default(k)) if drift is not None else None
        items = synthetic(seed, n, n_features=k, start=start, step_s=step_s, schedule=schedule)
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
