"""What a worker checks before Faust starts, so that a wrong setting fails at once, in one line.

``stream-app worker`` checks, in order: the settings (``load_settings``), the registry key, the
model and feature specs (building the ``Engine``, which touches no service, and
:func:`check_challenger_steps`), the data dir
(:func:`ensure_data_dir`), then Kafka and every Redis the worker will use
(:func:`check_services`), all at the same time and each within ``startup_timeout_s``. A failure
is a :class:`~stream_app.errors.ConfigError` (the settings are wrong: a data dir that cannot be
created, a Redis that refuses the password or the database) or a
:class:`~stream_app.errors.ServiceError` (nothing answered in time); the CLI prints either as
one line and exits with code 2. Once running, an outage is not fatal: the agents wait for the
service and retry (``stream_app.app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.retry import Retry

from features.store.connect import CLUSTER_SCHEMES, open_redis
from models.spec import ModelSettings, build_model
from stream_app.errors import ConfigError, ModelSpecError, ServiceError, StreamAppError
from stream_app.kafka_io import wait_for_kafka
from stream_app.settings import Settings, redact_url

__all__ = ["check_challenger_steps", "check_services", "ensure_data_dir", "redis_targets",
           "wait_for_redis"]

_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)


def check_challenger_steps(settings: Settings) -> None:
    """Build ``lifecycle.challenger_steps`` once, as the learner will on a retrain signal, so a
    bad step fails now, not hours later when drift asks for a challenger.

    >>> from stream_app.settings import load_settings
    >>> check_challenger_steps(load_settings(environ={}, lifecycle={
    ...     "challenger_steps": [{"name": "GaussianNB"}]}))
    >>> check_challenger_steps(load_settings(environ={}, lifecycle={
    ...     "challenger_steps": [{"name": "Nope"}]}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_app.errors.ModelSpecError: lifecycle.challenger_steps: unknown class 'Nope'; ...
    """
    steps = settings.lifecycle.challenger_steps
    if not steps or not settings.lifecycle.enabled:
        return
    try:
        build_model(ModelSettings(**{**settings.model.model_dump(), "steps": steps}))
    except ModelSpecError as exc:
        raise ModelSpecError(f"lifecycle.challenger_steps: {exc}") from None


def ensure_data_dir(settings: Settings) -> Path:
    """Create ``settings.data_dir`` and its parents; :class:`ConfigError` if that is impossible.

    >>> import tempfile
    >>> from stream_app.settings import load_settings
    >>> root = Path(tempfile.mkdtemp())
    >>> ensure_data_dir(load_settings(environ={}, data_dir=root / "a" / "b")).is_dir()
    True
    >>> (root / "file").write_text("")
    0
    >>> ensure_data_dir(load_settings(environ={}, data_dir=root / "file" / "x"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_app.errors.ConfigError: data_dir (STREAM_DATA_DIR): cannot create .../file/x: Not a directory
    """
    path = Path(settings.data_dir)
    where = "data_dir (STREAM_DATA_DIR)"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: {path} is not writable")
    return path


def redis_targets(settings: Settings) -> dict[str, str]:
    """Each Redis URL the worker will use, with the variable that sets it.

    >>> from stream_app.settings import load_settings
    >>> redis_targets(load_settings(environ={}))
    {'redis://127.0.0.1:6379/0': 'STREAM_REDIS_URL'}
    >>> redis_targets(load_settings(environ={}, feature_store_url="memory://",
    ...                             registry_url="redis://r:6379/1"))
    {'redis://r:6379/1': 'STREAM_REGISTRY_URL'}
    """
    targets: dict[str, str] = {}
    if settings.store_url.startswith(_REDIS_SCHEMES):
        store_var = "STREAM_FEATURE_STORE_URL" if settings.feature_store_url else "STREAM_REDIS_URL"
        targets[settings.store_url] = store_var
    if settings.lifecycle.enabled and settings.registry_url.startswith(_REDIS_SCHEMES):
        targets.setdefault(settings.registry_url, "STREAM_REGISTRY_URL")
    return targets


async def wait_for_redis(url: str, *, timeout_s: float, variable: str = "STREAM_REDIS_URL") -> None:
    """Return once Redis at ``url`` answers ``PING`` (after its ``AUTH`` and ``SELECT``).

    Unreachable (refused, unknown host, closed by something that is not Redis, no reply) is
    retried until ``timeout_s``, then :class:`ServiceError`. A refusal that retrying cannot
    cure (wrong password or user, database out of range, no permission) is a
    :class:`ConfigError` at once. The message never shows the URL's password.
    """
    shown = f"{redact_url(url)} ({variable})"
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    last: BaseException | None = None
    while True:
        budget = max(0.1, deadline - time.monotonic())
        client = open_redis(url, protocol=2, socket_connect_timeout=budget,
                            socket_timeout=budget, retry=Retry(NoBackoff(), 0))
        try:
            async with asyncio.timeout(budget):
                await client.ping()
            return
        except (AuthenticationError, ResponseError) as exc:
            raise ConfigError(f"Redis at {shown} refused the connection: "
                              f"{type(exc).__name__}: {exc}") from None
        except (RedisError, TimeoutError, OSError) as exc:
            last = exc
        finally:
            await client.aclose()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f"{type(last).__name__}: {str(last).rstrip('.')}" if str(last) \
                else type(last).__name__
            raise ServiceError(f"Redis is not reachable at {shown} after {timeout_s:g}s: "
                               f"{detail}. Is redis-server running?") from None
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)


async def check_services(settings: Settings) -> None:
    """Probe Kafka and each of :func:`redis_targets` at once, within ``startup_timeout_s``.

    Raises the one failure, or a :class:`ServiceError` naming every failure in one message.
    The clients' own error logs are silenced meanwhile: the message says it once.
    """
    timeout = settings.startup_timeout_s
    probes = [wait_for_kafka(settings, timeout_s=timeout)]
    probes += [wait_for_redis(url, timeout_s=timeout, variable=variable)
               for url, variable in redis_targets(settings).items()]
    with _quiet("aiokafka", "redis"):
        results = await asyncio.gather(*probes, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for err in errors:
        if not isinstance(err, StreamAppError):
            raise err  # a bug, not a verdict on a service
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ServiceError("; ".join(str(e).rstrip(".") for e in errors))


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
