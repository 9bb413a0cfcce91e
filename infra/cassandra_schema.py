"""Cassandra connection and schema: the one module that knows the CQL layout.

The DDL lives in ``infra/schema.cql``; this module fills in the keyspace and
replication from the configuration and applies it idempotently.
"""
from __future__ import annotations

from pathlib import Path

from infra.settings import Settings

SCHEMA_FILE = Path(__file__).with_name("schema.cql")


def replication_clause(replication_factor: int) -> str:
    """CQL replication map for the keyspace.

    >>> replication_clause(1)
    "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    """
    return f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"


def schema_statements(keyspace: str, replication_factor: int = 1) -> list[str]:
    """The DDL statements, in order, for one keyspace."""
    text = "\n".join(
        line for line in SCHEMA_FILE.read_text().splitlines() if not line.lstrip().startswith("--")
    )
    text = text.replace("{keyspace}", keyspace).replace(
        "{replication}", replication_clause(replication_factor)
    )
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


def open_cluster(host: str, port: int, timeout: float = 10, request_timeout: float = 10):
    """A driver Cluster with txmon's settings: token-aware local policy, protocol v5.
    Every connection the project makes (CLI, tests, Spark sinks) is built here."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
        request_timeout=max(timeout, request_timeout),
    )
    return Cluster(
        contact_points=[host], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=timeout, control_connection_timeout=timeout, protocol_version=5,
    )


def connect(settings: Settings, keyspace: str | None = None, timeout: float = 10):
    """(cluster, session) for the configured node."""
    cluster = open_cluster(settings.cassandra.host, settings.cassandra.port, timeout)
    try:
        session = cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()
        raise
    return cluster, session


def apply_schema(settings: Settings, keyspace: str | None = None) -> None:
    """Create the keyspace and every table if missing (safe to run any number of times)."""
    ks = keyspace or settings.cassandra.keyspace
    cluster, session = connect(settings)
    try:
        for stmt in schema_statements(ks, settings.cassandra.replication_factor):
            session.execute(stmt, timeout=60)
        cluster.refresh_schema_metadata()
    finally:
        cluster.shutdown()
