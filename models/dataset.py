"""Labelled history -> one feature frame, and the time-based split.

Features come from the one definition in :mod:`models.features`, folded over the
whole history in event-time order with an in-memory profile store. The store is given
every confirmed fraud's label time, keyed by payee; the fold counts only labels whose
label_time has passed at each transaction, so no future knowledge leaks into
``payee_fraud_reports``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from txmon.models.errors import TrainingDataError
from txmon.models.features import MemoryProfileStore, add_features, epoch_micros, transactions_frame

if TYPE_CHECKING:
    from txmon.ingestion.events import TransactionEvent
    from txmon.ingestion.simulator import Label

__all__ = [
    "LABEL_COLUMNS",
    "compact_text",
    "concat_compact",
    "feature_ordered",
    "feature_store",
    "features_in_chunks",
    "fraud_label_times",
    "labelled_features",
    "time_split",
]

LABEL_COLUMNS = ("is_fraud", "scenario", "label_time")


def _labels_frame(labels: Iterable[Label]) -> pd.DataFrame:
    rows = [(lb.txn_id, bool(lb.is_fraud), lb.scenario, lb.label_time) for lb in labels]
    frame = pd.DataFrame(rows, columns=["txn_id", *LABEL_COLUMNS])
    frame["label_time"] = pd.to_datetime(frame["label_time"], utc=True)
    return frame.drop_duplicates("txn_id", keep="last")


def fraud_label_times(transactions: pd.DataFrame) -> dict[str, list[tuple[int, int]]]:
    """payee_key -> its confirmed frauds as (label time, transaction time), µs since the
    epoch, sorted by label time.

    ``transactions`` needs payee_key, is_fraud, label_time and event_time columns.
    """
    fraud = transactions.loc[
        transactions["is_fraud"].astype(bool) & transactions["payee_key"].notna(),
        ["payee_key", "label_time", "event_time"],
    ]
    # whatever the unit (ns from Python, us from Spark)
    labelled = epoch_micros(fraud["label_time"]) if len(fraud) else []
    made = epoch_micros(fraud["event_time"]) if len(fraud) else []
    out: dict[str, list[tuple[int, int]]] = {}
    for payee, label_us, txn_us in zip(fraud["payee_key"].tolist(), labelled, made):
        out.setdefault(payee, []).append((int(label_us), int(txn_us)))
    return {k: sorted(v) for k, v in out.items()}


def labelled_features(events: Sequence[TransactionEvent], labels: Iterable[Label]) -> pd.DataFrame:
    """Events + labels -> the transactions frame with every FEATURES column and the labels.

    Rows come back in (event_time, txn_id) order. An event without a label counts as
    genuine (is_fraud False, no scenario): unlabelled traffic is presumed legitimate,
    as in a chargeback feed.
    """
    if not events:
        raise TrainingDataError("no transactions to compute features from; check the input file or --simulate N")
    frame = transactions_frame(events)
    frame = frame.merge(_labels_frame(labels), on="txn_id", how="left")
    frame["is_fraud"] = frame["is_fraud"].fillna(False).astype(bool)
    frame["scenario"] = frame["scenario"].where(frame["is_fraud"], None)
    return add_features(frame, feature_store(frame))


def feature_store(transactions: pd.DataFrame, label_delay_s: float = 0.0) -> MemoryProfileStore:
    """An empty in-memory profile store that knows every confirmed fraud of
    ``transactions`` (payee_key, is_fraud, label_time, event_time columns) with its label
    time: the features count a label only once its time has passed. ``label_delay_s``: how
    long labels take to arrive (the payee fraud rates look at transactions that old)."""
    return MemoryProfileStore(fraud_labels=fraud_label_times(transactions), label_delay_s=label_delay_s)


# Numbers or None: not text, left as they are.
_NOT_TEXT = frozenset({"lat", "lon"})


def compact_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its text held compactly: txn_id (one per row) as Arrow strings, in one
    buffer; the repeated text (channel, accounts, payee keys, ...) as categoricals, one
    string per distinct value. About 1/5 of the memory on a card file, and no Python string
    per row to live on among the freed objects of the chunks mapped after it (which would
    keep their memory from going back to the system). :func:`features_in_chunks` turns a
    chunk back into plain text before computing its features, so the features are the same."""
    columns = {}
    for name in frame.columns:
        column = frame[name]
        if name == "txn_id":
            column = column.astype(pd.StringDtype("pyarrow"))
        elif column.dtype == object and name not in _NOT_TEXT:
            column = column.astype("category")
        columns[name] = column
    # A new frame, not columns set in place: pandas keeps a replaced column's 2-D block
    # alive while the block's other columns are views into it, text and all.
    return pd.DataFrame(columns)


def concat_compact(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """:func:`compact_text` frames as one, their categoricals merged (pandas' own concat turns
    categoricals with different values back into text). Categories are sorted, so the result
    does not depend on how the rows were split into parts."""
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    columns = {}
    for name in parts[0].columns:
        pieces = [p[name] for p in parts]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in pieces):
            columns[name] = pd.Series(pd.api.types.union_categoricals(pieces, sort_categories=True), name=name)
        else:
            columns[name] = pd.concat([p.reset_index(drop=True) for p in pieces], ignore_index=True)
    return pd.DataFrame(columns)


def _plain_text(chunk: pd.DataFrame) -> pd.DataFrame:
    """A chunk of a :func:`compact_text` frame with its text as Python strings again, a
    missing value as None (what the feature code is written for)."""
    compact = [c for c in chunk.columns if isinstance(chunk[c].dtype, pd.CategoricalDtype | pd.StringDtype)]
    if not compact:
        return chunk
    chunk = chunk.copy()
    for name in compact:
        column = chunk[name]
        chunk[name] = column.astype(object).where(column.notna(), None)
    return chunk


def _in_feature_order(frame: pd.DataFrame) -> bool:
    times = frame["event_time"].to_numpy()
    if len(times) < 2:
        return True
    if not (times[1:] >= times[:-1]).all():
        return False
    tied = np.flatnonzero(times[1:] == times[:-1])
    if not len(tied):
        return True
    ids = frame["txn_id"]  # only the tied rows' ids as Python strings, not the column's
    return bool((ids.iloc[tied + 1].to_numpy(dtype=object) >= ids.iloc[tied].to_numpy(dtype=object)).all())


def feature_ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` in the order the features fold it, (event_time, txn_id), with a fresh
    index; a frame already in that order is not copied (a long history is held once)."""
    if _in_feature_order(frame):
        index = frame.index
        if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
            return frame
        return frame.reset_index(drop=True)
    return frame.sort_values(["event_time", "txn_id"], kind="mergesort").reset_index(drop=True)


def features_in_chunks(
    transactions: pd.DataFrame,
    chunk_rows: int = 100_000,
    label_delay_s: float = 0.0,
    keep_from: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """:func:`models.features.add_features` over labelled ``transactions`` (any order),
    folded in (event_time, txn_id) order ``chunk_rows`` at a time through one profile
    store, as the stream folds its micro-batches: the same features as one pass, with the
    fold's per-chunk lists and frames bounded. A chunk never splits rows that share a
    timestamp (the fold orders those by txn_id). Profiles idle past their expiry are
    dropped between chunks (MemoryProfileStore.forget_idle): they would start afresh anyway.

    ``keep_from``: only rows at or after this time come back; the earlier ones still build
    the profiles, but their featured rows are not kept (a long history then costs the
    memory of its profiles, not of its rows). ``transactions`` may be :func:`compact_text`."""
    if transactions.empty:
        raise TrainingDataError("no transactions to compute features from")
    ordered = feature_ordered(transactions)
    store = feature_store(ordered, label_delay_s)
    times = ordered["event_time"]
    parts: list[pd.DataFrame] = []
    start = 0
    while start < len(ordered):
        end = min(len(ordered), start + chunk_rows)
        if end < len(ordered):
            end = int(times.searchsorted(times.iloc[end - 1], side="right"))
        end_us = epoch_micros(times.iloc[end - 1 : end])[0]
        store.batch_end_us = end_us
        featured = add_features(_plain_text(ordered.iloc[start:end].reset_index(drop=True)), store)
        if keep_from is not None:
            featured = featured[(featured["event_time"] >= keep_from).to_numpy()]
        if len(featured):
            parts.append(featured)
        store.forget_idle(end_us)  # later chunks start at or after end_us
        start = end
    if not parts:  # no row kept: the last chunk's (empty) rows give the columns
        return featured.reset_index(drop=True)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def time_split(frame: pd.DataFrame, holdout_fraction: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, hold-out): the earliest ~(1 - fraction) of rows by event_time, then the rest.

    The cut is a time, so rows sharing a timestamp stay on one side and the latest
    training event is strictly before the earliest hold-out event.

    >>> t = pd.to_datetime(["2025-01-01T00:00Z"] * 2 + ["2025-01-02T00:00Z"] * 3, utc=True)
    >>> train, holdout = time_split(pd.DataFrame({"event_time": t, "x": range(5)}), 0.3)
    >>> len(train), len(holdout), bool(train.event_time.max() < holdout.event_time.min())
    (2, 3, True)
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    ordered = frame.sort_values("event_time", kind="mergesort").reset_index(drop=True)
    times = ordered["event_time"]
    cut = times.iloc[min(len(ordered) - 1, int(np.floor(len(ordered) * (1 - holdout_fraction))))]
    train, holdout = ordered[times < cut], ordered[times >= cut]
    if train.empty or holdout.empty:
        raise TrainingDataError(
            f"cannot split {len(ordered)} transactions by time into training and hold-out "
            "(too few rows or distinct timestamps); use more history"
        )
    return train.reset_index(drop=True), holdout.reset_index(drop=True)
