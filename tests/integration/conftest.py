"""Real services, started once per test session through txmon's own infra code.

Kafka, Cassandra (and Spark, in-process) come up via ``infra.stack.up`` exactly as
``txmon infra up`` does. Services this session started are stopped and purged at the
end; set TXMON_TEST_KEEP=1 to leave them running for a faster next run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from txmon.infra import stack
from txmon.infra.settings import Settings, load_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Settings]:
    were_running = all(s.healthy for s in stack.status(settings))
    stack.up(settings, log=lambda msg: None)
    yield settings
    from txmon.infra.readback import close_end_offsets_readers
    from txmon.spark_jobs.cassandra_sink import close_sessions

    close_sessions()  # the streams' driver-side sessions, before their Cassandra goes away
    close_end_offsets_readers()  # the dashboard's kept Kafka consumers, before their Kafka goes away
    if not were_running and os.environ.get("TXMON_TEST_KEEP") != "1":
        stack.down(settings, purge=True, log=lambda msg: None)


@pytest.fixture
def unique_name():
    """Factory of unique names for topics, runs, consumer groups."""
    return lambda prefix: f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic(services: Settings, unique_name) -> str:
    from txmon.infra.services.kafka import ensure_topics

    name = unique_name("t")
    ensure_topics(services.kafka.bootstrap, [name], services.kafka.partitions)
    return name


@pytest.fixture(scope="session")
def cassandra_session(services: Settings):
    from txmon.infra.cassandra_schema import connect

    cluster, session = connect(services, services.cassandra.keyspace)
    yield session
    cluster.shutdown()


@pytest.fixture(scope="session")
def spark(services: Settings):
    from txmon.spark_jobs.session import build_session

    session = build_session(services, "txmon-tests")
    yield session
    session.stop()
