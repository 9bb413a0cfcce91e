"""The scoring API's settings: ``TXMON_API__<KEY>`` environment variables (or the
``txmon api`` flags, which set them for the workers). Frozen and validated like the rest
of txmon's configuration (infra/settings.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from txmon.infra.errors import ConfigError
from txmon.infra.settings import Port, describe_errors


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_prefix="TXMON_API__")

    host: str = "127.0.0.1"
    """Loopback unless configured: put a TLS-terminating proxy, or uvicorn's own
    --ssl-certfile/--ssl-keyfile (docs/api.md), in front before opening it up."""
    port: Port = 8300
    workers: int = Field(1, ge=1, le=64)
    max_body_bytes: int = Field(256 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Larger request bodies get 413 before they are read."""
    rate_per_s: float = Field(200.0, gt=0)
    """Requests per second each key may make, per worker (in-process token bucket)."""
    burst: int = Field(400, ge=1)
    """Requests a key may make at once after being idle, per worker."""
    batch_max: int = Field(100, ge=1, le=10_000)
    """Transactions per POST /v1/score/batch."""
    key_cache_s: float = Field(30.0, ge=0, le=3600)
    """How long a worker trusts a key it verified; a revoked key works at most this long."""
    cassandra_timeout_s: float = Field(2.0, gt=0, le=60)
    kafka_timeout_s: float = Field(10.0, gt=0, le=120)
    rules_path: Path | None = None
    """The rules file (default config/rules.yaml, as the stream)."""
    registry_root: Path | None = None
    """The model registry (default: the models' own setting, as the stream)."""


def load_api_settings(**overrides) -> ApiSettings:
    try:
        return ApiSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid API settings ({describe_errors(exc)}); fix the TXMON_API__* variables or the `txmon api` flags"
        ) from None
