"""`txmon console ...`: serve the console, manage its users, resend labels. Registered in
infra/cli.py. Options can also be set through the environment variables in ``--help``."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from txmon.infra.cassandra_schema import connect
from txmon.infra.errors import ConfigError, TxmonError
from txmon.infra.settings import load_settings

console_app = typer.Typer(
    help="The fraud desk's web console: alert queue, cases, dashboards.", invoke_without_command=True
)
users_app = typer.Typer(help="Console users (roles: viewer, analyst, supervisor, admin).", no_args_is_help=True)
labels_app = typer.Typer(help="Labels made by dispositions.", no_args_is_help=True)
console_app.add_typer(users_app, name="users")
console_app.add_typer(labels_app, name="labels")


def _store():
    # lazy: webapp.console.store + cassandra (69 ms to import); `txmon --help` loads this module without it
    from txmon.webapp.console.store import CONSOLE_TABLES, ConsoleStore

    settings = load_settings()
    try:
        cluster, session = connect(settings, settings.cassandra.keyspace)
    except Exception as exc:  # noqa: BLE001 - any connection failure has the same fix
        raise TxmonError(
            f"Cassandra at {settings.cassandra.host}:{settings.cassandra.port} is not reachable "
            f"({type(exc).__name__}); start it with `txmon infra up`"
        ) from None
    tables = cluster.metadata.keyspaces[settings.cassandra.keyspace].tables
    missing = [t for t in CONSOLE_TABLES if t not in tables]
    if missing:
        cluster.shutdown()
        raise TxmonError(f"the console's tables ({', '.join(missing)}) are missing; run `txmon infra up`")
    return settings, cluster, ConsoleStore(session)


@console_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(
            envvar="TXMON_CONSOLE_HOST",
            help="address to listen on (loopback by default; put TLS in front before opening it to a network)",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TXMON_CONSOLE_PORT", help="port to listen on")] = 8050,
) -> None:
    """Serve the console at http://HOST:PORT/console/ (the scoring API is in the same app).

    Sessions last TXMON_CONSOLE_SESSION_MINUTES (480); set TXMON_CONSOLE_SECURE_COOKIE=1
    behind TLS. Create the first user with `txmon console users add NAME --role admin`.
    """
    if ctx.invoked_subcommand is not None:
        return
    # lazy: fastapi (1.2 s to import); `txmon --help` loads this module without it
    import uvicorn

    from txmon.webapp.app import create_app

    settings = load_settings()
    typer.echo(f"console: http://{host}:{port}/console/")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", proxy_headers=False)


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="viewer | analyst | supervisor | admin")] = "analyst",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input (scripts)")
    ] = False,
) -> None:
    """Add a user, or replace an existing user's role and password. Asks for the password
    (never an argument: it would stay in the shell history and the process list)."""

    # lazy: webapp.console.store (86 ms to import); `txmon --help` loads this module without it
    from txmon.webapp.console.auth import hash_password, password_problem
    from txmon.webapp.console.store import ROLES

    if role not in ROLES:
        raise ConfigError(f"--role {role!r} is not one of {', '.join(ROLES)}")
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", username):
        raise ConfigError(f"user name {username!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    problem = password_problem(password)
    if problem:
        raise ConfigError(f"password refused: {problem}")
    _, cluster, store = _store()
    try:
        existed = store.user(username) is not None
        store.put_user(username, role, hash_password(password), datetime.now(UTC))
    finally:
        cluster.shutdown()
    typer.echo(f"{'updated' if existed else 'added'} {username} ({role})")


@users_app.command("list")
def users_list() -> None:
    """Every console user with their role."""
    _, cluster, store = _store()
    try:
        for u in store.users():
            typer.echo(f"{u.username:<24} {u.role:<11} {'disabled' if u.disabled else 'enabled'}")
    finally:
        cluster.shutdown()


@users_app.command("disable")
def users_disable(username: str, enable: Annotated[bool, typer.Option(help="enable instead")] = False) -> None:
    """Stop a user logging in and end their open sessions; --enable undoes it."""
    _, cluster, store = _store()
    try:
        if store.user(username) is None:
            raise ConfigError(f"no console user {username!r}")
        store.set_disabled(username, not enable, datetime.now(UTC))
    finally:
        cluster.shutdown()
    typer.echo(f"{username} {'enabled' if enable else 'disabled'}")


@labels_app.command("resend")
def labels_resend(
    limit: Annotated[int, typer.Option(help="send at most this many", min=1)] = 1000,
    days: Annotated[
        int, typer.Option(help="look at the cases disposed in the last DAYS UTC days", min=1, max=3660)
    ] = 30,
) -> None:
    """Send the labels of dispositions that Kafka never acknowledged (claimed and not
    sent, or never claimed), newest first: those of the cases disposed in the last DAYS
    days (the audit log is read a day at a time), at most LIMIT a run. Says when more are
    waiting."""
    # lazy: ingestion.events (270 ms to import); `txmon --help` loads this module without it
    from txmon.alerting.store import AlertStore
    from txmon.webapp.console.cases import KafkaLabelSink, pending_labels, publish_label

    settings, cluster, store = _store()
    sink = KafkaLabelSink(settings)
    sent = 0
    now = datetime.now(UTC)
    try:
        claims, more = pending_labels(store, AlertStore(store.session), now - timedelta(days=days), now, limit)
        for claim in claims:
            publish_label(store, sink, claim, "txmon-cli", "admin", datetime.now(UTC))
            sent += 1
    finally:
        sink.close()
        cluster.shutdown()
    typer.echo(f"{sent} label(s) sent")
    if more:
        typer.echo(f"at least one more is waiting: run again (at most --limit {limit} a run)")


@console_app.command("reindex")
def reindex(
    days: Annotated[int, typer.Option(help="IST days back from today to index", min=1, max=3660)] = 31,
) -> None:
    """Fill the console's read tables (alerts_by_rank, alerts_by_party, console_hourly,
    account_transactions, fraud_labels_by_day) for alerts, transactions and labels stored
    before they existed; safe to run again (upserts)."""
    # lazy: numpy + cassandra (540 ms to import); `txmon --help` loads this module without it
    from txmon.alerting.contract import DAY_TZ
    from txmon.alerting.store import AlertStore
    from txmon.infra import fraud_label_days, hourly_counts
    from txmon.infra.cassandra_schema import prepared
    from txmon.infra.readback import backfill_account_transactions

    _, cluster, _store_ = _store()
    try:
        alerts = AlertStore(_store_.session)
        today = datetime.now(UTC).astimezone(DAY_TZ).date()
        indexed = 0
        for n in range(days):
            day_rows = alerts.alerts_for_day(today - timedelta(days=n))
            for alert in alerts.load_alerts([r["alert_id"] for r in day_rows]):
                alerts.index_alert(alert)
                indexed += 1
        typer.echo(f"{indexed:,} alert(s) indexed for the queue and cases")
        since = datetime.combine(today - timedelta(days=days - 1), datetime.min.time(), DAY_TZ)
        recent = backfill_account_transactions(_store_.session, since.astimezone(UTC).replace(tzinfo=None))
        typer.echo(f"{recent:,} scored transaction(s) indexed for the case pages' recent transactions")
        fraud_label_days.backfill(_store_.session, prepared, since, log=typer.echo)
        hourly_counts.backfill(_store_.session, prepared, alerts.alerts_for_day, since, log=typer.echo)
    finally:
        cluster.shutdown()
