"""`txmon alerts ...` commands (dispatcher, digest, retries, contacts). Registered in infra/cli.py.

Every option can also be set through the environment variable shown in ``--help``;
the rest of the configuration is config/alerting.yaml (TXMON_ALERTING__* overrides).
"""

from __future__ import annotations

import csv
import logging
import re
import signal
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from txmon.alerting.errors import AlertingConfigError
from txmon.infra.masking import redact
from txmon.infra.settings import load_settings

# Each command imports what it runs when it runs: `txmon --help` and every other command
# stay free of pandas, Spark and scikit-learn (the slowest imports in the project).

alerts_app = typer.Typer(help="Alert dispatch to bank staff and customers: email, SMS, webhook.", no_args_is_help=True)


class RedactingFilter(logging.Filter):
    """Last line of defence: mask any phone, account number, VPA or email in a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def _logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.WARNING)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise AlertingConfigError(f"--date {value!r} is not a date; give it as YYYY-MM-DD") from None


LogLevel = Annotated[str, typer.Option(envvar="TXMON_ALERTS_LOG_LEVEL", help="log level (DEBUG, INFO, WARNING)")]


@alerts_app.command("dispatch")
def dispatch(
    topic: Annotated[
        str | None,
        typer.Option(
            envvar="TXMON_ALERTS_TOPIC", help="alerts topic (default: dispatcher.topic, else kafka.topics.alerts)"
        ),
    ] = None,
    group_id: Annotated[
        str | None,
        typer.Option(envvar="TXMON_ALERTS_GROUP_ID", help="Kafka consumer group (default: dispatcher.group_id)"),
    ] = None,
    max_messages: Annotated[
        int | None,
        typer.Option(
            min=1,
            envvar="TXMON_ALERTS_MAX_MESSAGES",
            help="stop after this many records (batch use, tests) (default: run until stopped)",
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            envvar="TXMON_ALERTS_IDLE_TIMEOUT",
            help="stop after this many seconds without a record (default: never)",
        ),
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Consume the alerts topic and deliver every alert by email, SMS and webhook.

    Offsets are committed only after each delivery outcome is in Cassandra; a restart
    re-delivers what was not committed and skips what the delivery log shows as sent.
    A channel that is down opens its circuit: its deliveries are parked and sent by this
    process once a probe finds the provider back (settings: circuit.*, retry.requeue_*).
    SIGTERM/SIGINT finish the current poll and exit cleanly.
    """
    # lazy: jinja2 (704 ms to import); `txmon --help` loads this module without it
    from txmon.alerting.config import load_alerting_config
    from txmon.alerting.runtime import dispatch as run_dispatch

    _logging(log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stats = run_dispatch(
        load_settings(),
        load_alerting_config(),
        topic=topic,
        group_id=group_id,
        max_messages=max_messages,
        idle_timeout_s=idle_timeout,
        stop=stop,
    )
    typer.echo(stats.line())


@alerts_app.command("digest")
def digest(
    day: Annotated[
        str,
        typer.Option(
            "--date",
            envvar="TXMON_ALERTS_DATE",
            help="IST day to summarise, YYYY-MM-DD (required: batch work never assumes 'today')",
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="write the HTML, text and PNG here instead of sending")] = None,
    log_level: LogLevel = "WARNING",
) -> None:
    """Email the daily digest for fraud-desk staff: counts by decision and rule, top
    accounts (masked), a chart of alerts per hour. Sent once per day; re-runs are no-ops."""
    # lazy: jinja2 (704 ms to import); `txmon --help` loads this module without it
    from txmon.alerting.config import load_alerting_config
    from txmon.alerting.digest import send_digest
    from txmon.alerting.runtime import runtime

    _logging(log_level)
    the_day = _day(day)
    config = load_alerting_config()
    with runtime(load_settings(), config, needed=set() if out is not None else {"email"}) as rt:
        result = send_digest(rt, the_day, out_dir=out)
    d = result.data
    typer.echo(
        f"digest {d.day}: {d.total} alerts ({', '.join(f'{k} {v}' for k, v in d.by_decision.items())})"
        + (f"; written to {out}" if out else f"; email: {', '.join(o.status for o in result.outcomes)}")
    )
    if any(o.status == "failed" for o in result.outcomes):
        raise typer.Exit(1)


@alerts_app.command("retry-failed")
def retry_failed(
    day: Annotated[
        str | None,
        typer.Option(
            "--date",
            envvar="TXMON_ALERTS_DATE",
            help="last IST day of alerts to retry, YYYY-MM-DD (default: today in IST)",
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=31, help="how many days back from --date to look")] = 2,
    log_level: LogLevel = "INFO",
) -> None:
    """Retry deliveries whose retries ran out (the alert-dispatch DAG runs this).
    Exit 1 while some still fail, so the DAG task retries."""
    # lazy: jinja2 (704 ms to import); `txmon --help` loads this module without it
    from txmon.alerting.config import load_alerting_config
    from txmon.alerting.contract import DAY_TZ
    from txmon.alerting.retry import retry_failed_deliveries
    from txmon.alerting.runtime import runtime

    _logging(log_level)
    last = _day(day) if day else datetime.now(UTC).astimezone(DAY_TZ).date()
    with runtime(load_settings(), load_alerting_config()) as rt:
        report = retry_failed_deliveries([last - timedelta(days=n) for n in range(days)], rt)
    typer.echo(report.line())
    if report.still_failed:
        raise typer.Exit(1)


@alerts_app.command("contacts-import")
def contacts_import(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV with columns account,phone,email[,name]")
    ],
) -> None:
    """Load customer contact details (for customer SMS/email) into Cassandra (upsert)."""
    # lazy: ingestion.events (270 ms to import); `txmon --help` loads this module without it
    from txmon.alerting.config import deliverable
    from txmon.alerting.store import open_store
    from txmon.ingestion.events import ACCOUNT_NUMBER_PATTERN

    rows = []
    try:
        with file.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"account", "phone", "email"} - set(reader.fieldnames or [])
            if missing:
                raise AlertingConfigError(
                    f"{file}: missing column(s) {sorted(missing)}; header must be account,phone,email[,name]"
                )
            records = [(reader.line_num, rec) for rec in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AlertingConfigError(f"{file}: cannot read it as UTF-8 CSV ({exc}); save it as UTF-8") from None
    for line, rec in records:
        # A short line leaves its last cells None; a long one puts the rest under None.
        if None in rec:
            raise AlertingConfigError(f"{file}:{line}: more cells than the header's columns; quote cells with commas")
        account, phone = (rec["account"] or "").strip(), (rec["phone"] or "").strip() or None
        if not re.fullmatch(ACCOUNT_NUMBER_PATTERN, account):
            raise AlertingConfigError(f"{file}:{line}: account is not 9-18 digits; fix the row")
        if phone and not deliverable("sms", phone):
            raise AlertingConfigError(f"{file}:{line}: phone must be E.164, e.g. +919876543210; fix the row")
        mail = (rec["email"] or "").strip() or None
        if mail and not deliverable("email", mail):
            raise AlertingConfigError(
                f"{file}:{line}: email must be one plain ASCII address, e.g. name@bank.example; fix the row"
            )
        rows.append((account, phone, mail, (rec.get("name") or "").strip() or None))
    cluster, store = open_store(load_settings())
    try:
        n = store.save_contacts(rows, datetime.now(UTC))
    finally:
        cluster.shutdown()
    typer.echo(f"{n} contacts upserted")
