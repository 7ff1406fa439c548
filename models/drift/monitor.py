"""``DriftMonitor``: drift of many subjects at once, checked every ``check_every`` events.

Subjects are numeric features (two-sample KS, ``KSWindow``), categorical features (chi-squared,
``ChiSquareWindow``) and optionally the model's score (``prediction``, KS). Each keeps its own
reference and current windows of ``window`` valid values: a missing key, None or a non-finite
number is skipped for that subject only. The score can have a reference policy of its own
(``prediction_reference``; default: ``reference``).

Per event, ``update`` only copies the subject values out of the mapping (one C-level
``itemgetter`` call) into a pending list. Every ``check_every`` events ``check`` moves the
pending values into each subject's numpy buffers in one vectorised step, tests every subject
whose windows are full, adjusts the p-values across those subjects (Holm by default, which
bounds the chance of any false rejection at each check even while other subjects are in drift;
or Benjamini-Hochberg, or Bonferroni: see ``models.drift.multitest``), and feeds each adjusted
p-value to the subject's ``Hysteresis``. It returns a ``DriftEvent`` for each episode that
opened or closed at this check.

An episode opens at ``confirm_checks`` (2) consecutive checks below ``alpha``, and closes after
``recovery_checks`` (3) consecutive checks at or above it. Only subjects with full windows are
tested, and the correction runs over those (``m`` is the number tested at this check); the
others keep their episode state. With a fixed reference a persistent shift keeps its episode
open until ``reset(subject)`` re-learns the reference; when an episode closes, the subject's
fixed reference is re-learned from the next ``window`` values (``relearn_on_close``), so a
reference that was an atypical sample, the usual cause of a false episode, does not raise the
next one too. The subject is not tested until both windows have filled again.

Why both: consecutive checks of one subject share the reference and three quarters of the
current window (at the defaults), so one unlucky reference fails several checks in a row and,
without them, reopens its episode after each recovery. On stationary streams with 20 features
(``bench/drift_harness.py``) they cut false episodes from 1.0 to about 0.25 per 100,000 events
at alpha 0.01, for one check interval more of delay.

Positions (``index``, ``since``) are 0-based positions in the stream of ``update`` calls, as
in River's ``for i, x in enumerate(stream)``: a check runs on the event at index
``check_every * c - 1``. The mapping passed to ``update`` is read immediately and not kept.
Timestamps are float seconds (any epoch), the event times given to ``update``. A window's time
span in ``summary()`` is the earliest and the latest event time among the values it holds, not
the times of its first and last arrivals: events from partitions consumed unevenly arrive out
of time order, and a window that holds events from after a shift must say so. ``summary()`` and
``reset()`` first move pending values into the windows, without testing.

>>> rng = np.random.default_rng(3)
>>> mon = DriftMonitor(numeric=["amount"], categorical=["country"], prediction="score",
...                    window=500, check_every=100)
>>> for i in range(3000):
...     shift = 1.0 if i >= 1500 else 0.0
...     x = {"amount": rng.normal(shift), "country": "FR" if rng.random() < 0.3 else "DE"}
...     for e in mon.update(x, score=rng.random()):
...         print(e.index, e.subject, e.event, e.adjusted_p_value < 0.01)
1799 amount open True
>>> [(s.subject, s.in_drift, s.since, s.reference_size, s.current_size) for s in mon.summary()]
[('amount', True, 1799, 500, 500), ('country', False, None, 500, 500), ('score', False, None, 500, 500)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.drift.episodes import Hysteresis, Transition
from models.drift.multitest import CORRECTIONS, Correction, adjust_pvalues
from models.drift.subjects import ChiSquareWindow, KSWindow
from models.drift.windows import Policy

__all__ = ["DriftEvent", "DriftMonitor", "SubjectKind", "SubjectSummary"]

SubjectKind = Literal["numeric", "categorical", "prediction"]


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """An episode of one subject opened or closed at one check."""

    subject: str
    kind: SubjectKind
    event: Transition  # "open" or "close"
    index: int  # stream position of the check
    check: int  # 1-based check number
    since: int  # stream position of the check that opened the episode
    statistic: float
    p_value: float
    adjusted_p_value: float
    timestamp: float | None  # the timestamp given with the event that triggered the check


@dataclass(frozen=True, slots=True)
class SubjectSummary:
    """One subject at the last check (test fields None when it was not tested)."""

    subject: str
    kind: SubjectKind
    statistic: float | None
    p_value: float | None
    adjusted_p_value: float | None
    in_drift: bool
    since: int | None
    reference_size: int
    current_size: int
    reference_first_ts: float | None  # the earliest event time in the reference window
    reference_last_ts: float | None  # the latest event time in it (None: no known time)
    current_first_ts: float | None
    current_last_ts: float | None


class _Subject:
    __slots__ = ("name", "kind", "window", "episode", "last")

    def __init__(self, name: str, kind: SubjectKind, window: KSWindow | ChiSquareWindow,
                 episode: Hysteresis) -> None:
        self.name, self.kind, self.window, self.episode = name, kind, window, episode
        self.last: tuple[float, float, float] | None = None  # statistic, p, adjusted p


class DriftMonitor:
    """KS / chi-squared drift of many subjects with multiple-testing correction and episodes."""

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = (),
                 prediction: str | None = None, *, window: int = 1000, check_every: int = 250,
                 reference: Policy = "fixed", alpha: float = 0.01, correction: Correction = "holm",
                 recovery_checks: int = 3, confirm_checks: int = 2, relearn_on_close: bool = True,
                 max_categories: int = 1000, prediction_reference: Policy | None = None,
                 ) -> None:
        names = [*numeric, *categorical, *([prediction] if prediction is not None else [])]
        if len(set(names)) != len(names):
            raise ValueError("subject names must be unique")
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
        if check_every < 1:
            raise ValueError("check_every must be >= 1")
        self.check_every, self.alpha, self.correction = check_every, alpha, correction
        self.relearn_on_close = relearn_on_close  # for the subjects with a fixed reference

        self._num_windows = [KSWindow(window, check_every, reference) for _ in numeric]
        self._cat_windows = [ChiSquareWindow(window, check_every, reference, max_categories)
                             for _ in categorical]
        self._pred_window = (KSWindow(window, check_every, prediction_reference or reference)
                             if prediction is not None else None)
        kinds: list[tuple[str, SubjectKind, KSWindow | ChiSquareWindow]] = [
            *((n, "numeric", w) for n, w in zip(numeric, self._num_windows, strict=True)),
            *((n, "categorical", w) for n, w in zip(categorical, self._cat_windows, strict=True))]
        if prediction is not None and self._pred_window is not None:
            kinds.append((prediction, "prediction", self._pred_window))
        self._subjects = [_Subject(n, kind, w, Hysteresis(alpha, recovery_checks, confirm_checks))
                          for n, kind, w in kinds]
        self._num_get = _RowGetter(list(numeric))
        self._cat_get = _RowGetter(list(categorical))
        self._num_rows: list[Any] = []
        self._cat_rows: list[Any] = []
        self._scores: list[float | None] = []
        self._times: list[float | None] = []
        self.n_events = 0
        self.n_checks = 0

    @property
    def subjects(self) -> list[str]:
        return [s.name for s in self._subjects]

    def update(self, x: Mapping[str, Any], *, score: float | None = None,
               timestamp: float | None = None) -> list[DriftEvent]:
        """Record one event; every ``check_every`` events, check and return opened/closed episodes."""
        if self._num_windows:
            self._num_rows.append(self._num_get(x))
        if self._cat_windows:
            self._cat_rows.append(self._cat_get(x))
        self._scores.append(score)
        self._times.append(timestamp)
        self.n_events += 1
        if len(self._times) >= self.check_every:
            return self.check()
        return []

    def check(self) -> list[DriftEvent]:
        """Test every ready subject now (``update`` calls this every ``check_every`` events)."""
        timestamp = self._times[-1] if self._times else None
        self._flush()
        self.n_checks += 1
        index = self.n_events - 1
        tested = []
        for s in self._subjects:
            result = s.window.test()
            s.last = None
            if result is not None:
                tested.append((s, result.statistic, result.pvalue))
        adjusted = adjust_pvalues([p for _, _, p in tested], self.correction)
        events = []
        for (s, statistic, p), adj in zip(tested, adjusted, strict=True):
            s.last = (statistic, p, adj)
            opened_at = s.episode.since  # the open episode's start, before this check
            transition = s.episode.update(adj, index)
            if transition is None:
                continue
            since = opened_at if transition == "close" and opened_at is not None else index
            if (transition == "close" and self.relearn_on_close
                    and s.window.windows.policy == "fixed"):
                s.window.reset()
            events.append(DriftEvent(s.name, s.kind, transition, index, self.n_checks, since,
                                     statistic, p, adj, timestamp))
        return events

    def persisting(self) -> dict[str, int]:
        """Every subject in drift and its consecutive checks below alpha (confirmations included)."""
        return {s.name: s.episode.low_checks for s in self._subjects if s.episode.in_drift}

    def summary(self) -> list[SubjectSummary]:
        """Every subject's last test, episode state and window sizes / time spans."""
        self._flush()
        out = []
        for s in self._subjects:
            w = s.window.windows
            stat, p, adj = s.last if s.last is not None else (None, None, None)
            out.append(SubjectSummary(
                s.name, s.kind, stat, p, adj, s.episode.in_drift, s.episode.since,
                w.reference_size, w.current_size, *_span(w.reference_times()),
                *_span(w.current_times())))
        return out

    def reset(self, subject: str | None = None) -> None:
        """Forget the windows, last test and episode of one subject (or all)."""
        if subject is not None and subject not in self.subjects:
            raise KeyError(subject)
        self._flush()
        for s in self._subjects:
            if subject is None or s.name == subject:
                s.window.reset()
                s.episode.reset()
                s.last = None

    def _flush(self) -> None:
        """Move the pending events' values into the subjects' numpy windows."""
        k = len(self._times)
        if k == 0:
            return
        times = _float_matrix(self._times, 1)[:, 0]  # None -> nan
        if self._num_windows:
            matrix = _float_matrix(self._num_rows, len(self._num_windows))
            finite = bool(np.isfinite(matrix).all())  # the usual case: no per-column checks
            columns = np.ascontiguousarray(matrix.T)
            for w, column in zip(self._num_windows, columns, strict=True):
                if finite:
                    w.windows.extend(column, times)
                else:
                    w.extend(column, times)
        for j, c in enumerate(self._cat_windows):
            column = self._cat_rows if len(self._cat_windows) == 1 else [r[j] for r in self._cat_rows]
            c.extend(column, times)
        if self._pred_window is not None:
            self._pred_window.extend(_float_matrix(self._scores, 1)[:, 0], times)
        self._num_rows, self._cat_rows, self._scores, self._times = [], [], [], []


class _RowGetter:
    """``mapping -> tuple of values`` (a bare value for one name); a missing key gives None."""

    __slots__ = ("names", "_get")

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._get = itemgetter(*names) if names else None

    def __call__(self, x: Mapping[str, Any]) -> Any:
        try:
            return self._get(x)  # type: ignore[misc]
        except KeyError:
            if len(self.names) == 1:
                return x.get(self.names[0])
            return tuple([x.get(n) for n in self.names])


def _float_matrix(rows: list[Any], width: int) -> npt.NDArray[np.float64]:
    """A ``(len(rows), width)`` float array; None or unconvertible values become NaN."""
    try:
        flat = rows if width == 1 else chain.from_iterable(rows)
        return np.fromiter(flat, np.float64, len(rows) * width).reshape(len(rows), width)
    except (TypeError, ValueError):
        if width == 1:
            rows = [(v,) for v in rows]
        return np.array([[_to_float(v) for v in row] for row in rows], dtype=np.float64)


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _span(times: npt.NDArray[np.float64]) -> tuple[float | None, float | None]:
    """The earliest and latest known event time (NaN: unknown, skipped), or None."""
    known = times[~np.isnan(times)]
    if len(known) == 0:
        return None, None
    return float(known.min()), float(known.max())
