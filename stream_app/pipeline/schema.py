"""Schema: which event features a worker accepts, declared in ``[features]`` or learned, bounded.

Every feature name and every one-hot category an event brings becomes model state for good
(River's scalers and linear models keep a weight or a running mean per input name), so a
producer that invents names or categories would grow the worker without bound. This stage
stands between validation and featurisation and admits an event only if it stays within:

* the declared inputs (``features.inputs``: name -> ``number``, ``bool`` or ``string``, and a
  number's optional ``min``/``max``); with ``learn_undeclared = false`` nothing else;
* at most ``features.max_feature_names`` undeclared names, learned in arrival order, each with
  the type it first came with (``number`` for JSON numbers and bools alike, or ``string``);
* at most ``features.max_categories`` values of each string feature (only while strings are
  one-hot encoded: otherwise they never reach the model);
* at most ``features.max_inputs`` model inputs learned in all: learned numeric names plus
  one-hot columns (what the model keeps per input is what grows; 256 names of 100 values
  each would be 25,600);
* names of at most ``max_name_chars`` and new categories of at most ``max_category_chars``.

An event past any of these is a :class:`~stream_app.validate.Rejection` (``schema_drift`` for
a name or a type, ``cardinality`` for a category, ``out_of_range`` for a declared range,
``schema`` for a name or a category that is too long) and teaches the schema nothing: it is
all or nothing per event. ``null`` is always allowed and learns nothing. Pure and in memory:
what a worker learned is forgotten when it stops (see README, "Guarantees and limits").

>>> from features.spec import FeatureSettings
>>> schema = Schema(FeatureSettings(inputs={"amount": {"min": 0}}, max_feature_names=2,
...                                 max_categories=2))
>>> schema.check({"amount": 5, "channel": "web"}) is None  # learns channel (a string)
True
>>> schema.check({"amount": -1})
Rejection(reason='out_of_range', error='features.amount: -1 is below min 0')
>>> schema.check({"amount": 5, "channel": 3})
Rejection(reason='schema_drift', error='features.channel: expected string, got number')
>>> schema.check({"channel": "app", "x": 1.5}) is None, schema.check({"channel": "pos"})
(True, Rejection(reason='cardinality', error="features.channel: new value 'pos', and 2 are known (features.max_categories)"))
>>> schema.check({"y": 1})
Rejection(reason='schema_drift', error='features.y: new feature name, and 2 are learned (features.max_feature_names)')
>>> schema.names_learned, schema.check({"amount": 1.0, "x": 2}) is None
(2, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from features.spec import FeatureSettings
from stream_app.validate import Rejection

__all__ = ["Schema", "SchemaChange"]

_NUMBERS: Final = frozenset((int, float))
#: distinct schema changes remembered at most (``Schema.take_changes``)
_MAX_CHANGES: Final = 4096


class SchemaChange(NamedTuple):
    """A feature name new to the schema, or come with another type (``retyped``)."""

    name: str
    change: str  # "new" | "retyped"
    expected: str | None
    got: str
    admitted: bool
#: the kind a learned numeric feature gets: JSON numbers and bools both encode to one input
_NUMERIC: Final = "number"


def _kind(v: Any) -> str:
    t = type(v)
    return "string" if t is str else "bool" if t is bool else "number"


class Schema:
    """The features one worker admits (see the module docstring)."""

    def __init__(self, settings: FeatureSettings, *, one_hot: bool = True) -> None:
        self._declared = {name: decl.type for name, decl in settings.inputs.items()}
        self._ranges = tuple(
            (name, decl.min, decl.max) for name, decl in settings.inputs.items()
            if decl.min is not None or decl.max is not None)
        self._learn = settings.learn_undeclared
        self._max_names = settings.max_feature_names
        self._max_categories = settings.max_categories if one_hot else None
        self._max_inputs = settings.max_inputs
        self._max_name_chars = settings.max_name_chars
        self._max_category_chars = settings.max_category_chars
        #: every known name -> its kind; learned names are "number" (ints, floats, bools) or
        #: "string"; declared ones keep their declared type ("bool" admits bools only)
        self._kinds: dict[str, str] = dict(self._declared)
        #: the values seen of each string feature (while they are one-hot encoded)
        self._categories: dict[str, set[str]] = {}
        #: names that admit any int or float without a closer look (the fast path)
        self._numbers: set[str] = {n for n, k in self._declared.items() if k == "number"}
        self.names_learned = 0
        #: learned numeric names plus learned one-hot columns: the model inputs they become
        self.inputs_learned = 0
        #: schema changes not taken yet (``take_changes``): each distinct one once, at most
        #: ``_MAX_CHANGES`` of them (a producer inventing names cannot grow this)
        self._changes: list[SchemaChange] = []
        self._noted: set[tuple[str, str, str]] = set()
        self.changes_dropped = 0

    @property
    def categories_learned(self) -> int:
        return sum(map(len, self._categories.values()))

    def check(self, features: Mapping[str, Any]) -> Rejection | None:
        """``None`` if the event is admitted (and its new names and categories are learned)."""
        # the common case, in C loops (~0.5 us for ten features): known numbers, numbers only
        if self._numbers.issuperset(features) and _NUMBERS.issuperset(map(type, features.values())):
            return self._check_ranges(features) if self._ranges else None
        return self._check_slow(features)

    def _check_ranges(self, features: Mapping[str, Any]) -> Rejection | None:
        for name, lo, hi in self._ranges:
            v = features.get(name)
            if v is None or type(v) is bool or type(v) is str:
                continue
            if lo is not None and v < lo:
                return Rejection("out_of_range", f"features.{name}: {v!r} is below min {lo:g}")
            if hi is not None and v > hi:
                return Rejection("out_of_range", f"features.{name}: {v!r} is above max {hi:g}")
        return None

    def _check_slow(self, features: Mapping[str, Any]) -> Rejection | None:
        kinds, categories, one_hot = self._kinds, self._categories, self._max_categories is not None
        new_names: list[tuple[str, str]] = []
        new_values: list[tuple[str, str]] = []
        added = 0  # new model inputs: new numeric names and new values
        for name, v in features.items():
            if v is None:
                continue
            kind = _kind(v)
            known = kinds.get(name)
            if known is None:
                bad = self._new_name(name, len(new_names))
                if bad is not None:
                    if bad.reason == "schema_drift":
                        self._note(SchemaChange(name, "new", None, kind, admitted=False))
                    return bad
                new_names.append((name, "string" if kind == "string" else _NUMERIC))
                if kind != "string":
                    bad = self._new_input(name, "schema_drift", added)
                elif one_hot:
                    bad = self._new_value(name, v, 0, added)
                    new_values.append((name, v))
                else:
                    continue
                if bad is not None:
                    return bad
                added += 1
                continue
            if known != kind and not (known == _NUMERIC and kind == "bool"
                                      and name not in self._declared):
                self._note(SchemaChange(name, "retyped", known, kind, admitted=False))
                return Rejection("schema_drift", f"features.{name}: expected {known}, got {kind}")
            if kind == "string" and one_hot:
                seen = categories.get(name)
                if seen is None or v not in seen:
                    bad = self._new_value(name, v, 0 if seen is None else len(seen), added)
                    if bad is not None:
                        return bad
                    new_values.append((name, v))
                    added += 1
        if self._ranges:
            bad = self._check_ranges(features)
            if bad is not None:
                return bad
        self._learn_all(new_names, new_values)
        return None

    def _new_name(self, name: str, pending: int) -> Rejection | None:
        if not self._learn:
            return Rejection("schema_drift", f"features.{name}: not declared in features.inputs "
                                             f"(features.learn_undeclared is off)")
        if len(name) > self._max_name_chars:
            return Rejection("schema", f"features.{name[:32]}...: name longer than "
                                       f"{self._max_name_chars} characters")
        if self.names_learned + pending >= self._max_names:
            return Rejection("schema_drift", f"features.{name}: new feature name, and "
                                             f"{self.names_learned} are learned "
                                             f"(features.max_feature_names)")
        return None

    def _new_value(self, name: str, v: str, known: int, pending: int) -> Rejection | None:
        if len(v) > self._max_category_chars:
            return Rejection("schema", f"features.{name}: string longer than "
                                       f"{self._max_category_chars} characters")
        assert self._max_categories is not None
        if known >= self._max_categories:
            return Rejection("cardinality", f"features.{name}: new value {v[:32]!r}, and {known} "
                                            f"are known (features.max_categories)")
        return self._new_input(name, "cardinality", pending)

    def _new_input(self, name: str, reason: str, pending: int) -> Rejection | None:
        """A new model input (a numeric name or a one-hot column) past ``max_inputs``?"""
        if self.inputs_learned + pending >= self._max_inputs:
            return Rejection(reason, f"features.{name}: a new model input, and "
                                     f"{self.inputs_learned} are learned (features.max_inputs)")
        return None

    def take_changes(self) -> list[SchemaChange]:
        """The schema changes met since the last call: new names (learned or refused) and
        retyped ones, each distinct change once in this worker's life.

        >>> from features.spec import FeatureSettings
        >>> schema = Schema(FeatureSettings())
        >>> _ = schema.check({"a": 1}), schema.check({"a": "x"}), schema.check({"a": "y"})
        >>> [(c.name, c.change, c.expected, c.got, c.admitted) for c in schema.take_changes()]
        [('a', 'new', None, 'number', True), ('a', 'retyped', 'number', 'string', False)]
        >>> schema.take_changes()
        []
        """
        out, self._changes = self._changes, []
        return out

    @property
    def kinds(self) -> Mapping[str, str]:
        """Every known feature name and its kind (declared, or learned)."""
        return self._kinds

    def _note(self, change: SchemaChange) -> None:
        key = (change.name, change.change, change.got)
        if key in self._noted:
            return
        if len(self._noted) >= _MAX_CHANGES:
            self.changes_dropped += 1
            return
        self._noted.add(key)
        self._changes.append(change)

    def _learn_all(self, names: list[tuple[str, str]], values: list[tuple[str, str]]) -> None:
        for name, kind in names:
            self._note(SchemaChange(name, "new", None, kind, admitted=True))
            self._kinds[name] = kind
            if kind == _NUMERIC:
                self._numbers.add(name)
        self.names_learned += len(names)
        self.inputs_learned += sum(kind == _NUMERIC for _, kind in names) + len(values)
        for name, v in values:
            self._categories.setdefault(name, set()).add(v)
