"""Cassandra connection and schema: the one module that knows the CQL layout.

The DDL lives in ``infra/schema.cql``; this module fills in the keyspace and
replication from the configuration and applies it idempotently.

Every connection logs in (PasswordAuthenticator): as the application role by default,
as the administrator role for schema and role changes (credentials from the environment,
infra/credentials.py). The administrator creates each keyspace and grants the
application role SELECT and MODIFY on it, nothing more.

Every reader and writer prepares its statements through :func:`prepared` (once per
driver session) and reads a list of keys through :func:`rows_in` (``... IN ?`` in
reads of at most :data:`IN_KEYS` keys).
"""

from __future__ import annotations

import functools
import re
import socket
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from txmon.infra import credentials
from txmon.infra.credentials import Credential
from txmon.infra.settings import Settings

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
    text = "\n".join(line for line in SCHEMA_FILE.read_text().splitlines() if not line.lstrip().startswith("--"))
    text = text.replace("{keyspace}", keyspace).replace(
        "{replication}", replication_clause(replication_factor, datacenter)
    )
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS \{keyspace\}\.(\w+) \((.*?)\n\)", re.DOTALL)
_ADD_COLUMN = re.compile(r"ALTER TABLE \{keyspace\}\.(\w+) ADD IF NOT EXISTS (\w+) ")


@functools.cache
def _columns_by_table() -> dict[str, tuple[str, ...]]:
    text = "\n".join(line.split("--")[0] for line in SCHEMA_FILE.read_text().splitlines())
    tables: dict[str, list[str]] = {}
    for table, body in _CREATE_TABLE.findall(text):
        tables[table] = [
            line.split()[0] for line in body.splitlines() if line.strip() and not line.strip().startswith("PRIMARY KEY")
        ]
    for table, column in _ADD_COLUMN.findall(text):
        if column not in tables[table]:
            tables[table].append(column)
    return {table: tuple(columns) for table, columns in tables.items()}


def table_columns(table: str) -> tuple[str, ...]:
    """The columns of ``table`` as schema.cql defines them, in order (columns added by an
    ALTER last): code that writes a table derives its column list from here.

    >>> table_columns("labels")
    ('txn_id', 'is_fraud', 'scenario', 'label_time', 'received_at')
    """
    try:
        return _columns_by_table()[table]
    except KeyError:
        raise KeyError(f"no table {table!r} in {SCHEMA_FILE.name}") from None


def open_cluster(
    host: str,
    port: int,
    timeout: float = 10,
    request_timeout: float = 10,
    consistency: str = "LOCAL_ONE",
    datacenter: str | None = None,
    credential: Credential | None = None,
    compression: bool = True,
    protocol_version: int = 5,
):
    """A driver Cluster with txmon's settings: token-aware local policy, protocol v5,
    the configured consistency (LOCAL_QUORUM on a multi-node cluster with RF 3), logged
    in as ``credential`` (default: the application role from the environment).
    Every connection the project makes (CLI, tests, Spark sinks) is built here.

    ``compression``: the driver's default, LZ4 on every message. The scoring API turns
    it off: its messages are a few hundred bytes, and compressing each one in Python's
    driver cost its worker more CPU than the bytes saved.

    ``protocol_version``: 5 by default. Version 5 wraps every message in a checksummed
    frame whose header CRC the Python driver computes bit by bit in Python, on both sending
    and receiving; the scoring API, with three small reads per request, speaks version 4."""
    # The Cassandra driver is slow to import: loaded on first connection, not by every command importing this module.
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=datacenter)),
        request_timeout=max(timeout, request_timeout),
        consistency_level=getattr(ConsistencyLevel, consistency),
    )
    credential = credential or credentials.cassandra()
    return Cluster(
        contact_points=[host],
        port=port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=PlainTextAuthProvider(credential.user, credential.password),
        connect_timeout=timeout,
        control_connection_timeout=timeout,
        protocol_version=protocol_version,
        # TCP_NODELAY (the driver leaves Nagle's algorithm on): without it, under load the
        # stream's one drift-state INSERT per micro-batch waited ~40 ms (the signature of Nagle
        # against delayed ACKs) where a probe saw p50 2 ms, and micro-batches at 1,000 tx/s
        # took 1.10 s instead of 0.90 (docs/performance.md).
        sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        compression=compression,
    )


_PREPARED: dict[tuple[int, str], Any] = {}


def prepared(session: Any, cql: str) -> Any:
    """``cql`` prepared once per driver session: a page view, a Spark task or a
    micro-batch must not pay a PREPARE round trip for each read."""
    key = (id(session), cql)
    stmt = _PREPARED.get(key)
    if stmt is None:
        stmt = _PREPARED[key] = session.prepare(cql)
    return stmt


def forget_prepared() -> None:
    """Drop every cached statement. A process that shuts its sessions down calls this:
    a later session could get a closed one's ``id`` and find its statements."""
    _PREPARED.clear()


IN_KEYS = 100
"""Keys one ``... IN ?`` read names at most: the coordinator fetches every partition of
the list before it answers, so one long list is one slow read holding one connection."""


def rows_in(
    session: Any,
    stmt: Any,
    keys: Sequence[Any],
    *,
    before: tuple[Any, ...] = (),
    per_read: int = IN_KEYS,
    in_flight: int | None = None,
) -> list[Any]:
    """The rows of the prepared ``... IN ?`` statement ``stmt`` over ``keys``: one read
    per ``per_read`` keys, bound as ``(*before, keys of the read)``, at most
    ``in_flight`` reads sent and not yet answered (None: all at once). Rows come in the
    order of the reads; the first read that failed, in that order, raises."""
    if per_read < 1 or (in_flight is not None and in_flight < 1):
        raise ValueError(f"per_read and in_flight must be at least 1, not {per_read} and {in_flight}")
    rows: list[Any] = []
    sent: deque[Any] = deque()
    for start in range(0, len(keys), per_read):
        if in_flight is not None and len(sent) >= in_flight:
            rows.extend(sent.popleft().result())
        sent.append(session.execute_async(stmt, (*before, list(keys[start : start + per_read]))))
    while sent:
        rows.extend(sent.popleft().result())
    return rows


def connect(
    settings: Settings,
    keyspace: str | None = None,
    timeout: float = 10,
    *,
    admin: bool = False,
    credential: Credential | None = None,
):
    """(cluster, session) for the configured node, as the application role (``admin``:
    the administrator role; ``credential``: whoever it names)."""
    c = settings.cassandra
    cluster = open_cluster(
        c.host,
        c.port,
        timeout,
        consistency=c.consistency,
        datacenter=c.datacenter,
        credential=credential or credentials.cassandra(admin),
    )
    try:
        session = cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()
        raise
    return cluster, session


def apply_schema(settings: Settings, keyspace: str | None = None) -> None:
    """Create the keyspace and every table if missing, as the administrator, and let the
    application role read and write it (safe to run any number of times)."""
    ks = keyspace or settings.cassandra.keyspace
    cluster, session = connect(settings, admin=True)
    try:
        for stmt in schema_statements(ks, settings.cassandra.replication_factor, settings.cassandra.datacenter):
            session.execute(stmt, timeout=60)
        app = credentials.cassandra().user
        for permission in APP_PERMISSIONS:
            session.execute(f'GRANT {permission} ON KEYSPACE {ks} TO "{app}"', timeout=60)
        cluster.refresh_schema_metadata()
    finally:
        cluster.shutdown()


# What the application role may do in its keyspaces: read and write rows (MODIFY covers
# TRUNCATE). Not CREATE/ALTER/DROP (schema changes go through apply_schema) nor AUTHORIZE.
APP_PERMISSIONS = ("SELECT", "MODIFY")
DEFAULT_SUPERUSER = "cassandra"  # created by Cassandra at first start, password "cassandra"


def ensure_roles(settings: Settings, timeout: float = 60) -> None:
    """Roles at first start, and their passwords kept in line with the environment.

    A fresh node has only the default superuser ``cassandra``/``cassandra``, known to
    everyone. Logged in as it, create txmon's administrator role (SUPERUSER, password
    from the environment); then, as that role, drop ``cassandra``. After that, create the
    application role (LOGIN, no superuser) or reset its password to the environment's,
    so a password changed in the environment is applied by the next ``txmon infra up``.
    """
    # lazy: cassandra (17 ms to import); `txmon --help` loads this module without it
    from cassandra import AuthenticationFailed

    cluster, session = admin_session(settings, timeout)
    try:
        session.execute(f'DROP ROLE IF EXISTS "{DEFAULT_SUPERUSER}"', timeout=60)
        app = credentials.cassandra()
        statement = session.prepare("SELECT role FROM system_auth.roles WHERE role = ?")
        exists = session.execute(statement, [app.user]).one() is not None
        if exists and _can_log_in(settings, app, AuthenticationFailed):
            return  # Cassandra refuses a second password change within 5 s: change only when needed
        verb = "ALTER" if exists else "CREATE"
        extra = "" if exists else " AND LOGIN = true AND SUPERUSER = false"
        # Role DDL takes no bind markers; the password is escaped as a CQL string literal.
        session.execute(f'{verb} ROLE "{app.user}" WITH PASSWORD = {_cql_string(app.password)}{extra}', timeout=60)
    finally:
        cluster.shutdown()


def admin_session(settings: Settings, timeout: float = 60) -> tuple:
    """(cluster, session) logged in as txmon's administrator role, created first if the
    node has only its default superuser. Cassandra creates that superuser a moment after
    CQL opens: until then each login is refused, and retried every second up to
    ``timeout``; any other failure is raised at once."""
    # lazy: cassandra (530 ms to import); `txmon --help` loads this module without it
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

    admin = credentials.cassandra(admin=True)

    def refused(exc: BaseException) -> bool:
        return isinstance(exc, NoHostAvailable) and _auth_refused(exc, AuthenticationFailed)

    for attempt in Retrying(
        stop=stop_after_delay(timeout), wait=wait_fixed(1), retry=retry_if_exception(refused), reraise=True
    ):
        with attempt:
            try:
                return connect(settings, credential=admin)
            except NoHostAvailable as exc:
                if not refused(exc):
                    raise
            # The administrator does not exist yet: only the default superuser can create it.
            _create_admin(settings, admin)
            return connect(settings, credential=admin)
    raise AssertionError("unreachable: Retrying returns or raises")


def _can_log_in(settings: Settings, credential: Credential, auth_failed: type) -> bool:
    # lazy: cassandra (530 ms to import); `txmon --help` loads this module without it
    from cassandra.cluster import NoHostAvailable

    try:
        cluster, _ = connect(settings, credential=credential)
    except NoHostAvailable as exc:
        if _auth_refused(exc, auth_failed):
            return False
        raise
    cluster.shutdown()
    return True


def _create_admin(settings: Settings, admin: Credential) -> None:
    cluster, session = connect(settings, credential=Credential(DEFAULT_SUPERUSER, DEFAULT_SUPERUSER))
    try:
        session.execute(
            f'CREATE ROLE IF NOT EXISTS "{admin.user}" WITH PASSWORD = {_cql_string(admin.password)} '
            "AND LOGIN = true AND SUPERUSER = true",
            timeout=60,
        )
    finally:
        cluster.shutdown()


def _auth_refused(exc: Exception, auth_failed: type) -> bool:
    """NoHostAvailable because the node refused the login (not because it is down)."""
    return any(isinstance(e, auth_failed) for e in getattr(exc, "errors", {}).values())


def _cql_string(value: str) -> str:
    """A CQL string literal.

    >>> _cql_string("it's")
    "'it''s'"
    """
    return "'" + value.replace("'", "''") + "'"
