"""Replay's row mapping against files no one here wrote: random cells through the shipped mappings.

A bank's export can hold anything in any cell (text in an amount column, a 40-digit id,
``1e400``, ``NaN``, a date in another format, stray quotes and newlines). Every row must
come out either as a valid event or as a reject with its row number and a known reason;
nothing may raise out of the mapping, whatever the cells hold. CSV cells are text; a
Parquet file keeps its types, so its cells are drawn as typed values as well.
"""

from __future__ import annotations

import csv
import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from tests.unit.verdicts import loads_or_names_the_problem
from txmon.ingestion.events import to_json, validate_event
from txmon.ingestion.replay import (
    REJECT_REASONS,
    RejectedRow,
    ReplayMappingError,
    load_labelled,
    load_mapping,
    parse_mapping,
    replay_file,
)
from txmon.spark_jobs import backtest

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = {
    name: load_mapping(ROOT / "config" / "replay" / f"{name}.yaml")
    for name in ("card_simulated", "card_transactions", "paysim")
}
NOW = datetime(2030, 1, 1, tzinfo=UTC)
# One valid row per mapping (from the repository's samples and tests): the properties
# replace some of its cells, so rows near validity (the hard ones) are drawn as often as noise.
VALID = {
    "card_simulated": {
        "TRANSACTION_ID": "1",
        "TX_DATETIME": "2018-04-01 00:00:31",
        "CUSTOMER_ID": "596",
        "TERMINAL_ID": "3156",
        "TX_AMOUNT": "57.16",
        "TX_FRAUD": "0",
        "TX_FRAUD_SCENARIO": "0",
    },
    "card_transactions": dict(
        zip(
            *csv.reader((ROOT / "ingestion" / "samples" / "card_transactions_sample.csv").read_text().splitlines()[:2]),
            strict=True,
        )
    ),
    "paysim": {
        "step": "1",
        "type": "PAYMENT",
        "amount": "9839.64",
        "nameOrig": "C1231006815",
        "oldbalanceOrg": "170136.0",
        "newbalanceOrig": "160296.36",
        "nameDest": "M1979787155",
        "oldbalanceDest": "0.0",
        "newbalanceDest": "0.0",
        "isFraud": "0",
        "isFlaggedFraud": "0",
    },
}

# Text a cell of a real export might hold, weighted towards the near-misses of valid values.
_near = st.sampled_from(
    [
        "",
        " ",
        "0",
        "-0",
        "00012",
        "12.0",
        "851.9499999999999",
        "1e400",
        "-1e-400",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "9" * 40,
        "0.001",
        "1,234.50",
        "₹100",
        "12 ",
        "2018-04-01 00:00:31",
        "2018-02-30 00:00:00",
        "2018-04-01T00:00:31Z",
        "01/04/2018 00:00",
        "1700000000",
        "TRUE",
        "yes",
        "1",
        "2",
        "None",
        "null",
        "\x00",
        "ü",
        "\u202e",
        '"',
        "a,b",
        "line\nbreak",
    ]
)
_cell_text = st.one_of(_near, st.text(max_size=24))


def _row_counts_match(path: Path, mapping, n_rows: int) -> None:
    rejects: list[RejectedRow] = []
    events, labels = load_labelled(
        path, mapping, now=NOW, on_reject=rejects.append, rejects_path=path.with_suffix(".rejects.csv")
    )
    # Every row is kept, rejected, or left out as an exact repeat of a kept txn_id (as the
    # stream drops a repeat); with ids generated from row numbers nothing repeats.
    repeats = n_rows - len(events) - len(rejects)
    assert repeats >= 0 and len({e.txn_id for e in events}) == len(events)
    assert repeats == 0 or "txn_id" in mapping.fields
    assert sorted(r.row_number for r in rejects) == sorted({r.row_number for r in rejects})
    assert all(1 <= r.row_number <= n_rows for r in rejects)
    assert all(r.reason in REJECT_REASONS for r in rejects)
    assert all(r.detail for r in rejects)
    assert len(labels) == len(events)
    hypothesis_event(f"rows kept: {'some' if events else 'none'}")
    for event in events:  # what replay keeps is what the stream's contract accepts, unchanged
        assert validate_event(to_json(event), now=NOW) == event


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(sorted(MAPPINGS)), st.data())
def test_any_csv_cells_get_a_row_verdict(tmp_path: Path, name: str, data) -> None:
    mapping = MAPPINGS[name]
    columns = mapping.columns()
    valid = {c: VALID[name][c] for c in columns}
    noise = st.fixed_dictionaries(dict.fromkeys(columns, _cell_text))
    # The valid row with up to three of its cells replaced, or a row of noise.
    near = st.lists(st.tuples(st.sampled_from(columns), _cell_text), max_size=3).map(lambda c: {**valid, **dict(c)})
    rows = data.draw(st.lists(st.one_of(near, near, noise), min_size=1, max_size=12))
    path = tmp_path / f"{name}.csv"
    with path.open("w", newline="", encoding="utf-8", errors="surrogatepass") as out:
        writer = csv.DictWriter(out, fieldnames=columns, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    _row_counts_match(path, mapping, len(rows))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(sorted(MAPPINGS)), st.data())
def test_any_typed_parquet_cells_get_a_row_verdict(tmp_path: Path, name: str, data) -> None:
    mapping = MAPPINGS[name]
    columns = mapping.columns()
    n = data.draw(st.integers(min_value=1, max_value=10))
    table = {}
    for column in columns:
        # One Parquet type per column, as a real file has: drawn values of one kind, nulls anywhere.
        kind = data.draw(
            st.sampled_from(
                [
                    st.integers(min_value=-(2**63), max_value=2**63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(),
                    _cell_text.filter(lambda s: "\x00" not in s),
                    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
                ]
            )
        )
        table[column] = data.draw(st.lists(st.one_of(st.none(), kind), min_size=n, max_size=n))
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.table({c: pa.array(v) for c, v in table.items()}), path)
    _row_counts_match(path, mapping, n)


def test_an_amount_longer_than_any_is_rejected_as_absurd(tmp_path: Path) -> None:
    """Found by the CSV property: 40 nines with ``round: half_even`` raised out of the
    decimal module (precision 28) and stopped the whole file; 1e999999999 overflowed it."""
    mapping = MAPPINGS["card_simulated"]  # rupees, round: half_even
    amounts = ["9" * 40, "1e999999999", "-1e999999999", "99999999999999999999999", "57.16"]
    path = tmp_path / "amounts.csv"
    rows = [
        {**dict.fromkeys(mapping.columns(), "0"), "TRANSACTION_ID": str(i), "TX_DATETIME": "2018-04-01 00:00:31"}
        for i in range(len(amounts))
    ]
    for row, amount in zip(rows, amounts):
        row["TX_AMOUNT"] = amount
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=mapping.columns())
        writer.writeheader()
        writer.writerows(rows)
    rejects: list[RejectedRow] = []
    events, _ = load_labelled(path, mapping, now=NOW, on_reject=rejects.append)
    assert [(r.row_number, r.reason) for r in rejects] == [
        (1, "absurd_amount"),
        (2, "absurd_amount"),
        (3, "absurd_amount"),
        (4, "absurd_amount"),  # 23 digits of rupees: converted, then over the contract's cap
    ]
    assert "more than 24 digits" in rejects[0].detail
    assert [e.amount_paise for e in events] == [5716]


@pytest.mark.parametrize("name", sorted(MAPPINGS))
def test_the_valid_rows_the_properties_start_from_are_valid(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=MAPPINGS[name].columns())
        writer.writeheader()
        writer.writerow({c: VALID[name][c] for c in MAPPINGS[name].columns()})
    events, _ = load_labelled(path, MAPPINGS[name], now=NOW)
    assert len(events) == 1


_OPTIONS = ("pattern", "map", "default", "template", "unit", "round", "format", "timezone", "origin")
# Values a person might write in a mapping's specs, right and wrong.
_spec_text = st.sampled_from(
    [
        "%Y-%m-%d %H:%M:%S",
        "%Q",
        "%",
        "(",
        "^(\\d+)$",
        "(a*)*b",
        "{value}",
        "{value:0>12}",
        "{value:>999999999}",
        "{value!r}",
        "{0}",
        "{slug}@okaxis",
        "{value.__class__}",
        "{value[0]}",
        "Asia/Kolkata",
        "UTC",
        "Mars/Base",
        "half_even",
        "down",
        "rupees",
        "paise",
        "seconds",
        "days",
        "P1D",
        "-P1D",
        "PT0S",
        "P99999999D",
        "1970-01-01T00:00:00Z",
        "TX_AMOUNT",
        "TX_DATETIME",
        "amt",
        "step",
        "csv",
        "parquet",
        ";",
    ]
)
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _cell_text, _spec_text, _spec_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_cell_text, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(MAPPINGS)), st.data())
def test_a_shipped_mapping_edited_anyhow_loads_or_names_its_errors(tmp_path: Path, name: str, data) -> None:
    """A hand-written mapping is the user's first input: a wrong value anywhere must come
    back as ReplayMappingError (the message the CLI prints), never another exception."""
    raw = yaml.safe_load((ROOT / "config" / "replay" / f"{name}.yaml").read_text())
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        fields = raw.get("fields")
        specs = [v for _, v in sorted(fields.items()) if isinstance(v, dict)] if isinstance(fields, dict) else []
        specs += [raw["label"]] if isinstance(raw.get("label"), dict) else []
        if specs and data.draw(st.integers(0, 2)):  # mostly one option of one spec (or the label's), as people edit
            spec = data.draw(st.sampled_from(specs))
            spec[data.draw(st.sampled_from(sorted({*spec, *_OPTIONS})))] = data.draw(st.one_of(_spec_text, _json))
            continue
        section = data.draw(st.sampled_from(sorted(raw)))
        target = raw[section]
        if isinstance(target, dict) and target and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(target)))
            if isinstance(target[key], dict) and target[key] and data.draw(st.booleans()):
                target[key][data.draw(st.sampled_from(sorted(target[key])))] = data.draw(st.one_of(_spec_text, _json))
            else:
                target[key] = data.draw(_json)
        else:
            raw[section] = data.draw(_json)
    mapping = loads_or_names_the_problem(lambda: parse_mapping(raw), ReplayMappingError)
    hypothesis_event(f"mapping loads: {mapping is not None}")
    if mapping is not None:  # a mapping that loads reads its file, or names what stops it
        path = tmp_path / f"{name}.csv"
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(VALID[name]))
            writer.writeheader()
            writer.writerow(VALID[name])

        def read() -> object:
            _row_counts_match(path, mapping, 1)
            return mapping

        loads_or_names_the_problem(read, ReplayMappingError)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_any_mapping_file_text_loads_or_names_its_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    loads_or_names_the_problem(lambda: load_mapping(path), ReplayMappingError)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=30),  # which sample row comes again
            st.sampled_from(["same", "amount", "earlier", "later"]),  # and how it differs
        ),
        max_size=12,
    )
)
def test_training_and_backtest_keep_the_same_first_of_each_txn_id(tmp_path: Path, repeats: list) -> None:
    """Training's reader (load_labelled, a list of events) and the backtest's chunked reader
    (typed columns) apply the stream's rule for a repeated txn_id each in their own form:
    they must keep the same rows and reject the same ones."""
    sample = ROOT / "ingestion" / "samples" / "card_transactions_sample.csv"
    header, *data = list(csv.reader(sample.open()))
    amt, when = header.index("amt"), header.index("trans_date_trans_time")
    extra = []
    for index, how in repeats:
        row = list(data[index])
        if how == "amount":
            row[amt] = "1.00"
        elif how in ("earlier", "later"):
            shift = timedelta(minutes=-5 if how == "earlier" else 5)
            row[when] = (datetime.fromisoformat(row[when]) + shift).isoformat(sep=" ")
        extra.append(row)
    path = tmp_path / "cards.csv"
    with path.open("w", newline="") as out:
        csv.writer(out).writerows([header, *data, *extra])
    mapping = MAPPINGS["card_transactions"]
    rejects: list[RejectedRow] = []
    events, _ = load_labelled(path, mapping, now=NOW, on_reject=rejects.append)
    source = backtest.read_file(path, mapping, chunk_rows=50, now=NOW)
    kept = source.transactions.sort_values(["event_time", "row_number"], kind="stable")
    assert [e.txn_id for e in events] == kept["txn_id"].tolist()
    assert [e.amount_paise for e in events] == kept["amount_paise"].tolist()
    assert sorted((r.row_number, r.reason) for r in rejects) == sorted((r.row_number, r.reason) for r in source.rejects)
    assert source.rows_read - len(kept) - len(source.rejects) == source.duplicates


def test_a_label_delay_past_the_calendar_is_a_mapping_error(tmp_path: Path) -> None:
    """Found by the edited-mapping property: ``delay: P99999999D`` put label times past year
    9999 and stopped the file with an OverflowError."""
    raw = yaml.safe_load((ROOT / "config" / "replay" / "card_simulated.yaml").read_text())
    raw["label"]["delay"] = "P99999999D"
    with pytest.raises(ReplayMappingError, match="at most P3650D"):
        parse_mapping(raw)
    raw["label"]["delay"] = "P3650D"
    assert parse_mapping(raw).label is not None


_SAMPLE = ROOT / "ingestion" / "samples" / "card_transactions_sample.csv"
_CARD = ROOT / "config" / "replay" / "card_transactions.yaml"
# A line that cannot be split into the header's 22 cells: any text without quotes or line
# breaks (those would join it to the next line), with any other number of delimiters.
_malformed_line = (
    st.tuples(
        st.integers(min_value=0, max_value=40).filter(lambda n: n != 21),
        st.text(st.characters(exclude_characters='",\r\n', exclude_categories=["Cs"]), max_size=8),
    )
    .map(lambda drawn: ",".join([drawn[1]] * (drawn[0] + 1)))
    .filter(bool)
)  # an empty line is blank: skipped


@functools.cache
def _clean_sample() -> backtest.LabelledSource:
    return backtest.read_file(_SAMPLE, _CARD, now=NOW)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(st.integers(min_value=0, max_value=200), _malformed_line, max_size=6),
    st.integers(min_value=4, max_value=80),
)
def test_malformed_records_anywhere_leave_every_other_row_as_it_was(tmp_path: Path, bad: dict, chunk_rows: int) -> None:
    """Lines that do not split into the header's cells, at any place (the first data row, a
    chunk's first row, the end), read in chunks of any size: each is one malformed_row
    reject at its row number, and every other row becomes the transaction it is in the
    clean file, with its row number moved by the bad lines before it."""
    header, *data = _SAMPLE.read_text().splitlines()
    lines, shift = [header], []
    for i, line in enumerate([*data, None]):
        if i in bad:
            lines.append(bad[i])
        if line is not None:
            lines.append(line)
            shift.append(sum(j <= i for j in bad))
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    clean = _clean_sample()
    got = backtest.read_file(path, _CARD, chunk_rows=chunk_rows, now=NOW)
    malformed = [r for r in got.rejects if r.reason == "malformed_row"]
    assert [r.row_number for r in malformed] == [i + k + 1 for k, i in enumerate(sorted(bad))]
    assert got.rows_read == clean.rows_read + len(bad)
    moved = clean.transactions.assign(row_number=[n + shift[n - 1] for n in clean.transactions["row_number"]])
    pd.testing.assert_frame_equal(got.transactions, moved)
    others = sorted((r.row_number, r.reason) for r in got.rejects if r.reason != "malformed_row")
    assert others == sorted((r.row_number + shift[r.row_number - 1], r.reason) for r in clean.rejects)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.text(st.one_of(st.sampled_from(list(',"\r\n\n')), st.characters(exclude_categories=["Cs"])), max_size=400))
def test_any_text_after_the_header_gets_a_verdict_for_every_record(tmp_path: Path, text: str) -> None:
    """Whatever follows a valid header (quotes opened and never closed, bare carriage
    returns, NULs, runs of delimiters), the read does not stop: every record the CSV holds
    is a transaction or a reject, the same ones read whole or in chunks."""
    header, first = _SAMPLE.read_text().splitlines()[:2]
    path = tmp_path / "any.csv"
    path.write_text(f"{header}\n{first}\n{text}", encoding="utf-8", newline="")
    rejects = path.with_suffix(".rejects.csv")
    summary = replay_file(path, _CARD, producer=None, now=NOW, rejects_path=rejects)
    assert summary.rows_read >= 1 and summary.rows_read == summary.events_valid + summary.rejected
    written = list(csv.DictReader(rejects.open(encoding="utf-8", newline="")))
    assert len(written) == summary.rejected and all(r["reason"] in REJECT_REASONS for r in written)
    assert sorted(int(r["row_number"]) for r in written) == sorted({int(r["row_number"]) for r in written})
    chunked = backtest.read_file(path, _CARD, chunk_rows=3, now=NOW, rejects_path=tmp_path / "chunked.csv")
    assert chunked.rows_read == summary.rows_read
    assert (tmp_path / "chunked.csv").read_text(encoding="utf-8") == rejects.read_text(encoding="utf-8")
