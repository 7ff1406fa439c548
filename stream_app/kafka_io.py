"""Small shared aiokafka helpers: clients built from :class:`Settings`, topic creation, a probe.

Clients are returned unstarted; the caller owns ``start()``/``stop()``. With
``settings.embedded`` (the tansu broker) the timeouts are tuned down: tansu holds every fetch
for the full ``fetch_max_wait_ms`` and takes about half the session timeout to join a group.

>>> from stream_app.settings import load_settings
>>> s = load_settings(environ={}, topic_prefix="t.")
>>> full_topic(s, "events"), full_topic(s, "t.events"), full_topic(s, "other")
('t.events', 't.events', 'other')
>>> consumer_options(load_settings(environ={}, embedded=True))["fetch_max_wait_ms"]
20
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
    for_code,
)

from stream_app.contract import TOPICS
from stream_app.errors import ConfigError, ServiceError
from stream_app.security import aiokafka_auth
from stream_app.settings import Settings

__all__ = [
    "consumer_options",
    "ensure_topics",
    "full_topic",
    "make_admin",
    "make_consumer",
    "make_producer",
    "producer_options",
    "refused_by_kafka",
    "wait_for_kafka",
]

#: what a broker says when it will never let these credentials in: retrying cannot help
_REFUSALS: Final = (SaslAuthenticationFailed, AuthenticationFailedError,
                    AuthenticationMethodNotSupported, UnsupportedSaslMechanismError,
                    IllegalSaslStateError)

_EMBEDDED_CONSUMER: Final = {
    "fetch_max_wait_ms": 20,
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "rebalance_timeout_ms": 6000,
    "request_timeout_ms": 15000,
    "metadata_max_age_ms": 5000,
}


def full_topic(settings: Settings, name: str) -> str:
    """The broker's name for ``name``: contract names get the prefix, others pass through.

    Accepts an already prefixed contract name, so callers may pass either form.
    """
    prefix = settings.topic_prefix
    if prefix and name.startswith(prefix) and name[len(prefix):] in TOPICS:
        return name
    return settings.topic(name) if name in TOPICS else name


def _common(settings: Settings, role: str) -> dict[str, Any]:
    return {"bootstrap_servers": settings.bootstrap_servers,
            "client_id": f"{settings.app_id}-{role}"} | aiokafka_auth(settings.kafka)


def producer_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for :class:`AIOKafkaProducer` (small linger, leader acks)."""
    options = _common(settings, "producer") | {
        "linger_ms": 5,
        "acks": 1,
        "enable_idempotence": False,
    }
    if settings.embedded:
        options["request_timeout_ms"] = 15000
    return options | overrides


def consumer_options(
    settings: Settings, *, group_id: str | None = None, from_beginning: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for :class:`AIOKafkaConsumer`; auto-commit only within a group."""
    options = _common(settings, "consumer") | {
        "group_id": group_id,
        "auto_offset_reset": "earliest" if from_beginning else "latest",
        "enable_auto_commit": group_id is not None,
        # with transactional outputs, a reader sees only committed transactions
        "isolation_level": "read_committed" if settings.exactly_once else "read_uncommitted",
    }
    if settings.embedded:
        options |= _EMBEDDED_CONSUMER
    return options | overrides


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An unstarted producer for ``settings``; ``overrides`` win over the defaults."""
    return AIOKafkaProducer(**producer_options(settings, **overrides))


def make_consumer(
    settings: Settings, *topics: str, group_id: str | None = None, from_beginning: bool = False,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """An unstarted consumer subscribed to ``topics`` (contract names get the prefix).

    With no topics, assign partitions yourself (see ``stream_app.tools.tail``).
    """
    names = [full_topic(settings, t) for t in topics]
    options = consumer_options(settings, group_id=group_id, from_beginning=from_beginning,
                               **overrides)
    return AIOKafkaConsumer(*names, **options)


def make_admin(settings: Settings, **overrides: Any) -> AIOKafkaAdminClient:
    """An unstarted admin client for ``settings``."""
    options = _common(settings, "admin")
    if settings.embedded:
        options["request_timeout_ms"] = 15000
    return AIOKafkaAdminClient(**(options | overrides))


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create the topics in ``names`` (default: every contract topic) that are missing.

    Uses ``settings.partitions`` (one for ``contract.SINGLE_PARTITION``) and
    ``settings.replication_factor``; idempotent, and a topic
    created concurrently by someone else is not an error. Returns the names created here.
    Raises :class:`ServiceError` if the broker is unreachable or refuses.
    """
    names = TOPICS if names is None else list(names)
    wanted = list(dict.fromkeys(full_topic(settings, n) for n in names))
    partitions = {full_topic(settings, n): settings.partitions_of(n) for n in names}
    admin = make_admin(settings)
    try:
        with _no_bootstrap_errors():  # the error raised below says it once
            await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if not missing:
            return []
        new = [NewTopic(n, partitions[n], settings.replication_factor) for n in missing]
        response = await admin.create_topics(new)
        created = []
        for topic, code, *message in response.topic_errors:
            error = for_code(code)
            if code == 0:
                created.append(topic)
            elif error is not TopicAlreadyExistsError:
                detail = message[0] if message and message[0] else error.__name__
                raise ServiceError(f"cannot create topic {topic!r}: {detail}")
        return created
    except KafkaError as exc:
        refusal = await refused_by_kafka(settings)
        if refusal is not None:
            raise refusal from None
        raise ServiceError(
            f"cannot create topics on Kafka at {settings.bootstrap_servers}: {exc!r}"
        ) from exc
    finally:
        await admin.close()


async def wait_for_kafka(settings: Settings, timeout_s: float = 30.0) -> None:
    """Return once the broker answers a metadata request; :class:`ServiceError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    last: BaseException | None = None
    while True:
        admin = make_admin(settings, request_timeout_ms=max(1000, int(min(timeout_s, 10) * 1000)))
        try:
            await asyncio.wait_for(_probe(admin), max(0.1, deadline - time.monotonic()))
            return
        except (TimeoutError, KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        budget = min(5.0, deadline - time.monotonic())
        refusal = await refused_by_kafka(settings, max(0.1, budget))
        if refusal is not None:
            raise refusal from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServiceError(
                f"Kafka is not reachable at {settings.bootstrap_servers} "
                f"(kafka_url={settings.kafka_url!r}) after {timeout_s:g}s: {last!r}. "
                "Is the broker running? Start one, or use the embedded mode."
            ) from last
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)


async def _probe(admin: AIOKafkaAdminClient) -> None:
    await admin.start()
    await admin.list_topics()


async def refused_by_kafka(settings: Settings, timeout_s: float = 5.0) -> ConfigError | None:
    """Why the brokers refuse these settings for good, or ``None``.

    aiokafka's bootstrap reports every failure as "Unable to bootstrap", so this connects once
    to each bootstrap server itself: credentials the broker rejects, a mechanism it does not
    offer, or a certificate that does not verify, are a :class:`ConfigError` (one line, exit
    2, at once); a broker that is down or not answering is not a verdict (``None``), it is
    waited for. Plaintext settings are never checked.
    """
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return None
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(
                host.strip("[]"), int(port), client_id=f"{settings.app_id}-probe",
                request_timeout_ms=int(timeout_s * 1000), **aiokafka_auth(kafka)), timeout_s)
        except _REFUSALS as exc:
            return ConfigError(
                f"Kafka at {server} refused {kafka.sasl_mechanism or kafka.security_protocol} "
                f"credentials for user {kafka.sasl_username!r} (kafka.sasl_username, "
                f"kafka.sasl_password): {exc}")
        except ssl.SSLCertVerificationError as exc:
            return ConfigError(
                f"Kafka at {server}: its TLS certificate does not verify with kafka.ssl_cafile "
                f"({kafka.ssl_cafile or 'the system trust store'}): {exc.verify_message}")
        except (OSError, KafkaError, TimeoutError, ValueError):
            continue
        conn.close()
        return None
    return None


class _DropBootstrapErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect to")


@contextlib.contextmanager
def _no_bootstrap_errors() -> Iterator[None]:
    """aiokafka logs each bootstrap server it cannot reach; the caller's error says it."""
    drop = _DropBootstrapErrors()
    logger = logging.getLogger("aiokafka")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
