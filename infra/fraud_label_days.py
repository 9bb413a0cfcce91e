"""Fraud labels by the IST day they were received: what the console dashboard's "fraud
caught by scenario" counts, written where labels are recorded (the stream's labels
query) and read back with one small query per day.

One ``fraud_labels_by_day`` row per transaction whose latest label says fraud, under the
IST day that label was received, its scenario and the stream's outcome when it came:
``flagged`` (REVIEW or BLOCK), ``missed`` (any other decision) or ``unscored`` (no scored
row yet: the label overtook its transaction, or it was never scored here).

Each transaction counts once, under its latest label. :func:`record` runs before a batch
of labels overwrites ``labels``: it reads the rows the batch replaces, and for a
transaction labelled before it deletes the rows that label could have made (its day and
scenario; the outcome is not kept, so all three). Deletes go out only for such
relabels, never for a first label: a tombstone per label would slow every read of the
day. A replayed micro-batch finds its own first attempt in ``labels`` and rewrites the
same row (or moves it to the outcome it now sees).

The dashboard (:func:`read`) asks Cassandra to count each day's partition by scenario
and outcome, so it receives a few rows per day whatever the labels. Only the unscored
rows are looked at one by one (their transactions may have been scored since), at most
``checks`` of them; beyond that it says the flagged counts are a lower bound.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from cassandra.concurrent import execute_concurrent

from txmon.infra import statements as cql
from txmon.infra.cassandra_schema import rows_in
from txmon.infra.hourly_counts import ALERTING
from txmon.infra.hourly_counts import day_of as ist_day

OUTCOMES = ("flagged", "missed", "unscored")
UNKNOWN_SCENARIO = "unknown"
"""The scenario of a fraud label that names none (a clustering column cannot be null)."""
UNSCORED_CHECKS = 200
"""Unscored rows a dashboard looks up again, at most."""


def outcome_of(decision: str | None) -> str:
    """>>> [outcome_of(d) for d in ("BLOCK", "REVIEW", "APPROVE", None)]
    ['flagged', 'flagged', 'missed', 'unscored']
    """
    if decision is None:
        return "unscored"
    return "flagged" if decision in ALERTING else "missed"


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


def _decisions(session: Any, prepare: Any, ids: list[str]) -> dict[str, str | None]:
    return {r.txn_id: r.decision for r in rows_in(session, prepare(session, cql.SCORED_DECISIONS_IN), ids)}


def _send(session: Any, writes: list[tuple[Any, tuple]]) -> None:
    """(statement, values) pairs, 64 in flight; raises the first failure (the caller
    retries the whole step, which is idempotent)."""
    execute_concurrent(session, writes, concurrency=64, raise_on_first_error=True)


def record(session: Any, prepare: Any, labels: Iterable[tuple[str, bool, str | None]], received_at: datetime) -> int:
    """Keep the day rows right for one batch of labels (txn_id, is_fraud, scenario; one
    per txn_id) received at ``received_at``. Call it before the batch is written to
    ``labels``. ``prepare(session, cql)`` gives a prepared statement. Returns the fraud
    rows written."""
    batch = {txn_id: (bool(is_fraud), scenario or UNKNOWN_SCENARIO) for txn_id, is_fraud, scenario in labels}
    if not batch:
        return 0
    ids = list(batch)
    previous = {r.txn_id: r for r in rows_in(session, prepare(session, cql.LABELS_IN), ids)}
    decisions = _decisions(session, prepare, [t for t in ids if batch[t][0]])
    insert, delete = prepare(session, cql.FRAUD_DAY_INSERT), prepare(session, cql.FRAUD_DAY_DELETE)
    day, at = ist_day(received_at), _naive(received_at)
    writes: list[tuple[Any, tuple]] = []
    written = 0
    for txn_id, (is_fraud, scenario) in batch.items():
        new = (day, scenario, outcome_of(decisions.get(txn_id)), txn_id) if is_fraud else None
        old = previous.get(txn_id)
        if old is not None and old.is_fraud and old.received_at is not None:
            was = (ist_day(old.received_at), old.scenario or UNKNOWN_SCENARIO)
            # Never a delete of the key written next: at an equal timestamp the delete wins.
            writes.extend((delete, (*was, o, txn_id)) for o in OUTCOMES if (*was, o, txn_id) != new)
        if new is not None:
            writes.append((insert, (*new, at)))
            written += 1
    _send(session, writes)
    return written


def days_between(since: datetime, until: datetime) -> list[date]:
    """The IST days from the one holding ``since`` to the one holding ``until``."""
    first, last = ist_day(since), ist_day(until)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


class Caught(NamedTuple):
    """What :func:`read` found."""

    rows: list[dict[str, Any]]
    """Per scenario: ``scenario``, ``frauds``, ``flagged``, ``share``, ``unscored``."""
    partial: bool
    """More unscored rows than the checks allowed: flagged and frauds are lower bounds."""
    days: tuple[date, date]
    """The first and last IST day read."""


def read(session: Any, prepare: Any, since: datetime, until: datetime, checks: int = UNSCORED_CHECKS) -> Caught:
    """Per scenario, the fraud labels received on the IST days from ``since`` to
    ``until``: ``frauds`` (of transactions the stream scored), ``flagged`` (REVIEW or
    BLOCK), ``share`` and ``unscored`` (no scored row, even now); most frauds first. And
    whether more than ``checks`` unscored rows were found, so that some were not looked
    up again (flagged and frauds are then at least the numbers given), and the days read."""
    days = days_between(since, until)
    counts = prepare(session, cql.FRAUD_DAY_COUNTS)
    futures = [session.execute_async(counts, (d,)) for d in days]
    per: dict[str, Counter[str]] = defaultdict(Counter)
    unscored: list[tuple[date, str, int]] = []
    for d, future in zip(days, futures, strict=True):
        for scenario, outcome, n in future.result():
            per[scenario][outcome] += n
            if outcome == "unscored":
                unscored.append((d, scenario, n))
    # Unscored when the label came: the stream may have scored the transaction since.
    rows_of = prepare(session, cql.FRAUD_DAY_OUTCOME)
    left, reads = checks, []
    for d, scenario, n in unscored:
        if left <= 0:
            break
        reads.append((scenario, session.execute_async(rows_of, (d, scenario, "unscored", min(n, left)))))
        left -= min(n, left)
    looked = [(scenario, r.txn_id) for scenario, future in reads for r in future.result()]
    decisions = _decisions(session, prepare, [t for _, t in looked])
    for scenario, txn_id in looked:
        if txn_id in decisions:
            per[scenario]["unscored"] -= 1
            per[scenario][outcome_of(decisions[txn_id])] += 1
    out: list[dict[str, Any]] = []
    for scenario, c in per.items():
        frauds = c["flagged"] + c["missed"]
        out.append(
            {
                "scenario": scenario,
                "frauds": frauds,
                "flagged": c["flagged"],
                "share": c["flagged"] / frauds if frauds else 0.0,
                "unscored": c["unscored"],
            }
        )
    out.sort(key=lambda r: (-r["frauds"], -r["unscored"], r["scenario"]))
    return Caught(out, sum(n for _, _, n in unscored) > checks, (days[0], days[-1]))


def backfill(session: Any, prepare: Any, since: datetime, log: Any = print) -> int:
    """Rows for the fraud labels in ``labels`` received since ``since`` (labels recorded
    before this table existed): one scan of ``labels``, as ``txmon console reindex`` runs
    it. A row of the same transaction on the same day under another outcome is replaced,
    so a re-run rewrites rather than adds. Returns the rows written."""
    lo = _naive(since)
    latest = [
        r
        for r in session.execute(prepare(session, cql.LABELS_RECEIVED), timeout=600)
        if r.is_fraud and r.received_at is not None and r.received_at >= lo
    ]
    decisions = _decisions(session, prepare, [r.txn_id for r in latest])
    by_day: dict[date, list[Any]] = defaultdict(list)
    for r in latest:
        by_day[ist_day(r.received_at)].append(r)
    insert, delete = prepare(session, cql.FRAUD_DAY_INSERT), prepare(session, cql.FRAUD_DAY_DELETE)
    stored = prepare(session, cql.FRAUD_DAY_ROWS)
    written = 0
    for day, labels in sorted(by_day.items()):
        there: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for r in session.execute(stored, (day,)):
            there[r.txn_id].append((r.scenario, r.outcome))
        writes: list[tuple[Any, tuple]] = []
        for lab in labels:
            key = (lab.scenario or UNKNOWN_SCENARIO, outcome_of(decisions.get(lab.txn_id)))
            writes.extend((delete, (day, *k, lab.txn_id)) for k in there[lab.txn_id] if k != key)
            writes.append((insert, (day, *key, lab.txn_id, lab.received_at)))
        _send(session, writes)
        written += len(labels)
    log(f"{written:,} fraud label(s) on {len(by_day)} IST day(s) indexed for the dashboard's fraud caught")
    return written
