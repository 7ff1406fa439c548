"""KSDetector (River's detector interface, swappable with KSWIN) and PerformanceDrift (ADWIN)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from river import drift
from river.base import DriftDetector
from river.checks import common

from models.drift.detector import KSDetector
from models.drift.performance import PerformanceDrift


def detections(detector: DriftDetector, stream: list[float]) -> list[int]:
    """The harness: River's own loop, for any detector."""
    found = []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found


def one_sigma_stream(seed: int = 42) -> list[float]:
    x = np.random.default_rng(seed).normal(size=6000)
    x[3000:] += 1.0
    return x.tolist()


@pytest.mark.parametrize("detector", [drift.KSWIN(alpha=0.001, seed=42), KSDetector(alpha=0.001)])
def test_swappable_with_kswin(detector: DriftDetector) -> None:
    found = detections(detector, one_sigma_stream()[:4000])  # KSWIN runs scipy at every value
    assert found and 3000 <= found[0] < 4000


def test_exact_detection_index_and_relearning() -> None:
    det = KSDetector(alpha=0.001)  # N = 1000, K = 250, fixed reference
    assert detections(det, one_sigma_stream()) == [3249]  # then the reference is re-learned
    assert det.p_value is not None and det.p_value > 0.001


def test_sliding_reference_and_missing_values() -> None:
    stream: list[float] = one_sigma_stream()
    stream[::5] = [math.nan] * len(stream[::5])
    det = KSDetector(alpha=0.001, reference="sliding")
    assert detections(det, stream) == [3437]  # a check every 250 valid values (312.5 events)


def test_river_base_checks() -> None:
    for params in KSDetector._unit_test_params():
        det = KSDetector(**params)
        for check in (common.check_clone_same_class, common.check_clone_is_idempotent,
                      common.check_init_has_default_params_for_tests,
                      common.check_init_default_params_are_not_mutable,
                      common.check_pickling_supports_roundtrip, common.check_repr_roundtrips_clone,
                      common.check_get_params_matches_signature, common.check_doc):
            check(det.clone())
    clone = KSDetector(alpha=0.01, window_size=50).clone()
    assert (clone.alpha, clone.window_size, clone.check_every) == (0.01, 50, 250)


def test_invalid_alpha() -> None:
    with pytest.raises(ValueError):
        KSDetector(alpha=1.5)


# -- PerformanceDrift -------------------------------------------------------------------------

def test_adwin_fires_on_a_seeded_concept_change() -> None:
    rng = random.Random(1)
    perf = PerformanceDrift("zero_one")
    changes = []
    for i in range(6000):
        y = rng.random() < 0.5
        correct = rng.random() < (0.92 if i < 3000 else 0.7)  # the concept changes at 3000
        if change := perf.update(y, 0.9 if y == correct else 0.1):
            changes.append(change)
    first = changes[0]
    assert first.index == 3071
    assert first.loss == "zero_one" and perf.n == 6000
    assert first.mean_before < 0.1 < first.mean_after
    assert first.n_before + first.n_after > 3000 and first.n_after < 1000
    assert all(c.index >= 3000 for c in changes)


def test_log_loss_values_and_means() -> None:
    perf = PerformanceDrift("log_loss")
    assert perf.loss_of(True, 0.8) == pytest.approx(-math.log(0.8))
    assert perf.loss_of(False, 0.8) == pytest.approx(-math.log(0.2))
    assert perf.loss_of(True, 0.0) == pytest.approx(-math.log(1e-15))  # clipped
    rng = random.Random(3)
    found = []
    for i in range(5000):
        y = rng.random() < 0.5
        good = 0.85 if i < 2500 else 0.55  # probability given to the true class
        score = good if y else 1 - good
        if change := perf.update(y, score + rng.uniform(-0.05, 0.05)):
            found.append(change)
    assert found and found[0].index >= 2500
    assert found[0].mean_before == pytest.approx(-math.log(0.85), abs=0.02)
    assert found[0].mean_after > found[0].mean_before
    assert perf.last_change == found[-1]


def test_zero_one_uses_the_strict_threshold() -> None:
    perf = PerformanceDrift(threshold=0.5)
    assert perf.loss_of(False, 0.5) == 0.0 and perf.loss_of(True, 0.5) == 1.0
    with pytest.raises(ValueError):
        perf.update(True, math.nan)
    with pytest.raises(ValueError):
        PerformanceDrift("hinge")  # type: ignore[arg-type]
