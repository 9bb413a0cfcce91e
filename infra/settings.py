"""Validated configuration: one frozen model, from YAML plus the environment.

Precedence (highest first): ``TXMON_<SECTION>__<KEY>`` environment variables, the
YAML file named by ``TXMON_CONFIG`` (default ``config/txmon.yaml``), the defaults below.
Secrets never live in YAML; they are read from the environment only where used.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from txmon.infra.errors import ConfigError, YamlError
from txmon.infra.yaml_loading import WrittenModel, load_yaml, refuse_lookalikes

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "config"
# Every configuration file txmon reads, by default. The two settings files are named by
# an environment variable (TXMON_CONFIG, TXMON_ALERTING_CONFIG) as they cannot name
# themselves; the rest are named here.
DEFAULT_CONFIG = CONFIG_DIR / "txmon.yaml"
DEFAULT_ALERTING_CONFIG = CONFIG_DIR / "alerting.yaml"
DEFAULT_RULES = CONFIG_DIR / "rules.yaml"
REPLAY_MAPPINGS = CONFIG_DIR / "replay"

Port = Annotated[int, Field(ge=1, le=65535)]


class Section(WrittenModel):
    """A section of a settings file: frozen, unknown keys refused, and no boolean taken for
    a number nor empty text for a path (:func:`infra.yaml_loading.refuse_lookalikes`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaTopics(Section):
    transactions: str = "transactions"
    labels: str = "labels"
    alerts: str = "alerts"
    dead_letter: str = "transactions_dlq"

    def all(self) -> list[str]:
        return [self.transactions, self.labels, self.alerts, self.dead_letter]


class KafkaSettings(Section):
    host: str = "127.0.0.1"
    port: Port = 9092
    controller_port: Port = 9093
    heap_mb: int = Field(768, ge=256, le=16384)
    partitions: int = Field(4, ge=1, le=256)
    ready_timeout_s: float = Field(90, gt=0)
    topics: KafkaTopics = KafkaTopics()
    # Clients authenticate with SCRAM over SASL (infra/kafka_client.py); the local broker
    # runs SASL_PLAINTEXT on loopback. SASL_SSL is for a broker with TLS, whose CA
    # certificate (PEM) clients trust through ssl_cafile (docs/security.md).
    security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = "SASL_PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    ssl_cafile: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


class CassandraSettings(Section):
    host: str = "127.0.0.1"
    port: Port = 9042
    storage_port: Port = 7000
    heap_mb: int = Field(1024, ge=512, le=32768)
    keyspace: str = Field("txmon", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    replication_factor: int = Field(1, ge=1, le=9)
    # Multi-node: name the local datacenter (NetworkTopologyStrategy, DC-aware routing)
    # and use LOCAL_QUORUM with replication_factor 3. None / LOCAL_ONE suit one node. The
    # name is written into the keyspace's CQL (DDL takes no bind markers), so it is held to
    # the characters Cassandra's snitches use for one: a quote could not end the string.
    datacenter: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    consistency: Literal["ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL"] = "LOCAL_ONE"
    ready_timeout_s: float = Field(180, gt=0)


class SparkClusterSettings(Section):
    """A local Spark standalone cluster (infra/spark_cluster.py): master + workers."""

    host: str = "127.0.0.1"
    master_port: Port = 7077
    master_webui_port: Port = 8180
    workers: int = Field(2, ge=1, le=16)
    worker_cores: int = Field(1, ge=1)
    worker_memory: str = Field("1536m", pattern=r"^\d+[mgMG]$")
    # Worker i listens for its web UI on worker_webui_port + i (its RPC port is random).
    worker_webui_port: Port = 8181
    executor_memory: str = Field("1g", pattern=r"^\d+[mgMG]$")
    daemon_memory: str = Field("256m", pattern=r"^\d+[mgMG]$")
    ready_timeout_s: float = Field(90, gt=0)

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.master_port}"


class SparkSettings(Section):
    master: str = "local[2]"
    # The driver binds its RPC, block manager and web UI here (loopback: nothing of a
    # job is reachable from the network unless configured).
    host: str = "127.0.0.1"
    driver_memory: str = Field("2g", pattern=r"^\d+[mgMG]$")
    shuffle_partitions: int = Field(2, ge=1)
    trigger_seconds: float = Field(0.5, gt=0)
    secondary_trigger_seconds: float = Field(10, gt=0)
    max_offsets_per_trigger: int = Field(200_000, ge=1)
    kafka_fetch_max_wait_ms: int = Field(10, ge=0, le=60_000)
    cassandra_write_concurrency: int = Field(16, ge=1, le=2048)
    cassandra_batch_rows: int = Field(32, ge=1, le=200)
    cluster: SparkClusterSettings = SparkClusterSettings()


class ContractSettings(Section):
    """What the stream accepts beyond the event contract's fixed rules."""

    # Older events are dead-lettered as stale_timestamp: 1970-01-01 is a producer's zero
    # value, not a payment. Three years keeps history replays (chargeback windows, the
    # shipped samples, backfills) in; raise it to backfill older data.
    max_event_age_days: int = Field(1095, ge=1, le=36_500)


class RecoverySettings(Section):
    """How the stream rides out Kafka and Cassandra outages (spark_jobs/recovery.py) and how
    ``txmon stream --supervise`` restarts a stream process that died (spark_jobs/supervisor.py).

    Three layers, innermost first: a Cassandra call retried inside its task; the stream's
    queries restarted from their checkpoint inside the process; the process restarted by
    the supervisor. Each backs off exponentially from its ``*_initial_s`` to ``*_max_s``."""

    # A Cassandra read or write that fails with a connection error (node down, timeout)
    # is retried in place for up to cassandra_retry_give_up_s (0: not at all); a longer
    # outage fails the micro-batch and is left to the query restarts below.
    cassandra_retry_initial_s: float = Field(0.5, gt=0)
    cassandra_retry_max_s: float = Field(5, gt=0)
    cassandra_retry_give_up_s: float = Field(30, ge=0)
    # A failed query: wait until Kafka and Cassandra answer, then restart every query
    # from its checkpoint. The process gives up (exit 2) when the queries have failed
    # without completing a micro-batch for restart_give_up_s.
    restart_initial_s: float = Field(1, gt=0)
    restart_max_s: float = Field(30, gt=0)
    restart_give_up_s: float = Field(1800, gt=0)
    # txmon stream --supervise: how often it checks the stream process, the back-off
    # between restarts, and how many restarts in a row may die before it gives up.
    supervise_poll_s: float = Field(5, gt=0)
    supervise_restart_initial_s: float = Field(2, gt=0)
    supervise_restart_max_s: float = Field(60, gt=0)
    supervise_max_failed_starts: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _caps_not_below_starts(self) -> RecoverySettings:
        for name in ("cassandra_retry", "restart", "supervise_restart"):
            if getattr(self, f"{name}_max_s") < getattr(self, f"{name}_initial_s"):
                raise ValueError(f"{name}_max_s must be at least {name}_initial_s")
        return self


class DriftSettings(Section):
    """The stream's drift monitor (spark_jobs/drift_stream.py, models/drift.py)."""

    enabled: bool = True
    # Where a detection goes: "airflow" triggers the model_retraining DAG over its REST
    # API; "none" only records it in Cassandra drift_events.
    notify: Literal["airflow", "none"] = "airflow"
    notify_cooldown_minutes: float = Field(360, ge=0)
    grace: int = Field(200, ge=1)
    sample_size: int = Field(2000, ge=1)


class RetrainingSettings(Section):
    """Challenger training from Cassandra history (spark_jobs/retraining.py)."""

    window_days: float = Field(14, gt=0, description="history the challenger learns from, ending now")
    warmup_hours: float = Field(
        24, ge=0, description="history before the window, read only to warm per-account features up"
    )
    holdout_fraction: float = Field(0.3, gt=0, lt=1)
    # The backtest's measures (models/evaluation.py), on the challenger's hold-out: the
    # model's probability (model_*) or the risk score as served (the stream's rules and model).
    metric: Literal[
        "model_average_precision",
        "model_roc_auc",
        "model_card_precision_at_100",
        "model_fixed_rate_recall",
        "model_daily_precision_at_100",
        "average_precision",
        "roc_auc",
        "card_precision_at_100",
        "fixed_rate_recall",
    ] = "model_average_precision"
    margin: float = Field(0.01, ge=0, le=1, description="the challenger must beat the champion by this much")
    min_frauds: int = Field(20, ge=1, description="confirmed frauds the window needs to train at all")


class AirflowSettings(Section):
    """The project's local Airflow (``txmon airflow up``): where it listens, who is told
    of failures, and how the stream supervisor judges the streaming job."""

    host: str = "127.0.0.1"
    port: Port = 8080
    ready_timeout_s: float = Field(240, gt=0)
    admin_user: str = Field("admin", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    operator_email: tuple[str, ...] = ("airflow-ops@bank.example",)
    # alerting.yaml recipients group told of each retraining outcome.
    fraud_desk_group: str = "fraud_desk"
    # Replay mapping for files dropped straight into <state_dir>/landing.
    landing_mapping: Path = Path("config/replay/card_transactions.yaml")
    # The streaming job counts as stalled after this long without a heartbeat,
    # or without progress while Kafka holds unread records.
    stream_stall_after_s: float = Field(300, gt=0)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def describe_errors(exc: ValidationError) -> str:
    """All problems of a pydantic error on one line: ``a.b: message; c: message``."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors())


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping a YAML settings file holds ({} when empty).

    Raises ConfigError naming the file for anything else: not UTF-8, not YAML, more than
    one document, a tag, a key given twice, a list or scalar at the top, a key that is not
    a name.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}; check the path") from None
    try:
        data = load_yaml(text)
    except YamlError as exc:
        raise ConfigError(f"config file {path} {exc}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of section names to settings "
            f"(found {type(data).__name__} at the top level); fix the file"
        )
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"config file {path}: top-level key {key!r} is not a section name; fix the file")
    return data


def _env_problem(settings_cls: type[BaseSettings], exc: SettingsError | RecursionError) -> str:
    """Which environment variable pydantic-settings could not parse, and how to write it.

    Its message names only the field ("kafka"): every set variable of that field is a
    suspect, narrowed to the one holding the text JSON choked on when that is known.
    """
    prefix = str(settings_cls.model_config.get("env_prefix", "")).upper()
    delimiter = str(settings_cls.model_config.get("env_nested_delimiter") or "__")
    names: list[str] = []
    if isinstance(exc, SettingsError):
        stem = prefix + str(exc).partition('field "')[2].partition('"')[0].upper()
        names = sorted(n for n in os.environ if n.upper() == stem or n.upper().startswith(stem + delimiter))
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        names = [n for n in names if os.environ[n] == cause.doc] or names
    variables = f"environment variable {' or '.join(names)}" if names else f"a {prefix}* environment variable"
    return (
        f"{variables} cannot be parsed ({cause or exc}); write a section, list or mapping as JSON, "
        f"e.g. '{{\"port\": 9092}}' or '[\"ops@bank.example\"]', or unset it"
    )


class YamlBackedSettings(BaseSettings):
    """Settings from init arguments, then the environment, then the YAML file that
    :meth:`yaml_path` names (read when the settings are built, never at import)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_lookalikes(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_lookalikes(cls, value, info)

    @classmethod
    def yaml_path(cls) -> Path:
        raise NotImplementedError

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file is read here rather than by pydantic-settings' YAML source, which lets
        # every PyYAML error and a file that is not a mapping escape as a crash; the
        # mapping then goes in exactly as that source would put it (a missing file: {}).
        path = cls.yaml_path().expanduser()
        yaml_settings = InitSettingsSource(settings_cls, read_yaml_mapping(path) if path.is_file() else {})
        return (init_settings, env_settings, yaml_settings)

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Build the settings now from overrides, environment and file.

        Raises ConfigError for a file or variable that cannot be parsed at all, naming it,
        and pydantic's ValidationError for values that parse but are invalid.
        """
        # RecursionError: a variable's JSON nested too deeply, which pydantic-settings
        # decodes without wrapping (the file's nesting is checked as it is read).
        try:
            return cls(**overrides)
        except (SettingsError, RecursionError) as exc:
            raise ConfigError(_env_problem(cls, exc)) from None


class Settings(YamlBackedSettings):
    """Everything txmon needs to know about where things run."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="TXMON_",
        env_nested_delimiter="__",
    )

    state_dir: Path = Path(".txmon")
    # Kept apart from state_dir so test runs (own state_dir) share one jar cache.
    jars_dir: Path = Path(".txmon/jars")
    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    spark: SparkSettings = SparkSettings()
    contract: ContractSettings = ContractSettings()
    drift: DriftSettings = DriftSettings()
    retraining: RetrainingSettings = RetrainingSettings()
    airflow: AirflowSettings = AirflowSettings()
    recovery: RecoverySettings = RecoverySettings()

    @classmethod
    def yaml_path(cls) -> Path:
        return Path(os.environ.get("TXMON_CONFIG", DEFAULT_CONFIG))

    @property
    def state_path(self) -> Path:
        """Absolute state directory (relative paths are taken from the project root)."""
        return _absolute(self.state_dir)

    @property
    def jars_path(self) -> Path:
        return _absolute(self.jars_dir)

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME of the project's local Airflow (SQLite DB, logs, generated passwords)."""
        return self.state_path / "airflow"

    @property
    def landing_path(self) -> Path:
        """Historical batch drops land here; the ingestion DAG replays them into Kafka."""
        return self.state_path / "landing"


def _absolute(path: Path) -> Path:
    p = path.expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def load_settings(**overrides: Any) -> Settings:
    """Read the configuration now (environment is read at call time, not import time).

    Raises ConfigError with every problem listed and where to fix it.
    """
    config_file = os.environ.get("TXMON_CONFIG", str(DEFAULT_CONFIG))
    if not Path(config_file).is_file():
        raise ConfigError(f"config file {config_file} not found: set TXMON_CONFIG to an existing YAML file")
    try:
        return Settings.load(**overrides)
    except ValidationError as exc:
        variables = _variables_behind(Settings, exc)
        named = f"the environment variable{'s' * (len(variables) > 1)} {', '.join(variables)}"
        where = named if variables else "the TXMON_* environment variables"
        raise ConfigError(f"invalid configuration ({describe_errors(exc)}); fix {config_file} or {where}") from None


def _variables_behind(settings_cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    """The set environment variables that hold a refused value: the key's own
    (``TXMON_KAFKA__PORT``) or its section's JSON (``TXMON_KAFKA``), which outrank the file."""
    prefix = str(settings_cls.model_config.get("env_prefix", "")).upper()
    delimiter = str(settings_cls.model_config.get("env_nested_delimiter") or "__")
    present = {name.upper(): name for name in os.environ}
    found: list[str] = []
    for err in exc.errors():
        loc = [str(part).upper() for part in err["loc"]]
        for depth in range(len(loc), 0, -1):
            name = present.get(prefix + delimiter.join(loc[:depth]))
            if name is not None:
                found += [] if name in found else [name]
                break
    return found


@lru_cache(maxsize=1)
def settings() -> Settings:
    """Process-wide settings, loaded once on first use."""
    return load_settings()
