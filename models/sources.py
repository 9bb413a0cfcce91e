"""Labelled history for training and evaluation: simulated, or a labelled file.

Each source says what it is (:attr:`LabelledHistory.source`), which the registry
records and ``txmon evaluate`` compares: evaluating on the data a model was trained
on only scores the hold-out window.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ingestion.events import TransactionEvent
from ingestion.simulator import Label

__all__ = ["DEFAULT_SIMULATED_EVENTS", "DEFAULT_SIMULATED_TPS", "LabelledHistory", "from_file", "simulated"]

DEFAULT_SIMULATED_EVENTS = 200_000
DEFAULT_SIMULATED_TPS = 0.2
"""Events per simulated second for training data: 200k events span ~11.6 days (the
default 50/s would be ~1.1 hours), so the 30% hold-out covers four calendar days and
per-account history reaches back over days, as in production."""


@dataclass(frozen=True)
class LabelledHistory:
    events: list[TransactionEvent]
    labels: list[Label]
    source: str
    rejected: dict[str, int] = field(default_factory=dict)
    """Source rows left out, by reason (replay files only)."""


def simulated(n: int = DEFAULT_SIMULATED_EVENTS, seed: int = 42,
              mean_tps: float = DEFAULT_SIMULATED_TPS) -> LabelledHistory:
    """The first ``n`` transactions of the default simulator mix at ``mean_tps``."""
    from ingestion.simulator import Simulator, SimulatorConfig

    items = list(Simulator(SimulatorConfig(mean_tps=mean_tps), seed).generate(n))
    return LabelledHistory([i.event for i in items], [i.label for i in items],
                           f"simulator n={n} seed={seed} mean_tps={mean_tps} (default mix)")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def from_file(path: str | Path, mapping: str | Path) -> LabelledHistory:
    """A labelled CSV/Parquet file read with a replay mapping that has a ``label:`` section."""
    from ingestion.replay import load_labelled

    path = Path(path)
    rejected: dict[str, int] = {}

    def count(row_number: int, reason: str, detail: str) -> None:
        rejected[str(reason)] = rejected.get(str(reason), 0) + 1

    events, labels = load_labelled(path, mapping, on_reject=count)
    return LabelledHistory(events, labels, f"replay {path.name} sha256:{_digest(path)} mapping {Path(mapping).name}",
                           rejected)
