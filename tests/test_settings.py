"""Settings refuse nonsense at load time, naming the variable; sensible values still load."""

from __future__ import annotations

import pytest

from stream_app.errors import ConfigError
from stream_app.settings import load_settings

BAD = [
    ("STREAM_MODEL__THRESHOLD", "-0.1", "greater than or equal to 0"),
    ("STREAM_MODEL__THRESHOLD", "1.5", "less than or equal to 1"),
    ("STREAM_MODEL__THRESHOLD", "nan", "less than or equal to 1"),
    ("STREAM_MODEL__NAME", "../etc", "should match pattern"),
    ("STREAM_KAFKA_URL", "127.0.0.1:9092", "must start with kafka://"),
    ("STREAM_KAFKA_URL", "kafka://a:9092;kafka://b:x", "bad port in 'b:x'"),
    ("STREAM_REDIS_URL", "redis://127.0.0.1:x/0", "bad port"),
    ("STREAM_REDIS_URL", "redis://:secret@127.0.0.1:6379/sessions", "must be a database number"),
    ("STREAM_REDIS_URL", "http://127.0.0.1:6379", "must be redis://"),
    ("STREAM_FEATURE_STORE_URL", "rocksdb://x", "must be redis://"),
    ("STREAM_REGISTRY_URL", "s3://bucket", "must be file://PATH"),
    ("STREAM_REGISTRY_URL", "file://", "needs a path"),
    ("STREAM_REGISTRY_KEY", "too-short", "at least 16 bytes"),
    ("STREAM_TOPIC_PREFIX", "my prefix/", "Kafka's characters"),
    ("STREAM_APP_ID", "", "at least 1 character"),
    ("STREAM_APP_ID", "a:b", "Kafka's characters"),
    ("STREAM_WEB_PORT", "0", "greater than or equal to 1"),
    ("STREAM_PARTITIONS", "0", "greater than or equal to 1"),
    ("STREAM_BATCH_WITHIN_S", "0", "greater than 0"),
    ("STREAM_DRIFT__WINDOW", "0", "greater than or equal to 10"),
    ("STREAM_DRIFT__ALPHA", "1", "less than 1"),
    ("STREAM_LIFECYCLE__PROMOTE_MARGIN", "1.5", "less than or equal to 1"),
    ("STREAM_FEATURES__ENTITY_TTL_S", "-1", "greater than or equal to 1"),
    ("STREAM_STORE_NAMESPACE", "has space", "should match pattern"),
    ("STREAM_STARTUP_TIMEOUT_S", "0", "greater than 0"),
    ("STREAM_GIL_SWITCH_INTERVAL_S", "0", 'must be "auto" or seconds in (0, 0.1]'),
    ("STREAM_GIL_SWITCH_INTERVAL_S", "fast", 'must be "auto" or seconds in (0, 0.1]'),
    ("STREAM_LIFECYCLE__CHECKPOINT_FORK_BYTES", "-1", "greater than or equal to 0"),
]


@pytest.mark.parametrize(("variable", "value", "message"), BAD,
                         ids=[f"{v}={x}" for v, x, _ in BAD])
def test_nonsense_is_refused_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={variable: value})
    text = str(info.value)
    assert f"({variable})" in text and message in text
    assert "\n" not in text and "secret" not in text


def test_the_password_of_a_bad_redis_url_is_not_shown() -> None:
    with pytest.raises(ConfigError, match=r"redis://:\*\*\*@127.0.0.1:6379/sessions"):
        load_settings(environ={"STREAM_REDIS_URL": "redis://:secret@127.0.0.1:6379/sessions"})


def test_sensible_values_still_load() -> None:
    s = load_settings(environ={
        "STREAM_KAFKA_URL": "kafka://k1:9092;kafka://k2:9093",
        "STREAM_REDIS_URL": "rediss://user:pw@redis.example:6380/3",
        "STREAM_FEATURE_STORE_URL": "unix:///run/redis.sock?db=1",
        "STREAM_REGISTRY_URL": "redis://redis:6379/1",
        "STREAM_REGISTRY_KEY": "0123456789abcdef",
        "STREAM_TOPIC_PREFIX": "fraud_v2.",
        "STREAM_APP_ID": "fraud-scorer.eu-1",
        "STREAM_MODEL__THRESHOLD": "0",
        "STREAM_LIFECYCLE__PROMOTE_MARGIN": "0",
    })
    assert s.bootstrap_servers == "k1:9092,k2:9093"
    assert s.model.threshold == 0.0
    assert load_settings(environ={"STREAM_MODEL__THRESHOLD": "1"}).model.threshold == 1.0
    assert load_settings(environ={"STREAM_REDIS_URL": "memory://"}).store_url == "memory://"
