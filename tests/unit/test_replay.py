"""Replay mode: mapping validation, row mapping, rejects, ordering, pacing, labels.

No services: a small in-memory producer records what would have been sent.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import types
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from txmon.ingestion.events import IST, TransactionEvent, to_json
from txmon.ingestion.producer import ProduceSummary
from txmon.ingestion.replay import (
    REJECT_REASONS,
    REPLAY_TXN_NAMESPACE,
    RejectedRow,
    ReplayMappingError,
    ReplayPacer,
    due_offset,
    load_labelled,
    load_mapping,
    parse_mapping,
    read_source,
    replay_file,
    source_chunks,
)
from txmon.ingestion.simulator import Label

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ingestion" / "samples" / "card_transactions_sample.csv"
CARD_MAPPING = ROOT / "config" / "replay" / "card_transactions.yaml"
PAYSIM_MAPPING = ROOT / "config" / "replay" / "paysim.yaml"
CARD_SIMULATED_MAPPING = ROOT / "config" / "replay" / "card_simulated.yaml"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
SAMPLE_REJECTS = {17: "non_positive_amount", 58: "unparsable_value", 101: "missing_field", 150: "fractional_paise"}


class FakeProducer:
    """Records what TransactionProducer would have sent (unit tests only)."""

    def __init__(self) -> None:
        self.events: list[TransactionEvent] = []
        self.labels: list[tuple[bytes, bytes]] = []
        self.flushes = 0
        self.summary = ProduceSummary()

    def send_event(self, event: TransactionEvent) -> None:
        self.events.append(event)

    def send_raw(self, key: bytes | None, value: bytes, topic: str | None = None) -> None:
        raise AssertionError("replay sends validated events only")

    def send_label(self, key: bytes, value: bytes) -> None:
        self.labels.append((key, value))
        self.summary.labels_sent += 1

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


class FakeClock:
    """Monotonic clock that moves only when slept on (or told to)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        self.now += seconds


def _mapping(**fields: object) -> dict:
    """A small valid mapping over columns id, ts (ISO), acct, amt; overrides by target."""
    base: dict[str, object] = {
        "txn_id": {"column": "id"},
        "event_time": {"column": "ts"},
        "channel": {"value": "UPI"},
        "txn_type": {"value": "P2P"},
        "payer.account_number": {"column": "acct"},
        "payee.vpa": {"value": "shop@okaxis"},
        "amount_paise": {"column": "amt", "unit": "rupees"},
        "device_id": {"value": "dev-1"},
        "status": {"value": "SUCCESS"},
    }
    base.update(fields)
    return {"fields": {k: v for k, v in base.items() if v is not None}}


def _csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _rows(rows: list[tuple[str, str, str]], path: Path) -> Path:
    """CSV with columns id, ts, acct, amt from (ts, acct, amt); ids txn-00000001..."""
    lines = [f"txn-{i:08d},{ts},{acct},{amt}" for i, (ts, acct, amt) in enumerate(rows, start=1)]
    return _csv(path, "id,ts,acct,amt", *lines)


def _read_rejects(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ mapping file


def test_shipped_mappings_load() -> None:
    card = load_mapping(CARD_MAPPING)
    paysim = load_mapping(PAYSIM_MAPPING)
    assert "trans_num" in card.columns() and card.label is not None
    assert paysim.columns() == ["step", "type", "nameOrig", "nameDest", "amount", "isFraud"]
    assert "txn_id" not in paysim.fields  # generated


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"payer.acount_number": {"column": "acct"}, "payer.account_number": None},
            ["fields.payer.acount_number", "did you mean payer.account_number?", "valid targets"],
        ),
        ({"device_id": {"col": "dev"}}, ["fields.device_id", "got keys col", "column: NAME", "value: CONSTANT"]),
        ({"device_id": {"column": "dev", "value": "x"}}, ["fields.device_id", "exactly one"]),
        (
            {"amount_paise": {"column": "amt", "unit": "dollars"}},
            ["fields.amount_paise.unit", "rupees or paise", "dollars"],
        ),
        ({"amount_paise": {"column": "amt"}}, ["fields.amount_paise", "unit: rupees or unit: paise"]),
        (
            {"device_id": {"column": "dev", "unit": "hours"}},
            ["fields.device_id.unit", "only amount_paise and event_time"],
        ),
        ({"event_time": {"column": "ts", "unit": "fortnights"}}, ["fields.event_time.unit", "fortnights"]),
        ({"event_time": {"column": "ts", "format": "%d/%m/%Y %H:%M"}}, ["fields.event_time", "add timezone"]),
        ({"event_time": {"column": "ts", "timezone": "Asia/Calcutta-ish"}}, ["fields.event_time.timezone", "IANA"]),
        ({"channel": {"value": "CARD"}}, ["fields.channel", "CARD not allowed", "CARD_POS"]),
        ({"mcc": {"column": "cat", "map": {"food": "58120"}}}, ["fields.mcc", "'58120'", "FIELD_PATTERNS['mcc']"]),
        ({"device_id": {"column": "dev", "pattern": "(("}}, ["fields.device_id.pattern", "not a valid regex"]),
        ({"device_id": {"column": "dev", "template": "{name}"}}, ["fields.device_id.template", "{value} or {slug}"]),
        ({"device_id": {"value": "x", "map": {"a": "b"}}}, ["fields.device_id", "a constant takes no map"]),
        ({"device_id": {"column": "dev", "colour": "red"}}, ["fields.device_id.colour", "unknown key", "allowed here"]),
        ({"status": None}, ["fields: missing status"]),
        ({"payee.vpa": None}, ["missing payee.account_number or payee.vpa"]),
        ({"geo.city": {"column": "city"}}, ["missing geo.lat, geo.lon"]),
        ({"schema_version": {"value": 1}}, ["fields.schema_version", "written by txmon"]),
    ],
)
def test_mapping_errors_name_the_key(change: dict, expected: list[str]) -> None:
    with pytest.raises(ReplayMappingError) as info:
        parse_mapping(_mapping(**change), source="m.yaml")
    message = str(info.value)
    assert message.startswith("m.yaml: ")
    for part in expected:
        assert part in message


def test_mapping_top_level_and_label_errors() -> None:
    data = _mapping()
    with pytest.raises(ReplayMappingError, match=r"sorce: unknown key; allowed here: source, fields, label"):
        parse_mapping({**data, "sorce": {}})
    with pytest.raises(ReplayMappingError, match=r"label.isfraud: unknown key"):
        parse_mapping({**data, "label": {"isfraud": {"column": "f"}}})
    with pytest.raises(ReplayMappingError, match=r"label.delay: delay must be >= 0"):
        parse_mapping({**data, "label": {"is_fraud": {"column": "f"}, "delay": -1}})


def test_load_mapping_reports_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("fields: [unclosed\n", encoding="utf-8")
    with pytest.raises(ReplayMappingError, match="not valid YAML"):
        load_mapping(bad)
    with pytest.raises(ReplayMappingError, match="cannot read mapping"):
        load_mapping(tmp_path / "absent.yaml")


def test_a_csv_in_another_encoding_is_read_with_source_encoding(tmp_path: Path) -> None:
    """Older bank exports are often cp1252 / latin-1: without `source.encoding` the file is a
    mapping error that says how to read it; with it the text arrives as written."""
    path = tmp_path / "latin.csv"
    path.write_bytes("id,ts,acct,amt,city\ntxn-00000001,2024-01-01T00:00:00Z,123456789,1,Bogotá\n".encode("latin-1"))
    data = _mapping()
    with pytest.raises(ReplayMappingError, match=r"as utf-8 text: byte b'\\xe1'.*set source.encoding"):
        replay_file(path, parse_mapping(data), now=NOW)
    latin = parse_mapping({**data, "source": {"encoding": "latin-1"}})
    assert read_source(path, latin)["city"].tolist() == ["Bogotá"]
    (chunk,) = source_chunks(path, latin, chunk_rows=10)
    assert chunk["city"].tolist() == ["Bogotá"]
    producer = FakeProducer()
    replay_file(path, latin, producer=producer, now=NOW)
    assert [e.txn_id for e in producer.events] == ["txn-00000001"]
    with pytest.raises(ReplayMappingError, match=r"source.encoding: 'latin-9000' is not a text encoding"):
        parse_mapping({**data, "source": {"encoding": "latin-9000"}})


def test_missing_source_column_is_a_mapping_error(tmp_path: Path) -> None:
    source = _csv(tmp_path / "t.csv", "id,ts,acct,amount", "txn-00000001,2024-01-01T00:00:00Z,123456789,1")
    with pytest.raises(ReplayMappingError, match=r"no column 'amt' named in the mapping"):
        replay_file(source, parse_mapping(_mapping()), now=NOW)


# ------------------------------------------------------------------- row mapping


def test_rupees_to_paise_is_exact(tmp_path: Path) -> None:
    amounts = ["10.10", "0.07", "0.1", "5", '"1,234.56"', "99999.99", "12.345", "abc", "-0.50", "0.00"]
    source = _rows([("2024-01-01T10:00:00+05:30", "123456789", a) for a in amounts], tmp_path / "a.csv")
    producer = FakeProducer()
    summary = replay_file(
        source, parse_mapping(_mapping()), producer=producer, rejects_path=tmp_path / "rejects.csv", now=NOW
    )
    assert [e.amount_paise for e in producer.events] == [1010, 7, 10, 500, 123456, 9999999, 0]
    rejects = {int(r["row_number"]): r["reason"] for r in _read_rejects(tmp_path / "rejects.csv")}
    assert rejects == {7: "fractional_paise", 8: "unparsable_value", 9: "non_positive_amount"}
    assert summary.rejected_by_reason == {"fractional_paise": 1, "unparsable_value": 1, "non_positive_amount": 1}
    assert set(summary.rejected_by_reason) <= set(REJECT_REASONS)


def test_amount_in_paise_must_be_whole(tmp_path: Path) -> None:
    source = _rows([("2024-01-01T00:00:00Z", "123456789", a) for a in ["1050", "10.5"]], tmp_path / "p.csv")
    producer = FakeProducer()
    summary = replay_file(
        source, parse_mapping(_mapping(amount_paise={"column": "amt", "unit": "paise"})), producer=producer, now=NOW
    )
    assert [e.amount_paise for e in producer.events] == [1050]
    assert summary.rejected_by_reason == {"fractional_paise": 1}


def test_sample_rejects_broken_rows_with_reason_and_row_number(tmp_path: Path) -> None:
    producer = FakeProducer()
    rejects = tmp_path / "rejects.csv"
    summary = replay_file(SAMPLE, CARD_MAPPING, producer=producer, rejects_path=rejects, now=NOW)

    rows = _read_rejects(rejects)
    assert {int(r["row_number"]): r["reason"] for r in rows} == SAMPLE_REJECTS
    assert list(rows[0]) == ["row_number", "reason", "detail", "is_fraud", "scenario", "raw"]
    assert {r["is_fraud"] for r in rows} == {"0"}  # the mapping's label, read for rejected rows too
    by_row = {int(r["row_number"]): r for r in rows}
    assert json.loads(by_row[17]["raw"])["amt"] == "-250.00"
    assert json.loads(by_row[101]["raw"])["cc_num"] == ""
    assert "12.345" in by_row[150]["detail"]
    assert "2024-06-31 25:10:00" in by_row[58]["detail"]

    assert summary.rows_read == 200
    assert summary.events_sent == summary.events_valid == len(producer.events) == 196
    assert summary.rejected_by_reason == dict.fromkeys(SAMPLE_REJECTS.values(), 1)
    assert summary.reject_examples["fractional_paise"].startswith("row 150: ")
    assert producer.flushes == 1
    assert "read 200 rows, sent 196 events, 4 rejected" in summary.line()


def test_card_mapping_transforms(tmp_path: Path) -> None:
    producer = FakeProducer()
    replay_file(SAMPLE, CARD_MAPPING, producer=producer, now=NOW)
    source = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False).set_index("trans_num")
    for event in producer.events:
        row = source.loc[event.txn_id]
        assert event.channel == ("CARD_ECOM" if row.category.endswith("_net") else "CARD_POS")
        assert row.cc_num.endswith(event.payer.account_number)
        assert len(event.payer.account_number) == min(len(row.cc_num), 18)
        local = datetime.strptime(row.trans_date_trans_time, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
        assert event.event_time == local
        assert event.geo is not None and event.geo.lat == float(row.merch_lat)
    merchant = next(e for e in producer.events if source.loc[e.txn_id].merchant == "fraud_Rippin, Kub and Mann")
    assert merchant.payee.vpa == "rippin.kub.and.mann@okaxis"
    assert any(len(source.loc[e.txn_id].cc_num) == 19 for e in producer.events)


def test_parquet_source_gives_the_same_events(tmp_path: Path) -> None:
    frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    frame["amt"] = frame["amt"].astype(float)  # typed columns, as a bank's export would have
    frame["cc_num"] = pd.array([int(v) if v else None for v in frame["cc_num"]], dtype="Int64")
    frame["is_fraud"] = frame["is_fraud"].astype(int)
    frame[["merch_lat", "merch_long"]] = frame[["merch_lat", "merch_long"]].astype(float)
    parquet = tmp_path / "card_transactions_sample.parquet"
    frame.to_parquet(parquet, index=False)

    from_csv, from_parquet = FakeProducer(), FakeProducer()
    replay_file(SAMPLE, CARD_MAPPING, producer=from_csv, now=NOW)
    summary = replay_file(parquet, CARD_MAPPING, producer=from_parquet, now=NOW)
    assert [to_json(e) for e in from_parquet.events] == [to_json(e) for e in from_csv.events]
    assert summary.rejected_by_reason == dict.fromkeys(SAMPLE_REJECTS.values(), 1)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_file_read_in_chunks_is_the_whole_file(tmp_path: Path, suffix: str) -> None:
    """Backtest reads a file a chunk at a time (a history larger than memory): the chunks,
    put together, are the file as read whole, cells and types alike."""
    mapping = load_mapping(CARD_MAPPING)
    path = SAMPLE
    if suffix == "parquet":
        frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
        frame["amt"] = frame["amt"].astype(float)
        path = tmp_path / "cards.parquet"
        frame.to_parquet(path, index=False, row_group_size=37)  # row groups unlike the chunks
    whole = read_source(path, mapping)
    chunks = list(source_chunks(path, mapping, chunk_rows=64))
    assert [len(c) for c in chunks][:-1] == [64] * (len(chunks) - 1) and sum(map(len, chunks)) == len(whole)
    assert [int(c.index[0]) for c in chunks] == list(range(0, len(whole), 64))  # positions in the file
    pd.testing.assert_frame_equal(pd.concat(chunks), whole)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_file_without_rows_or_with_a_missing_column_reads_as_such_in_chunks(tmp_path: Path, suffix: str) -> None:
    mapping = load_mapping(CARD_MAPPING)
    header = pd.read_csv(SAMPLE, dtype=str, nrows=0)
    path = tmp_path / f"empty.{suffix}"
    if suffix == "csv":
        header.to_csv(path, index=False)
    else:
        header.to_parquet(path, index=False)
    (chunk,) = source_chunks(path, mapping, chunk_rows=10)
    assert chunk.empty and list(chunk.columns) == list(header.columns)
    narrow = tmp_path / f"narrow.{suffix}"
    if suffix == "csv":
        header.drop(columns="amt").to_csv(narrow, index=False)
    else:
        header.drop(columns="amt").to_parquet(narrow, index=False)
    with pytest.raises(ReplayMappingError, match=r"no column 'amt' named in the mapping"):
        list(source_chunks(narrow, mapping, chunk_rows=10))


def test_a_parquet_file_keeps_every_column_it_holds_whatever_pandas_wrote(tmp_path: Path) -> None:
    """pandas writes a frame's index into the file (a named index as its column, marked in
    its metadata to come back as the index): the mapping must still find that column, and
    row numbers stay positions. Repeated names get CSV's ``.1``, so the first one is read."""
    frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    clean, indexed = FakeProducer(), FakeProducer()
    replay_file(SAMPLE, CARD_MAPPING, producer=clean, now=NOW)
    named = tmp_path / "named.parquet"
    frame.set_index("trans_num").to_parquet(named)  # the mapping's txn_id column, as the index
    summary = replay_file(named, CARD_MAPPING, producer=indexed, now=NOW, rejects_path=tmp_path / "r.csv")
    assert [to_json(e) for e in indexed.events] == [to_json(e) for e in clean.events]
    assert {int(r["row_number"]) for r in _read_rejects(tmp_path / "r.csv")} == set(SAMPLE_REJECTS)
    assert summary.rows_read == 200
    text_index = tmp_path / "text_index.parquet"
    frame.set_axis([f"r{i}" for i in range(len(frame))]).to_parquet(text_index)
    for chunk_rows in (None, 64):
        (first, *_) = source_chunks(text_index, load_mapping(CARD_MAPPING), chunk_rows)
        assert first.index[0] == 0 and "__index_level_0__" in first.columns
    repeated = tmp_path / "repeated.parquet"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.append_column("amt", pa.array(["1.00"] * len(frame))), repeated)
    whole = read_source(repeated, load_mapping(CARD_MAPPING))
    assert list(whole.columns)[-1] == "amt.1" and whole["amt"].tolist() == frame["amt"].tolist()
    pd.testing.assert_frame_equal(pd.concat(source_chunks(repeated, load_mapping(CARD_MAPPING), 50)), whole)


def _with_malformed(path: Path, bad: dict[int, str]) -> Path:
    """The sample file with ``bad[i]`` written as a line before its data row ``i`` (from 0)."""
    header, *data = SAMPLE.read_text().splitlines()
    lines = [header]
    for i, line in enumerate(data):
        if i in bad:
            lines.append(bad[i])
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_malformed_csv_record_is_one_rejected_row_and_the_others_keep_their_cells(tmp_path: Path) -> None:
    """An unquoted comma in a merchant's name (one cell too many), a line cut off (too few),
    anywhere, including the first data row and the first row of a chunk: each is one
    reject with its row number and lines; every other row is read with its own cells
    (pandas' reader shifted the first row's cells into the index and dropped a chunk's
    first row's extra cell, silently, and stopped the whole read anywhere else)."""
    _header, *data = SAMPLE.read_text().splitlines()
    extra = data[10].replace("fraud_", "fraud_Acme, ", 1)
    assert extra.count(",") == data[10].count(",") + 1
    bad = {0: extra, 50: extra, 120: data[3][:40], 199: "x,y"}
    path = _with_malformed(tmp_path / "broken.csv", bad)
    mapping = load_mapping(CARD_MAPPING)
    clean = read_source(SAMPLE, mapping)
    for chunk_rows in (None, 50, 51, 7):
        malformed: list[RejectedRow] = []
        chunks = list(source_chunks(path, mapping, chunk_rows, on_malformed=malformed.append))
        read = pd.concat(chunks)
        # the bad records keep their positions: row i of the sample is at i + (bad records before it)
        expected_at = [i + sum(j <= i for j in bad) for i in range(len(data))]
        assert read.index.tolist() == expected_at
        pd.testing.assert_frame_equal(read.reset_index(drop=True), clean)
        assert [r.row_number for r in malformed] == [i + k + 1 for k, i in enumerate(sorted(bad))]
        assert {r.reason for r in malformed} == {"malformed_row"}
    first, *_, cut, last = malformed
    assert first.detail.startswith("line 2: 23 cells where the header has 22")
    assert "quote cells that hold ','" in first.detail
    assert cut.cells == next(csv.reader([data[3][:40]])) and "where the header has 22" in cut.detail
    assert last.cells == ["x", "y"] and last.row_number == 199 + 3 + 1
    with pytest.raises(ReplayMappingError, match=r"broken\.csv row 1: line 2: 23 cells where the header has 22"):
        read_source(path, mapping)  # strict without a place for the rejects


def test_replay_and_training_reject_a_malformed_record_and_go_on(tmp_path: Path) -> None:
    _header, *data = SAMPLE.read_text().splitlines()
    path = _with_malformed(tmp_path / "broken.csv", {30: data[30].replace(",", ";,", 1) + ",extra"})
    producer, clean = FakeProducer(), FakeProducer()
    replay_file(SAMPLE, CARD_MAPPING, producer=clean, now=NOW)
    rejects = tmp_path / "rejects.csv"
    summary = replay_file(path, CARD_MAPPING, producer=producer, now=NOW, rejects_path=rejects)
    assert [to_json(e) for e in producer.events] == [to_json(e) for e in clean.events]
    assert summary.rows_read == 201 and summary.rejected_by_reason["malformed_row"] == 1
    by_row = {int(r["row_number"]): r for r in _read_rejects(rejects)}
    assert by_row[31]["reason"] == "malformed_row" and by_row[31]["is_fraud"] == ""
    assert json.loads(by_row[31]["raw"])[-1] == "extra"  # the record's cells, as a list: no columns to name
    # the sample's own broken rows after it keep their row numbers, one later
    assert {n: by_row[n]["reason"] for n in by_row if n != 31} == {
        n + (n > 30): reason for n, reason in SAMPLE_REJECTS.items()
    }
    events, _ = load_labelled(path, CARD_MAPPING, now=NOW, rejects_path=tmp_path / "training_rejects.csv")
    assert len(events) == len(clean.events)
    assert (tmp_path / "training_rejects.csv").read_text() == rejects.read_text()


def test_an_unclosed_quote_takes_the_rest_of_the_file_into_one_rejected_row(tmp_path: Path) -> None:
    header, *lines = SAMPLE.read_text().splitlines()
    data = [line for line in lines if '"' not in line]  # no later quote to close it
    path = tmp_path / "open_quote.csv"
    path.write_text("\n".join([header, *data[:9], '"' + data[9], *data[10:]]) + "\n")
    malformed: list[RejectedRow] = []
    (frame,) = source_chunks(path, load_mapping(CARD_MAPPING), None, on_malformed=malformed.append)
    assert len(frame) == 9 and [r.row_number for r in malformed] == [10]
    assert malformed[0].detail.startswith(f"lines 11-{len(data) + 1}: ")


def test_blank_lines_a_byte_order_mark_and_repeated_names_read_as_pandas_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes('\ufeff\nid,ts,acct,amt,id,\r\n\r\n1,"2\n3",x,,,\r\n\n4,,,,,z\r\n'.encode())
    mapping = parse_mapping(_mapping())
    (frame,) = source_chunks(path, mapping, 10)
    expected = pd.read_csv(path, dtype=pd.ArrowDtype(pa.string()), keep_default_na=False, na_values=[])
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected)
    assert list(frame.columns) == ["id", "ts", "acct", "amt", "id.1", "Unnamed: 5"] and frame.index.tolist() == [0, 1]
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(ReplayMappingError, match=r"empty\.csv is empty: a CSV needs a header row"):
        list(source_chunks(empty, mapping, 10))


def test_generated_txn_ids_are_deterministic(tmp_path: Path) -> None:
    source = _rows([("2024-01-01T00:00:00Z", "123456789", "1")] * 2, tmp_path / "bank.csv")
    mapping = parse_mapping(_mapping(txn_id=None))
    first, second = FakeProducer(), FakeProducer()
    replay_file(source, mapping, producer=first, now=NOW)
    replay_file(source, mapping, producer=second, now=NOW)
    ids = [e.txn_id for e in first.events]
    assert ids == [str(uuid.uuid5(REPLAY_TXN_NAMESPACE, f"bank.csv:{n}")) for n in (1, 2)]
    assert ids == [e.txn_id for e in second.events]


def test_map_default_and_null_default(tmp_path: Path) -> None:
    source = _csv(
        tmp_path / "m.csv",
        "id,ts,acct,amt,kind",
        "txn-00000001,2024-01-01T00:00:00Z,123456789,1,shop",
        "txn-00000002,2024-01-01T00:00:01Z,123456789,1,friend",
        "txn-00000003,2024-01-01T00:00:02Z,123456789,1,alien",
    )
    mapping = _mapping(
        txn_type={"column": "kind", "map": {"shop": "P2M", "friend": "P2P"}},
        mcc={"column": "kind", "map": {"shop": "5411"}, "default": None},
    )
    producer = FakeProducer()
    summary = replay_file(source, parse_mapping(mapping), producer=producer, rejects_path=tmp_path / "r.csv", now=NOW)
    assert [(e.txn_type, e.mcc) for e in producer.events] == [("P2M", "5411"), ("P2P", None)]
    (reject,) = _read_rejects(tmp_path / "r.csv")
    assert (reject["row_number"], reject["reason"]) == ("3", "unmapped_value")
    assert "'alien' is not in the map" in reject["detail"]
    assert summary.rejected_by_reason == {"unmapped_value": 1}


def test_naive_iso_times_without_timezone_are_rejected(tmp_path: Path) -> None:
    source = _rows([("2024-01-01T10:00:00", "123456789", "1")], tmp_path / "n.csv")
    summary = replay_file(source, parse_mapping(_mapping()), now=NOW)
    assert summary.rejected_by_reason == {"invalid_field": 1}
    assert "no UTC offset" in summary.reject_examples["invalid_field"]


# ------------------------------------------------------------ ordering and time


def test_events_are_sent_in_event_time_order() -> None:
    producer = FakeProducer()
    replay_file(SAMPLE, CARD_MAPPING, producer=producer, now=NOW)
    file_order = pd.read_csv(SAMPLE, dtype=str)["trans_date_trans_time"].tolist()
    assert file_order != sorted(file_order)  # the sample is grouped by card, not by time
    times = [e.event_time for e in producer.events]
    assert times == sorted(times)


def test_ties_keep_file_order(tmp_path: Path) -> None:
    source = _rows(
        [
            ("2024-01-01T00:00:05Z", "111111111", "1"),
            ("2024-01-01T00:00:01Z", "222222222", "1"),
            ("2024-01-01T00:00:05Z", "333333333", "1"),
            ("2024-01-01T05:30:01+05:30", "444444444", "1"),
        ],
        tmp_path / "ties.csv",
    )
    producer = FakeProducer()
    replay_file(source, parse_mapping(_mapping()), producer=producer, now=NOW)
    assert [e.payer.account_number for e in producer.events] == ["222222222", "444444444", "111111111", "333333333"]


def test_shift_to_puts_the_last_event_at_the_instant() -> None:
    original, shifted = FakeProducer(), FakeProducer()
    replay_file(SAMPLE, CARD_MAPPING, producer=original, now=NOW)
    target = datetime(2024, 12, 31, 12, 0, tzinfo=IST)
    summary = replay_file(SAMPLE, CARD_MAPPING, producer=shifted, shift_to=target, now=NOW)
    assert shifted.events[-1].event_time == target
    assert summary.last_event_time == target
    delta = target - original.events[-1].event_time
    assert [e.event_time for e in shifted.events] == [e.event_time + delta for e in original.events]
    assert [e.txn_id for e in shifted.events] == [e.txn_id for e in original.events]


def test_future_events_are_rejected_after_shifting(tmp_path: Path) -> None:
    source = _rows(
        [
            ("2024-01-01T00:00:00Z", "123456789", "1"),
            ("2024-01-01T00:30:00Z", "123456789", "1"),
            ("2024-01-01T01:00:00Z", "123456789", "1"),
        ],
        tmp_path / "f.csv",
    )
    producer = FakeProducer()
    summary = replay_file(
        source,
        parse_mapping(_mapping()),
        producer=producer,
        shift_to=NOW + timedelta(hours=1),
        rejects_path=tmp_path / "r.csv",
        now=NOW,
    )
    assert [e.event_time for e in producer.events] == [NOW]
    assert [(r["row_number"], r["reason"]) for r in _read_rejects(tmp_path / "r.csv")] == [
        ("2", "future_timestamp"),
        ("3", "future_timestamp"),
    ]
    assert summary.rejected_by_reason == {"future_timestamp": 2}


def test_future_events_are_rejected_without_shift(tmp_path: Path) -> None:
    source = _rows(
        [("2024-12-31T23:59:00Z", "123456789", "1"), ("2025-01-01T00:10:00Z", "123456789", "1")], tmp_path / "f.csv"
    )
    summary = replay_file(source, parse_mapping(_mapping()), producer=FakeProducer(), now=NOW)
    assert (summary.events_sent, summary.rejected_by_reason) == (1, {"future_timestamp": 1})


def test_naive_shift_to_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        replay_file(SAMPLE, CARD_MAPPING, shift_to=datetime(2025, 1, 1), now=NOW)


# ------------------------------------------------------------------------ pacing


def test_due_offset() -> None:
    assert due_offset(0, 0.0, speedup=10) == 0.0
    assert due_offset(5, 30.0, speedup=10) == 3.0
    assert due_offset(5, 30.0, rate=2) == 2.5
    assert due_offset(5, 30.0) == 0.0


def test_speedup_pacer_sleeps_until_each_event_is_due() -> None:
    clock = FakeClock()
    pacer = ReplayPacer(speedup=60, clock=clock, sleep=clock.sleep)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    for index, offset in enumerate([0, 60, 60, 180, 600]):  # seconds of event time
        pacer.wait(index, t0 + timedelta(seconds=offset))
    assert clock.sleeps == [1.0, 2.0, 7.0]
    assert clock.now == 1010.0  # 600 s of event time in 10 s at 60x


def test_pacer_does_not_sleep_when_behind() -> None:
    clock = FakeClock()
    pacer = ReplayPacer(speedup=10, clock=clock, sleep=clock.sleep)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    pacer.wait(0, t0)
    clock.now += 5.0  # a slow broker: 5 s spent sending the first event
    pacer.wait(1, t0 + timedelta(seconds=20))  # due at +2 s: already late
    pacer.wait(2, t0 + timedelta(seconds=80))  # due at +8 s: 3 s ahead
    assert clock.sleeps == [3.0]


def test_rate_pacer_and_unpaced() -> None:
    clock = FakeClock()
    pacer = ReplayPacer(rate=4, clock=clock, sleep=clock.sleep)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    for index in range(4):
        pacer.wait(index, t0)
    assert clock.sleeps == [0.25, 0.25, 0.25]
    unpaced = ReplayPacer(clock=clock, sleep=clock.sleep)
    unpaced.wait(0, t0)
    unpaced.wait(1, t0 + timedelta(days=1))
    assert clock.sleeps == [0.25, 0.25, 0.25]
    with pytest.raises(ValueError, match="not both"):
        ReplayPacer(speedup=2, rate=2)
    with pytest.raises(ValueError, match="must be > 0"):
        ReplayPacer(speedup=0.0)


def test_replay_with_speedup_spans_event_time_over_k(tmp_path: Path) -> None:
    clock = FakeClock()
    producer = FakeProducer()
    summary = replay_file(
        SAMPLE, CARD_MAPPING, producer=producer, speedup=3600, now=NOW, clock=clock, sleep=clock.sleep
    )
    span = (producer.events[-1].event_time - producer.events[0].event_time).total_seconds()
    assert sum(clock.sleeps) == pytest.approx(span / 3600)
    assert summary.seconds == pytest.approx(span / 3600)


# ---------------------------------------------------------------------- PaySim

PAYSIM_HEADER = (
    "step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,"
    "newbalanceDest,isFraud,isFlaggedFraud"
)


def test_paysim_mapping(tmp_path: Path) -> None:
    source = _csv(
        tmp_path / "paysim.csv",
        PAYSIM_HEADER,
        "1,PAYMENT,9839.64,C1231006815,170136.0,160296.36,M1979787155,0.0,0.0,0,0",
        "1,TRANSFER,181.0,C1305486145,181.0,0.0,C553264065,0.0,0.0,1,0",
        "2,CASH_OUT,181.0,C840083671,181.0,0.0,C38997010,21182.0,0.0,1,0",
        "3,DEBIT,5337.77,C712410124,41720.0,36382.23,C195600860,41898.0,40348.79,0,0",
        "3,CASH_IN,1000.5,C99,0,0,C195600860,0,0,0,0",
        "4,PAYMENT,10.0,X-99,0,0,M1979787155,0,0,0,0",
        "4,REFUND,10.0,C712410124,0,0,M1979787155,0,0,0,0",
    )
    producer = FakeProducer()
    summary = replay_file(
        source,
        PAYSIM_MAPPING,
        producer=producer,
        rejects_path=tmp_path / "r.csv",
        labels_path=tmp_path / "labels.jsonl",
        now=NOW,
    )
    events = producer.events
    assert [(e.payer.account_number, e.payee.account_number) for e in events] == [
        ("001231006815", "001979787155"),
        ("001305486145", "000553264065"),
        ("000840083671", "000038997010"),
        ("000712410124", "000195600860"),
        ("000000000099", "000195600860"),
    ]
    assert [(e.txn_type, e.channel, e.mcc) for e in events] == [
        ("P2M", "UPI", "5999"),
        ("TRANSFER", "IMPS", None),
        ("CASH_WITHDRAWAL", "ATM", None),
        ("TRANSFER", "IMPS", None),
        ("P2P", "UPI", None),
    ]
    origin = datetime(2025, 1, 1, tzinfo=IST)
    assert [e.event_time for e in events] == [origin + timedelta(hours=h) for h in (1, 1, 2, 3, 3)]
    assert [e.amount_paise for e in events] == [983964, 18100, 18100, 533777, 100050]
    assert events[0].device_id == "wallet-c1231006815"
    assert [e.txn_id for e in events] == [str(uuid.uuid5(REPLAY_TXN_NAMESPACE, f"paysim.csv:{n}")) for n in range(1, 6)]
    rejects = _read_rejects(tmp_path / "r.csv")
    assert [(r["row_number"], r["reason"]) for r in rejects] == [("6", "unmapped_value"), ("7", "unmapped_value")]
    assert "'X-99' does not match pattern" in rejects[0]["detail"]
    assert "'REFUND' is not in the map" in rejects[1]["detail"]
    assert (summary.labels, summary.fraud_labels) == (5, 2)


# ------------------------------------------------------------------------ labels


def test_labels_file_and_fraud_labels_sent(tmp_path: Path) -> None:
    producer = FakeProducer()
    labels_path = tmp_path / "labels.jsonl"
    summary = replay_file(SAMPLE, CARD_MAPPING, producer=producer, labels_path=labels_path, now=NOW)

    lines = [json.loads(line) for line in labels_path.read_text(encoding="utf-8").splitlines()]
    sent = {e.txn_id: e for e in producer.events}
    assert [line["txn_id"] for line in lines] == [e.txn_id for e in producer.events]
    assert list(lines[0]) == list(Label.__dataclass_fields__)
    for line in lines:
        expected = Label(
            line["txn_id"],
            line["is_fraud"],
            "historical" if line["is_fraud"] else None,
            sent[line["txn_id"]].event_time + timedelta(days=1),
        )
        assert line == expected.to_dict()
    frauds = [line for line in lines if line["is_fraud"]]
    assert len(frauds) == 6 == summary.fraud_labels
    assert summary.labels == 196
    assert sorted(key.decode() for key, _ in producer.labels) == sorted(f["txn_id"] for f in frauds)
    assert all(json.loads(value) in frauds for _, value in producer.labels)


def test_unparsable_label_rejects_the_row(tmp_path: Path) -> None:
    source = _csv(
        tmp_path / "l.csv",
        "id,ts,acct,amt,fraud",
        "txn-00000001,2024-01-01T00:00:00Z,123456789,1,yes",
        "txn-00000002,2024-01-01T00:00:00Z,123456789,1,maybe",
    )
    mapping = {**_mapping(), "label": {"is_fraud": {"column": "fraud"}, "delay": 0}}
    summary = replay_file(source, parse_mapping(mapping), producer=FakeProducer(), now=NOW)
    assert (summary.events_sent, summary.fraud_labels) == (1, 1)
    assert summary.rejected_by_reason == {"unparsable_value": 1}


# ----------------------------------------------------------------------- dry run


def test_dry_run_validates_and_reports_but_sends_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    summary = replay_file(
        SAMPLE,
        CARD_MAPPING,
        producer=None,
        speedup=1.0,
        now=NOW,
        rejects_path=tmp_path / "r.csv",
        labels_path=tmp_path / "l.jsonl",
        clock=clock,
        sleep=clock.sleep,
    )
    assert summary.dry_run and summary.events_sent == 0 and summary.events_valid == 196
    assert clock.sleeps == []  # a dry run never waits
    assert len(_read_rejects(tmp_path / "r.csv")) == 4
    assert len((tmp_path / "l.jsonl").read_text(encoding="utf-8").splitlines()) == 196
    assert "dry run, would send 196 events, 4 rejected" in summary.line()


# ------------------------------------------------------------------------ sample


def test_sample_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE.with_name("make_sample.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == SAMPLE.read_text(encoding="utf-8")
    frame = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    assert len(frame) == 200 and (frame["is_fraud"] == "1").sum() == 6


def test_mapping_models_are_frozen() -> None:
    mapping = load_mapping(CARD_MAPPING)
    with pytest.raises(ValidationError, match="frozen"):
        mapping.fields["txn_id"].column = "other"  # type: ignore[misc]
    data = yaml.safe_load(CARD_MAPPING.read_text(encoding="utf-8"))
    assert parse_mapping(copy.deepcopy(data)) == mapping


def test_bad_constant_fails_up_front(tmp_path: Path) -> None:
    source = _rows([("2024-01-01T00:00:00Z", "123456789", "1")], tmp_path / "c.csv")
    mapping = parse_mapping(_mapping(event_time={"value": "yesterday"}))
    with pytest.raises(ReplayMappingError, match=r"event_time: 'yesterday' is not a time.*fix the constant"):
        replay_file(source, mapping, now=NOW)


def test_labels_path_needs_a_label_section(tmp_path: Path) -> None:
    source = _rows([("2024-01-01T00:00:00Z", "123456789", "1")], tmp_path / "c.csv")
    with pytest.raises(ReplayMappingError, match="no `label:` section"):
        replay_file(source, parse_mapping(_mapping()), labels_path=tmp_path / "l.jsonl", now=NOW)


# ------------------------------------------------------------- amounts: rounding


def test_round_option_rounds_amounts_to_paise(tmp_path: Path) -> None:
    amounts = ["851.9499999999999", "0.125", "0.135", "0.005", "-0.004", "-0.006", "12"]
    source = _rows([("2024-01-01T00:00:00Z", "123456789", a) for a in amounts], tmp_path / "r.csv")
    expected = {
        "half_even": [85195, 12, 14, 0, 1200],
        "half_up": [85195, 13, 14, 1, 1200],
        "down": [85194, 12, 13, 0, 1200],
    }
    for rounding, kept in expected.items():
        producer = FakeProducer()
        mapping = _mapping(amount_paise={"column": "amt", "unit": "rupees", "round": rounding})
        replay_file(source, parse_mapping(mapping), producer=producer, rejects_path=tmp_path / "x.csv", now=NOW)
        assert [e.amount_paise for e in producer.events] == kept, rounding
        rejects = {int(r["row_number"]): r for r in _read_rejects(tmp_path / "x.csv")}
        # Negative amounts stay rejected, even those that round to 0 paise.
        assert {n: r["reason"] for n, r in rejects.items()} == {5: "non_positive_amount", 6: "non_positive_amount"}
        assert "negative" in rejects[5]["detail"]


def test_fractional_amount_without_round_names_the_fix(tmp_path: Path) -> None:
    source = _rows([("2024-01-01T00:00:00Z", "123456789", "851.9499999999999")], tmp_path / "f.csv")
    summary = replay_file(source, parse_mapping(_mapping()), now=NOW)
    assert summary.rejected_by_reason == {"fractional_paise": 1}
    assert "add `round: half_even`" in summary.reject_examples["fractional_paise"]


def test_round_in_paise_and_only_on_amounts(tmp_path: Path) -> None:
    source = _rows([("2024-01-01T00:00:00Z", "123456789", a) for a in ["1050.5", "1051.5"]], tmp_path / "p.csv")
    producer = FakeProducer()
    mapping = _mapping(amount_paise={"column": "amt", "unit": "paise", "round": "half_even"})
    replay_file(source, parse_mapping(mapping), producer=producer, now=NOW)
    assert [e.amount_paise for e in producer.events] == [1050, 1052]
    with pytest.raises(ReplayMappingError, match=r"fields.device_id.round: only amount_paise takes round"):
        parse_mapping(_mapping(device_id={"column": "dev", "round": "half_even"}))
    with pytest.raises(ReplayMappingError, match=r"fields.amount_paise.round"):
        parse_mapping(_mapping(amount_paise={"column": "amt", "unit": "rupees", "round": "bankers"}))


def test_parquet_float_amounts_round_from_their_shortest_text(tmp_path: Path) -> None:
    """A float cell is read as the text it prints as (what the writer meant), then rounded."""
    amounts = [851.9499999999999, 0.125, 2.675, 77.30000000000001, 1e-05, 0.0]
    frame = pd.DataFrame(
        {
            "id": [f"txn-{i:08d}" for i in range(len(amounts))],
            "ts": ["2024-01-01T00:00:00Z"] * len(amounts),
            "acct": ["123456789"] * len(amounts),
            "amt": amounts,
        }
    )
    frame.to_parquet(tmp_path / "f.parquet", index=False)
    producer = FakeProducer()
    mapping = _mapping(amount_paise={"column": "amt", "unit": "rupees", "round": "half_even"})
    replay_file(tmp_path / "f.parquet", parse_mapping(mapping), producer=producer, now=NOW)
    assert [e.amount_paise for e in producer.events] == [85195, 12, 268, 7730, 0, 0]


# ------------------------------------------------------------------ absent fields


def test_absent_fields_are_left_out_and_declared(tmp_path: Path) -> None:
    source = _rows([("2024-01-01T00:00:00Z", "123456789", "1")], tmp_path / "a.csv")
    mapping = parse_mapping(
        _mapping(
            txn_type={"value": "CARD_PAYMENT"},
            channel={"value": "CARD_POS"},
            device_id={"absent": True},
            mcc={"absent": True},
            ip={"absent": True},
        )
    )
    producer = FakeProducer()
    summary = replay_file(source, mapping, producer=producer, now=NOW)
    assert summary.rejected == 0
    (event,) = producer.events
    assert (event.device_id, event.mcc, event.ip) == (None, None, None)
    assert mapping.fields["device_id"].absent and "device_id" not in mapping.columns()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"status": {"absent": True}}, "fields.status: cannot be absent, the event contract requires it"),
        ({"payer.account_number": {"absent": True}}, "fields.payer.account_number: cannot be absent"),
        ({"payee.vpa": {"absent": True}}, "missing payee.account_number or payee.vpa"),
        ({"mcc": {"absent": False}}, "absent takes only `true`"),
        ({"mcc": {"absent": True, "default": "5411"}}, "an absent field takes no other keys, got default"),
        ({"mcc": {"absent": True, "column": "m"}}, "needs exactly one of `column: NAME`"),
    ],
)
def test_absent_is_checked_against_the_contract(change: dict, expected: str) -> None:
    with pytest.raises(ReplayMappingError) as info:
        parse_mapping(_mapping(**change))
    assert expected in str(info.value)


def test_a_label_cannot_be_absent() -> None:
    with pytest.raises(ReplayMappingError, match=r"label\.scenario: a label cannot be absent"):
        parse_mapping({**_mapping(), "label": {"is_fraud": {"column": "f"}, "scenario": {"absent": True}}})


# ------------------------------------------------------------ numeric ids -> accounts


def test_numeric_ids_pad_to_account_numbers_from_csv_and_parquet(tmp_path: Path) -> None:
    """Customer 0..4999 and terminal ids become 12-digit accounts: never "000000012.0"."""
    ids = [0, 12, 4999]
    mapping = parse_mapping(
        _mapping(
            **{
                "payer.account_number": {"column": "acct", "template": "{value:0>12}"},
                "payee.vpa": None,
                "payee.account_number": {"column": "terminal", "template": "{value:0>12}"},
            }
        )
    )
    rows = [f"txn-{i:08d},2024-01-01T00:00:0{i}Z,{v},{v},1" for i, v in enumerate(ids)]
    csv_file = _csv(tmp_path / "ids.csv", "id,ts,acct,terminal,amt", *rows)
    frame = pd.DataFrame(
        {
            "id": [f"txn-{i:08d}" for i in range(3)],
            "ts": [f"2024-01-01T00:00:0{i}Z" for i in range(3)],
            "acct": pd.array(ids, dtype="int64"),
            "terminal": [0.0, 12.0, float("nan")],  # a float column: ids with a gap
            "amt": [1, 1, 1],
        }
    )
    frame.to_parquet(tmp_path / "ids.parquet", index=False)
    from_csv, from_parquet = FakeProducer(), FakeProducer()
    replay_file(csv_file, mapping, producer=from_csv, now=NOW)
    summary = replay_file(
        tmp_path / "ids.parquet", mapping, producer=from_parquet, rejects_path=tmp_path / "r.csv", now=NOW
    )
    expected = ["000000000000", "000000000012", "000000004999"]
    assert [e.payer.account_number for e in from_csv.events] == expected
    assert [e.payee.account_number for e in from_csv.events] == expected
    assert [e.payer.account_number for e in from_parquet.events] == expected[:2]
    assert [e.payee.account_number for e in from_parquet.events] == expected[:2]
    (reject,) = _read_rejects(tmp_path / "r.csv")  # the empty terminal: a payee with no identifier
    assert (reject["row_number"], reject["reason"]) == ("3", "missing_field")
    assert summary.rejected == 1


def test_written_float_ids_need_a_pattern_and_the_reject_names_the_format(tmp_path: Path) -> None:
    source = _csv(tmp_path / "f.csv", "id,ts,acct,amt", "txn-00000001,2024-01-01T00:00:00Z,12.0,1")
    padded = {"column": "acct", "template": "{value:0>12}"}
    summary = replay_file(source, parse_mapping(_mapping(**{"payer.account_number": padded})), now=NOW)
    assert summary.rejected_by_reason == {"invalid_field": 1}
    assert "'0000000012.0' is not 9-18 digits, e.g. 123456789012" in summary.reject_examples["invalid_field"]
    stripped = {**padded, "pattern": r"^(\d+)(?:\.0+)?$"}
    producer = FakeProducer()
    replay_file(source, parse_mapping(_mapping(**{"payer.account_number": stripped})), producer=producer, now=NOW)
    assert producer.events[0].payer.account_number == "000000000012"


def test_template_with_a_numeric_format_spec_is_a_mapping_error() -> None:
    with pytest.raises(ReplayMappingError, match=r"pad with \{value:0>12\}, not \{value:012d\}"):
        parse_mapping(_mapping(**{"payer.account_number": {"column": "acct", "template": "{value:012d}"}}))


# ------------------------------------------------------- every problem of a row


def test_a_rejected_row_names_every_problem_and_the_expected_formats(tmp_path: Path) -> None:
    source = _csv(tmp_path / "b.csv", "id,ts,acct,amt,dev", "txn-00000001,yesterday,12345,12.345,has space")
    mapping = parse_mapping(_mapping(device_id={"column": "dev"}))
    summary = replay_file(source, mapping, rejects_path=tmp_path / "r.csv", now=NOW)
    (reject,) = _read_rejects(tmp_path / "r.csv")
    assert reject["reason"] == "unparsable_value"  # mapping problems first, in the mapping's order
    detail = reject["detail"]
    assert detail.startswith("event_time: 'yesterday' is not a time in ISO-8601 | 3 more: ")
    assert "[fractional_paise] amount_paise: 12.345 rupees is not a whole number of paise" in detail
    assert "[invalid_field] payer.account_number: '12345' is not 9-18 digits, e.g. 123456789012" in detail
    assert "[invalid_field] device_id: 'has space' is not 1-128 printable ASCII characters" in detail
    assert "required but missing" not in detail  # no echo of the cells that failed to map
    assert summary.rejected_by_reason == {"unparsable_value": 1}


def test_rejected_rows_carry_their_label(tmp_path: Path) -> None:
    source = _csv(
        tmp_path / "l.csv",
        "id,ts,acct,amt,fraud,kind",
        "txn-00000001,2024-01-01T00:00:00Z,123456789,12.345,1,stolen",
        "txn-00000002,2024-01-01T00:00:00Z,123456789,-1,0,",
        "txn-00000003,2024-01-01T00:00:00Z,123456789,1,maybe,",
        "txn-00000004,2024-01-01T00:00:00Z,123456789,1,1,stolen",
    )
    mapping = parse_mapping({**_mapping(), "label": {"is_fraud": {"column": "fraud"}, "scenario": {"column": "kind"}}})
    seen: list[RejectedRow] = []
    _events, labels = load_labelled(source, mapping, now=NOW, on_reject=seen.append, rejects_path=tmp_path / "r.csv")
    assert [lb.is_fraud for lb in labels] == [True]
    assert [(r.row_number, r.reason, r.is_fraud, r.scenario) for r in seen] == [
        (1, "fractional_paise", True, "stolen"),
        (2, "non_positive_amount", False, None),
        (3, "unparsable_value", None, None),
    ]
    rows = _read_rejects(tmp_path / "r.csv")
    assert [(r["is_fraud"], r["scenario"]) for r in rows] == [("1", "stolen"), ("0", ""), ("", "")]
    summary = replay_file(source, mapping, now=NOW)
    assert summary.rejected_fraud == 1 and "1 of them labelled fraud" in summary.line()


# ------------------------------------------------------- simulated card layout


def _card_simulated() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("make_card_simulated", SAMPLE.with_name("make_card_simulated.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_card_simulated_generator_is_seeded_and_has_the_layout() -> None:
    make = _card_simulated()
    first, again = (
        make.generate(customers=30, terminals=20, days=20, seed=3),
        make.generate(customers=30, terminals=20, days=20, seed=3),
    )
    pd.testing.assert_frame_equal(first, again)
    assert tuple(first.columns) == make.COLUMNS
    assert first["TX_TIME_SECONDS"].is_monotonic_increasing
    assert set(first["TX_FRAUD_SCENARIO"]) <= {0, 1, 2, 3}
    assert ((first["TX_FRAUD"] == 1) == (first["TX_FRAUD_SCENARIO"] > 0)).all()


def test_card_simulated_geography_and_daily_compromises() -> None:
    """The handbook shape: cards pay at the terminals within the radius (many terminals per
    card, many cards per terminal), and exactly N terminals and cards are compromised a day."""
    make = _card_simulated()
    days = 30
    frame = make.generate(
        customers=300,
        terminals=1_000,
        days=days,
        seed=5,
        radius=8.0,
        terminals_per_day=2,
        cards_per_day=3,
        zero_share=0,
    )
    per_card = frame.groupby("CUSTOMER_ID")["TERMINAL_ID"].nunique()
    per_terminal = frame.groupby("TERMINAL_ID")["CUSTOMER_ID"].nunique()
    # ~20 terminals lie within radius 8 of a card at this density; a handful-per-card draw has <= 8
    assert per_card.median() > 8 and per_terminal.max() > 1
    first_day = frame.groupby("TERMINAL_ID")["TX_TIME_DAYS"].min()
    terminal_fraud = frame[frame["TX_FRAUD_SCENARIO"] == 2]
    # every compromised terminal's frauds start on or after its first use; at most 2 a day
    starts = terminal_fraud.groupby("TERMINAL_ID")["TX_TIME_DAYS"].min()
    assert (starts >= first_day.loc[starts.index]).all()
    assert 0 < len(starts) <= 2 * days
    cards = frame.loc[frame["TX_FRAUD_SCENARIO"] == 3, "CUSTOMER_ID"].nunique()
    assert 0 < cards <= 3 * days


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_card_simulated_mapping_reads_every_row(tmp_path: Path, suffix: str) -> None:
    from decimal import ROUND_HALF_EVEN, Decimal

    make = _card_simulated()
    path = make.write(
        tmp_path / f"cards{suffix}",
        customers=40,
        terminals=20,
        days=30,
        seed=11,
        zero_share=0.01,
        card_compromise_rate=0.02,
    )
    source = pd.read_csv(path, dtype=str) if suffix == ".csv" else pd.read_parquet(path)
    rejects: list[RejectedRow] = []
    events, labels = load_labelled(path, CARD_SIMULATED_MAPPING, now=NOW, on_reject=rejects.append)
    assert rejects == [] and len(events) == len(source)
    by_id = source.set_index(source["TRANSACTION_ID"].astype(int))
    for event, label in zip(events, labels):
        row = by_id.loc[int(event.txn_id)]
        written = Decimal(str(row["TX_AMOUNT"]))
        assert event.amount_paise == int((written * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        assert event.payer.account_number == f"{int(row['CUSTOMER_ID']):012d}"
        assert event.payee.account_number == f"{int(row['TERMINAL_ID']):012d}"
        assert (event.channel, event.txn_type, event.mcc, event.device_id) == ("CARD_POS", "CARD_PAYMENT", None, None)
        assert label.is_fraud == (int(row["TX_FRAUD"]) == 1)
        assert label.scenario == (f"scenario_{int(row['TX_FRAUD_SCENARIO'])}" if label.is_fraud else None)
        assert label.label_time == event.event_time + timedelta(days=7)
    assert any(e.amount_paise == 0 for e in events)
    fractional = [a for a in source["TX_AMOUNT"].astype(str) if len(a.partition(".")[2]) > 2]
    assert fractional  # float text such as 851.9499999999999, all read


def test_load_labelled_keeps_the_first_of_a_repeated_txn_id(tmp_path: Path) -> None:
    """As the stream lands them: the first in event-time order stands, an exact repeat is
    left out, other content is rejected as a conflicting duplicate with its label."""
    rows = list(csv.reader(SAMPLE.open()))
    header, data = rows[0], rows[1:]
    amt, fraud, txn = header.index("amt"), header.index("is_fraud"), header.index("trans_num")
    other = list(data[7])
    other[amt], other[fraud] = "1.00", "1"
    path = tmp_path / "repeats.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *data, data[3], other])
    rejects: list[RejectedRow] = []
    events, labels = load_labelled(
        path, CARD_MAPPING, now=NOW, on_reject=rejects.append, rejects_path=tmp_path / "r.csv"
    )
    plain, _ = load_labelled(SAMPLE, CARD_MAPPING, now=NOW)
    assert [e.txn_id for e in events] == [e.txn_id for e in plain] and len(labels) == len(events)
    conflict = [r for r in rejects if r.reason == "conflicting_duplicate"]
    assert [(r.row_number, r.is_fraud) for r in conflict] == [(len(data) + 2, True)]
    assert "already seen at row 8" in conflict[0].detail and "amount_paise" in conflict[0].detail
    assert events[[e.txn_id for e in events].index(data[7][txn])].amount_paise != 100
    assert len(data) + 2 in pd.read_csv(tmp_path / "r.csv")["row_number"].tolist()
