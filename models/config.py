"""Where the model registry lives: ``$TXMON_MODELS_DIR``, else ``<state_dir>/models``.

The environment is read when :func:`models_dir` is called, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from txmon.infra.settings import load_settings

__all__ = ["MODELS_DIR_ENV", "ModelsConfig", "models_dir"]

MODELS_DIR_ENV = "TXMON_MODELS_DIR"


class ModelsConfig(BaseModel):
    """Settings of the models package (frozen; unknown keys rejected)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models_dir: Path

    @classmethod
    def load(cls) -> ModelsConfig:
        override = os.environ.get(MODELS_DIR_ENV)
        if override:
            return cls(models_dir=Path(override).expanduser().resolve())

        return cls(models_dir=load_settings().state_path / "models")


def models_dir() -> Path:
    """The registry root for this process's configuration."""
    return ModelsConfig.load().models_dir
