"""The exception tree, in one place.

::

    StreamAppError                  root: catch this to catch everything we raise
    ├── ConfigError                 settings or config file are wrong; fix and restart
    ├── ServiceError (retriable)    Kafka, Redis or a local service is unreachable or failed
    │   └── ServiceStartError       a local service did not come up
    └── ModelSpecError              a model declared in config is not on the allow-list

Bad *data* is never an exception: it becomes a dead-letter record (``stream_app.validate``).

>>> ServiceError("redis down").retriable, ConfigError("bad").retriable
(True, False)
"""

from __future__ import annotations

__all__ = ["ConfigError", "ModelSpecError", "ServiceError", "ServiceStartError", "StreamAppError"]


class StreamAppError(Exception):
    """Root of every exception this package raises on purpose."""

    retriable: bool = False


class ConfigError(StreamAppError):
    """Settings or a config file are invalid."""


class ServiceError(StreamAppError):
    """An infrastructure service (Kafka, Redis, a local broker) failed or is unreachable."""

    retriable = True


class ServiceStartError(ServiceError):
    """A local service could not be started."""


class ModelSpecError(StreamAppError, ValueError):
    """A model declared in config uses a class or parameter outside the allow-list."""
