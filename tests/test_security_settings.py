"""The ``[kafka]`` security settings: checked when they load, and passed on whole to children."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.errors import ConfigError
from stream_app.security import aiokafka_auth, faust_credentials
from stream_app.settings import load_settings

SASL = {"STREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAM_KAFKA__SASL_USERNAME": "app", "STREAM_KAFKA__SASL_PASSWORD": "pa55word"}


def test_a_child_process_gets_the_password_itself() -> None:
    settings = load_settings(environ=SASL)
    env = settings.to_env()
    assert "pa55word" in env["STREAM_KAFKA"]
    again = load_settings(environ=env)
    assert again == settings
    assert again.kafka.sasl_password is not None
    assert again.kafka.sasl_password.get_secret_value() == "pa55word"
    assert "pa55word" not in repr(settings)


def test_every_client_gets_the_same_credentials() -> None:
    kafka = load_settings(environ=SASL).kafka
    options = aiokafka_auth(kafka)
    assert (options["security_protocol"], options["sasl_mechanism"],
            options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SASL_SSL", "SCRAM-SHA-512", "app", "pa55word")
    credentials = faust_credentials(kafka)
    assert (credentials.username, credentials.password, credentials.mechanism.value,
            credentials.protocol.value) == ("app", "pa55word", "SCRAM-SHA-512", "SASL_SSL")
    assert credentials.ssl_context is options["ssl_context"]


@pytest.mark.parametrize(("variables", "expected"), [
    ({"STREAM_KAFKA__SASL_MECHANISM": "GSSAPI"},
     "kafka.sasl_mechanism (STREAM_KAFKA__SASL_MECHANISM): Input should be 'PLAIN', "
     "'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
    ({"STREAM_KAFKA__SSL_CAFILE": "/nonexistent/ca.crt"},
     "kafka.ssl_cafile (STREAM_KAFKA__SSL_CAFILE): Value error, file not found: /nonexistent/ca.crt"),
    ({"STREAM_KAFKA__SASL_PASSWORD": ""}, "needs sasl_mechanism, sasl_username and sasl_password"),
    ({"STREAM_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"}, "sasl_* settings need security_protocol"),
    ({"STREAM_KAFKA__SECURITY_PROTOCOL": "TLS"}, "kafka.security_protocol"),
], ids=["unknown-mechanism", "missing-ca", "no-password", "sasl-on-plaintext", "bad-protocol"])
def test_a_bad_security_setting_is_one_clear_line(variables: dict[str, str], expected: str) -> None:
    env = dict(SASL) | variables
    if env.get("STREAM_KAFKA__SASL_PASSWORD") == "":
        del env["STREAM_KAFKA__SASL_PASSWORD"]
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert "pa55word" not in str(err.value)


def test_a_redis_tls_file_that_does_not_exist_is_a_settings_error(tmp_path: Path) -> None:
    url = f"rediss://u:pw@127.0.0.1:6380/0?ssl_ca_certs={tmp_path}/missing.crt"
    with pytest.raises(ConfigError, match=r"redis_url \(STREAM_REDIS_URL\): Value error, "
                                          r"ssl_ca_certs: file not found"):
        load_settings(environ={"STREAM_REDIS_URL": url})
    with pytest.raises(ConfigError, match="bad cluster node"):
        load_settings(environ={"STREAM_REGISTRY_URL": "redis+cluster://h1:7000,h2"})
