"""The engine learns like River: prequential metrics within one point of progressive_val_score.

With labels published right after each event, ``stream-app replay phishing`` through the worker
with ``StandardScaler | LogisticRegression`` must reach the accuracy and ROC AUC that
``river.evaluate.progressive_val_score`` reports on the same data set and model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

from stream_app.kafka_io import ensure_topics
from stream_app.tools.replay import replay
from tests.conftest import WorkerProcess, make_settings
from tests.kafka_helpers import latest_metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def river_reference() -> tuple[float, float]:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    acc, auc = metrics.Accuracy(), metrics.ROCAUC()
    evaluate.progressive_val_score(datasets.Phishing(), model, acc + auc)
    return acc.get(), auc.get()


async def test_prequential_metrics_match_river(_service_urls, tmp_path: Path) -> None:
    kafka, redis, embedded = _service_urls
    # small batches, so that each label is learned before the next few events are scored
    settings = make_settings(kafka, redis, embedded, tmp_path, batch_max=50,
                             batch_within_s=0.005)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        # the learner ready (restored, learning on): partitions alone are not enough, the
        # labels agent waits for the role while events are already scored
        await latest_metrics(settings, until=lambda m: m["partitions_assigned"] > 0
                             and m["learning_enabled"])
        report = await replay(settings, "phishing", rate=250.0, label_delay_s=0.0)
        assert report.events_sent == report.labels_sent == 1250
        snap = await latest_metrics(settings, until=lambda m: m["labels"]["learned"] >= 1250,
                                    timeout_s=120)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    ours = snap["prequential"]["cumulative"]
    ref_acc, ref_auc = river_reference()
    assert snap["labels"]["joined"] == 1250 and snap["labels"]["duplicate"] == 0
    assert abs(ours["accuracy"] - ref_acc) <= 0.01, (ours, ref_acc)
    assert abs(ours["roc_auc"] - ref_auc) <= 0.01, (ours, ref_auc)
