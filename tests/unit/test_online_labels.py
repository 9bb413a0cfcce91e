from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.verdicts import loads_or_names_the_problem
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


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("l.jsonl", '{"txn_id":"a","is_fraud":true}\n{"txn_id":"b",\n', r"line 2: not JSON"),
        ("l.jsonl", '{"txn_id":"a","is_fraud":true}\n[1, 2]\n', r"line 2: not a JSON object"),
        ("l.jsonl", '{"is_fraud":true}\n', r"line 1: no txn_id"),
        ("l.jsonl", '{"txn_id":7,"is_fraud":true}\n', r"line 1: no txn_id"),
        ("l.jsonl", '{"txn_id":"a","is_fraud":"maybe"}\n', r"line 1: is_fraud 'maybe' is not true/false or 1/0"),
        ("l.jsonl", '{"txn_id":"a","is_fraud":2}\n', r"line 1: is_fraud 2 is not"),
        ("l.jsonl", '{"txn_id":"a","is_fraud":true}\n{"txn_id":"a","is_fraud":false}\n', r"line 2: .*both"),
        ("l.csv", "txn_id,fraud\na,1\n", r"no column is_fraud"),
        ("l.csv", "txn_id,is_fraud\na,1\nb\n", r"line 3: is_fraud None is not"),
        ("l.csv", "txn_id,is_fraud\na,yes\n", r"line 2: is_fraud 'yes' is not"),
        ("l.csv", "txn_id,is_fraud\n\xe1,1\n", r"cannot read labels file .*UTF-8"),
    ],
)
def test_a_labels_file_that_cannot_be_read_exactly_is_refused_naming_the_line(tmp_path, name, text, error):
    """A label read wrongly moves every metric; a silently skipped or misread one cannot be
    found afterwards (an is_fraud of "yes" used to count as genuine)."""
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if "\xe1" in text else text.encode())
    with pytest.raises(TrainingDataError, match=error):
        read_labels_file(path)


def test_labels_without_a_scenario_column_and_exact_repeats_are_read(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("txn_id,is_fraud\na,1\nb,0\na,TRUE\n\n")
    frame = read_labels_file(path)
    assert frame.to_dict("records") == [
        {"txn_id": "a", "is_fraud": True, "scenario": None},
        {"txn_id": "b", "is_fraud": False, "scenario": None},
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([".jsonl", ".csv"]),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    '{"txn_id":"a","is_fraud":true}',
                    '{"txn_id":"a","is_fraud":false}',
                    '{"txn_id":null,"is_fraud":1}',
                    '{"txn_id":"b","is_fraud":"0","scenario":7}',
                    "txn_id,is_fraud,scenario",
                    "a,1,mule",
                    "a,0,",
                    'b,"1\n",x',
                    "",
                ]
            ),
            st.text(max_size=40),
        ),
        max_size=8,
    ),
)
def test_any_labels_file_is_read_or_refused_with_a_reason(tmp_path, suffix, lines):
    path = tmp_path / f"labels{suffix}"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    frame = loads_or_names_the_problem(lambda: read_labels_file(path), TrainingDataError)
    if frame is not None:
        assert list(frame.columns) == ["txn_id", "is_fraud", "scenario"] and frame["txn_id"].is_unique
        assert frame["is_fraud"].dtype == bool
