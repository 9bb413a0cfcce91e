"""Labelled history for training and evaluation: simulated, or a labelled file.

Each source says what it is (:attr:`LabelledHistory.source`), which the registry
records and ``txmon evaluate`` compares: evaluating on the data a model was trained
on only scores the hold-out window.

A labelled file is read a chunk at a time into compact typed columns (:func:`read_file`,
which ``txmon backtest`` reads with too) and featured chunk by chunk
(:func:`models.dataset.features_in_chunks`): no Python object per row outlives its chunk,
so a file of millions of rows fits in memory (docs/detection.md, "Memory").
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from txmon.infra.statements import TRANSACTION_CONTENT_COLUMNS
from txmon.ingestion import replay
from txmon.ingestion.events import TransactionEvent
from txmon.ingestion.replay import RejectedRow
from txmon.ingestion.simulator import Label, Simulator, SimulatorConfig
from txmon.models.dataset import (
    compact_text,
    concat_compact,
    feature_ordered,
    features_in_chunks,
    labelled_features,
)
from txmon.models.errors import TrainingDataError
from txmon.models.features import transactions_frame

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_SIMULATED_EVENTS",
    "DEFAULT_SIMULATED_TPS",
    "LabelledHistory",
    "LabelledSource",
    "first_of_each_txn",
    "from_file",
    "read_file",
    "simulated",
]

DEFAULT_SIMULATED_EVENTS = 200_000
DEFAULT_SIMULATED_TPS = 0.2
"""Events per simulated second for training data: 200k events span ~11.6 days (the
default 50/s would be ~1.1 hours), so the 30% hold-out covers four calendar days and
per-account history reaches back over days, as in production."""
DEFAULT_CHUNK_ROWS = 100_000
"""Rows of a file mapped, and transactions featured, at a time."""


_SOURCE_ONLY = ("schema_version", "payer_ifsc", "payer_vpa", "payee_ifsc", "currency", "ip", "row_number")
"""Columns :func:`read_file` keeps beyond what :func:`models.dataset.labelled_features`
gives: the backtest's (its scores file, its repeated-txn check), not training's."""


@dataclass
class LabelledHistory:
    """Labelled transactions: as events and labels (the simulator), or as a file's typed
    columns (``transactions``); :meth:`features` gives training and evaluation their frame."""

    events: list[TransactionEvent]
    labels: list[Label]
    source: str
    rejected: dict[str, int] = field(default_factory=dict)
    """Source rows left out, by reason (replay files only)."""
    rejected_fraud: int = 0
    """How many of those rows were labelled fraud: frauds the models never see."""
    rejects_path: Path | None = None
    """The rejects file (row number, reason, every problem, label, raw row), when written."""
    transactions: pd.DataFrame | None = None
    """A file's transactions as :func:`read_file` gives them (compact typed columns, labels
    included, in feature order); ``events`` and ``labels`` are then empty: a file is never
    held as one Python object per row."""
    size: int = field(init=False, default=0)
    """Transactions in the history."""
    frauds: int = field(init=False, default=0)
    """Of them labelled fraud."""

    def __post_init__(self) -> None:
        if self.transactions is not None:
            self.size = len(self.transactions)
            self.frauds = int(self.transactions["is_fraud"].sum())
        else:
            self.size = len(self.events)
            self.frauds = sum(bool(lb.is_fraud) for lb in self.labels)

    def features(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> pd.DataFrame:
        """The transactions with every feature and their labels, in (event_time, txn_id)
        order: :func:`models.dataset.labelled_features`, the frame training and evaluation
        take. A file's columns are featured ``chunk_rows`` at a time into the same frame, and
        handed over: the history no longer holds them (the file is held once), so this is
        called once on a file's history."""
        if self.transactions is None:
            return labelled_features(self.events, self.labels)
        transactions = self.transactions.drop(columns=list(_SOURCE_ONLY))
        self.transactions = None
        # label_delay_s 0: a label counts from its label_time and no later, as labelled_features
        # folds it; the frame must be the one events and labels of the same file would give.
        return features_in_chunks(transactions, chunk_rows, label_delay_s=0.0)

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


def from_file(
    path: str | Path,
    mapping: str | Path,
    rejects_path: str | Path | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    now: datetime | None = None,
) -> LabelledHistory:
    """A labelled CSV/Parquet file read with a replay mapping that has a ``label:`` section,
    ``chunk_rows`` at a time (:func:`read_file`); labels known ``label.delay`` after their
    transaction.

    ``rejects_path``: where the rows left out are written (see
    :data:`ingestion.replay.REJECTS_COLUMNS`); none is written when omitted. ``now``
    (default: the wall clock) is the reference of the future-timestamp check."""
    path = Path(path)
    read = read_file(path, mapping, chunk_rows=chunk_rows, rejects_path=rejects_path, now=now)
    rejected: dict[str, int] = {}
    for row in read.rejects:
        rejected[row.reason] = rejected.get(row.reason, 0) + 1
    return LabelledHistory(
        [],
        [],
        f"replay {path.name} sha256:{_digest(path)} mapping {Path(mapping).name}",
        rejected,
        read.rejected_fraud,
        Path(rejects_path) if rejects_path is not None else None,
        read.transactions,
    )


# ------------------------------------------------------------- the chunked reader


@dataclass
class LabelledSource:
    """A labelled history as typed columns: the features frame's inputs plus ``row_number``
    (the source's, from 1), ``is_fraud``, ``scenario`` and ``label_time``."""

    transactions: pd.DataFrame
    name: str
    rejects: list[RejectedRow] = field(default_factory=list)
    """Every source row left out."""
    rows_read: int = 0
    duplicates: int = 0
    """Rows left out as exact repeats of an earlier row (same txn_id, same content)."""
    rows_before: int = 0
    """Transactions before the first training window: featured to build the profiles, then
    not kept (spark_jobs/backtest.featured_rows)."""
    span: tuple[pd.Timestamp, pd.Timestamp] | None = None
    """The first and last event time of every transaction (the default split's days)."""

    @property
    def rejected_fraud(self) -> int:
        return sum(r.is_fraud is True for r in self.rejects)


def _event_frame(
    events: list, row_numbers: list[int], labels: list[tuple[bool, str | None]], label_times: list
) -> pd.DataFrame:
    frame = transactions_frame(events)
    frame["schema_version"] = [e.schema_version for e in events]
    frame["payer_ifsc"] = [e.payer.ifsc for e in events]
    frame["payer_vpa"] = [e.payer.vpa for e in events]
    frame["payee_ifsc"] = [e.payee.ifsc for e in events]
    frame["currency"] = [str(e.currency) for e in events]
    frame["ip"] = [e.ip for e in events]
    frame["row_number"] = np.asarray(row_numbers, dtype=np.int64)
    frame["is_fraud"] = np.asarray([bool(lb[0]) for lb in labels], dtype=bool)
    frame["scenario"] = [lb[1] if lb[0] else None for lb in labels]
    frame["label_time"] = pd.to_datetime(pd.Series(label_times), utc=True).to_numpy()
    frame["label_time"] = pd.to_datetime(frame["label_time"], utc=True)
    return frame


def read_file(
    path: str | Path,
    mapping: replay.ReplayMapping | str | Path,
    *,
    label_delay: timedelta | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    rejects_path: str | Path | None = None,
    now: datetime | None = None,
) -> LabelledSource:
    """A labelled CSV/Parquet file through its replay mapping (which needs a ``label:``
    section), chunk by chunk; ``label_delay`` overrides the mapping's ``label.delay``.
    ``rejects_path``: the rows left out, as replay writes them (row number, reason, every
    problem, label, raw row). ``txmon backtest`` reads a file with it, and so do ``txmon
    train`` and ``txmon evaluate`` (:func:`from_file`)."""
    mapping_name = "given" if isinstance(mapping, replay.ReplayMapping) else Path(mapping).name
    mapping = mapping if isinstance(mapping, replay.ReplayMapping) else replay.load_mapping(mapping)
    if mapping.label is None:
        raise replay.ReplayMappingError(
            "the mapping has no `label:` section, so the file has no ground truth to "
            "train on or backtest against; add one (label: {is_fraud: {column: ...}})"
        )
    path = Path(path)
    delay = label_delay if label_delay is not None else mapping.label.delay
    mapper = replay._RowMapper(mapping, path.name)
    now = now or datetime.now(UTC)
    parts: list[pd.DataFrame] = []
    rejects: list[replay.RejectedRow] = []
    rows = 0
    for chunk in replay.source_chunks(path, mapping, chunk_rows, on_malformed=rejects.append):
        # Row numbers are the chunk's positions in the file, so they need no offset.
        valid = replay._map_rows(chunk, mapper, now, rejects.append, progress=False)
        if valid:
            events = [v.event for v in valid]
            parts.append(
                compact_text(
                    _event_frame(
                        events,
                        [v.row_number for v in valid],
                        [v.label or (False, None) for v in valid],
                        [e.event_time + delay for e in events],
                    )
                )
            )
        rows += len(chunk)
        del valid, chunk
    rows += sum(r.reason == replay.ReplayRejectReason.MALFORMED_ROW for r in rejects)
    transactions, duplicates, conflicts = first_of_each_txn(concat_compact(parts)) if parts else (None, 0, [])
    del parts
    rejects += conflicts
    if rejects_path is not None:  # the rejected rows' cells from a second read (the file is not held)
        # The malformed records are among the rejects already: the second read passes them by.
        chunks = replay.source_chunks(path, mapping, chunk_rows, on_malformed=lambda _: None)
        replay._write_rejects(Path(rejects_path), chunks, rejects)
    if transactions is None:
        # Usually one mapping mistake repeated on every row: show the first row's problems
        # (every one of them, with the format expected) so the fix needs no second command.
        first = min(rejects, key=lambda r: r.row_number) if rejects else None
        example = f"; row {first.row_number}: {first.detail}" if first is not None else ""
        where = f"the rejects file {rejects_path} lists every row" if rejects_path is not None else "fix the mapping"
        raise TrainingDataError(
            f"no row of {path.name} became a transaction ({len(rejects)} rejected{example}); {where}"
        )
    name = f"replay {path.name} mapping {mapping_name}"
    # In the features' order now, so featuring them needs no second, sorted copy.
    return LabelledSource(feature_ordered(transactions), name, rejects, rows, duplicates)


def _plain(value: Any) -> Any:
    """A cell as the Python value an event holds, so a reject reads as the whole-file reader
    wrote it: a NumPy scalar's or a Timestamp's repr names its pandas type, and a missing
    text cell (a categorical's NaN) is None."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def first_of_each_txn(frame: pd.DataFrame) -> tuple[pd.DataFrame, int, list[RejectedRow]]:
    """A txn_id seen again, judged as the stream judges it (transactions_stream.split_duplicates):
    the first row in the order the stream would receive them (replay sends in event-time
    order, ties in file order) stands; a later row with the same content is a repeat and is
    dropped; one with other content is rejected as ``conflicting_duplicate``, naming what
    differs. Returns (the frame without them, in its order; how many repeats; the
    conflicts as ingestion.replay.RejectedRow). Without this the backtest would score, and
    training would learn from, rows the stream never scores."""
    ordered = frame.sort_values(["event_time", "row_number"], kind="stable")
    again = ordered["txn_id"].duplicated(keep="first")
    if not again.any():
        return frame, 0, []
    columns = [c for c in TRANSACTION_CONTENT_COLUMNS if c != "txn_id"]
    firsts = ordered.loc[~again].set_index("txn_id")
    later = ordered.loc[again]
    first = firsts.loc[later["txn_id"], [*columns, "row_number"]].set_index(later.index)
    # Event times compare at the millisecond, as Cassandra keeps them for the stream's check.
    a, b = later[columns].copy(), first[columns].copy()
    for side in (a, b):
        side["event_time"] = pd.to_datetime(side["event_time"], utc=True).dt.floor("ms")
    same = (a == b) | (a.isna() & b.isna())
    conflicts = []
    for index in later.index[~same.all(axis=1).to_numpy()]:
        row = later.loc[index]
        differs = "; ".join(
            f"{c}: {_plain(first.at[index, c])!r} -> {_plain(row[c])!r}" for c in columns if not same.at[index, c]
        )
        conflicts.append(
            replay.conflicting_duplicate(
                int(row["row_number"]),
                row["txn_id"],
                int(first.at[index, "row_number"]),
                differs,
                bool(row["is_fraud"]),
                _plain(row["scenario"]),
            )
        )
    return frame.drop(index=later.index), len(later) - len(conflicts), conflicts
