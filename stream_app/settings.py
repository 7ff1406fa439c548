"""One frozen settings object, built once from ``STREAM_*`` variables and an optional TOML file.

Precedence, highest first: keyword overrides (the CLI's flags), environment variables
(``STREAM_`` prefix, ``__`` for nested keys), the TOML file named by ``--config`` or
``STREAM_CONFIG``, then the defaults below. Nothing else in the code base reads ``os.environ``
for configuration.

>>> s = load_settings(environ={})
>>> s.kafka_url, s.redis_url, s.topic_prefix, s.partitions
('kafka://127.0.0.1:9092', 'redis://127.0.0.1:6379/0', '', 4)
>>> s.topic("events")
'events'
>>> load_settings(environ={"STREAM_TOPIC_PREFIX": "fraud."}).topic("predictions")
'fraud.predictions'
>>> s.model.steps[-1].name
'LogisticRegression'
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from features.spec import AggregateSettings, FeatureSettings
from models.spec import ModelSettings, StepSettings
from stream_app.errors import ConfigError
from stream_app.offline.settings import OfflineSettings
from stream_app.ops.settings import HealthSettings, QualitySettings
from stream_app.security import KafkaSettings, check_redis_tls_files

#: the domain schemas live beside their domain; settings composes them
__all__ = ["AggregateSettings", "DriftSettings", "FeatureSettings", "HealthSettings",
           "HttpSettings", "KafkaSettings", "LabelSettings", "ModelSettings", "OfflineSettings",
           "PerformanceSettings", "QualitySettings", "Settings", "StepSettings", "WarmupSettings",
           "load_settings",
           "redact_url"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetrainSettings(_Frozen):
    """When drift turns into a ``retrain-signals`` record."""

    #: raise a signal on performance drift (ADWIN on the prequential loss, once its rise is
    #: confirmed: see ``[drift.performance]``)
    on_performance_drift: bool = True
    #: raise a signal when at least this many feature subjects are in drift at once (0: no
    #: feature-drift signal at all; 1: every lone episode at once, the default before issue 10)
    min_feature_subjects: int = Field(default=2, ge=0)
    #: or when a single feature subject's adjusted p-value has stayed below alpha for this many
    #: consecutive checks, the checks that opened its episode included (None: one window plus
    #: one check, ``ceil(window / check_every) + 1``, so the last current window shares no
    #: value with the first that failed; 0: a lone subject never signals). A chance excursion
    #: of the current window passes within a window; a real shift fails every later check
    persist_checks: int | None = Field(default=None, ge=0)
    #: raise a signal when the prediction (score) distribution drifts
    on_prediction_drift: bool = False
    #: at most one signal per model in this many seconds (a storm of drift yields one)
    cooldown_s: float = Field(default=600.0, ge=0)


class PerformanceSettings(_Frozen):
    """Performance drift: ADWIN on the prequential 0/1 loss of the label stream.

    ``drift.performance = false`` (``STREAM_DRIFT__PERFORMANCE=false``), the switch from before
    this was a section, still means ``enabled = false``.
    """

    enabled: bool = True
    #: ADWIN's rise of the loss signals only once the next ``confirm_labels`` labels (None: one
    #: drift window) confirm it against the mean of ADWIN's whole window at the detection: a
    #: rise of at least ``min_increase`` (loss units) and ``min_relative_increase`` (a share
    #: of that mean), significant at ``drift.alpha`` (a look every ``check_every`` labels,
    #: Bonferroni over the looks; ``models.drift.performance.Confirmation``)
    confirm_labels: int | None = Field(default=None, ge=1)
    min_increase: float = Field(default=0.02, ge=0, le=1)
    min_relative_increase: float = Field(default=0.2, ge=0)


class WarmupSettings(_Frozen):
    """When a model learning from scratch is warm: prediction and performance drift (ADWIN,
    started afresh there) are tested from then on (``models.drift.warmup``)."""

    #: the model has learned at least this many labels (default: one drift window)
    min_learned: int | None = Field(default=None, ge=0)
    #: and the rolling prequential 0/1 loss over the last drift window has not improved by more
    #: than ``tolerance`` standard errors for this many labels (default: one drift window)
    patience: int | None = Field(default=None, ge=1)
    tolerance: float = Field(default=1.0, ge=0)


class DriftSettings(_Frozen):
    """Windowed drift checks (see ``models.drift``)."""

    #: off: no drift at all (features, prediction, performance) and so no retrain signals
    enabled: bool = True
    #: numeric subjects (event features or derived inputs); empty: every numeric event feature
    #: seen in the first valid event
    features: tuple[str, ...] = ()
    #: categorical subjects; empty: every string event feature seen in the first valid event
    categorical: tuple[str, ...] = ()
    #: most subjects picked automatically
    max_subjects: int = Field(default=50, ge=1)
    prediction: bool = True
    #: prediction and performance drift wait until the model is warm (a model learning from
    #: scratch moves its scores and its loss by design); ``prediction_warmup = N``, the older
    #: setting, is ``warmup.min_learned = N``
    warmup: WarmupSettings = WarmupSettings()
    #: the score's reference window: ``sliding`` (the window just before the current one) or
    #: ``fixed`` (the first window after warm-up). A model that keeps learning moves its own
    #: score distribution slowly (constant-rate SGD never settles); a fixed reference finds that
    #: drift, a sliding one compares windows a window apart and still finds an abrupt change
    prediction_reference: Literal["fixed", "sliding"] = "sliding"
    #: ``[drift.performance]``; a bare ``true`` / ``false`` is its ``enabled`` (the old switch)
    performance: Annotated[PerformanceSettings, NoDecode] = PerformanceSettings()
    window: int = Field(default=1000, ge=10)
    check_every: int = Field(default=250, ge=1)
    reference: Literal["fixed", "sliding"] = "fixed"
    alpha: float = Field(default=0.01, gt=0, lt=1)
    #: multiple testing across the subjects of one check: ``holm`` bounds the chance of any
    #: false episode per check at ``alpha``, even while other subjects are in drift (``bh``
    #: relaxes the others once one is rejected; see ``models.drift.multitest``)
    correction: Literal["holm", "bh", "bonferroni"] = "holm"
    recovery_checks: int = Field(default=3, ge=1)
    #: an episode opens at this many consecutive checks below alpha (consecutive checks share
    #: the reference, so one unlucky reference fails several checks: 2 cuts false episodes ~3x)
    confirm_checks: int = Field(default=2, ge=1)
    #: a fixed reference is re-learned from the next window when an episode closes (the data
    #: matches it again, or it was an atypical sample that raised a false episode)
    relearn_on_close: bool = True
    #: how often every subject's state goes to the ``drift`` topic as one summary record
    summary_interval_s: float = Field(default=30.0, gt=0)
    retrain: RetrainSettings = RetrainSettings()

    @model_validator(mode="before")
    @classmethod
    def _prediction_warmup(cls, data: Any) -> Any:
        """``prediction_warmup`` (before ``warmup``) is ``warmup.min_learned``."""
        if isinstance(data, Mapping) and "prediction_warmup" in data:
            data = dict(data)
            old = data.pop("prediction_warmup")
            warmup = data.get("warmup")
            warmup = warmup.model_dump() if isinstance(warmup, WarmupSettings) else dict(warmup or {})
            warmup.setdefault("min_learned", old)
            data["warmup"] = warmup
        return data

    @field_validator("performance", mode="before")
    @classmethod
    def _performance_switch(cls, v: Any) -> Any:
        """A bare switch (``performance = false``, the old flag; from the environment any of
        pydantic's booleans, ``off``, ``0``...) is ``enabled``; JSON text is the section."""
        if isinstance(v, str) and v.lstrip().startswith("{"):
            try:
                return orjson.loads(v)
            except orjson.JSONDecodeError:
                raise ValueError(f"not valid JSON: {v!r}") from None
        return {"enabled": v} if isinstance(v, (bool, int, str)) else v


class LabelSettings(_Frozen):
    """Labels that come before their events, parked in the online store until the event is
    scored: bounded in number, bytes and time, so a flood of labels for ids that never come
    cannot fill Redis (README, "Guarantees and limits")."""

    #: most labels parked at once in this store namespace; a label past it is dead-lettered
    #: as ``label_flood`` (0: none is parked)
    max_parked: int = Field(default=100_000, ge=0)
    #: most bytes parked at once, about the Redis memory they take: each label's payload, key,
    #: event id twice and source position, plus 384 bytes (``features.store.base.park_cost``);
    #: past it, ``label_flood``
    max_parked_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    #: a parked label waits this long for its event (at most ``label_horizon_s``)
    park_ttl_s: int = Field(default=3600, ge=1)


class LifecycleSettings(_Frozen):
    """Checkpoints, one learner with hot-swapping scorers, champion and challenger (README)."""

    #: restore from and checkpoint to the registry (off: the model lives and dies with the
    #: worker, as in tests of the flow alone)
    enabled: bool = True
    #: a snapshot after this many learns, or after ``snapshot_interval_s`` with any learning
    snapshot_every_learns: int = Field(default=10_000, ge=1)
    snapshot_interval_s: float = Field(default=2.0, gt=0)
    #: on average at most this many checkpoint bytes a second: after a checkpoint of B bytes
    #: the next waits B / this seconds (1 MB: 0.25 s, below ``snapshot_interval_s``; a 226 MB
    #: forest: 54 s). Pickling runs at ~75 MB/s of one core and every scorer loads each
    #: checkpoint, so the default keeps a big model's checkpoints to a few % of a core.
    checkpoint_max_bytes_per_s: float = Field(default=4 * 2**20, gt=0)
    #: a model whose last checkpoint was at least this big is pickled by a forked child (Linux),
    #: so that the pickler never holds the worker's GIL; smaller ones in a thread, where the
    #: fork would cost more than the pickle (``stream_app.lifecycle``)
    checkpoint_fork_bytes: int = Field(default=16 * 2**20, ge=0)
    #: freeze long-lived objects out of the cyclic GC (``gc.freeze``): the worker's own once
    #: its first assignment has settled, and such a big model's as it is unpickled and after
    #: each checkpoint and install (a full GC pass held the loop 100-180 ms every few seconds;
    #: over a big forest, a second). Cycles among frozen objects are never collected
    #: (``stream_app.lifecycle``)
    gc_freeze: bool = True
    #: snapshots kept per version (older ones are pruned; the newest good one is restored)
    keep_snapshots: int = Field(default=20, ge=2)
    #: and at most this many bytes of them per version (the newest good one always stays)
    keep_bytes: int = Field(default=512 * 2**20, ge=0)
    #: a scorer serves the learner's newest snapshot at most this many seconds after it exists
    staleness_s: float = Field(default=5.0, gt=0)
    #: spawn a challenger on a retrain signal (or ``stream-app models challenge``)
    challenger: bool = True
    #: the challenger's River steps; empty: the champion's own spec, trained afresh
    challenger_steps: tuple[StepSettings, ...] = ()
    #: labelled feature snapshots kept to warm-start a challenger
    warm_start_window: int = Field(default=1000, ge=0)
    #: compare champion and challenger on the last this many labels both scored
    compare_labels: int = Field(default=500, ge=10)
    #: promote when the challenger's accuracy beats the champion's by at least this much
    promote_margin: float = Field(default=0.02, ge=0, le=1)
    #: promote automatically; off: a ``models`` record says the challenger is ready
    auto_promote: bool = True
    #: archive a challenger that has not won after this many compared labels
    challenger_max_labels: int = Field(default=20_000, ge=10)


class HttpSettings(_Frozen):
    """The HTTP API's limits and output filtering (``stream_app.http``; README, "HTTP API").
    Where it listens is ``http_host`` / ``http_port`` / ``http_enabled``, its keys
    ``api_keys``."""

    #: most events in one ``POST /v1/predict`` (``{"events": [...]}``) or labels in one
    #: ``POST /v1/labels``
    max_batch: int = Field(default=100, ge=1, le=10_000)
    #: each key's token bucket: this many requests a second on average...
    rate_per_s: float = Field(default=1000.0, gt=0)
    #: ...and at most this many at once
    burst: int = Field(default=200, ge=1)
    #: a larger request body is refused with 413 before it is read to its end
    max_body_bytes: int = Field(default=1024 * 1024, ge=64)
    #: the score is rounded to this many decimals (against model extraction)
    score_precision: int = Field(default=3, ge=0, le=17)
    #: off: answers carry ``predicted`` only, never the score
    return_score: bool = True
    #: on: a prediction is answered once its ``predictions`` record (and any label that came
    #: early, sent back to ``labels``) is on Kafka; off: once it is committed in Redis (claim,
    #: snapshot, features), its records delivered meanwhile and retried for 10 minutes
    await_delivery: bool = True
    #: these fields' values (at any depth of an event or label) are replaced by
    #: ``[redacted]`` in dead-letter payloads
    redact_fields: tuple[str, ...] = ("email", "card_number")
    #: text matching these regular expressions is replaced by ``[redacted]`` in dead-letter
    #: payloads and errors, and in log lines (default: e-mail addresses, and 16-digit card
    #: numbers, plain or in groups of four, that are not part of a longer number)
    #: (a match may start only where the previous character cannot be in it: a long run of
    #: letters then costs one scan, not one per letter)
    redact_patterns: tuple[str, ...] = (r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
                                        r"(?<!\d)(?<!\d\.)\d{4}(?:[ -]?\d{4}){3}(?!\d|\.\d)")

    @field_validator("redact_patterns")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return v


class Settings(BaseSettings):
    """Everything the engine is told, in one frozen object."""

    model_config = SettingsConfigDict(
        env_prefix="STREAM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    # -- services ---------------------------------------------------------
    kafka_url: str = "kafka://127.0.0.1:9092"
    #: TLS, SASL and mutual TLS for every Kafka client (``stream_app.security``)
    kafka: KafkaSettings = KafkaSettings()
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: ``redis://...`` or ``memory://`` for the online feature store
    feature_store_url: str | None = None
    #: the feature store's Redis key namespace (entity states, scoring snapshots, ``event_id``
    #: claims, early labels); default: ``app_id``, plus ``:`` and ``topic_prefix`` if set
    store_namespace: str | None = Field(default=None, pattern=r"^\S+$")
    embedded: bool = False
    #: ``exactly_once``: every batch's outputs and its consumed offsets go to Kafka in one
    #: transaction (one transactional id per input partition fences zombies);
    #: ``at_least_once``: outputs, then offsets (a crash can repeat outputs). Default:
    #: exactly once, except on the embedded broker (tansu has no transactions)
    processing_guarantee: Literal["exactly_once", "at_least_once"] | None = None

    # -- topics -----------------------------------------------------------
    topic_prefix: str = ""
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    # -- worker -----------------------------------------------------------
    #: Faust's app id and consumer group (Faust names topics after it: Kafka's topic characters)
    app_id: str = Field(default="stream-app", min_length=1, max_length=200)
    web_port: int = Field(default=6066, ge=1, le=65535)
    web_enabled: bool = True
    #: the HTTP API (``stream_app.http``), served by the worker on its own event loop; port 0
    #: takes any free port (the worker logs which)
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    #: ``NAME:ID:SALT:SHA256`` entries, comma-separated, made by ``stream-app keys add NAME``;
    #: salted hashes only, never a key. None: every ``/v1/`` request is refused with 401
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    #: created with its parents when the worker starts
    data_dir: Path = Path(".stream-app")
    #: a starting worker waits this long for Kafka and each Redis to answer, then exits
    startup_timeout_s: float = Field(default=8.0, gt=0, le=600)
    batch_max: int = Field(default=500, ge=1)
    batch_within_s: float = Field(default=0.02, gt=0)
    #: how long a thread holds the GIL before another may take it (``sys.setswitchinterval``).
    #: The consumer thread's fetches wait up to this long behind a busy loop at each step: 1 ms
    #: took a 100-tree forest's prediction p99 from 545-1,127 to 424-738 ms at 200 events/s,
    #: but cost the peers work ~10 % of its events/s (``bench/RESULTS.md``). "auto": 1 ms
    #: while the model is busy over 1 ms per score or learn, else 5 ms (``stream_app.gil``)
    gil_switch_interval_s: float | Literal["auto"] = Field(default="auto", union_mode="left_to_right")
    metrics_interval_s: float = Field(default=2.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # -- validation -------------------------------------------------------
    max_payload_bytes: int = Field(default=1024 * 1024, ge=64)
    max_abs_value: float = Field(default=1e12, gt=0)

    # -- learning ---------------------------------------------------------
    label_horizon_s: int = Field(default=24 * 3600, ge=1)
    #: a label whose event is not scored yet is held this long for it (the labels partition
    #: waits), then parked; 0: park at once
    label_wait_s: float = Field(default=0.25, ge=0, le=10)

    # -- model registry ---------------------------------------------------------------
    #: ``file://PATH`` or ``redis://host:port/db`` (see ``models.registry``)
    registry_url: str = "file://./registry"
    #: HMAC key that signs checkpoints (at least 16 bytes); never logged. A worker refuses to
    #: start without one (the demo makes an ephemeral key)
    registry_key: SecretStr | None = None

    # -- offline store ----------------------------------------------------------------
    #: where the feature log's Parquet files live: ``file://PATH`` or any ``pyarrow.fs`` /
    #: ``fsspec`` URL (``s3://bucket/prefix``, ...; see ``stream_app.offline.store``)
    offline_url: str = "file://./offline"

    model: ModelSettings = ModelSettings()
    features: FeatureSettings = FeatureSettings()
    labels: LabelSettings = LabelSettings()
    drift: DriftSettings = DriftSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    offline: OfflineSettings = OfflineSettings()
    health: HealthSettings = HealthSettings()
    quality: QualitySettings = QualitySettings()
    http: HttpSettings = HttpSettings()

    config_file: Path | None = None

    @field_validator("gil_switch_interval_s", mode="before")
    @classmethod
    def _gil_switch(cls, v: Any) -> float | str:
        if v == "auto":
            return v
        try:
            seconds = float(v)
        except (TypeError, ValueError):
            seconds = float("nan")
        if not 0 < seconds <= 0.1:
            raise ValueError(f'must be "auto" or seconds in (0, 0.1], not {v!r}')
        return seconds

    @field_validator("kafka_url")
    @classmethod
    def _kafka_url(cls, v: str) -> str:
        if not v.startswith(("kafka://", "aiokafka://")):
            raise ValueError("must start with kafka:// (e.g. kafka://127.0.0.1:9092)")
        for part in v.split(";"):
            _check_host_port(part.split("://", 1)[-1].strip("/"))
        return v

    @field_validator("redis_url", "feature_store_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None or v.startswith("memory://"):
            return v
        if not v.startswith(_REDIS_SCHEMES):
            raise ValueError("must be redis://host:port/db, unix:///path, "
                             "redis+cluster://host:port,... or memory://")
        _check_redis_url(v)
        return v

    @field_validator("offline_url")
    @classmethod
    def _offline_url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep or not scheme or not rest:
            raise ValueError("must be a URL with a path: file://PATH, s3://bucket/prefix, ...")
        return v

    @field_validator("registry_url")
    @classmethod
    def _registry_url(cls, v: str) -> str:
        if v.startswith("file://"):
            if v == "file://":
                raise ValueError("file:// needs a path (e.g. file://./registry)")
            return v
        if not v.startswith(_REDIS_SCHEMES):
            raise ValueError("must be file://PATH, redis://host:port/db, unix:///path or "
                             "redis+cluster://host:port,...")
        _check_redis_url(v)
        return v

    @field_validator("registry_key")
    @classmethod
    def _key_length(cls, v: SecretStr | None) -> SecretStr | None:
        from models.registry.signing import MIN_KEY_BYTES

        if v is not None and len(v.get_secret_value().encode()) < MIN_KEY_BYTES:
            raise ValueError(f"must be at least {MIN_KEY_BYTES} bytes")
        return v

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, v: Any) -> Any:
        """Comma-separated in the environment; each entry ``NAME:ID:SALT:SHA256`` (hex)."""
        if isinstance(v, str):
            text = v.strip()
            v = orjson.loads(text) if text.startswith("[") else \
                [part.strip() for part in text.split(",") if part.strip()]
        for i, entry in enumerate(v or ()):
            if not isinstance(entry, str) or not _KEY_ENTRY.fullmatch(entry):
                # never echoed: a plaintext key pasted here by mistake must not reach a log
                raise ValueError(f"entry {i + 1} is not NAME:ID:SALT:SHA256 (made by "
                                 "`stream-app keys add NAME`)")
        return v

    @field_validator("app_id", "topic_prefix")
    @classmethod
    def _kafka_name(cls, v: str) -> str:
        # Kafka topic names: at most 249 of [A-Za-z0-9._-]; the prefix leaves room for names
        from stream_app.contract import TOPICS

        if not _KAFKA_NAME.fullmatch(v):
            raise ValueError("may hold only letters, digits, '.', '_' and '-' (Kafka's "
                             f"characters for topic names), got {v!r}")
        if len(v) + max(map(len, TOPICS)) > 249:
            raise ValueError("is too long for Kafka topic names (249 characters with the name)")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment is read by load_settings (from ``environ``, os.environ by default)
        # and passed in: pydantic's own env source would read os.environ even when a caller
        # passed ``environ={}`` (doctests then failed on a CI with other ports)
        return (init_settings,)

    # -- derived ----------------------------------------------------------
    def topic(self, name: str) -> str:
        """The full topic name for a contract name, with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    def partitions_of(self, name: str) -> int:
        """Partitions of a contract topic (prefixed or not): ``partitions``, or 1 for labels
        and models.

        >>> s = load_settings(environ={}, partitions=3)
        >>> s.partitions_of("events"), s.partitions_of("labels")
        (3, 1)
        """
        from stream_app.contract import SINGLE_PARTITION

        if self.topic_prefix and name.startswith(self.topic_prefix):
            name = name[len(self.topic_prefix):]
        return 1 if name in SINGLE_PARTITION else self.partitions

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` for aiokafka clients."""
        return ",".join(
            part.split("://", 1)[-1].strip("/") for part in self.kafka_url.split(";")
        )

    @property
    def exactly_once(self) -> bool:
        """Whether outputs are transactional (``processing_guarantee``, see above).

        >>> load_settings(environ={}).exactly_once, load_settings(environ={}, embedded=True).exactly_once
        (True, False)
        """
        if self.processing_guarantee is None:
            return not self.embedded
        return self.processing_guarantee == "exactly_once"

    @property
    def registry_key_bytes(self) -> bytes | None:
        return None if self.registry_key is None else self.registry_key.get_secret_value().encode()

    @property
    def store_url(self) -> str:
        return self.feature_store_url or self.redis_url

    @property
    def feature_store_namespace(self) -> str:
        """The feature store's key namespace: ``store_namespace``, else the app id and the
        topic prefix. Deployments that share a Redis and an app id but not their topics then
        share no ``event_id`` claims (one would drop the other's events as duplicates); without
        a prefix the keys are the app id's, as they always were. Neither part may hold ``:``,
        so two different pairs never give the same namespace.

        >>> load_settings(environ={}).feature_store_namespace
        'stream-app'
        >>> load_settings(environ={"STREAM_TOPIC_PREFIX": "fraud."}).feature_store_namespace
        'stream-app:fraud.'
        >>> load_settings(environ={"STREAM_TOPIC_PREFIX": "fraud.",
        ...                        "STREAM_STORE_NAMESPACE": "stream-app"}).feature_store_namespace
        'stream-app'
        """
        if self.store_namespace is not None:
            return self.store_namespace
        return f"{self.app_id}:{self.topic_prefix}" if self.topic_prefix else self.app_id

    def to_env(self) -> dict[str, str]:
        """``STREAM_*`` variables that rebuild these settings in a child process.

        >>> env = load_settings(environ={}, partitions=2).to_env()
        >>> env["STREAM_PARTITIONS"], load_settings(environ=env) == load_settings(environ={}, partitions=2)
        ('2', True)
        """
        env: dict[str, str] = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if name == "registry_key" and self.registry_key is not None:
                value = self.registry_key.get_secret_value()
            if name == "kafka":
                value |= self.kafka.secrets
            if name == "config_file":
                env["STREAM_CONFIG"] = str(value)
                continue
            if isinstance(value, (dict, list)):
                text = orjson.dumps(value).decode()
            elif isinstance(value, bool):
                text = str(value).lower()
            else:
                text = str(value)
            env[f"STREAM_{name.upper()}"] = text
        return env


_KAFKA_NAME: Final = re.compile(r"[A-Za-z0-9._-]*")
#: an ``api_keys`` entry: name, key id, salt and SHA-256, the last three hex
_KEY_ENTRY: Final = re.compile(r"[A-Za-z0-9._-]{1,64}:[0-9a-f]{8}:[0-9a-f]{32}:[0-9a-f]{64}")
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


def _check_host_port(netloc: str) -> None:
    """``host[:port]`` with a port in 1..65535 (a ``ValueError`` otherwise).

    >>> _check_host_port("kafka:9092"), _check_host_port("[::1]:9092"), _check_host_port("h")
    (None, None, None)
    >>> _check_host_port("h:90x")
    Traceback (most recent call last):
    ...
    ValueError: bad port in 'h:90x': Port could not be cast to integer value as '90x'
    """
    try:
        port = urlsplit(f"//{netloc}").port
    except ValueError as exc:
        raise ValueError(f"bad port in {netloc!r}: {exc}") from None
    if port == 0:
        raise ValueError(f"bad port in {netloc!r}: 0")


def _check_redis_url(url: str) -> None:
    """What redis-py would misread: a bad port, or a path that is not a database number
    (redis-py ignores it and uses db 0).

    >>> _check_redis_url("redis://:pw@h:6379/2"), _check_redis_url("unix:///run/redis.sock?db=1")
    (None, None)
    >>> _check_redis_url("redis://h:6379/sessions")
    Traceback (most recent call last):
    ...
    ValueError: the path of redis://h:6379/sessions must be a database number (e.g. /0)
    """
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from features.store.connect import parse_cluster_url

        try:
            parse_cluster_url(url)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        check_redis_tls_files(url)
        return
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"{parts.scheme}:// needs the socket's path")
        return
    _check_host_port(parts.netloc.rpartition("@")[2])
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the path of {redact_url(url)} must be a database number (e.g. /0)")
    check_redis_tls_files(url)


def redact_url(url: str) -> str:
    """``url`` without its password, to be shown.

    >>> redact_url("redis://user:secret@h:6379/0"), redact_url("redis://:secret@h/0")
    ('redis://user:***@h:6379/0', 'redis://:***@h/0')
    >>> redact_url("redis://h:6379/0")
    'redis://h:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings: overrides > environment > TOML file > defaults.

    ``environ`` defaults to ``os.environ``; tests pass a dict to stay hermetic.
    """
    from pydantic import ValidationError

    env = dict(os.environ if environ is None else environ)
    path = config or env.get("STREAM_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        file_values = _read_toml(Path(path))
        file_values["config_file"] = Path(path)
    env_values = _env_values(env)
    merged = _deep_merge(_deep_merge(file_values, env_values), overrides)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    """Parse ``STREAM_*`` variables with pydantic-settings' own source (JSON for complex fields)."""
    from pydantic_settings import EnvSettingsSource

    source = EnvSettingsSource(Settings, case_sensitive=False, env_prefix="STREAM_",
                               env_nested_delimiter="__")
    source.env_vars = {k.lower(): v for k, v in env.items() if k.upper().startswith("STREAM_")}
    values = source()
    values.pop("config", None)
    return values


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _describe(exc: Any) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        env_name = "STREAM_" + "__".join(str(p) for p in err["loc"]).upper()
        lines.append(f"{where} ({env_name}): {err['msg']}")
    return "invalid settings: " + "; ".join(lines)
