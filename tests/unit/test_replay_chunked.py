"""Replay reads a file a chunk at a time and holds each valid event compactly until it is
sent: what reaches Kafka, the labels, the summary and the rejects file are those of the
whole-file replay it replaced, kept here as the reference, whatever the chunk size.

No services: a producer double records the key and value bytes a real one would send.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import tempfile
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txmon.ingestion.events import DeadLetterReason, TransactionEvent, kafka_key, to_json
from txmon.ingestion.labels import LabelReleaser
from txmon.ingestion.producer import ProduceSummary
from txmon.ingestion.replay import (
    _MAX_FUTURE_SKEW,
    _NO_FUTURE_CHECK,
    RejectedRow,
    ReplayMapping,
    ReplayMappingError,
    ReplayPacer,
    ReplaySummary,
    _map_rows,
    _RowMapper,
    _Valid,
    _write_rejects,
    load_mapping,
    replay_file,
    source_chunks,
)
from txmon.ingestion.simulator import Label

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "ingestion" / "samples"
CARD_SAMPLE = SAMPLES / "card_transactions_sample.csv"
CARD = load_mapping(ROOT / "config" / "replay" / "card_transactions.yaml")
PAYSIM = load_mapping(ROOT / "config" / "replay" / "paysim.yaml")
CARD_SIMULATED = load_mapping(ROOT / "config" / "replay" / "card_simulated.yaml")
NOW = datetime(2030, 1, 1, tzinfo=UTC)
CHUNKS = (1, 7, 50, None)


# ------------------------------------------------------------- the reference: the whole-file replay


def _reference_replay_file(
    path: str | Path,
    mapping: ReplayMapping,
    *,
    producer: Any = None,
    shift_to: datetime | None = None,
    rejects_path: str | Path | None = None,
    labels_path: str | Path | None = None,
    now: datetime,
) -> ReplaySummary:
    """replay_file as it was before it read files in chunks (one frame, one event object per row)."""
    started = time.monotonic()
    if labels_path is not None and mapping.label is None:
        raise ReplayMappingError("labels_path was given but the mapping has no `label:` section")
    pacer = ReplayPacer()
    path = Path(path)
    summary = ReplaySummary(source=path.name, dry_run=producer is None)
    rejects: list[RejectedRow] = []

    def reject(rejected: RejectedRow) -> None:
        rejects.append(rejected)
        summary.count_reject(rejected)

    (frame,) = source_chunks(path, mapping, None, on_malformed=reject)
    summary.rows_read = len(frame) + len(rejects)  # the rejects so far: malformed CSV records

    check_against = now if shift_to is None else _NO_FUTURE_CHECK
    valid = _map_rows(frame, _RowMapper(mapping, path.name), check_against, reject, False)
    valid.sort(key=lambda v: v.event.event_time)  # stable: ties keep file order
    if shift_to is not None:
        valid = _reference_shift(valid, shift_to, now, reject)
    summary.events_valid = len(valid)
    if valid:
        summary.first_event_time = valid[0].event.event_time
        summary.last_event_time = valid[-1].event.event_time
    if rejects_path is not None:
        _write_rejects(Path(rejects_path), [frame], rejects)
    del frame

    _reference_send(valid, mapping, producer, pacer, summary, labels_path)
    summary.seconds = time.monotonic() - started
    return summary


def _reference_shift(valid: list[_Valid], shift_to: datetime, now: datetime, reject: Any) -> list[_Valid]:
    if not valid:
        return valid
    delta = shift_to.astimezone(UTC) - valid[-1].event.event_time
    limit = now + _MAX_FUTURE_SKEW
    kept: list[_Valid] = []
    for item in valid:
        moved = item.event.event_time + delta
        if moved > limit:
            is_fraud, scenario = item.label if item.label is not None else (None, None)
            reject(
                RejectedRow(
                    item.row_number,
                    DeadLetterReason.FUTURE_TIMESTAMP.value,
                    f"event_time {moved.isoformat()} (shifted by {delta}) is more than "
                    f"{_MAX_FUTURE_SKEW} ahead of {now.isoformat()}; pick an earlier shift_to",
                    is_fraud,
                    scenario,
                )
            )
            continue
        item.event = item.event.model_copy(update={"event_time": moved})
        kept.append(item)
    return kept


def _reference_send(
    valid: list[_Valid],
    mapping: ReplayMapping,
    producer: Any,
    pacer: ReplayPacer,
    summary: ReplaySummary,
    labels_path: str | Path | None,
) -> None:
    delay = mapping.label.delay if mapping.label else timedelta(0)
    releaser = (
        LabelReleaser(producer, Path(labels_path) if labels_path else None) if mapping.label is not None else None
    )
    failed_before = producer.summary.failed if producer is not None else 0
    try:
        for index, item in enumerate(valid):
            event = item.event
            if producer is not None:
                pacer.wait(index, event.event_time)
                producer.send_event(event)
                summary.events_sent += 1
            if releaser is not None and item.label is not None:
                is_fraud, scenario = item.label
                releaser(Label(event.txn_id, is_fraud, scenario, event.event_time + delay), event)
                summary.labels += 1
                summary.fraud_labels += is_fraud
    finally:
        if releaser is not None:
            releaser.close(release_pending=True)
        if producer is not None:
            producer.flush()
            summary.delivery_failed = producer.summary.failed - failed_before


# ------------------------------------------------------------------------------------ helpers


class Recorder:
    """What a TransactionProducer would put on the wire: each event's key and value bytes."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.labels: list[tuple[bytes, bytes]] = []
        self.flushes = 0
        self.summary = ProduceSummary()

    def send_event(self, event: TransactionEvent) -> None:
        self.sent.append((kafka_key(event), to_json(event)))

    def send_label(self, key: bytes, value: bytes) -> None:
        self.labels.append((key, value))
        self.summary.labels_sent += 1

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


def _outcome(
    reference: bool,
    path: Path,
    mapping: ReplayMapping,
    out: Path,
    *,
    dry: bool = False,
    chunk_rows: int | None = None,
    shift_to: datetime | None = None,
) -> dict[str, Any]:
    """Everything a replay leaves behind, the wall time excepted."""
    tag = "reference" if reference else f"chunked-{chunk_rows}"
    rejects, labels = out / f"{tag}.rejects.csv", out / f"{tag}.labels.jsonl"
    producer = None if dry else Recorder()
    labels_path = labels if mapping.label is not None else None
    if reference:
        summary = _reference_replay_file(
            path, mapping, producer=producer, shift_to=shift_to, rejects_path=rejects, labels_path=labels_path, now=NOW
        )
    else:
        summary = replay_file(
            path,
            mapping,
            producer=producer,
            shift_to=shift_to,
            rejects_path=rejects,
            labels_path=labels_path,
            now=NOW,
            chunk_rows=chunk_rows,
        )
    fields = dataclasses.asdict(summary)
    fields.pop("seconds")
    return {
        "summary": fields,
        # Insertion order too: the summary line and the CLI list reasons in it.
        "reasons": list(summary.rejected_by_reason.items()),
        "examples": list(summary.reject_examples.items()),
        "sent": producer.sent if producer is not None else None,
        "labels_sent": producer.labels if producer is not None else None,
        "flushes": producer.flushes if producer is not None else None,
        "rejects": rejects.read_bytes(),
        "labels_file": labels.read_bytes() if labels_path is not None else None,
    }


def _assert_same_as_reference(
    path: Path, mapping: ReplayMapping, out: Path, *, dry: bool = False, shift_to: datetime | None = None
) -> dict[str, Any]:
    expected = _outcome(True, path, mapping, out, dry=dry, shift_to=shift_to)
    for chunk_rows in CHUNKS:
        got = _outcome(False, path, mapping, out, dry=dry, chunk_rows=chunk_rows, shift_to=shift_to)
        for key, value in expected.items():
            assert got[key] == value, f"{path.name} chunk_rows={chunk_rows}: {key} differs"
    return expected


PAYSIM_HEADER = (
    "step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,"
    "newbalanceDest,isFraud,isFlaggedFraud"
)
_TYPES = ("PAYMENT", "TRANSFER", "CASH_OUT", "DEBIT", "CASH_IN", "REFUND")
_AMOUNTS = ("9839.64", "181.0", "1000.5", "12", "-5", "abc", "1.234", "", "99999999999999")


def _paysim_lines(seed: int, rows: int, malformed: bool) -> list[str]:
    """PaySim-layout lines: hour steps (many ties in event time), bad amounts, accounts and
    types (rejects), repeated lines (duplicates), fraud labels, and when ``malformed`` CSV
    records whose cells do not line up with the header."""
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(rows):
        roll = rng.random()
        if lines and roll < 0.08:
            lines.append(rng.choice(lines))  # an exact repeat
            continue
        if malformed and roll < 0.14:
            lines.append(rng.choice(("1,PAYMENT,10.0", "2,PAYMENT,1,C1,0,0,M2,0,0,0,0,extra", ",,,")))
            continue
        payer = rng.choice(("C", "C", "C", "X-")) + str(rng.randrange(1, 10**9))
        payee = rng.choice(("C", "M")) + str(rng.randrange(1, 10**9))
        amount = rng.choice(_AMOUNTS) if rng.random() < 0.2 else f"{rng.randrange(1, 10**6)}.{rng.randrange(100):02d}"
        step = rng.randrange(1, 40)
        fraud = int(rng.random() < 0.1)
        lines.append(f"{step},{rng.choice(_TYPES)},{amount},{payer},0,0,{payee},0,0,{fraud},0")
    return lines


def _paysim_file(directory: Path, seed: int, rows: int, *, malformed: bool = True, parquet: bool = False) -> Path:
    lines = _paysim_lines(seed, rows, malformed=malformed and not parquet)
    path = directory / f"paysim-{seed}.csv"
    path.write_text("\n".join([PAYSIM_HEADER, *lines]) + "\n", encoding="utf-8")
    if not parquet:
        return path
    out = path.with_suffix(".parquet")
    pd.read_csv(path, dtype=str, keep_default_na=False).to_parquet(out, index=False)
    return out


def _card_file(directory: Path) -> Path:
    """The card sample reshuffled: its four broken rows, repeated trans_num (exact and with
    other content), repeated event times, and malformed records."""
    header, *rows = CARD_SAMPLE.read_text(encoding="utf-8").splitlines()
    rng = random.Random(11)
    rng.shuffle(rows)
    cells = rows[5].split(",")
    changed = [*cells[:4], "1.00", *cells[5:]]  # the same trans_num, another amount
    tied = [rows[9].split(",")[0], *rows[30].split(",")[1:]]  # row 30 at row 9's time
    out = [*rows[:40], rows[3], ",".join(changed), ",".join(tied), "too,few,cells", *rows[40:], rows[0] + ",extra"]
    path = directory / "cards.csv"
    path.write_text("\n".join([header, *out]) + "\n", encoding="utf-8")
    return path


def _card_simulated() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("make_card_simulated", SAMPLES / "make_card_simulated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("dry", [False, True], ids=["sent", "dry-run"])
def test_card_sample_as_before(tmp_path: Path, dry: bool) -> None:
    expected = _assert_same_as_reference(CARD_SAMPLE, CARD, tmp_path, dry=dry)
    assert expected["summary"]["rows_read"] == 200
    assert expected["summary"]["events_valid"] == 196


def test_card_sample_as_parquet_as_before(tmp_path: Path) -> None:
    parquet = tmp_path / "cards.parquet"
    pd.read_csv(CARD_SAMPLE, dtype=str, keep_default_na=False).to_parquet(parquet, index=False)
    _assert_same_as_reference(parquet, CARD, tmp_path)


def test_card_file_with_duplicates_ties_malformed_and_shift_as_before(tmp_path: Path) -> None:
    path = _card_file(tmp_path)
    plain = _assert_same_as_reference(path, CARD, tmp_path)
    assert dict(plain["reasons"])["malformed_row"] == 2
    shift_to = NOW + _MAX_FUTURE_SKEW + timedelta(hours=3)
    shifted = _assert_same_as_reference(path, CARD, tmp_path, shift_to=shift_to)
    future = dict(shifted["reasons"])[DeadLetterReason.FUTURE_TIMESTAMP.value]
    assert 0 < future < plain["summary"]["events_valid"]
    assert shifted["sent"]
    _assert_same_as_reference(path, CARD, tmp_path, dry=True, shift_to=shift_to)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_card_simulated_as_before(tmp_path: Path, suffix: str) -> None:
    path = _card_simulated().write(tmp_path / f"simulated{suffix}", customers=40, terminals=30, days=6)
    expected = _assert_same_as_reference(path, CARD_SIMULATED, tmp_path)
    assert expected["summary"]["labels"] > 0
    _assert_same_as_reference(path, CARD_SIMULATED, tmp_path, shift_to=NOW + _MAX_FUTURE_SKEW + timedelta(days=1))


def test_paysim_file_with_ties_rejects_labels_and_shift_as_before(tmp_path: Path) -> None:
    path = _paysim_file(tmp_path, seed=3, rows=400)
    plain = _assert_same_as_reference(path, PAYSIM, tmp_path)
    reasons = dict(plain["reasons"])
    assert reasons["malformed_row"] > 0 and len(reasons) > 3
    assert plain["summary"]["fraud_labels"] > 0 and plain["labels_sent"]
    shifted = _assert_same_as_reference(path, PAYSIM, tmp_path, shift_to=NOW + _MAX_FUTURE_SKEW + timedelta(hours=5))
    assert dict(shifted["reasons"])[DeadLetterReason.FUTURE_TIMESTAMP.value] > 0


def test_empty_and_all_rejected_files_as_before(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text(PAYSIM_HEADER + "\n", encoding="utf-8")
    _assert_same_as_reference(empty, PAYSIM, tmp_path, shift_to=NOW)
    bad = tmp_path / "bad.csv"
    bad.write_text(PAYSIM_HEADER + "\n1,PAYMENT,abc,C1,0,0,M2,0,0,0,0\n1,PAYMENT\n", encoding="utf-8")
    expected = _assert_same_as_reference(bad, PAYSIM, tmp_path, shift_to=NOW)
    assert expected["summary"]["events_valid"] == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    rows=st.integers(0, 120),
    chunk_rows=st.sampled_from(CHUNKS),
    parquet=st.booleans(),
    shift_hours=st.none() | st.integers(-2, 30),
)
def test_the_outcome_does_not_depend_on_the_chunk_size(
    seed: int, rows: int, chunk_rows: int | None, parquet: bool, shift_hours: int | None
) -> None:
    shift_to = None if shift_hours is None else NOW + _MAX_FUTURE_SKEW + timedelta(hours=shift_hours)
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory)
        path = _paysim_file(out, seed, rows, parquet=parquet)
        whole = _outcome(True, path, PAYSIM, out, shift_to=shift_to)
        chunked = _outcome(False, path, PAYSIM, out, chunk_rows=chunk_rows, shift_to=shift_to)
    assert chunked == whole
