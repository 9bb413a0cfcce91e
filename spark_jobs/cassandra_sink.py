"""Writing Spark micro-batches to Cassandra with the Python driver.

No spark-cassandra-connector supports Spark 4 yet, so each Spark partition writes its
rows itself: one prepared INSERT, rows grouped into small UNLOGGED batches per replica
(the Python driver spends most of its CPU per request, so ~32 rows a request is ~4x
faster than one: see bench/), many batches in flight (execute_concurrent), and a driver
session cached per worker process so it is reused across micro-batches.
Writes are upserts keyed by natural ids, so a replayed micro-batch is harmless, and so
is a write retried after a connection error (:func:`retried`, spark_jobs/recovery.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from txmon.infra.cassandra_schema import forget_prepared, open_cluster, prepared
from txmon.infra.settings import Settings
from txmon.infra.statements import insert
from txmon.spark_jobs.recovery import Backoff, call_with_retry


@dataclass(frozen=True)
class CassandraTarget:
    """Where and how to write; small and picklable, shipped to Spark workers."""

    host: str
    port: int
    keyspace: str
    concurrency: int = 16
    batch_rows: int = 32
    consistency: str = "LOCAL_ONE"
    datacenter: str | None = None
    # Backoff for a call that fails while Cassandra is down (None: fail at once).
    retry: Backoff | None = None

    @classmethod
    def from_settings(cls, settings: Settings, keyspace: str | None = None) -> CassandraTarget:
        return cls(
            settings.cassandra.host,
            settings.cassandra.port,
            keyspace or settings.cassandra.keyspace,
            settings.spark.cassandra_write_concurrency,
            settings.spark.cassandra_batch_rows,
            settings.cassandra.consistency,
            settings.cassandra.datacenter,
            Backoff.cassandra_calls(settings),
        )


T = TypeVar("T")

_sessions: dict[tuple[str, int, str], Any] = {}
_lock = threading.Lock()


def session_for(target: CassandraTarget):
    """A cached driver session for this worker process."""
    key = (target.host, target.port, target.keyspace)
    with _lock:
        if key not in _sessions:
            # Drivers on first use: the Spark workers import this module before they write.
            from cassandra.policies import ExponentialReconnectionPolicy

            cluster = open_cluster(
                target.host,
                target.port,
                request_timeout=30,
                consistency=target.consistency,
                datacenter=target.datacenter,
            )
            # The driver's default tries a node that went down again after 1, 2, 4, ... up
            # to 600 s and stops after 64 tries: a cached session would stay blind to a
            # Cassandra back from a few minutes' outage for minutes more, or for good.
            # Keep trying, at most retry.max_s apart, so it sees the node as it returns.
            cap = target.retry.max_s if target.retry else 5.0
            cluster.reconnection_policy = ExponentialReconnectionPolicy(min(0.5, cap), cap, max_attempts=None)
            try:
                _sessions[key] = cluster.connect(target.keyspace)
            except Exception:
                cluster.shutdown()  # no reconnection threads left behind by a failed connect
                raise
        return _sessions[key]


def close_sessions() -> None:
    """Shut down this process's cached sessions. A process that outlives the Cassandra it
    wrote to (the test session stopping its stack) calls this first: otherwise the sessions'
    reconnection threads keep logging "marked down" after the process closed its output."""
    with _lock:
        for session in _sessions.values():
            session.cluster.shutdown()
        _sessions.clear()
        forget_prepared()


def retried(target: CassandraTarget, what: str, fn: Callable[[], T]) -> T:
    """``fn()``, retried with ``target.retry``'s backoff while Cassandra is down or slow
    (spark_jobs/recovery.call_with_retry; a healthy call costs one ``try``). ``fn`` must
    be an idempotent read or upsert, and fetch its session with :func:`session_for`."""
    return call_with_retry(target.retry, what, fn)


def write_rows(
    target: CassandraTarget, table: str, columns: tuple[str, ...], rows: Iterable[Any], batch_rows: int | None = None
) -> int:
    """Upsert rows (tuples or Rows in ``columns`` order); raises if any write fails.

    A connection error is retried in place for a while (:func:`retried`). Raising then
    fails the Spark task, so Spark replays the micro-batch; since every write is an
    idempotent upsert neither retry can duplicate anything.
    """
    params = [tuple(row) for row in rows]  # materialised: a retry writes the same rows again
    if not params:
        return 0
    return retried(
        target,
        f"writing {len(params)} rows to {table}",
        lambda: _write_params(target, table, columns, params, batch_rows),
    )


def _write_params(
    target: CassandraTarget, table: str, columns: tuple[str, ...], params: list[tuple], batch_rows: int | None
) -> int:
    # lazy: cassandra (252 ms to import); txmon.spark_jobs.detection imports this module without it
    from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args

    session = session_for(target)
    stmt = prepared(session, insert(table, columns))
    batch_rows = batch_rows or target.batch_rows
    if batch_rows <= 1:
        execute_concurrent_with_args(session, stmt, params, concurrency=target.concurrency, raise_on_first_error=True)
        return len(params)
    batches = [(b, ()) for b in replica_batches(session, stmt, params, batch_rows)]
    execute_concurrent(session, batches, concurrency=target.concurrency, raise_on_first_error=True)
    return len(params)


def arrow_rows(batch, columns) -> list[tuple]:
    """Rows of an Arrow record batch as tuples in ``columns`` order, ready to bind.

    Timestamps become naive UTC datetimes: the driver binds those ~1.4x faster than
    timezone-aware ones (same instant; the driver reads naive as UTC), measured on
    scored_transactions rows.
    """
    # lazy: pyarrow (434 ms to import); txmon.spark_jobs.profile_store imports this module without it
    import pyarrow as pa
    import pyarrow.compute as pc

    values = []
    for name in columns:
        column = batch.column(name)
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = pc.cast(column, pa.timestamp(column.type.unit))
        values.append(column.to_pylist())
    return list(zip(*values))


def replica_batches(session, stmt, params: list[tuple], batch_rows: int) -> list:
    """UNLOGGED batches of at most ``batch_rows`` rows whose partitions share a replica.

    Grouping by replica keeps each batch on the node that owns its rows, so a cluster
    does no extra coordinator fan-out; on one node every row shares the group.
    """
    # lazy: cassandra (72 ms to import); txmon.spark_jobs.detection imports this module without it
    from cassandra.query import BatchStatement, BatchType

    token_map = session.cluster.metadata.token_map
    groups: dict[object, list] = {}
    for row in params:
        bound = stmt.bind(row)
        replica = None
        if token_map is not None and len(session.cluster.metadata.all_hosts()) > 1:
            replicas = session.cluster.metadata.get_replicas(stmt.keyspace, bound.routing_key)
            replica = replicas[0] if replicas else None
        groups.setdefault(replica, []).append(bound)
    batches = []
    for bound_rows in groups.values():
        for i in range(0, len(bound_rows), batch_rows):
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for b in bound_rows[i : i + batch_rows]:
                batch.add(b)
            batches.append(batch)
    return batches


def write_dataframe(
    df, target: CassandraTarget, table: str, columns: tuple[str, ...], batch_rows: int | None = None
) -> None:
    """Write a (micro-batch) DataFrame from its partitions, in parallel across executors.

    ``batch_rows`` overrides the rows per UNLOGGED batch for tables with wide rows (keep a
    batch well under Cassandra's batch_size_fail_threshold).
    """
    selected = df.select(*columns)

    def _write_partition(rows):
        write_rows(target, table, columns, rows, batch_rows)

    # Named in the Spark UI and its REST API, so a profile can say which write (and what
    # it computes first: features and scoring run inside the scored_transactions write)
    # takes the time (bench/spark_profile.py).
    sc = df.sparkSession.sparkContext
    previous = sc.getLocalProperty("spark.job.description")
    sc.setLocalProperty("spark.job.description", f"txmon: write {table}")
    try:
        selected.foreachPartition(_write_partition)
    finally:
        sc.setLocalProperty("spark.job.description", previous)
