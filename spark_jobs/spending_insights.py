"""Monthly and yearly spending per account and per category, as a Spark batch job.

    txmon spark-submit spark_jobs/spending_insights.py [--until ISO]

Reads every transaction before ``--until`` (default: now) from Cassandra by token range
(spark_jobs.history), and writes ``account_spending`` (infra/schema.cql): for each payer
account, IST month (``2026-11``) and year (``2026``), and dimension (``all``, ``channel``,
``mcc``, ``payee``), the count, total, largest and mean amount, and the same over all
accounts under payer_account ``*`` (the segment of the whole book). Rows are keyed by
(account, period, dimension, key): a rerun for the same ``--until`` rewrites the same
rows, so the job is idempotent; the console's insights page reads them. The output is one
JSON line (rows written, periods) for the caller (the spending_insights DAG).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

SPENDING_COLUMNS = (
    "payer_account",
    "period_kind",
    "period",
    "dimension",
    "key",
    "txn_count",
    "total_paise",
    "max_paise",
    "avg_paise",
    "computed_until",
)
DIMENSIONS = ("all", "channel", "mcc", "payee")
ALL_ACCOUNTS = "*"
"""The payer_account of the rows that sum every account (no account number is a '*')."""
_READ = {
    "txn_id": "string",
    "event_time": "timestamp",
    "channel": "string",
    "payer_account": "string",
    "payee_account": "string",
    "payee_vpa": "string",
    "amount_paise": "long",
    "mcc": "string",
}


def aggregate(transactions, until: datetime):
    """Transactions (the _READ columns) -> spending rows (SPENDING_COLUMNS)."""
    from pyspark.sql import functions as F

    ist = F.from_utc_timestamp(F.col("event_time"), "Asia/Kolkata")
    base = transactions.where(F.col("event_time") < F.lit(until)).where(F.col("payer_account").isNotNull())
    keyed = []
    for dimension, key in (
        ("all", F.lit("")),
        ("channel", F.coalesce(F.col("channel"), F.lit("?"))),
        ("mcc", F.coalesce(F.col("mcc"), F.lit("none"))),
        ("payee", F.coalesce(F.col("payee_vpa"), F.col("payee_account"), F.lit("?"))),
    ):
        for kind, period in (("month", F.date_format(ist, "yyyy-MM")), ("year", F.date_format(ist, "yyyy"))):
            keyed.append(
                base.select(
                    "payer_account",
                    F.lit(kind).alias("period_kind"),
                    period.alias("period"),
                    F.lit(dimension).alias("dimension"),
                    key.alias("key"),
                    "amount_paise",
                )
            )
    rows = keyed[0]
    for other in keyed[1:]:
        rows = rows.unionByName(other)
    # The whole book as one more "account" (ALL_ACCOUNTS): the segment every account's
    # figures are read against.
    rows = rows.unionByName(rows.withColumn("payer_account", F.lit(ALL_ACCOUNTS)))
    return (
        rows.groupBy("payer_account", "period_kind", "period", "dimension", "key")
        .agg(
            F.count(F.lit(1)).alias("txn_count"),
            F.sum("amount_paise").alias("total_paise"),
            F.max("amount_paise").alias("max_paise"),
            F.round(F.avg("amount_paise")).cast("long").alias("avg_paise"),
        )
        .withColumn("computed_until", F.lit(until))
    )


def run(settings, until: datetime, spark=None, splits: int = 16) -> dict:
    from txmon.spark_jobs.cassandra_sink import CassandraTarget, write_dataframe
    from txmon.spark_jobs.history import read_table

    own = spark is None
    if own:
        from txmon.spark_jobs.session import build_session

        spark = build_session(settings, "txmon-spending-insights")
    try:
        target = CassandraTarget.from_settings(settings)
        rows = aggregate(read_table(spark, target, "transactions", "txn_id", _READ, splits), until).cache()
        written = rows.count()
        write_dataframe(rows, target, "account_spending", SPENDING_COLUMNS)
        periods = sorted({r.period for r in rows.select("period").distinct().collect()})
        rows.unpersist()
        return {"rows": written, "periods": periods, "until": until.isoformat()}
    finally:
        if own:
            spark.stop()


def _when(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date/time, e.g. 2026-12-01T00:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    from txmon.infra.errors import TxmonError
    from txmon.infra.settings import load_settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--until", type=_when, help="count transactions before this time (default: now)")
    args = p.parse_args(argv)
    try:
        print(json.dumps(run(load_settings(), args.until or datetime.now(UTC))))
    except TxmonError as exc:
        print(f"spending_insights: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
