"""Labelled history: replay files with labels, label-aware features."""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from txmon.ingestion.replay import RejectedRow, ReplayMappingError, load_labelled
from txmon.models.dataset import labelled_features
from txmon.models.sources import from_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ingestion/samples/card_transactions_sample.csv"
MAPPING = ROOT / "config/replay/card_transactions.yaml"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


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
    frame = history.features()
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


def _messy_file(path: Path) -> Path:
    """The sample card file with what a real export has: a fraud whose amount cannot be read,
    a line that does not split into the header's cells, an exact repeat, a repeated txn_id
    with another amount (labelled fraud) and one an hour before the row it repeats."""
    header, *data = list(csv.reader(SAMPLE.open()))
    amt, when, fraud = header.index("amt"), header.index("trans_date_trans_time"), header.index("is_fraud")
    bad = list(data[5])
    bad[amt], bad[fraud] = "not money", "1"
    other = list(data[7])
    other[amt], other[fraud] = "1.00", "1"
    earlier = list(data[9])
    earlier[when] = (datetime.fromisoformat(data[9][when]) - timedelta(hours=1)).isoformat(sep=" ")
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerows([header, *data[:50], bad, *data[50:120]])
        out.write("a,b,c\n")
        writer.writerows([*data[120:], data[3], other, earlier])
    return path


@pytest.mark.parametrize("messy", [False, True], ids=["sample", "repeats-malformed-rejects"])
def test_a_file_read_in_chunks_gives_training_the_whole_file_readers_frame(tmp_path, messy):
    """from_file reads a chunk at a time into typed columns and features them chunk by chunk
    (the backtest's reader): the rows it keeps and rejects, the rejects file, the label times
    and the feature frame training takes are those of the whole-file reader (load_labelled +
    labelled_features), row for row in the same order."""
    path = _messy_file(tmp_path / "messy.csv") if messy else SAMPLE
    rejects: list[RejectedRow] = []
    events, labels = load_labelled(path, MAPPING, now=NOW, on_reject=rejects.append, rejects_path=tmp_path / "a.csv")
    expected = labelled_features(events, labels)
    history = from_file(path, MAPPING, tmp_path / "b.csv", chunk_rows=64, now=NOW)
    assert (history.size, history.frauds) == (len(events), sum(lb.is_fraud for lb in labels))
    assert history.rejected == dict(Counter(r.reason for r in rejects))
    assert history.rejected_fraud == sum(r.is_fraud is True for r in rejects)
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "a.csv").read_text()
    got = history.features(chunk_rows=50)
    assert history.transactions is None  # handed over: the file's columns are held once
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    if messy:
        assert {"malformed_row", "conflicting_duplicate", "unparsable_value"} <= set(history.rejected)
        assert history.rejected["conflicting_duplicate"] == 2 and history.rejected_fraud == 2
        assert len(got) == len(from_file(SAMPLE, MAPPING, now=NOW).features())  # the exact repeat dropped


def test_a_file_no_row_of_which_maps_names_the_first_rows_problems_and_the_rejects_file(tmp_path: Path) -> None:
    # A plain mapping of a file whose ids are short integers: every row breaks the contract
    # the same way, and the error says how without a second command.
    from txmon.models.errors import TrainingDataError
    from txmon.models.sources import read_file

    data = tmp_path / "cards.csv"
    data.write_text(
        "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_FRAUD\n"
        "0,2018-04-01 00:00:31,596,3156,57.16,0\n"
        "1,2018-04-01 00:02:10,4961,3412,81.51,1\n"
    )
    mapping = tmp_path / "plain.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {
                "fields": {
                    "txn_id": {"column": "TRANSACTION_ID"},
                    "event_time": {"column": "TX_DATETIME", "timezone": "Asia/Kolkata"},
                    "channel": {"value": "CARD_POS"},
                    "txn_type": {"value": "CARD_PAYMENT"},
                    "payer.account_number": {"column": "CUSTOMER_ID"},
                    "payee.account_number": {"column": "TERMINAL_ID"},
                    "amount_paise": {"column": "TX_AMOUNT", "unit": "rupees"},
                    "status": {"value": "SUCCESS"},
                },
                "label": {"is_fraud": {"column": "TX_FRAUD"}},
            }
        )
    )
    rejects = tmp_path / "rejects.csv"
    with pytest.raises(TrainingDataError) as caught:
        read_file(data, mapping, rejects_path=rejects)
    message = str(caught.value)
    assert message.startswith("no row of cards.csv became a transaction (2 rejected; row 1: txn_id: '0' is not 8-64")
    assert "payer.account_number: '596' is not 9-18 digits" in message and "left-pad" in message
    assert message.endswith(f"the rejects file {rejects} lists every row")
    assert len(rejects.read_text().splitlines()) == 3  # header and both rows
