"""Single-node Apache Cassandra 5.0 (CassandraDaemon from cassandra-all)."""

from __future__ import annotations

import yaml

from txmon.infra.cassandra_schema import apply_schema, connect, ensure_roles
from txmon.infra.jars import classpath
from txmon.infra.services.base import Service
from txmon.infra.statements import PING

# From Cassandra's conf/jvm17-server.options: the JDK 17 module openings it needs.
_JDK17_OPTIONS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports",
    "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports",
    "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports",
    "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports",
    "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports",
    "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports",
    "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports",
    "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports",
    "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens",
    "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens",
    "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.io=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens",
    "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

_LOGBACK = """\
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""


class CassandraService(Service):
    name = "cassandra"
    port_env_hint = "TXMON_CASSANDRA__PORT / TXMON_CASSANDRA__STORAGE_PORT"

    @property
    def cfg(self):
        return self.settings.cassandra

    @property
    def host(self) -> str:
        return self.cfg.host

    @property
    def ports(self) -> list[int]:
        return [self.cfg.port, self.cfg.storage_port]

    def _yaml(self) -> dict:
        data = self.home / "data"
        c = self.cfg
        return {
            "cluster_name": "txmon",
            "num_tokens": 1,
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch": "SimpleSnitch",
            "seed_provider": [
                {
                    "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                    "parameters": [{"seeds": f"{c.host}:{c.storage_port}"}],
                }
            ],
            "listen_address": c.host,
            "rpc_address": c.host,
            "storage_port": c.storage_port,
            "native_transport_port": c.port,
            "start_native_transport": True,
            "commitlog_sync": "periodic",
            "commitlog_sync_period": "10000ms",
            "data_file_directories": [str(data / "data")],
            "commitlog_directory": str(data / "commitlog"),
            "saved_caches_directory": str(data / "saved_caches"),
            "hints_directory": str(data / "hints"),
            "cdc_raw_directory": str(data / "cdc_raw"),
            # Every client logs in, and roles carry permissions; the roles themselves are
            # created by bootstrap() (infra/cassandra_schema.ensure_roles).
            "authenticator": "PasswordAuthenticator",
            "authorizer": "CassandraAuthorizer",
            "role_manager": "CassandraRoleManager",
            # A fresh 5.0 cluster: no 4.x compatibility constraints on storage.
            "storage_compatibility_mode": "NONE",
            # Small machine: modest concurrency and caches.
            "concurrent_reads": 8,
            "concurrent_writes": 16,
            "concurrent_counter_writes": 8,
            "auto_snapshot": False,
            # Cassandra 5.0's storage engine for new clusters (its cassandra_latest.yaml):
            # trie memtables held off the heap, the BTI sstable format, unified compaction.
            # The stream overwrites the same keys all day (profiles, windows); on the
            # 1 GiB heap, skip-list memtables on the heap kept G1 busy (GC threads ~17 %
            # of Cassandra's CPU at 1,000 tx/s, compaction ~20 %; per-thread CPU).
            "memtable": {
                "configurations": {
                    "skiplist": {"class_name": "SkipListMemtable"},
                    "trie": {"class_name": "TrieMemtable"},
                    "default": {"inherits": "trie"},
                }
            },
            "memtable_allocation_type": "offheap_objects",
            "sstable": {"selected_format": "bti"},
            "default_compaction": {
                "class_name": "UnifiedCompactionStrategy",
                "parameters": {
                    "scaling_parameters": "T4",
                    "max_sstables_to_compact": "64",
                    "target_sstable_size": "1GiB",
                    "sstable_growth": "0.3333333333333333",
                    "min_sstable_size": "100MiB",
                },
            },
            # The stream writes small UNLOGGED batches (<= ~64 rows of ~1 KiB, grouped by
            # replica); keep the warnings for batches well beyond that.
            "batch_size_warn_threshold": "64KiB",
            "batch_size_fail_threshold": "640KiB",
            "unlogged_batch_across_partitions_warn_threshold": 128,
            "disk_failure_policy": "stop",
            "commit_failure_policy": "stop",
        }

    def prepare(self) -> None:
        (self.home / "triggers").mkdir(parents=True, exist_ok=True)
        (self.home / "cassandra.yaml").write_text(yaml.safe_dump(self._yaml(), sort_keys=False))
        (self.home / "logback.xml").write_text(
            _LOGBACK.format(log=self.settings.state_path / "logs" / "cassandra-system.log")
        )

    def command(self, java: str) -> list[str]:
        jars = classpath(self.settings, "cassandra")
        jamm = next((j for j in jars if j.name.startswith("jamm-")), None)
        heap = f"{self.cfg.heap_mb}m"
        return [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:+ParallelRefProcEnabled",
            "-XX:MaxGCPauseMillis=300",
            "-XX:G1HeapRegionSize=16m",
            "-XX:+CrashOnOutOfMemoryError",
            "-Djava.net.preferIPv4Stack=true",
            "-Djava.awt.headless=true",
            *_JDK17_OPTIONS,
            *([f"-javaagent:{jamm}"] if jamm else []),
            self.process.marker,
            f"-Dtxmon.state={self.settings.state_path}",
            f"-Dcassandra.config=file://{self.home / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={self.home / 'data'}",
            f"-Dcassandra.logdir={self.settings.state_path / 'logs'}",
            f"-Dcassandra.triggers_dir={self.home / 'triggers'}",
            f"-Dlogback.configurationFile={self.home / 'logback.xml'}",
            "-Dcassandra-foreground=yes",
            # Single node: no gossip settling, no ring delay, no superuser wait.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-Dcassandra.initial_token=0",
            "-cp",
            ":".join(str(j) for j in jars),
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def probe(self) -> str | None:
        """Healthy means the application role can log in and query."""
        try:
            cluster, session = connect(self.settings, keyspace=None, timeout=3)
        except Exception as exc:  # noqa: BLE001 - the driver raises many unrelated types while starting
            if _login_refused(exc):
                return (
                    "CQL answers but refuses txmon's login: the node's roles do not match "
                    "TXMON_CASSANDRA_USER / TXMON_CASSANDRA_PASSWORD (see `txmon infra credentials`)"
                )
            return f"CQL not answering: {type(exc).__name__}"
        try:
            session.execute(PING)
            return None
        except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
            return f"CQL query failed: {type(exc).__name__}"
        finally:
            cluster.shutdown()

    def ready_probe(self) -> str | None:
        """Ready to bootstrap: CQL answers, even if only to refuse a login (on first start
        the application role does not exist until bootstrap() creates it)."""
        problem = self.probe()
        return None if problem is None or problem.startswith("CQL answers but refuses") else problem

    def bootstrap(self) -> None:
        ensure_roles(self.settings)
        apply_schema(self.settings)


def _login_refused(exc: Exception) -> bool:
    # The Cassandra driver only for the health probe: starting and stopping the node do not need it.
    from cassandra import AuthenticationFailed

    return isinstance(exc, AuthenticationFailed) or any(
        isinstance(e, AuthenticationFailed) for e in (getattr(exc, "errors", None) or {}).values()
    )
