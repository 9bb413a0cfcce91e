from __future__ import annotations

import pytest

from txmon.models.errors import TrainingDataError
from txmon.models.online import read_labels_file


def test_reads_jsonl_and_csv_labels(tmp_path):
    jsonl = tmp_path / "l.jsonl"
    jsonl.write_text(
        '{"txn_id":"a","is_fraud":true,"scenario":"card_testing","label_time":"x"}\n'
        '{"txn_id":"b","is_fraud":false,"scenario":null,"label_time":"x"}\n'
    )
    frame = read_labels_file(jsonl)
    assert frame.to_dict("records") == [
        {"txn_id": "a", "is_fraud": True, "scenario": "card_testing"},
        {"txn_id": "b", "is_fraud": False, "scenario": None},
    ]
    csv = tmp_path / "l.csv"
    csv.write_text("txn_id,is_fraud,scenario,label_time\na,True,mule_fan_in,x\nb,False,,x\n")
    assert read_labels_file(csv)["is_fraud"].tolist() == [True, False]


def test_other_formats_are_refused_with_the_fix(tmp_path):
    with pytest.raises(TrainingDataError, match=r"\.jsonl or \.csv"):
        read_labels_file(tmp_path / "labels.parquet")
