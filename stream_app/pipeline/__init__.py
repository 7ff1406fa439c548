"""The per-batch pipeline: validate -> featurize -> score -> remember -> emit; label -> learn.

* ``records``: typed records in and out, serialised once, at emit;
* ``featurize``: model inputs from events and entity aggregates (point in time);
* ``engine``: the flow, the one place that awaits the online store;
* ``labels``: the label ledger (which label records this model has consumed);
* ``shadow``: the challenger, scored in shadow beside the champion;
* ``drift``: the drift stage and the retrain policy;
* ``emit``: the producer side, one record batch per topic-partition.
"""
