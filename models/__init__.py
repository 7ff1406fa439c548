"""The model side: build River pipelines from config data, score, learn, and measure.

- ``models.spec``: ``build_model(settings) -> OnlineModel`` and the ``one_hot`` encoding stage
- ``models.allowlist``: the River classes a config may name, and the parameter checks
- ``models.online``: ``OnlineModel`` and ``ModelOutputError``
- ``models.metrics``: ``PrequentialMetrics`` and ``decide``; ``models.percentiles``: ``Percentiles``
"""

from __future__ import annotations

from models.metrics import PrequentialMetrics, decide
from models.online import ModelOutputError, OnlineModel
from models.percentiles import Percentiles
from models.spec import build_model, one_hot, spec_hash

__all__ = [
    "ModelOutputError",
    "OnlineModel",
    "Percentiles",
    "PrequentialMetrics",
    "build_model",
    "decide",
    "one_hot",
    "spec_hash",
]
