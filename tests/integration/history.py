"""Test helper: simulated history written into Cassandra as the stream would have landed it."""

from __future__ import annotations

from datetime import UTC, datetime


def history_into_cassandra(settings, keyspace: str, items) -> None:
    """Transactions (the columns retraining reads) and their labels, into ``keyspace``."""
    import pandas as pd

    from txmon.models.features import transactions_frame
    from txmon.spark_jobs.cassandra_sink import CassandraTarget, write_rows
    from txmon.spark_jobs.history import HISTORY_COLUMNS

    target = CassandraTarget.from_settings(settings, keyspace)
    frame = transactions_frame([i.event for i in items])
    columns = tuple(HISTORY_COLUMNS)
    rows = [
        tuple(None if (not isinstance(v, str) and pd.isna(v)) else v for v in row)
        for row in frame[list(columns)].itertuples(index=False)
    ]
    write_rows(target, "transactions", columns, rows)
    now = datetime.now(UTC)
    write_rows(
        target,
        "labels",
        ("txn_id", "is_fraud", "scenario", "label_time", "received_at"),
        [(i.label.txn_id, i.label.is_fraud, i.label.scenario, i.label.label_time, now) for i in items],
    )


def keyspace_settings(settings, keyspace: str, truncate=("transactions", "labels")):
    """Settings for an own keyspace (schema applied, the given tables emptied)."""
    from txmon.infra.cassandra_schema import apply_schema, connect

    own = settings.model_copy(update={"cassandra": settings.cassandra.model_copy(update={"keyspace": keyspace})})
    apply_schema(own)
    cluster, session = connect(own, keyspace)
    try:
        for table in truncate:
            session.execute(f"TRUNCATE {table}")
    finally:
        cluster.shutdown()
    return own


def train_champion(registry_root, n: int = 40_000, seed: int = 4242):
    """A small model on separate simulated history, registered and promoted in a registry
    of the test's own: (its version, its bundle)."""
    from txmon.models.registry import Registry
    from txmon.models.sources import simulated
    from txmon.models.training import TrainingConfig, train

    history = simulated(n=n, seed=seed, mean_tps=0.2)
    result = train(
        history.events,
        history.labels,
        TrainingConfig(seed=1, max_iter=120, iforest_estimators=50),
        data_source=history.source,
    )
    registry = Registry(registry_root)
    version = registry.register(result.bundle, result.metadata)
    registry.promote(version)
    return version, result.bundle
