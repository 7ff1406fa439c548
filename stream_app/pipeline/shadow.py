"""The challenger: a model scored in shadow beside the champion, compared on the same labels.

Its predictions go to ``predictions-shadow``, never to ``predictions``. The learner teaches it
every label the champion learns, and :class:`Challenger` keeps, for the last ``compare`` labels
both scored before learning, whether each was right; ``stream_app.lifecycle`` promotes or
archives it on those figures.

>>> from models.spec import build_model
>>> from stream_app.settings import ModelSettings
>>> c = Challenger(build_model(ModelSettings()), compare=2)
>>> c.record(True, False); c.accuracies() is None
True
>>> c.record(False, True); c.accuracies()
(0.5, 0.5)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from models.metrics import PrequentialMetrics, decide
from models.online import ModelOutputError
from models.spec import OnlineModel
from stream_app.pipeline.records import Prediction
from stream_app.validate import Event

__all__ = ["Challenger", "shadow_score"]


@dataclass(slots=True)
class Challenger:
    """``outcomes``: ``(champion_right, challenger_right)`` for the last ``compare`` labels."""

    model: OnlineModel
    snapshot_id: int = 0
    compare: int = 500
    prequential: PrequentialMetrics = field(default_factory=PrequentialMetrics)
    outcomes: deque[tuple[bool, bool]] = field(default_factory=deque)
    compared: int = 0
    learned: int = 0

    def record(self, champion_right: bool, challenger_right: bool) -> None:
        self.outcomes.append((champion_right, challenger_right))
        if len(self.outcomes) > self.compare:
            self.outcomes.popleft()
        self.compared += 1

    def accuracies(self) -> tuple[float, float] | None:
        """(champion, challenger) accuracy over the last ``compare`` labels, once that many."""
        n = len(self.outcomes)
        if n < self.compare:
            return None
        return (sum(a for a, _ in self.outcomes) / n, sum(b for _, b in self.outcomes) / n)

    def learn(self, x: dict[str, float], y: bool, *, champion_score: float,
              score: float | None, version: str | None, threshold: float) -> None:
        """Learn a label; compare first if this challenger scored the event (``score``)."""
        if score is not None and version == self.model.version:
            self.prequential.update(y, score, threshold)
            self.record(decide(champion_score, threshold) == y, decide(score, threshold) == y)
        self.model.learn_one(x, y)
        self.learned += 1


def shadow_score(challenger: Challenger, topic: str, ev: Event, x: dict[str, float],
                 now: float, latency_ms: float, threshold: float) -> Prediction | None:
    """The challenger's prediction for ``ev``, or None if its output is unusable."""
    try:
        c = challenger.model.predict_proba_one(x)
    except ModelOutputError:
        return None
    return Prediction(topic, ev.event_id, ev.entity_id, challenger.model.name,
                      challenger.model.version, c, decide(c, threshold), ev.timestamp, now,
                      latency_ms, challenger.snapshot_id)
