"""What the registry records beside each model (``metadata.json``)."""

from __future__ import annotations

import platform
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict

__all__ = ["ModelMetadata", "SplitCounts", "TimeWindow", "library_versions"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeWindow(_Frozen):
    start: AwareDatetime
    end: AwareDatetime


class SplitCounts(_Frozen):
    train: int
    holdout: int


class ModelMetadata(_Frozen):
    """One version's facts. ``version`` and ``created_at`` are set by Registry.register."""

    version: str | None = None
    created_at: AwareDatetime | None = None
    features: tuple[str, ...]
    train_window: TimeWindow
    holdout_window: TimeWindow
    rows: SplitCounts
    frauds: SplitCounts
    metrics: dict[str, float | None]
    """Hold-out metrics; None when undefined. The risk is the stream's: the rules of
    ``params["rules_version"]`` and the model under ``params["policy"]`` (rule score 0
    where that version is None or absent: trained without rules)."""
    notes: tuple[str, ...] = ()
    """Caveats found while training, e.g. a hold-out without fraud."""
    calibration: str
    libraries: dict[str, str]
    data_source: str
    seed: int
    params: dict[str, Any] = {}


def library_versions() -> dict[str, str]:
    """Versions that decide whether a pickled model loads and scores the same."""
    # Only to read their versions, when a model is saved.
    import numpy
    import pandas
    import sklearn

    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    }
