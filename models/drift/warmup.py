"""``WarmUp``: when a model learning from scratch has learned enough to be monitored.

Prediction drift and performance drift compare the model with its own past. While it learns
from scratch, its loss falls and its scores spread out by design, and a test that starts then
finds that learning curve: ADWIN cuts it as a change in the loss, and the score windows differ.
So both wait until the model is warm: it has learned ``min_learned`` labels, and its
prequential loss has stopped improving.

"Stopped improving" is early stopping on the prequential loss (each label's loss is measured
on the prediction made before the model learned it, so it is an honest held-out loss), with
the ``min_delta`` and ``patience`` of Keras' ``EarlyStopping``, and a tolerance measured in
standard errors instead of loss units:

- every ``every`` labels (once ``window`` labels are in), ``R`` is the mean loss of the last
  ``window`` labels and ``se`` its standard error (sample standard deviation / sqrt(window));
- ``R`` improves when it is below the best value so far by more than ``tolerance * se``. The
  best value only moves on an improvement, so a slow decline counts once it adds up to that;
- the model is warm at the first evaluation at which it has learned ``min_learned`` labels and
  no improvement has come for ``patience`` labels. It stays warm until ``reset()``.

With the defaults (``window`` and ``every`` the drift window and check interval in the stage,
``patience`` one window, ``tolerance`` 1) the earliest warm point is two windows of labels. At
the warm point the newest window of losses, which shares no label with the window that set the
best mean, is not better than it by one standard error, and no window in between was: what is
left of the learning curve is below what a window can resolve.

Why the 0/1 loss: it is the loss ADWIN watches, so at the warm point the curve ADWIN would cut
is over. What the rule cannot see: a loss is flat at its minimum (second order in the distance
to the best parameters) while the scores still move (first order), so a model can be warm by
its loss while its score distribution still drifts slowly. That is why the stage tests the
score against a sliding reference by default (``drift.prediction_reference``).

>>> import random
>>> rng = random.Random(1)
>>> warm = WarmUp(window=500, every=100)
>>> for i in range(6000):
...     error = 0.4 * 0.998 ** i + 0.1  # 0/1 loss of a learning curve that flattens at 0.1
...     if warm.update(1.0 if rng.random() < error else 0.0):
...         print(i + 1, round(warm.best, 3))  # best: the window mean at the last improvement
1800 0.13
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["WarmUp"]


class WarmUp:
    """Early stopping on a stream of per-label losses (see the module docstring).

    Parameters
    ----------
    window
        Labels in the rolling mean.
    every
        Labels between two evaluations.
    patience
        Labels without an improvement before the model is warm (default: one window).
    tolerance
        An improvement must beat the best rolling mean by this many standard errors.
    min_learned
        Labels the model must have learned, at least (default: one window).
    """

    def __init__(self, window: int = 1000, every: int = 250, *, patience: int | None = None,
                 tolerance: float = 1.0, min_learned: int | None = None) -> None:
        if window < 2 or every < 1:
            raise ValueError("window must be >= 2 and every >= 1")
        if tolerance < 0 or (patience is not None and patience < 1):
            raise ValueError("tolerance must be >= 0 and patience >= 1")
        self.window, self.every, self.tolerance = window, every, tolerance
        self.patience = window if patience is None else patience
        self.min_learned = window if min_learned is None else min_learned
        self._ring = np.zeros(window)
        self.reset()

    def reset(self) -> None:
        """Cold again: forget every loss."""
        self.n = 0  # losses seen
        self.warm = False
        self.warm_at: int | None = None  # losses seen when it became warm
        self.best = math.inf
        self._improved_at = 0  # losses seen at the last improvement

    def count_only(self, learned: int) -> bool:
        """For a model that learns without labels (no loss to watch): warm once it has learned
        ``min_learned`` events. True exactly when this call makes it warm."""
        if self.warm or learned < self.min_learned:
            return False
        self.warm, self.warm_at = True, self.n
        return True

    def update(self, loss: float, learned: int | None = None) -> bool:
        """Add one label's loss; True exactly when this label makes the model warm.

        ``learned`` is the model's learn count (a restored model counts its history); None:
        the losses seen here.
        """
        if self.warm:
            return False
        self._ring[self.n % self.window] = loss
        self.n += 1
        if self.n < self.window or self.n % self.every:
            return False
        mean = float(self._ring.mean())
        se = float(self._ring.std(ddof=1)) / math.sqrt(self.window)
        if mean < self.best - self.tolerance * se:
            self.best, self._improved_at = mean, self.n
        if (self.n if learned is None else learned) < self.min_learned:
            return False
        if self.n - self._improved_at >= self.patience:
            self.warm, self.warm_at = True, self.n
            return True
        return False
