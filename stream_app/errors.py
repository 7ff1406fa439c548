"""The exception tree, in one place.

::

    StreamAppError                  root: catch this to catch everything we raise
    ├── ConfigError                 settings or config file are wrong; fix and restart
    ├── ServiceError (retriable)    Kafka, Redis or a local service is unreachable or failed
    │   └── ServiceStartError       a local service did not come up
    ├── ModelSpecError              a model declared in config is not on the allow-list
    └── RegistryError               the model registry refused a request
        ├── ModelNotFoundError      no such model, version or snapshot, or no production version
        ├── CheckpointError         no stored checkpoint passed verification (never unpickled)
        ├── FencedError             a checkpoint from a learner whose lease was taken over
        └── PromotionRefused        a trained version does not beat production on its holdout

Bad *data* is never an exception: it becomes a dead-letter record (``stream_app.validate``).

>>> ServiceError("redis down").retriable, ConfigError("bad").retriable
(True, False)
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FencedError",
    "ModelNotFoundError",
    "ModelSpecError",
    "PromotionRefused",
    "RegistryError",
    "ServiceError",
    "ServiceStartError",
    "StreamAppError",
]


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


class RegistryError(StreamAppError):
    """The model registry (``models.registry``) refused a request."""


class ModelNotFoundError(RegistryError, LookupError):
    """No such model, version or snapshot, or the model has no production version."""


class CheckpointError(RegistryError):
    """No stored checkpoint passed its size, SHA-256 and HMAC checks (none was unpickled)."""


class FencedError(RegistryError):
    """A checkpoint was refused: another learner took the model's lease since this one's."""


class PromotionRefused(RegistryError):
    """A version trained offline did not beat the production version on its own holdout
    (``stream_app.offline.promote``); ``--force`` promotes it anyway."""
