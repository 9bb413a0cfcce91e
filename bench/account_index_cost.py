"""What the stream pays for the case page's recent transactions: the outputs step writes
an ``account_transactions`` row beside each ``scored_transactions`` row. This times the
two write patterns back to back on the same Cassandra, through
``spark_jobs.cassandra_sink.write_rows`` exactly as the outputs step calls it: N scored
rows alone (the baseline), then N scored rows plus their N account rows, alternating for
``--rounds`` rounds; CPU of this process and of Cassandra (psutil) and wall time, per
transaction.

    .venv/bin/python -m txmon.bench.account_index_cost --rows 20000 --rounds 3

Needs a running Cassandra (``txmon infra up``); writes to a keyspace of its own
(``index_bench``), emptied first. Scored rows carry a ~1.5 KB features_json, about what
the stream's rows hold.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from txmon.bench.cpu_split import stack_cpu
from txmon.infra.cassandra_schema import apply_schema
from txmon.infra.readback import txn_month
from txmon.infra.settings import load_settings
from txmon.infra.statements import ACCOUNT_TXN_COLUMNS
from txmon.spark_jobs.cassandra_sink import CassandraTarget, session_for, write_rows
from txmon.spark_jobs.detection import SCORED_COLUMNS


def _rows(n: int, round_no: int, seed: int) -> tuple[list[tuple], list[tuple]]:
    rng = random.Random(seed + round_no)
    now = datetime.now(UTC).replace(tzinfo=None)
    features = '{"' + '": 0.123456, "'.join(f"feature_{i:02d}" for i in range(60)) + '": 0.5}'
    scored, by_account = [], []
    for i in range(n):
        values: dict[str, Any] = {
            "txn_id": f"TXNIDX{round_no}{i:09d}",
            "event_time": now - timedelta(seconds=rng.uniform(0, 86_400)),
            "payer_account": f"{rng.randrange(10**11, 10**12)}",
            "payee_key": f"shop{rng.randrange(5_000)}@ybl",
            "amount_paise": rng.randrange(100, 10**7),
            "channel": "UPI",
            "txn_type": "P2M",
            "risk_score": rng.randrange(0, 101),
            "decision": "APPROVE",
            "rule_score": 0.1,
            "fraud_probability": 0.01,
            "anomaly_score": 0.2,
            "rules_fired": [],
            "reasons": "[]",
            "model_version": "bench",
            "rules_version": "bench",
            "features_json": features,
            "kafka_timestamp": now,
            "scored_at": now,
        }
        scored.append(tuple(values.get(c) for c in SCORED_COLUMNS))
        by_account.append(
            (
                values["payer_account"],
                txn_month(values["event_time"]),
                values["event_time"],
                values["txn_id"],
                values["amount_paise"],
                "UPI",
                "P2M",
                values["payee_key"],
                values["risk_score"],
                "APPROVE",
            )
        )
    return scored, by_account


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keyspace", default="index_bench")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument(
        "--account-batch", type=int, default=None, help="rows per batch of account rows (default: the stream's setting)"
    )
    args = p.parse_args(argv)
    base = load_settings()
    settings = base.model_copy(update={"cassandra": base.cassandra.model_copy(update={"keyspace": args.keyspace})})
    apply_schema(settings)
    target = CassandraTarget.from_settings(settings)
    session = session_for(target)
    for table in ("scored_transactions", "account_transactions"):
        session.execute(f"TRUNCATE {table}", timeout=120)
    me = psutil.Process(os.getpid())

    def timed(scored: list[tuple], by_account: list[tuple] | None) -> dict[str, float]:
        before, mine, t = stack_cpu(settings), me.cpu_times(), time.perf_counter()
        write_rows(target, "scored_transactions", SCORED_COLUMNS, scored, batch_rows=16)
        if by_account is not None:
            write_rows(target, "account_transactions", ACCOUNT_TXN_COLUMNS, by_account, args.account_batch)
        wall, after, mine_after = time.perf_counter() - t, stack_cpu(settings), me.cpu_times()
        cassandra = sum(
            max(0.0, cpu - before.get("cassandra", {}).get(pid, 0.0)) for pid, cpu in after.get("cassandra", {}).items()
        )
        python = (mine_after.user + mine_after.system) - (mine.user + mine.system)
        per = 1000 / len(scored)
        return {"python": python * per, "cassandra": cassandra * per, "wall": wall * per}

    warm = _rows(2_000, 0, args.seed)
    timed(*warm)  # prepared statements, connections
    results: dict[str, list[dict[str, float]]] = {"scored only": [], "scored + account rows": []}
    for r in range(1, args.rounds + 1):
        scored, by_account = _rows(args.rows, 2 * r, args.seed)
        results["scored only"].append(timed(scored, None))
        scored, by_account = _rows(args.rows, 2 * r + 1, args.seed)
        results["scored + account rows"].append(timed(scored, by_account))
    print(f"{args.rows:,} rows a round, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"{'pattern':<24} {'python ms/tx':>13} {'cassandra ms/tx':>16} {'wall ms/tx':>11}  (median of rounds)")
    med = {}
    for name, runs in results.items():
        med[name] = {k: statistics.median(run[k] for run in runs) for k in ("python", "cassandra", "wall")}
        m = med[name]
        print(f"{name:<24} {m['python']:>13.4f} {m['cassandra']:>16.4f} {m['wall']:>11.4f}")
    a, b = med["scored only"], med["scored + account rows"]
    print(
        f"{'extra per transaction':<24} {b['python'] - a['python']:>13.4f} "
        f"{b['cassandra'] - a['cassandra']:>16.4f} {b['wall'] - a['wall']:>11.4f}"
    )
    session.cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
