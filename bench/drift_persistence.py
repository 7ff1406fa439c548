"""How long the false feature episodes of the stationary harness persist (issue 10).

A lone feature subject signals only once it has failed ``drift.retrain.persist_checks``
consecutive checks (5 by default). This replays the three seeds of
``python -m stream_app.tools.stationary`` that open a false feature episode, up to just after
it, and prints each subject's longest run of failing checks while in drift
(``DriftMonitor.persisting()`` after every check).

    python bench/drift_persistence.py
"""

from __future__ import annotations

from models.spec import build_model, one_hot
from stream_app.pipeline.drift import DriftStage
from stream_app.settings import load_settings
from stream_app.tools.datasets import synthetic

#: seed -> events: past its false feature episode (seed 5 at 93,249, 9 at 15,999, 10 at 24,999)
RUNS = {5: 96_000, 9: 18_000, 10: 27_000}


def main() -> None:
    for seed, n in RUNS.items():
        s = load_settings(environ={})
        model = build_model(s.model)
        stage = DriftStage(s, model=model.name, model_version=model.version)
        longest: dict[str, int] = {}
        checks = 0
        for i, item in enumerate(synthetic(seed, n, n_features=20)):
            features = item.event["features"]
            x = one_hot(features)
            score = model.predict_proba_one(x)
            stage.observe(x, features, score=score, timestamp=item.event["timestamp"])
            model.learn_one(x, item.label)
            stage.observe_label(item.label, score, learned=i + 1)
            if stage.monitor is not None and stage.monitor.n_checks != checks:
                checks = stage.monitor.n_checks
                for subject, run in stage.monitor.persisting().items():
                    longest[subject] = max(longest.get(subject, 0), run)
        print(f"seed {seed}: longest runs of failing checks in drift {longest}", flush=True)


if __name__ == "__main__":
    main()
