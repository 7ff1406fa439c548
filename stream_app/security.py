"""Secured connections: Kafka's ``[kafka]`` settings (TLS, SASL, mutual TLS) and Redis TLS checks.

Kafka: ``kafka.security_protocol`` is ``PLAINTEXT`` (default), ``SSL`` (TLS; with
``ssl_certfile`` and ``ssl_keyfile`` also a client certificate: mutual TLS), ``SASL_PLAINTEXT``
or ``SASL_SSL``, with ``sasl_mechanism`` ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``
and ``sasl_username`` / ``sasl_password``. The same settings reach every client: Faust's
(:func:`faust_credentials`) and each aiokafka client (:func:`aiokafka_auth`, used by
``stream_app.kafka_io``, which builds them all).

>>> k = KafkaSettings(security_protocol="sasl_ssl", sasl_mechanism="scram-sha-512",
...                   sasl_username="app", sasl_password="pw")
>>> k.security_protocol, k.sasl_mechanism, k.sasl_password
('SASL_SSL', 'SCRAM-SHA-512', SecretStr('**********'))
>>> sorted(aiokafka_auth(k))
['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol', 'ssl_context']
>>> aiokafka_auth(KafkaSettings())
{'security_protocol': 'PLAINTEXT'}
>>> KafkaSettings(security_protocol="SASL_SSL")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for KafkaSettings
  Value error, security_protocol SASL_SSL needs sasl_mechanism, sasl_username and sasl_password [type=value_error, input_value={'security_protocol': 'SASL_SSL'}, input_type=dict]
    ...

Redis: an ACL user and password go in the URL (``redis://user:password@host:6379/0``), TLS is
``rediss://``, with the CA and a client certificate as redis-py's URL parameters
(``?ssl_ca_certs=ca.crt&ssl_certfile=client.crt&ssl_keyfile=client.key``); every Redis client
is built from its URL, so the store, the registry and the start-up probe all get them.
:func:`check_redis_tls_files` makes a missing file a settings error.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from stream_app.errors import ConfigError

__all__ = ["KafkaSettings", "aiokafka_auth", "check_redis_tls_files", "faust_credentials",
           "kafka_ssl_context"]

_SASL: Final = ("SASL_PLAINTEXT", "SASL_SSL")
_TLS: Final = ("SSL", "SASL_SSL")
#: redis-py's URL parameters that name files
_REDIS_TLS_FILES: Final = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")


class KafkaSettings(BaseModel):
    """How clients authenticate to Kafka (TOML ``[kafka]``, ``STREAM_KAFKA__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: the CA that signed the brokers' certificates (default: the system's trust store)
    ssl_cafile: Path | None = None
    #: a client certificate (and its key, unless in the same file) for mutual TLS
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_keyfile_password: SecretStr | None = None
    #: check that the broker's certificate names the host connected to
    ssl_check_hostname: bool = True

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_mechanism",
                     "sasl_username", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        protocol = self.security_protocol
        sasl = (self.sasl_mechanism, self.sasl_username, self.sasl_password)
        if protocol in _SASL and None in sasl:
            raise ValueError(f"security_protocol {protocol} needs sasl_mechanism, "
                             "sasl_username and sasl_password")
        if protocol not in _SASL and any(v is not None for v in sasl):
            raise ValueError(f"sasl_* settings need security_protocol SASL_SSL or "
                             f"SASL_PLAINTEXT, not {protocol}")
        files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if protocol not in _TLS and any(f is not None for f in files):
            raise ValueError(f"ssl_* settings need security_protocol SSL or SASL_SSL, "
                             f"not {protocol}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        return self

    @property
    def secrets(self) -> dict[str, str]:
        """The secret values by field name, for a child process's environment."""
        return {name: value.get_secret_value() for name in ("sasl_password", "ssl_keyfile_password")
                if (value := getattr(self, name)) is not None}


@functools.lru_cache(maxsize=8)
def kafka_ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for ``kafka`` (``None`` without TLS), built once per settings.

    :class:`ConfigError` when a certificate or key file cannot be loaded.
    """
    if kafka.security_protocol not in _TLS:
        return None
    try:
        context = ssl.create_default_context(
            cafile=None if kafka.ssl_cafile is None else str(kafka.ssl_cafile))
        if kafka.ssl_certfile is not None:
            password = kafka.ssl_keyfile_password
            context.load_cert_chain(
                str(kafka.ssl_certfile),
                None if kafka.ssl_keyfile is None else str(kafka.ssl_keyfile),
                None if password is None else password.get_secret_value())
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"kafka.ssl_cafile / ssl_certfile / ssl_keyfile "
                          f"(STREAM_KAFKA__SSL_*): cannot load: {exc}") from None
    context.check_hostname = kafka.ssl_check_hostname
    return context


def aiokafka_auth(kafka: KafkaSettings) -> dict[str, Any]:
    """The keyword arguments that secure an aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    context = kafka_ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.security_protocol in _SASL:
        assert kafka.sasl_password is not None  # checked by the settings
        options |= {"sasl_mechanism": kafka.sasl_mechanism,
                    "sasl_plain_username": kafka.sasl_username,
                    "sasl_plain_password": kafka.sasl_password.get_secret_value()}
    return options


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust's ``broker_credentials`` for ``kafka`` (``None`` for plaintext).

    >>> faust_credentials(KafkaSettings()) is None
    True
    >>> faust_credentials(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
    ...                                 sasl_username="u", sasl_password="p"))
    <SASLCredentials: username=u>
    """
    import faust

    context = kafka_ssl_context(kafka)
    if kafka.security_protocol in _SASL:
        assert kafka.sasl_password is not None
        return faust.SASLCredentials(username=kafka.sasl_username,
                                     password=kafka.sasl_password.get_secret_value(),
                                     mechanism=kafka.sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def check_redis_tls_files(url: str) -> None:
    """A ``ValueError`` naming a TLS file of ``url``'s query that does not exist.

    >>> check_redis_tls_files("rediss://h:6380/0?ssl_cert_reqs=required")
    >>> check_redis_tls_files("rediss://h:6380/0?ssl_ca_certs=/nonexistent/ca.crt")
    Traceback (most recent call last):
    ...
    ValueError: ssl_ca_certs: file not found: /nonexistent/ca.crt
    """
    for name, values in parse_qs(urlsplit(url).query).items():
        if name in _REDIS_TLS_FILES and not Path(values[-1]).exists():
            raise ValueError(f"{name}: file not found: {values[-1]}")
