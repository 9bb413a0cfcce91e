"""Cassandra connection and schema: the one module that knows the CQL layout.

The DDL lives in ``infra/schema.cql``; this module fills in the keyspace and
replication from the configuration and applies it idempotently.
"""
from __future__ import annotations

import socket
from pathlib import Path

from infra.settings import Settings

SCHEMA_FILE = Path(__file__).with_name("schema.cql")


def replication_clause(replication_factor: int, datacenter: str | None = None) -> str:
    """CQL replication map for the keyspace: SimpleStrategy on one node, else
    NetworkTopologyStrategy with ``replication_factor`` replicas in ``datacenter``.

    >>> replication_clause(1)
    "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    >>> replication_clause(3, "dc1")
    "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
    """
    if datacenter:
        return f"{{'class': 'NetworkTopologyStrategy', '{datacenter}': {replication_factor}}}"
    return f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"


def schema_statements(keyspace: str, replication_factor: int = 1, datacenter: str | None = None) -> list[str]:
    """The DDL statements, in order, for one keyspace."""
    text = "\n".join(
        line for line in SCHEMA_FILE.read_text().splitlines() if not line.lstrip().startswith("--")
    )
    text = text.replace("{keyspace}", keyspace).replace(
        "{replication}", replication_clause(replication_factor, datacenter)
    )
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


def open_cluster(host: str, port: int, timeout: float = 10, request_timeout: float = 10,
                 consistency: str = "LOCAL_ONE", datacenter: str | None = None):
    """A driver Cluster with txmon's settings: token-aware local policy, protocol v5,
    the configured consistency (LOCAL_QUORUM on a multi-node cluster with RF 3).
    Every connection the project makes (CLI, tests, Spark sinks) is built here."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=datacenter)),
        request_timeout=max(timeout, request_timeout),
        consistency_level=getattr(ConsistencyLevel, consistency),
    )
    return Cluster(
        contact_points=[host], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=timeout, control_connection_timeout=timeout, protocol_version=5,
        # TCP_NODELAY (the driver leaves Nagle's algorithm on): without it, under load the
        # stream's one drift-state INSERT per micro-batch waited ~40 ms (the signature of Nagle
        # against delayed ACKs) where a probe saw p50 2 ms, and micro-batches at 1,000 tx/s
        # took 1.10 s instead of 0.90 (notes on issue 8).
        sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )


def connect(settings: Settings, keyspace: str | None = None, timeout: float = 10):
    """(cluster, session) for the configured node."""
    c = settings.cassandra
    cluster = open_cluster(c.host, c.port, timeout, consistency=c.consistency, datacenter=c.datacenter)
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
        for stmt in schema_statements(ks, settings.cassandra.replication_factor, settings.cassandra.datacenter):
            session.execute(stmt, timeout=60)
        cluster.refresh_schema_metadata()
    finally:
        cluster.shutdown()
