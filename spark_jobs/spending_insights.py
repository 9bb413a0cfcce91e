"""Monthly and yearly spending per account, and daily, monthly and yearly spending per
segment of the book, as a Spark batch job.

    txmon spark-submit spark_jobs/spending_insights.py [--until ISO]

Reads every transaction before ``--until`` (default: now) from Cassandra by token range
(spark_jobs.history), once, and writes two tables (infra/schema.cql):

- ``account_spending``: for each payer account, IST month (``2026-11``) and year
  (``2026``), and dimension (``all``, ``channel``, ``mcc``, ``payee``), the count, total,
  largest and mean amount.
- ``segment_spending``: the same figures, and the number of distinct payer accounts, for
  each segment (the whole book; :data:`SEGMENTS`: each channel, each merchant category,
  each spending band of :data:`SPEND_BANDS`) per IST day (dimension ``all``), month and
  year, overall and by channel, category and spending band; of the payees only the
  :data:`TOP_PAYEES` largest of each period, keyed by rank, so what the console reads
  stays bounded however many payees the book has.

Rows are keyed by (account or segment, period, dimension, key): a rerun for the same
``--until`` rewrites the same rows, so the job is idempotent; the console's insights
page reads them. The output is one JSON line (rows written, periods, segments) for the
caller (the spending_insights DAG).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from pyspark.sql import Window
from pyspark.sql import functions as F

from txmon.infra.errors import TxmonError
from txmon.infra.settings import load_settings
from txmon.spark_jobs.cassandra_sink import CassandraTarget, write_dataframe
from txmon.spark_jobs.history import read_table
from txmon.spark_jobs.session import build_session
from txmon.spark_jobs.spend_bands import SPEND_BANDS

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
SEGMENT_COLUMNS = (
    "segment",
    "period_kind",
    "period",
    "dimension",
    "key",
    "label",
    "txn_count",
    "total_paise",
    "max_paise",
    "avg_paise",
    "accounts",
    "computed_until",
)
DIMENSIONS = ("all", "channel", "mcc", "payee")
ALL_SEGMENT = "all"
"""The segment of the whole book (every account)."""
SEGMENTS = ("channel", "mcc", "spend")
"""What else the book is cut by: segment ``channel:<channel>``, ``mcc:<category>`` and
``spend:<band>``, the payer's spending band (:data:`SPEND_BANDS`)."""
TOP_PAYEES = 20
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


def spend_band(monthly_paise):
    """The :data:`SPEND_BANDS` band of a spend per month (a Column): the Spark form of
    spark_jobs.spend_bands.band_of, which the console uses on what this job stored."""
    band = F.lit(SPEND_BANDS[-1][0])
    for name, below in reversed(SPEND_BANDS[:-1]):
        band = F.when(monthly_paise < F.lit(below), F.lit(name)).otherwise(band)
    return band


def spend_bands(base):
    """(payer_account, spend) of every payer in ``base`` (the columns aggregate_segments
    selects): its band by total spend over the IST months it paid in."""
    return (
        base.groupBy("payer_account")
        .agg((F.sum("amount_paise") / F.countDistinct("month")).alias("monthly"))
        .select("payer_account", spend_band(F.col("monthly")).alias("spend"))
    )


def aggregate_segments(transactions, until: datetime, top_payees: int = TOP_PAYEES):
    """Transactions (the _READ columns) -> segment rows (SEGMENT_COLUMNS).

    Each transaction is counted in four segments (the book, its channel, its category,
    its payer's spending band), and in each for its IST day (overall only), month and
    year, overall and by channel, category, spending band and payee; a segment's own
    dimension (channel within a channel segment) is left out, it would repeat the overall
    row. Payees: the ``top_payees`` largest by total of each segment and period, keyed by
    rank."""

    ist = F.from_utc_timestamp(F.col("event_time"), "Asia/Kolkata")
    base = (
        transactions.where(F.col("event_time") < F.lit(until))
        .where(F.col("payer_account").isNotNull())
        .select(
            "payer_account",
            "amount_paise",
            F.coalesce(F.col("channel"), F.lit("?")).alias("channel"),
            F.coalesce(F.col("mcc"), F.lit("none")).alias("mcc"),
            F.coalesce(F.col("payee_vpa"), F.col("payee_account"), F.lit("?")).alias("payee"),
            F.date_format(ist, "yyyy-MM-dd").alias("day"),
            F.date_format(ist, "yyyy-MM").alias("month"),
            F.date_format(ist, "yyyy").alias("year"),
        )
    )
    base = base.join(spend_bands(base), "payer_account")
    segment_of = [F.lit(ALL_SEGMENT), *(F.concat(F.lit(f"{s}:"), F.col(s)) for s in SEGMENTS)]
    segment = F.explode(F.array(*segment_of)).alias("segment")

    def cut(kind: str, period: str, dimension: str, key):
        return F.struct(
            F.lit(kind).alias("period_kind"),
            F.col(period).alias("period"),
            F.lit(dimension).alias("dimension"),
            key.alias("key"),
        )

    cuts = [cut("day", "day", "all", F.lit(""))]
    for kind in ("month", "year"):
        cuts += [
            cut(kind, kind, "all", F.lit("")),
            cut(kind, kind, "channel", F.col("channel")),
            cut(kind, kind, "mcc", F.col("mcc")),
            cut(kind, kind, "spend", F.col("spend")),
            cut(kind, kind, "payee", F.col("payee")),
        ]
    exploded = (
        base.select("*", segment)
        .select("segment", "payer_account", "amount_paise", F.explode(F.array(*cuts)).alias("c"))
        .select("segment", "payer_account", "amount_paise", "c.*")
        # Within channel:UPI, "by channel" is one bar equal to the whole: not stored.
        .where(~F.col("segment").startswith(F.concat(F.col("dimension"), F.lit(":"))))
    )
    grouped = exploded.groupBy("segment", "period_kind", "period", "dimension", "key").agg(
        F.count(F.lit(1)).alias("txn_count"),
        F.sum("amount_paise").alias("total_paise"),
        F.max("amount_paise").alias("max_paise"),
        F.round(F.avg("amount_paise")).cast("long").alias("avg_paise"),
        F.countDistinct("payer_account").alias("accounts"),
    )
    ranked = Window.partitionBy("segment", "period_kind", "period").orderBy(F.desc("total_paise"), F.asc("key"))
    payees = (
        grouped.where(F.col("dimension") == "payee")
        .withColumn("rank", F.row_number().over(ranked))
        .where(F.col("rank") <= top_payees)
        .withColumn("label", F.col("key"))
        .withColumn("key", F.lpad(F.col("rank").cast("string"), 2, "0"))
        .drop("rank")
    )
    others = grouped.where(F.col("dimension") != "payee").withColumn("label", F.lit(None).cast("string"))
    return others.unionByName(payees).withColumn("computed_until", F.lit(until)).select(*SEGMENT_COLUMNS)


def run(settings, until: datetime, spark=None, splits: int = 16) -> dict:
    own = spark is None
    if own:
        spark = build_session(settings, "txmon-spending-insights")
    try:
        target = CassandraTarget.from_settings(settings)
        # Read once: both aggregations start from the same transactions.
        transactions = read_table(spark, target, "transactions", "txn_id", _READ, splits).cache()
        rows = aggregate(transactions, until).cache()
        written = rows.count()
        write_dataframe(rows, target, "account_spending", SPENDING_COLUMNS)
        periods = sorted({r.period for r in rows.select("period").distinct().collect()})
        rows.unpersist()
        segment_rows = aggregate_segments(transactions, until).cache()
        segment_written = segment_rows.count()
        write_dataframe(segment_rows, target, "segment_spending", SEGMENT_COLUMNS)
        segments = sorted({r.segment for r in segment_rows.select("segment").distinct().collect()})
        segment_rows.unpersist()
        transactions.unpersist()
        return {
            "rows": written,
            "segment_rows": segment_written,
            "periods": periods,
            "segments": segments,
            "until": until.isoformat(),
        }
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
