"""The offline half: the data at rest, beside the flow in motion (``stream_app.pipeline``).

::

    worker emit ──> feature-log (Kafka) ──> sink.py ──> store.py (Parquet, date/model)
                                                          │
    events (Kafka history) ──> rebuild.py ────────────────┤
                                                          v
                                      dataset.py (point in time: vectors + labels)
                                                          │
                            train.py: train ──> evaluate.py ──> register (staging) ──> promote
                                                          │
    FILE.jsonl|.parquet ──> batch.py (validate, featurize, vector.py) ──> predictions + rejects

Every step reuses the stream's own stages (``stream_app.validate``, ``pipeline.schema``,
``pipeline.featurize``, ``models.spec``), so what is trained and scored offline is what the
stream scores. Importing this package loads nothing heavy: ``pyarrow`` is imported by the
modules that need it.
"""
