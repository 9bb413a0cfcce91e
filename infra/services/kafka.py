"""Single-node Apache Kafka 4.x in KRaft combined mode (broker + controller)."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import uuid

from txmon.infra import credentials
from txmon.infra.errors import ServiceStartError
from txmon.infra.jars import classpath
from txmon.infra.kafka_client import SCRAM_LOGIN_MODULE, client_config, jaas_config
from txmon.infra.process import find_java
from txmon.infra.services.base import Service

PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
ADMIN_PASSWORD_ENV = "TXMON_KAFKA_ADMIN_PASSWORD"
SCRAM_MARKER = "txmon-scram-users"  # written beside meta.properties by a format with --add-scram

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


class KafkaService(Service):
    name = "kafka"
    port_env_hint = "TXMON_KAFKA__PORT / TXMON_KAFKA__CONTROLLER_PORT"

    @property
    def cfg(self):
        return self.settings.kafka

    @property
    def host(self) -> str:
        return self.cfg.host

    @property
    def ports(self) -> list[int]:
        return [self.cfg.port, self.cfg.controller_port]

    def _properties(self) -> str:
        c = self.cfg
        if c.security_protocol != "SASL_PLAINTEXT":
            raise ServiceStartError(
                f"the local broker runs SASL_PLAINTEXT on loopback only; kafka.security_protocol={c.security_protocol} "
                "is for a broker with TLS that you run (docs/security.md shows its listener settings)"
            )
        admin = credentials.kafka(admin=True)
        mechanism = c.sasl_mechanism.lower()
        # Passwords are not written here: the broker resolves ${env:...} from its own
        # environment (EnvVarConfigProvider), which it inherits from `txmon infra up`.
        admin_password = f"${{env:{ADMIN_PASSWORD_ENV}}}"
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                # Both listeners on loopback (kafka.host) and both authenticated: clients and the
                # broker itself with SCRAM on CLIENT; the broker to its controller with PLAIN on
                # CONTROLLER (a KRaft controller cannot use SCRAM: its users live in the metadata
                # it serves), whose only user is the administrator, defined right here.
                f"listeners=CLIENT://{c.host}:{c.port},CONTROLLER://{c.host}:{c.controller_port}",
                f"advertised.listeners=CLIENT://{c.host}:{c.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=CLIENT",
                "listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
                f"listener.name.client.sasl.enabled.mechanisms={c.sasl_mechanism}",
                f"sasl.mechanism.inter.broker.protocol={c.sasl_mechanism}",
                f"listener.name.client.{mechanism}.sasl.jaas.config="
                + jaas_config(SCRAM_LOGIN_MODULE, admin.user, admin_password),
                "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                "sasl.mechanism.controller.protocol=PLAIN",
                "listener.name.controller.plain.sasl.jaas.config="
                + jaas_config(PLAIN_LOGIN_MODULE, admin.user, admin_password)[:-1]
                + f' user_{admin.user}="{admin_password}";',
                "config.providers=env",
                "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider",
                # ACLs: nothing is allowed that no ACL allows; the administrator (the broker's own
                # principal too) is a super user; the application gets its ACLs in bootstrap().
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                f"super.users=User:{admin.user}",
                "allow.everyone.if.no.acl.found=false",
                f"controller.quorum.bootstrap.servers={c.host}:{c.controller_port}",
                f"log.dirs={self.home / 'data'}",
                f"num.partitions={c.partitions}",
                "auto.create.topics.enable=false",
                # One node: every internal topic has a single replica.
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Sized for a 2-core box.
                "num.network.threads=2",
                "num.io.threads=4",
                "log.retention.hours=48",
                "",
            ]
        )

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "server.properties").write_text(self._properties())
        (self.home / "log4j2.properties").write_text(
            _LOG4J2.format(log=self.settings.state_path / "logs" / "kafka-server.log")
        )
        data = self.home / "data"
        if not (data / "meta.properties").exists():
            self._format_storage()
            (data / SCRAM_MARKER).write_text("SCRAM users created at format\n")
        elif not (data / SCRAM_MARKER).exists():
            # Formatted before the broker required SASL: it has no SCRAM users, so neither
            # the broker nor any client could log in.
            raise ServiceStartError(
                f"kafka: the storage in {data} was formatted without SCRAM users (before authentication "
                "was required); delete it with `txmon infra down --purge` (its topics are lost) and run "
                "`txmon infra up` again"
            )

    def _java_base(self, java: str) -> list[str]:
        cp = ":".join(str(p) for p in classpath(self.settings, "kafka"))
        return [java, f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}", "-cp", cp]

    def _format_storage(self) -> None:
        # SCRAM users exist from the first start: the broker itself logs in as the
        # administrator before anyone could create a user through the API.
        scram = [
            arg
            for cred in (credentials.kafka(admin=True), credentials.kafka())
            for arg in ("--add-scram", f"{self.cfg.sasl_mechanism}=[name={cred.user},password={cred.password}]")
        ]
        cmd = [
            *self._java_base(find_java()),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={new_cluster_id()}",
            "-c",
            str(self.home / "server.properties"),
            "--standalone",
            *scram,
        ]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=self.home)
        if res.returncode != 0:
            output = (res.stdout + res.stderr).strip()[-800:]
            for cred in (credentials.kafka(admin=True), credentials.kafka()):
                output = output.replace(cred.password, "***")
            raise ServiceStartError(f"kafka storage format failed: {output}")

    def command(self, java: str) -> list[str]:
        heap = f"{self.cfg.heap_mb}m"
        return [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            self.process.marker,
            f"-Dtxmon.state={self.settings.state_path}",
            *self._java_base(java)[1:],
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]

    def probe(self) -> str | None:
        # kafka-python only to talk to the broker: starting and stopping it do not need it.
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.cfg.bootstrap,
                request_timeout_ms=3000,
                client_id="txmon-probe",
                **client_config(self.settings, admin=True),
            )
        except (KafkaError, OSError, ValueError) as exc:
            return f"no metadata response: {type(exc).__name__}"
        try:
            admin.list_topics()
            return None
        except (KafkaError, OSError) as exc:
            return f"metadata request failed: {type(exc).__name__}"
        finally:
            admin.close()

    def bootstrap(self) -> None:
        ensure_topics(self.cfg.bootstrap, self.cfg.topics.all(), self.cfg.partitions)
        ensure_app_acls(self.settings)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never starts with '-': the storage tool's argument parser would take it for an option
    (this failed one CI run in 64 before it was guarded).

    >>> all(not new_cluster_id().startswith("-") and len(new_cluster_id()) == 22 for _ in range(500))
    True
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def ensure_topics(bootstrap: str, topics: list[str], partitions: int) -> list[str]:
    """Create any missing topics (single replica). Returns the ones created."""
    # lazy: kafka (561 ms to import); txmon.infra.smoke_run imports this module without it
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="txmon-admin", **client_config(admin=True))
    try:
        missing = [t for t in topics if t not in set(admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently: the state we wanted
                admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing])
        return missing
    finally:
        admin.close()


# The application principal's ACLs: read and write records of any topic and consume in
# any group (test runs and benchmarks use their own topics and groups); describe them.
# Not granted: creating, deleting or altering topics and their configs, and anything on
# the cluster resource (ACLs, quotas, users): those need the administrator.
APP_ACLS = (
    ("TOPIC", "*", ("READ", "WRITE", "DESCRIBE")),
    ("GROUP", "*", ("READ", "DESCRIBE")),
)


def ensure_app_acls(settings) -> None:
    """Allow the application principal what :data:`APP_ACLS` lists (idempotent: the
    broker keeps one copy of an ACL however often it is created)."""
    # lazy: kafka (561 ms to import); txmon.infra.smoke_run imports this module without it
    from kafka import KafkaAdminClient
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType

    principal = f"User:{credentials.kafka().user}"
    acls = [
        ACL(principal, "*", ACLOperation[op], ACLPermissionType.ALLOW, ResourcePattern(ResourceType[kind], name))
        for kind, name, ops in APP_ACLS
        for op in ops
    ]
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap, client_id="txmon-admin", **client_config(settings, admin=True)
    )
    try:
        result = admin.create_acls(acls)
        if result.get("failed"):
            raise ServiceStartError(f"kafka: creating the application's ACLs failed: {result['failed']}")
    finally:
        admin.close()
