"""Online evaluation: what the running stream decided, joined with ground truth.

The stream writes every decision to ``scored_transactions``; labels arrive later (the
``labels`` table, filled from the labels topic, or a labels file such as the one
``txmon simulate --labels-file`` writes). Joined, they give the same metrics as the
offline evaluation (models/evaluation.py), for the decisions actually taken.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from txmon.infra.cassandra_schema import connect
from txmon.infra.settings import Settings
from txmon.infra.statements import LABELS, SCORED_EVALUATION, SCORED_EVALUATION_COLUMNS
from txmon.models.errors import TrainingDataError


def read_labels_file(path: Path) -> pd.DataFrame:
    """txn_id, is_fraud, scenario from a .jsonl or .csv labels file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise TrainingDataError(f"labels file {path} must be .jsonl or .csv (as `txmon simulate --labels-file` writes)")
    frame["is_fraud"] = frame["is_fraud"].astype(str).str.lower().isin(["true", "1"])
    return frame[["txn_id", "is_fraud", "scenario"]]


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
