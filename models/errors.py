"""Errors of the detection models and their registry. Each message names the fix."""

from __future__ import annotations

from txmon.infra.errors import TxmonError

__all__ = [
    "ModelError",
    "NoChampionError",
    "NothingToRollBackError",
    "RegistryError",
    "TrainingDataError",
    "UnknownVersionError",
]


class ModelError(TxmonError):
    """Base class of every models/ error."""


class TrainingDataError(ModelError):
    """The labelled history cannot train or evaluate a model (too small, no fraud, ...)."""


class RegistryError(ModelError):
    """The model registry on disk is missing, damaged or cannot be written."""


class NoChampionError(RegistryError):
    """No model version has been promoted yet."""


class UnknownVersionError(RegistryError):
    """A version id that the registry does not hold."""


class NothingToRollBackError(RegistryError):
    """Rollback asked for, but there is no earlier champion."""
