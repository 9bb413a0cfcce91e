"""History in Cassandra -> Spark DataFrames, and features over it in batch.

No spark-cassandra-connector supports Spark 4, so a table is read the way the connector
does it: the Murmur3 token ring is cut into ``splits`` ranges, one Spark task per range
pages through ``SELECT ... WHERE token(key) > ? AND token(key) <= ?`` with the Python
driver (a cached session per worker, a prepared statement per session). Every row is
read exactly once whatever the cluster size, and the ranges run in parallel across
executors.

Features over history use the one definition in :mod:`models.features` through
:func:`spark_jobs.detection.add_features_to_batch` with an empty in-memory profile
store per task (each key's whole history is in one partition), exactly as the batch
side of the batch/stream parity test does; the payee fraud-report feature counts only
labels whose ``label_time`` had passed at each transaction.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from functools import partial

from txmon.infra.statements import token_range
from txmon.models.dataset import fraud_label_times as by_payee
from txmon.models.features import MemoryProfileStore
from txmon.spark_jobs.cassandra_sink import CassandraTarget, prepared, session_for
from txmon.spark_jobs.detection import add_features_to_batch

MIN_TOKEN = -(2**63)
MAX_TOKEN = 2**63 - 1

HISTORY_COLUMNS = {  # transactions columns the features and reports need -> Spark type name
    "txn_id": "string",
    "event_time": "timestamp",
    "channel": "string",
    "txn_type": "string",
    "payer_account": "string",
    "payee_account": "string",
    "payee_vpa": "string",
    "amount_paise": "long",
    "mcc": "string",
    "device_id": "string",
    "city": "string",
    "lat": "double",
    "lon": "double",
    "status": "string",
}
LABEL_COLUMNS = {"txn_id": "string", "is_fraud": "boolean", "scenario": "string", "label_time": "timestamp"}


def token_ranges(splits: int) -> list[tuple[int, int]]:
    """``splits`` half-open ranges (lo, hi] covering the whole Murmur3 ring.

    (Murmur3 never yields MIN_TOKEN, so ``> MIN_TOKEN`` misses nothing.)

    >>> r = token_ranges(4)
    >>> r[0][0] == MIN_TOKEN, r[-1][1] == MAX_TOKEN, all(a[1] == b[0] for a, b in zip(r, r[1:]))
    (True, True, True)
    """
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    span = MAX_TOKEN - MIN_TOKEN
    bounds = [MIN_TOKEN + span * i // splits for i in range(splits)] + [MAX_TOKEN]
    return list(itertools.pairwise(bounds))


def _schema(columns: dict[str, str]):
    # pyspark on first use: the retraining DAG's non-Spark tasks import this module.
    from pyspark.sql import types as T

    types = {
        "string": T.StringType(),
        "timestamp": T.TimestampType(),
        "long": T.LongType(),
        "double": T.DoubleType(),
        "boolean": T.BooleanType(),
    }
    return T.StructType([T.StructField(name, types[kind]) for name, kind in columns.items()])


def _fetch(
    target: CassandraTarget, table: str, key: str, columns: tuple[str, ...], timestamps: tuple[int, ...], ranges
):
    session = session_for(target)
    stmt = prepared(session, token_range(table, columns, key))
    stmt.fetch_size = 5000
    for lo, hi in ranges:
        for row in session.execute(stmt, (lo, hi)):
            values = list(row)
            for i in timestamps:  # the driver returns naive UTC; say so, for Spark
                if values[i] is not None:
                    values[i] = values[i].replace(tzinfo=UTC)
            yield tuple(values)


def read_table(spark, target: CassandraTarget, table: str, key: str, columns: dict[str, str], splits: int = 32):
    """A whole Cassandra table (the given columns) as a DataFrame, read by token range."""
    names = tuple(columns)
    timestamps = tuple(i for i, kind in enumerate(columns.values()) if kind == "timestamp")
    ranges = spark.sparkContext.parallelize(token_ranges(splits), splits)
    rows = ranges.mapPartitions(partial(_fetch, target, table, key, names, timestamps))
    return spark.createDataFrame(rows, _schema(columns))


def read_history(spark, target: CassandraTarget, since: datetime, until: datetime, splits: int = 32):
    """(transactions with event_time in [since, until), labels with label_time < until)."""
    # lazy: pyspark (748 ms to import); txmon.spark_jobs.retraining imports this module without it
    from pyspark.sql import functions as F

    transactions = read_table(spark, target, "transactions", "txn_id", HISTORY_COLUMNS, splits).where(
        (F.col("event_time") >= F.lit(since)) & (F.col("event_time") < F.lit(until))
    )
    labels = read_table(spark, target, "labels", "txn_id", LABEL_COLUMNS, max(1, splits // 4)).where(
        F.col("label_time") < F.lit(until)
    )
    return transactions, labels


def fraud_label_times(transactions, labels) -> dict[str, list[tuple[int, int]]]:
    """payee_key -> (label time, transaction time) of its confirmed frauds: the frauds (few) are
    collected and handed to the one definition, :func:`models.dataset.fraud_label_times`."""
    # lazy: pyspark (748 ms to import); txmon.spark_jobs.retraining imports this module without it
    from pyspark.sql import functions as F

    frauds = (
        labels.where(F.col("is_fraud"))
        .join(transactions, "txn_id")
        .select(F.coalesce("payee_account", "payee_vpa").alias("payee_key"), "is_fraud", "label_time", "event_time")
    )
    return by_payee(frauds.toPandas())


def labelled_features(transactions, labels, partitions: int):
    """Transactions + labels -> every FEATURES column, plus is_fraud / scenario / label_time.

    An unlabelled transaction counts as genuine, as in training (models.dataset).
    """
    # lazy: pyspark (748 ms to import); txmon.spark_jobs.retraining imports this module without it
    from pyspark.sql import functions as F

    make_store = partial(MemoryProfileStore, fraud_labels=fraud_label_times(transactions, labels))
    featured = add_features_to_batch(transactions, make_store, partitions)
    return (
        featured.join(labels, "txn_id", "left")
        .withColumn("is_fraud", F.coalesce(F.col("is_fraud"), F.lit(False)))
        .withColumn("scenario", F.when(F.col("is_fraud"), F.col("scenario")))
    )
