"""Operating a worker: Prometheus metrics, health probes, data-quality monitors.

* ``settings``: the ``[health]`` and ``[quality]`` sections (composed by ``stream_app.settings``);
* ``quality``: missing-value rate, freshness and schema change, per batch, as ``drift``
  records of kind ``missing_rate``, ``freshness`` and ``schema_change``;
* ``prometheus``: a collector that reads what the worker already counts, at scrape time;
* ``health``: liveness and readiness (partitions, Redis, model, a stalled consumer);
* ``view``: what those read of a running worker (``WorkerView.of_app(app)``);
* ``routes``: ``GET /metrics``, ``/healthz`` and ``/readyz`` as Starlette routes, for the
  worker's HTTP server: ``ops_routes(WorkerView.of_app(app))``.
* ``dashboard`` (and ``series``, its pure maths): the live dashboard at ``/dashboard``, its
  page and the vendored uPlot in ``static/``; ``Ops.routes()`` includes its routes.

Importing this package imports none of its modules (the engine imports ``quality`` only).
"""
