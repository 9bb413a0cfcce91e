"""Security of the stack as `txmon infra up` starts it: who may log in, what the
application may do, and that nothing txmon starts listens beyond loopback.

Each refusal is checked beside an acceptance with the right credentials on the same
service, so a refusal cannot pass because the service is simply down.
"""

from __future__ import annotations

import os
import stat

import psutil
import pytest

from tests.integration.listeners import exposed, listeners
from txmon.infra import credentials, spark_cluster, stack
from txmon.infra.cassandra_schema import connect
from txmon.infra.credentials import Credential
from txmon.infra.kafka_client import client_config
from txmon.infra.process import wait_until


def _cassandra_refuses(settings, credential: Credential | None) -> str:
    """The error text of a login attempt that must fail (``None``: no credentials at all)."""
    from cassandra.cluster import Cluster, NoHostAvailable

    try:
        if credential is None:  # deliberately not through open_cluster: it always logs in
            cluster = Cluster(
                [settings.cassandra.host], port=settings.cassandra.port, protocol_version=5, connect_timeout=5
            )
            try:
                cluster.connect()
            finally:
                cluster.shutdown()
        else:
            cluster, _ = connect(settings, credential=credential, timeout=5)
            cluster.shutdown()
    except NoHostAvailable as exc:
        return str(exc)
    pytest.fail(f"Cassandra accepted {credential.user if credential else 'an anonymous client'}")


def test_cassandra_refuses_anonymous_wrong_and_default_logins_and_accepts_txmon(services):
    app = credentials.cassandra()
    assert "requires authentication" in _cassandra_refuses(services, None)
    assert "Provided username txmon and/or password are incorrect" in _cassandra_refuses(
        services, Credential(app.user, app.password + "x")
    )
    # The well-known default superuser is gone.
    assert "incorrect" in _cassandra_refuses(services, Credential("cassandra", "cassandra"))

    cluster, session = connect(services, admin=True)
    try:
        roles = {r.role: r.is_superuser for r in session.execute("SELECT role, is_superuser FROM system_auth.roles")}
    finally:
        cluster.shutdown()
    assert roles == {app.user: False, credentials.cassandra(admin=True).user: True}

    cluster, session = connect(services, services.cassandra.keyspace)
    try:
        session.execute("INSERT INTO smoke_events (run_id, id, payload) VALUES ('sec', '1', 'x')")
        assert session.execute("SELECT payload FROM smoke_events WHERE run_id = 'sec'").one().payload == "x"
    finally:
        cluster.shutdown()


def test_the_application_role_cannot_change_schema_or_roles(services):
    from cassandra import Unauthorized

    cluster, session = connect(services, services.cassandra.keyspace)
    try:
        for statement in (
            f"DROP TABLE {services.cassandra.keyspace}.smoke_events",
            "CREATE KEYSPACE intruder WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            "CREATE ROLE intruder WITH PASSWORD = 'x' AND LOGIN = true",
            "SELECT * FROM system_auth.roles",
        ):
            with pytest.raises(Unauthorized):
                session.execute(statement)
    finally:
        cluster.shutdown()


def _kafka_auth_failures(settings) -> int:
    log = settings.state_path / "logs" / "kafka-server.log"
    return sum(
        "Failed authentication" in line and "invalid credentials" in line
        for line in log.read_text(errors="replace").splitlines()
    )


def _kafka_admin(settings, **security):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap,
        bootstrap_timeout_ms=5000,
        request_timeout_ms=5000,
        client_id="txmon-security-test",
        **security,
    )


def test_kafka_refuses_clients_without_or_with_wrong_credentials_and_accepts_txmon(services, topic):
    from kafka.errors import KafkaTimeoutError

    with pytest.raises(KafkaTimeoutError):  # no SASL: the broker closes every connection
        _kafka_admin(services)
    before = _kafka_auth_failures(services)
    with pytest.raises(KafkaTimeoutError):
        _kafka_admin(services, **{**client_config(services), "sasl_plain_password": "not-the-password"})
    assert _kafka_auth_failures(services) > before  # refused as a bad login, not as an unreachable broker

    admin = _kafka_admin(services, **client_config(services))
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()


def test_kafka_acls_let_the_application_use_topics_but_not_change_them(services, topic):
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, NewTopic, ResourcePattern, ResourceType
    from kafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError

    admin = _kafka_admin(services, **client_config(services))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            admin.delete_topics([topic])
        with pytest.raises(TopicAuthorizationFailedError):
            admin.create_topics([NewTopic(f"{topic}_intruder", 1, 1)])
        grant_self = ACL(
            f"User:{credentials.kafka().user}",
            "*",
            ACLOperation.ALL,
            ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.CLUSTER, "kafka-cluster"),
        )
        assert admin.create_acls([grant_self])["failed"] == [ClusterAuthorizationFailedError]
        assert topic in admin.list_topics()  # still there, and visible to the application
    finally:
        admin.close()
    super_admin = _kafka_admin(services, **client_config(services, admin=True))
    try:
        assert f"{topic}_intruder" not in super_admin.list_topics()
    finally:
        super_admin.close()


def test_credentials_live_in_a_private_file_and_never_in_logs(services):
    path = credentials.secrets_path(services)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    passwords = [v for k, v in credentials.read_file(path).items() if k.endswith("PASSWORD")]
    assert len(passwords) == 4
    logs = list((services.state_path / "logs").glob("*"))
    assert any(p.name == "kafka-server.log" for p in logs) and any(p.name == "cassandra-system.log" for p in logs)
    for log in logs:
        text = log.read_text(errors="replace")
        assert not any(password in text for password in passwords), log
    config = (services.state_path / "kafka" / "server.properties").read_text()
    assert not any(password in config for password in passwords)


@pytest.fixture
def cluster(services):
    started = not any(s.pid for s in spark_cluster.status(services))
    spark_cluster.up(services, log=lambda msg: None)
    yield services
    if started:
        spark_cluster.down(services, purge=True, log=lambda msg: None)


def test_nothing_txmon_starts_listens_beyond_loopback(services, spark, cluster, unique_name, tmp_path):
    """Kafka, Cassandra, the standalone cluster's master and workers, and a running stream's
    driver (its web UI included), found by process, not by the ports we expect."""
    from txmon.infra.services.kafka import ensure_topics
    from txmon.spark_jobs.smoke import start_smoke_query

    topic = unique_name("sec")
    ensure_topics(services.kafka.bootstrap, [topic], 1)
    query = start_smoke_query(spark, services, topic, str(tmp_path / "ckpt"), available_now=False)
    try:
        wait_until(lambda: query.lastProgress is not None, 60)
        assert query.isActive and query.lastProgress is not None

        known = [svc.process.pid() for svc in stack.services(services)]
        known += [d.process.pid() for d in spark_cluster.daemons(services)]
        pids = {pid for pid in known if pid is not None}
        pids |= {child.pid for child in psutil.Process(os.getpid()).children(recursive=True)}
        found = listeners(pids)
        ui_port = int(spark.sparkContext.uiWebUrl.rsplit(":", 1)[1])
        c = services.spark.cluster
        expected = {
            services.kafka.port,
            services.kafka.controller_port,
            services.cassandra.port,
            services.cassandra.storage_port,
            ui_port,
            c.master_port,
            c.master_webui_port,
            *(c.worker_webui_port + i for i in range(c.workers)),
        }
        assert expected <= {port for _, _, port in found}, found
        assert exposed(pids) == []
    finally:
        query.stop()
