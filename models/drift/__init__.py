"""Drift maths: window tests, multiple testing, episodes, and River-style detectors.

- ``models.drift.ks``: ``ks_test`` / ``ks_test_sorted`` (scipy's ``ks_2samp``, two-sided, auto)
- ``models.drift.chi2``: ``chi2_test`` (scipy's ``chi2_contingency``, no correction)
- ``models.drift.windows``: ``TwoWindows``, the reference/current numpy buffers (fixed, sliding)
- ``models.drift.subjects``: ``KSWindow`` and ``ChiSquareWindow``, one monitored subject each
- ``models.drift.multitest``: ``adjust_pvalues`` (Holm, Benjamini-Hochberg, Bonferroni)
- ``models.drift.episodes``: ``Hysteresis``, open/close of a subject's drift episode
- ``models.drift.monitor``: ``DriftMonitor`` over many subjects, ``DriftEvent``, ``SubjectSummary``
- ``models.drift.detector``: ``KSDetector``, River's ``update`` / ``drift_detected``
- ``models.drift.performance``: ``PerformanceDrift``, ADWIN on the prequential loss; ``Confirmation`` of a rise
- ``models.drift.warmup``: ``WarmUp``, when a model learning from scratch can be monitored

No I/O anywhere: the engine feeds values in and publishes the records that come out.
"""

from __future__ import annotations

from models.drift.chi2 import Chi2Result, chi2_test
from models.drift.detector import KSDetector
from models.drift.episodes import Hysteresis
from models.drift.ks import KSResult, ks_test, ks_test_sorted
from models.drift.monitor import DriftEvent, DriftMonitor, SubjectSummary
from models.drift.multitest import adjust_pvalues
from models.drift.performance import Confirmation, PerformanceChange, PerformanceDrift
from models.drift.subjects import ChiSquareWindow, KSWindow
from models.drift.warmup import WarmUp
from models.drift.windows import TwoWindows

__all__ = [
    "Chi2Result",
    "ChiSquareWindow",
    "Confirmation",
    "DriftEvent",
    "DriftMonitor",
    "Hysteresis",
    "KSDetector",
    "KSResult",
    "KSWindow",
    "PerformanceChange",
    "PerformanceDrift",
    "SubjectSummary",
    "TwoWindows",
    "WarmUp",
    "adjust_pvalues",
    "chi2_test",
    "ks_test",
    "ks_test_sorted",
]
