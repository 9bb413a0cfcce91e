"""Labelled history: replay files with labels, label-aware features."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from txmon.ingestion.replay import ReplayMappingError, load_labelled
from txmon.models.dataset import labelled_features
from txmon.models.sources import from_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ingestion/samples/card_transactions_sample.csv"
MAPPING = ROOT / "config/replay/card_transactions.yaml"


def test_load_labelled_reads_events_and_labels_in_time_order():
    events, labels = load_labelled(SAMPLE, MAPPING)
    assert len(events) == len(labels) == 196  # the sample's 4 deliberately bad rows are left out
    assert [e.txn_id for e in events] == [lb.txn_id for lb in labels]
    assert all(a.event_time <= b.event_time for a, b in itertools.pairwise(events))
    assert sum(lb.is_fraud for lb in labels) == 6
    assert {lb.scenario for lb in labels if lb.is_fraud} == {"historical"}
    assert {lb.scenario for lb in labels if not lb.is_fraud} == {None}
    assert all(lb.label_time == e.event_time + timedelta(days=1) for e, lb in zip(events, labels))


def test_load_labelled_needs_a_label_section(tmp_path):
    mapping = yaml.safe_load(MAPPING.read_text())
    del mapping["label"]
    path = tmp_path / "nolabel.yaml"
    path.write_text(yaml.safe_dump(mapping))
    with pytest.raises(ReplayMappingError, match="no `label:` section"):
        load_labelled(SAMPLE, path)


def test_fraud_reports_count_only_labels_already_received():
    history = from_file(SAMPLE, MAPPING)
    assert history.source.startswith("replay card_transactions_sample.csv sha256:")
    frame = labelled_features(history.events, history.labels)
    frauds = frame[frame["is_fraud"]]
    expected = [
        int(((frauds["payee_key"] == payee) & (frauds["label_time"] <= t)).sum())
        for payee, t in zip(frame["payee_key"], frame["event_time"])
    ]
    assert frame["payee_fraud_reports"].tolist() == expected


def test_rows_left_out_are_counted_by_reason():
    history = from_file(SAMPLE, MAPPING)
    assert sum(history.rejected.values()) == 4  # 200 data rows, 196 events
    assert all(isinstance(reason, str) and n > 0 for reason, n in history.rejected.items())
