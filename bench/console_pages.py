"""The console's pages under load: queue, case and dashboard latency with N alerts and M
scored transactions in Cassandra, against the same primary query from the driver.

    python -m txmon.bench.console_pages --alerts 100000 --transactions 1000000 [--requests 20]

Fills a keyspace of its own (``console_bench`` unless --keyspace) on the configured
Cassandra (start it with ``txmon infra up``; the keyspace is emptied first), then times
each page through the ASGI app in-process (httpx, no network: the figure is the app's
and Cassandra's) as a logged-in analyst, and prints p50/p95 per page with the baseline of
its main read (the head of the seven days' alerts_by_rank partitions, the alert by id,
the last day's console_hourly rows) measured in the same run. Alerts are spread over the
last seven IST days, so the default queue holds all of them. console_hourly is filled
with the counts the stream would have left (infra/hourly_counts.py's functions, two
Spark partitions). The timed case is a busy account's (2,000 of the transactions, so its
recent transactions come from long account_transactions partitions) with 300 comments
in its history. The dashboard also reads 10,000 fraud labels of the last day (and 200
whose transaction was never scored, which it looks up again) and 3,000 dead letters per
partition of the stream topic from the last twelve hours, more than it reads of them.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from cassandra.concurrent import execute_concurrent_with_args
from fastapi.testclient import TestClient

from txmon.alerting.contract import (
    ALERT_BY_DAY_COLUMNS,
    ALERT_COLUMNS,
    DAY_TZ,
    alert_id_for,
    alert_party_rows,
    alert_rank_row,
    alert_row,
    build_alert,
)
from txmon.infra import fraud_label_days, hourly_counts
from txmon.infra import statements as cql
from txmon.infra.cassandra_schema import apply_schema, connect
from txmon.infra.masking import pii_token_key
from txmon.infra.readback import txn_month
from txmon.infra.settings import load_settings
from txmon.ingestion.events import DEAD_LETTER_REASONS
from txmon.webapp.app import create_app
from txmon.webapp.console.auth import hash_password
from txmon.webapp.console.store import ConsoleStore


def _fill(settings, session, alerts: int, transactions: int, seed: int) -> list[uuid.UUID]:
    rng = random.Random(seed)
    key = pii_token_key(settings.state_path)
    now = datetime.now(UTC)
    ins_alert = session.prepare(cql.ALERT_INSERT)
    ins_day = session.prepare(cql.ALERT_BY_DAY_INSERT)
    ins_scored = session.prepare(
        "INSERT INTO scored_transactions (txn_id, event_time, payer_account, decision, "
        "risk_score, model_version) VALUES (?, ?, ?, ?, ?, ?)"
    )
    ins_rank = session.prepare(cql.ALERT_BY_RANK_INSERT)
    ins_party = session.prepare(cql.ALERT_BY_PARTY_INSERT)
    # What a case page reads of its account: the alerted payments themselves (the only
    # clear payer account), and every transaction's account_transactions row, as the
    # stream writes them. The first alert's account is a busy one (every BUSY_EVERY-th
    # transaction), so that case's recent transactions come from long partitions.
    ins_txn = session.prepare(
        "INSERT INTO transactions (txn_id, event_time, channel, txn_type, payer_account, payee_vpa, "
        "amount_paise) VALUES (?, ?, 'UPI', 'P2M', ?, ?, ?)"
    )
    ins_recent = session.prepare(cql.ACCOUNT_TXN_INSERT)
    busy = f"{rng.randrange(10**11, 10**12)}"
    t_rows: list[tuple] = []
    at_rows: list[tuple] = []
    ids, a_rows, d_rows, s_rows, r_rows, p_rows = [], [], [], [], [], []
    per_part: list[dict] = [{}, {}]  # what two Spark partitions' running counts would hold
    pending: list[tuple[list, list, list]] = [([], [], []), ([], [], [])]
    for i in range(transactions):
        t = now - timedelta(seconds=rng.uniform(0, 6.5 * 86400))
        account = f"{rng.randrange(10**11, 10**12)}"
        if i % BUSY_EVERY == 0:
            account = busy
        alerted = i < alerts
        decision = rng.choice(("REVIEW", "BLOCK")) if alerted else "APPROVE"
        txn_id = f"TXNBENCH{seed}{i:09d}"
        risk = rng.randrange(60, 101) if alerted else 5
        payee, amount = f"shop{rng.randrange(500)}@ybl", rng.randrange(100, 10**7)
        s_rows.append((txn_id, t, account, decision, risk, "bench"))
        at_rows.append((account, txn_month(t), t, txn_id, amount, "UPI", "P2M", payee, risk, decision))
        if alerted:
            t_rows.append((txn_id, t, account, payee, amount))
        if alerted:
            a = build_alert(
                key=key,
                txn_id=txn_id,
                created_at=t,
                event_time=t,
                payer_account=account,
                payee_vpa=payee,
                amount_paise=amount,
                channel="UPI",
                txn_type="P2M",
                risk_score=risk,
                decision=decision,
                severity=rng.choice(("MEDIUM", "HIGH", "CRITICAL")),
                reasons=[
                    {
                        "code": rng.choice(("VELOCITY_BURST", "NEW_PAYEE", "AMOUNT_SPIKE")),
                        "description": "bench",
                        "contribution": 1.0,
                    }
                ],
                model_version="bench",
                rules_version="bench",
            )
            row = alert_row(a)
            a_rows.append(tuple(row[c] for c in ALERT_COLUMNS))
            d_rows.append(tuple(row[c] for c in ALERT_BY_DAY_COLUMNS))
            r_rows.append(alert_rank_row(a))
            p_rows.extend(alert_party_rows(a))
            ids.append(a.alert_id)
        chunk = pending[int(account) % 2]
        chunk[0].append(hourly_counts.hour_of(t))
        chunk[1].append(decision)
        if alerted:
            chunk[2].append((t, a.reason_codes, t))
        if len(s_rows) >= 20_000 or i == transactions - 1:
            for part, (hours, decisions, raised) in zip(per_part, pending):
                counts = hourly_counts.batch_counts(hours, decisions, ["bench"] * len(hours), raised)
                for hour, c in counts.items():
                    part[hour] = hourly_counts.merge(part[hour], c) if hour in part else c
            pending = [([], [], []), ([], [], [])]
            for stmt, rows in (
                (ins_scored, s_rows),
                (ins_alert, a_rows),
                (ins_day, d_rows),
                (ins_rank, r_rows),
                (ins_party, p_rows),
                (ins_txn, t_rows),
                (ins_recent, at_rows),
            ):
                if rows:
                    execute_concurrent_with_args(session, stmt, rows, concurrency=128, raise_on_first_error=True)
            s_rows, a_rows, d_rows, r_rows, p_rows, t_rows, at_rows = [], [], [], [], [], [], []
            print(f"  filled {i + 1:,} transactions", flush=True)

    def prepare(session, cql):
        return session.prepare(cql)

    for n, part in enumerate(per_part):
        hourly_counts.write_batch(session, prepare, "bench", n, "bench#0", part)
    return ids


LABELS = 10_000
"""Fraud labels received in the last day, of the bench's transactions (alerted: flagged)."""
UNSCORED_LABELS = 200
"""Fraud labels of transactions never scored: the dashboard looks each up again."""
DEAD_LETTERS = 3_000
"""Dead letters per partition of the stream topic in the last twelve hours (the dashboard
reads the newest 500 of each and says "at least")."""


def _fill_labels_and_dead_letters(settings, session, transactions: int, alerts: int, seed: int) -> None:
    """What the dashboard's frauds caught and dead letters read, as the stream's labels
    query and landing leave them; rewritten on every run (--reuse too), as it is quick."""

    rng = random.Random(seed + 1)
    now = datetime.now(UTC)
    for table in ("fraud_labels_by_day", "dead_letters"):
        session.execute(f"TRUNCATE {table}", timeout=120)
    scenarios = ("mule", "account_takeover", "card_testing", "analyst", "unknown")
    rows = []
    picked = rng.sample(range(transactions), min(LABELS, transactions))
    for n, i in enumerate([*picked, *[None] * UNSCORED_LABELS]):
        at = now - timedelta(seconds=rng.uniform(0, 86400))
        if i is None:
            txn_id, outcome = f"TXNBENCHUNSCORED{seed}{n:09d}", "unscored"
        else:
            txn_id, outcome = f"TXNBENCH{seed}{i:09d}", "flagged" if i < alerts else "missed"
        rows.append((fraud_label_days.ist_day(at), rng.choice(scenarios), outcome, txn_id, at.replace(tzinfo=None)))
    insert = session.prepare(cql.FRAUD_DAY_INSERT)
    execute_concurrent_with_args(session, insert, rows, concurrency=128, raise_on_first_error=True)
    letters = []
    for p in range(settings.kafka.partitions):
        for offset in range(DEAD_LETTERS):
            at = now - timedelta(hours=12) + timedelta(seconds=offset * 43_200 / DEAD_LETTERS)
            reason = rng.choice(DEAD_LETTER_REASONS)
            letters.append((settings.kafka.topics.transactions, p, offset, reason, at.replace(tzinfo=None)))
    insert = session.prepare(
        "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, reason, landed_at) VALUES (?, ?, ?, ?, ?)"
    )
    execute_concurrent_with_args(session, insert, letters, concurrency=128, raise_on_first_error=True)


BUSY_EVERY = 500
"""Every BUSY_EVERY-th transaction is the first alert's account's (2,000 of 1,000,000)."""
HISTORY = 300
"""Comments recorded on the timed case: its page shows one page of them (the newest)."""


def _pct(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _time(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alerts", type=int, default=100_000)
    p.add_argument("--transactions", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--keyspace", default="console_bench")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--reuse",
        action="store_true",
        help="time the pages on what an earlier run with the same --alerts/--transactions/--seed "
        "left in the keyspace (no truncate, no fill; the alerts are then older than seven days "
        "only if that run was)",
    )
    args = p.parse_args(argv)
    base = load_settings()
    settings = base.model_copy(update={"cassandra": base.cassandra.model_copy(update={"keyspace": args.keyspace})})
    apply_schema(settings)
    cluster, session = connect(settings, args.keyspace, timeout=60)
    if args.reuse:
        ids = [alert_id_for(f"TXNBENCH{args.seed}{0:09d}")]
        if session.execute(session.prepare("SELECT alert_id FROM alerts WHERE alert_id = ?"), (ids[0],)).one() is None:
            raise SystemExit(f"--reuse: keyspace {args.keyspace} holds no run of seed {args.seed}")
        print(f"reusing the data in keyspace {args.keyspace}")
    else:
        for table in (
            "alerts",
            "alerts_by_day",
            "alerts_by_rank",
            "alerts_by_party",
            "console_hourly",
            "scored_transactions",
            "transactions",
            "account_transactions",
            "case_state",
            "case_actions",
            "console_audit",
            "console_users",
        ):
            session.execute(f"TRUNCATE {table}", timeout=120)
        t = time.perf_counter()
        ids = _fill(settings, session, args.alerts, max(args.transactions, args.alerts), args.seed)

        console = ConsoleStore(session)
        for n in range(HISTORY):
            console.record(ids[0], "bench", "analyst", "comment", {"text": f"bench note {n}"}, datetime.now(UTC))
        print(
            f"filled {args.alerts:,} alerts, {max(args.transactions, args.alerts):,} scored transactions "
            f"(and their account_transactions rows), {HISTORY} comments on the timed case "
            f"in {time.perf_counter() - t:.0f} s"
        )
    _fill_labels_and_dead_letters(settings, session, max(args.transactions, args.alerts), args.alerts, args.seed)
    session.execute(
        session.prepare(
            "INSERT INTO console_users (username, role, password_hash, disabled) VALUES (?, 'analyst', ?, false)"
        ),
        ("bench", hash_password("bench-password-1")),
    )
    client = TestClient(create_app(settings), follow_redirects=False)
    page = client.get("/console/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, "the login page has no CSRF token"
    token = found.group(1)
    assert (
        client.post(
            "/console/login", data={"username": "bench", "password": "bench-password-1", "csrf_token": token}
        ).status_code
        == 303
    )
    case_id = ids[0]
    today = datetime.now(UTC).astimezone(DAY_TZ).date()
    head = session.prepare("SELECT * FROM alerts_by_rank WHERE day = ? LIMIT 26")
    by_id = session.prepare("SELECT * FROM alerts WHERE alert_id = ?")
    hourly = session.prepare("SELECT hour, counts FROM console_hourly WHERE day = ?")

    def parallel(stmt, keys):
        return [list(f.result()) for f in [session.execute_async(stmt, k) for k in keys]]

    checks = {
        "queue": (
            lambda: client.get("/console/"),
            lambda: parallel(head, [(today - timedelta(days=d),) for d in range(7)]),
        ),
        "case": (lambda: client.get(f"/console/cases/{case_id}"), lambda: session.execute(by_id, (case_id,)).one()),
        "dashboard": (
            lambda: client.get("/console/dashboard"),
            lambda: parallel(hourly, [(today - timedelta(days=d),) for d in range(2)]),
        ),
    }
    print(f"{'page':<10} {'p50 ms':>9} {'p95 ms':>9} {'driver p50':>11} {'driver p95':>11} {'ratio p95':>10}")
    for name, (page_fn, base_fn) in checks.items():
        assert page_fn().status_code == 200, name  # warm: prepared statements, templates
        n = args.requests
        page_p50, page_p95 = _pct(_time(page_fn, n))
        base_p50, base_p95 = _pct(_time(base_fn, n))
        print(
            f"{name:<10} {page_p50:>9.0f} {page_p95:>9.0f} {base_p50:>11.0f} {base_p95:>11.0f} "
            f"{page_p95 / base_p95 if base_p95 else float('nan'):>10.1f}"
        )
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
