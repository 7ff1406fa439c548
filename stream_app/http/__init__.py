"""The HTTP API, served by the worker on the stream's own engine (README, "HTTP API").

``server`` builds the ASGI app and the Mode service that serves it, ``routes`` the ``/v1``
endpoints, ``predict`` what they do on the engine, ``auth`` keys and token buckets,
``schemas`` the OpenAPI documents.
"""

from stream_app.http.server import HttpService, create_http_app

__all__ = ["HttpService", "create_http_app"]
