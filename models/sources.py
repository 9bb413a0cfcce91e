"""Labelled history for training and evaluation: simulated, or a labelled file.

Each source says what it is (:attr:`LabelledHistory.source`), which the registry
records and ``txmon evaluate`` compares: evaluating on the data a model was trained
on only scores the hold-out window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from txmon.ingestion.events import TransactionEvent
from txmon.ingestion.replay import RejectedRow, load_labelled
from txmon.ingestion.simulator import Label, Simulator, SimulatorConfig

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
    rejected_fraud: int = 0
    """How many of those rows were labelled fraud: frauds the models never see."""
    rejects_path: Path | None = None
    """The rejects file (row number, reason, every problem, label, raw row), when written."""

    def rejects_line(self) -> str:
        """What was left out, for a command's output: "N rows rejected (M of them labelled
        fraud); details in PATH"."""
        total = sum(self.rejected.values())
        by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items()))
        line = f"{total:,} rows rejected ({self.rejected_fraud:,} of them labelled fraud)"
        if self.rejects_path is not None:
            line += f"; details in {self.rejects_path}"
        return line + (f" (by reason: {by_reason})" if by_reason else "")


def simulated(
    n: int = DEFAULT_SIMULATED_EVENTS, seed: int = 42, mean_tps: float = DEFAULT_SIMULATED_TPS
) -> LabelledHistory:
    """The first ``n`` transactions of the default simulator mix at ``mean_tps``."""
    items = list(Simulator(SimulatorConfig(mean_tps=mean_tps), seed).generate(n))
    return LabelledHistory(
        [i.event for i in items],
        [i.label for i in items],
        f"simulator n={n} seed={seed} mean_tps={mean_tps} (default mix)",
    )


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def from_file(path: str | Path, mapping: str | Path, rejects_path: str | Path | None = None) -> LabelledHistory:
    """A labelled CSV/Parquet file read with a replay mapping that has a ``label:`` section.

    ``rejects_path``: where the rows left out are written (see
    :data:`ingestion.replay.REJECTS_COLUMNS`); none is written when omitted."""
    path = Path(path)
    rejected: dict[str, int] = {}
    frauds = 0

    def count(row: RejectedRow) -> None:
        nonlocal frauds
        rejected[row.reason] = rejected.get(row.reason, 0) + 1
        frauds += row.is_fraud is True

    events, labels = load_labelled(path, mapping, on_reject=count, rejects_path=rejects_path)
    return LabelledHistory(
        events,
        labels,
        f"replay {path.name} sha256:{_digest(path)} mapping {Path(mapping).name}",
        rejected,
        frauds,
        Path(rejects_path) if rejects_path is not None else None,
    )
