"""Online evaluation: what the running stream decided, joined with ground truth.

The stream writes every decision to ``scored_transactions``; labels arrive later (the
``labels`` table, filled from the labels topic, or a labels file such as the one
``txmon simulate --labels-file`` writes). Joined, they give the same metrics as the
offline evaluation (models/evaluation.py), for the decisions actually taken.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from txmon.infra.cassandra_schema import connect
from txmon.infra.settings import Settings
from txmon.infra.statements import LABELS, SCORED_EVALUATION, SCORED_EVALUATION_COLUMNS
from txmon.models.errors import TrainingDataError

_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


def _fraud_flag(value: object) -> bool | None:
    """is_fraud as written by `txmon simulate --labels-file` (JSON true/false) or a CSV
    (true/false/1/0, any case); None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    return True if text in _TRUE else False if text in _FALSE else None


def read_labels_file(path: Path) -> pd.DataFrame:
    """txn_id, is_fraud, scenario from a .jsonl or .csv labels file (``scenario`` optional).

    A labels file decides every metric of the evaluation, so one that cannot be read
    exactly is refused, naming its first bad line and the fix, rather than read in part:
    a line that is not a JSON object, a missing txn_id, an is_fraud other than
    true/false/1/0, or one txn_id labelled both ways."""
    path = Path(path)
    if path.suffix not in (".jsonl", ".csv"):
        raise TrainingDataError(f"labels file {path} must be .jsonl or .csv (as `txmon simulate --labels-file` writes)")
    try:
        with path.open(encoding="utf-8", newline="") as text:
            if path.suffix == ".jsonl":
                records = [(n, line) for n, line in enumerate(text, start=1) if line.strip()]
                rows = [(n, _json_label(path, n, line)) for n, line in records]
            else:
                reader = csv.DictReader(text)
                missing = {"txn_id", "is_fraud"} - set(reader.fieldnames or [])
                if missing:
                    raise TrainingDataError(
                        f"labels file {path} has no column {', '.join(sorted(missing))}; "
                        "its header needs txn_id,is_fraud[,scenario]"
                    )
                rows = [(reader.line_num, record) for record in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainingDataError(f"cannot read labels file {path}: {exc}; it must be UTF-8 text") from None
    labels: dict[str, tuple[bool, str | None]] = {}
    for line, record in rows:
        txn_id, flag = record.get("txn_id"), _fraud_flag(record.get("is_fraud"))
        scenario = record.get("scenario") or None
        if not isinstance(txn_id, str) or not txn_id.strip():
            raise TrainingDataError(f"labels file {path} line {line}: no txn_id; every label names its transaction")
        if flag is None:
            raise TrainingDataError(
                f"labels file {path} line {line}: is_fraud {record.get('is_fraud')!r} is not true/false or 1/0"
            )
        label = (flag, str(scenario) if scenario is not None else None)
        if labels.setdefault(txn_id, label)[0] != flag:
            raise TrainingDataError(
                f"labels file {path} line {line}: txn_id {txn_id} is labelled both fraud and not fraud; keep one"
            )
    return pd.DataFrame(
        [(txn_id, flag, scenario) for txn_id, (flag, scenario) in labels.items()],
        columns=["txn_id", "is_fraud", "scenario"],
    ).astype({"txn_id": object, "is_fraud": bool, "scenario": object})


def _json_label(path: Path, line: int, text: str) -> dict:
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise TrainingDataError(f"labels file {path} line {line}: not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise TrainingDataError(f"labels file {path} line {line}: not a JSON object with txn_id and is_fraud")
    return record


def _fetch(session, query: str, columns, params=()) -> pd.DataFrame:
    # The Cassandra driver only when labels are read from Cassandra.
    from cassandra.query import SimpleStatement

    rows = session.execute(SimpleStatement(query, fetch_size=5000), params)
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))


def online_frame(settings: Settings, labels_file: Path | None = None) -> pd.DataFrame:
    """Scored transactions with ``is_fraud`` and ``scenario``.

    With a labels file, exactly the transactions it labels are evaluated (a simulator
    labels file covers every transaction); without one, every scored transaction is,
    with the fraud labels received so far (unlabelled counts as genuine).
    """
    cluster, session = connect(settings, settings.cassandra.keyspace)
    try:
        scored = _fetch(session, SCORED_EVALUATION, SCORED_EVALUATION_COLUMNS)
        if labels_file is not None:
            labels = read_labels_file(labels_file)
            frame = labels.merge(scored, on="txn_id", how="inner")
        else:
            labels = _fetch(session, LABELS, ("txn_id", "is_fraud", "scenario"))
            frame = scored.merge(labels, on="txn_id", how="left")
            frame["is_fraud"] = frame["is_fraud"].astype("boolean").fillna(False).astype(bool)
    finally:
        cluster.shutdown()
    frame["scenario"] = frame["scenario"].where(frame["is_fraud"], None)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame.rename(columns={"anomaly_score": "anomaly"})
