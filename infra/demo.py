"""`txmon demo` / `make demo`: the whole mission on the local default, end to end.

Starts the services, runs the transactions stream, produces simulated UPI/banking
traffic (with one bad record of each kind mixed in now and then), waits until the
stream has caught up, then runs the alert dispatcher against local stand-ins the demo
starts itself (a loopback SMTP server and SMS gateway, and a chat webhook: the ones in
``alerting/testing.py``), and prints what happened in under 60 lines: what landed and
was scored (read back from Cassandra), what the drift monitor recorded, and what
reached people by email and SMS (masked), with an example message.

It also starts the web application (scoring API and fraud-desk console, one uvicorn
process on loopback) as a background service beside Kafka and Cassandra
(infra/services/webapp.py: `txmon infra status` shows it, `txmon infra down` stops it; a
second run reuses it), and ends with its URLs, an API key and a console login
(webapp/demo_access.py: made once per state dir, shown by the run that made them).

Spark logs at WARN (config/log4j2-demo.properties), minus start-up notes and the streaming
trigger's "Current batch is falling behind", which would repeat once per late micro-batch:
the demo counts late batches from the query's progress and says it once, in the summary. Progress (events produced, offsets
caught up) is one line, rewritten in place on a terminal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import cycle
from shlex import quote
from types import SimpleNamespace
from typing import TYPE_CHECKING

from txmon.alerting.config import load_alerting_config
from txmon.alerting.runtime import dispatch
from txmon.alerting.store import open_store
from txmon.alerting.testing import SmsGatewayStub, SmtpSink, WebhookSink, provider_env
from txmon.infra import stack
from txmon.infra.cassandra_schema import connect, rows_in
from txmon.infra.masking import mask_account, mask_phone, redact
from txmon.infra.process import wait_until
from txmon.infra.readback import account_aggregates, count_landed, dead_letters_since, kafka_end_offsets
from txmon.infra.services.webapp import READY_TIMEOUT_S, webapp_service
from txmon.infra.settings import PROJECT_ROOT, Settings
from txmon.infra.statements import SCORED_DEMO_IN
from txmon.ingestion.bad_records import bad_records
from txmon.ingestion.simulate import SimulateOptions, run_simulation
from txmon.spark_jobs.session import build_session, spark_conf
from txmon.spark_jobs.transactions_stream import StreamOptions, start_all
from txmon.webapp.api.config import load_api_settings
from txmon.webapp.demo_access import API_KEY_SCOPES, ensure_api_key, ensure_console_login, write_example_event

RULE = "-" * 72
if TYPE_CHECKING:
    from txmon.infra.services.webapp import WebAppService

SPARK_LOG_CONFIG = PROJECT_ROOT / "config" / "log4j2-demo.properties"
DEMO_SMS_TOKEN_ENV = "TXMON_DEMO_SMS_TOKEN"


@dataclass
class DemoResult:
    produced: int = 0
    bad_sent: Counter = field(default_factory=Counter)
    landed: int = 0
    dead_lettered: Counter = field(default_factory=Counter)
    produce_seconds: float = 0.0
    end_to_end_seconds: float = 0.0
    spark_rows_per_second: float = 0.0
    scored: int = 0
    drift_events: list = field(default_factory=list)
    delivered: Counter = field(default_factory=Counter)  # channel -> messages the stand-ins accepted

    @property
    def ok(self) -> bool:
        return (self.landed == self.produced == self.scored) and self.dead_lettered == self.bad_sent


class ProgressLine:
    """One status line, rewritten in place on a terminal; silent when output is a file
    (a log needs the outcome, not the ticks)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.width = 0

    def show(self, text: str) -> None:
        if self.live:
            self.stream.write("\r" + text.ljust(self.width))
            self.stream.flush()
            self.width = len(text)

    def clear(self) -> None:
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _caught_up(query, targets: dict[int, int], topic: str) -> tuple[bool, int]:
    """(whether the query has read up to ``targets``, offsets it has read of them)."""
    progress = query.lastProgress
    if not progress:
        return False, 0
    end = progress["sources"][0].get("endOffset")
    if isinstance(end, str):
        end = json.loads(end)
    done = (end or {}).get(topic, {})
    read = sum(min(int(done.get(str(p), 0)), off) for p, off in targets.items())
    return all(int(done.get(str(p), 0)) >= off for p, off in targets.items()), read


def quiet_spark_conf(settings: Settings) -> dict[str, str]:
    """The driver JVM's options plus :data:`SPARK_LOG_CONFIG` (read when the JVM starts)."""
    options = spark_conf(settings, "txmon-demo").get("spark.driver.extraJavaOptions", "")
    return {"spark.driver.extraJavaOptions": f"{options} -Dlog4j2.configurationFile={SPARK_LOG_CONFIG.as_uri()}"}


def _record_progress(query, seen: dict[int, dict]) -> None:
    for progress in query.recentProgress:  # Spark keeps the last 100: merge by batch id
        seen[progress["batchId"]] = progress


def _stream_pace(seen: dict[int, dict], trigger_s: float) -> str:
    """The falling-behind warning, once: how many micro-batches took longer than the trigger."""
    busy = [p for p in seen.values() if p.get("numInputRows", 0) > 0]
    late = [
        p["durationMs"].get("triggerExecution", 0) / 1000
        for p in busy
        if p["durationMs"].get("triggerExecution", 0) > trigger_s * 1000
    ]
    if not late:
        return f"stream kept pace: {len(busy)} micro-batches, each within the {trigger_s:g}s trigger"
    return (
        f"WARN stream fell behind its {trigger_s:g}s trigger in {len(late)} of {len(busy)} micro-batches "
        f"(longest {max(late):.1f}s), then caught up: fewer events/s scored than produced here "
        "(docs/performance.md)"
    )


# ------------------------------------------------------------------ alert providers


@contextmanager
def local_providers() -> Iterator[SimpleNamespace]:
    """The stand-ins the alerts go to (loopback only), and the alerting configuration
    pointed at them through the same TXMON_ALERTING__* variables a deployment sets;
    the environment is restored afterwards."""

    with SmtpSink() as smtp, SmsGatewayStub(token="gw-token") as gateway, WebhookSink() as webhook:
        env = provider_env(smtp, gateway, DEMO_SMS_TOKEN_ENV, TXMON_WEBHOOK_FRAUD_DESK=webhook.url)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield SimpleNamespace(smtp=smtp, gateway=gateway, webhook=webhook)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def demo_contacts(accounts) -> list[tuple[str, str, str, str | None]]:
    """Made-up contact details for simulated customers (phone from the account's digits,
    a mailbox on a reserved domain): where the customer SMS and email go.

    >>> demo_contacts(["123456789012"])
    [('123456789012', '+919056789012', 'customer.9012@example.test', None)]
    """
    return [(a, "+9190" + a[-8:].rjust(8, "0"), f"customer.{a[-4:]}@example.test", None) for a in accounts]


def deliver_alerts(settings: Settings, accounts):
    """Contacts for the flagged payers, then the dispatcher until the alerts topic has been
    idle for a few seconds (what ``txmon alerts dispatch`` does, with its own group)."""

    cluster, store = open_store(settings)
    try:
        store.save_contacts(demo_contacts(sorted(accounts)), datetime.now(UTC))
    finally:
        cluster.shutdown()
    return dispatch(settings, load_alerting_config(), idle_timeout_s=5)


# ------------------------------------------------------------------ the run


def run_demo(
    settings: Settings,
    seconds: float = 60,
    rate: float = 1000,
    seed: int | None = None,
    bad_every: int = 400,
    ends_at: datetime | None = None,
    log=print,
) -> DemoResult:
    if seed is None:
        # A new population each run: a second run with the same seed would replay the same
        # accounts into profiles that already hold the first run's history.
        seed = int(time.time()) % 1_000_000
    stack.up(settings, log=log)
    web = start_web(settings, log)
    if ends_at is None:
        # The live clock: fixed here so that the line below can say how to draw these events again.
        ends_at = datetime.now(UTC).replace(microsecond=0)
    log(
        f"simulator seed {seed}, traffic ending before {ends_at:%Y-%m-%dT%H:%M:%SZ} "
        f"(pass --seed {seed} --ends-at {ends_at:%Y-%m-%dT%H:%M:%S} to draw the same events again)"
    )
    topic = settings.kafka.topics.transactions
    start_offsets = kafka_end_offsets(settings.kafka.bootstrap, topic)

    log("starting the transactions stream (Spark Structured Streaming)...")
    spark = build_session(settings, "txmon-demo", extra_conf=quiet_spark_conf(settings))
    # Each demo run streams its own events from the offsets where it starts, with its own
    # checkpoint: simulated history runs days in a minute, so a second run's event times
    # lie behind the first run's watermark and a shared checkpoint would drop them.
    opts = StreamOptions.from_settings(
        settings,
        checkpoint_dir=str(settings.state_path / "checkpoints" / f"demo-{seed}-{int(time.time())}"),
        starting_offsets=json.dumps({topic: {str(p): off for p, off in start_offsets.items()}}),
    )
    queries = start_all(spark, settings, opts)
    progress = ProgressLine()
    seen: dict[int, dict] = {}

    result = DemoResult()
    ids: list[str] = []
    payers: Counter = Counter()
    frauds: dict[str, str] = {}
    reason_cycle = None

    def on_event(event, label, producer) -> None:
        nonlocal reason_cycle
        ids.append(event.txn_id)
        if label.is_fraud:
            frauds[event.txn_id] = label.scenario
        payers[event.payer.account_number] += 1
        if len(ids) % bad_every == 0:
            corpus = bad_records(event)
            if reason_cycle is None:
                reason_cycle = cycle(sorted(corpus))
            reason = next(reason_cycle)
            producer.send_raw(b"bad-" + event.payer.account_number.encode(), corpus[reason])
            result.bad_sent[reason] += 1
        if len(ids) % 1000 == 0:
            progress.show(f"producing: {len(ids):,} events, {sum(result.bad_sent.values())} bad records")

    log(
        f"producing simulated traffic for {seconds:.0f}s at {rate:,.0f} tx/s "
        f"(one bad record every {bad_every} events)..."
    )
    t0 = time.monotonic()
    summary = run_simulation(
        settings,
        SimulateOptions(seed=seed, rate=rate, duration=seconds, progress=False, live_until=ends_at),
        on_event=on_event,
    )
    progress.clear()
    result.produced = len(ids)
    result.produce_seconds = summary.seconds
    log(summary.line())

    targets = kafka_end_offsets(settings.kafka.bootstrap, topic)
    total = sum(targets.values()) - sum(start_offsets.get(p, 0) for p in targets)

    def caught_up() -> bool:
        done, read = _caught_up(queries[0], targets, topic)
        _record_progress(queries[0], seen)
        progress.show(
            f"stream catching up: {read - sum(start_offsets.get(p, 0) for p in targets):,} of {total:,} records read"
        )
        return done

    wait_until(caught_up, max(300.0, seconds * 5), interval=1, abort=lambda: queries[0].exception() is not None)
    progress.clear()
    if queries[0].exception() is not None:
        raise RuntimeError(f"stream failed: {queries[0].exception()}")
    result.end_to_end_seconds = time.monotonic() - t0
    _record_progress(queries[0], seen)
    rates = [
        p["processedRowsPerSecond"]
        for p in seen.values()
        if p.get("numInputRows", 0) > 0 and p.get("processedRowsPerSecond")
    ]
    result.spark_rows_per_second = sum(rates) / len(rates) if rates else 0.0
    drift = getattr(queries[0], "drift", None)
    result.drift_events = list(drift.events) if drift is not None else []
    for query in queries:
        query.stop()
    log(_stream_pace(seen, opts.trigger_seconds))

    cluster, session = connect(settings, settings.cassandra.keyspace)
    try:
        result.landed = count_landed(session, ids)
        result.dead_lettered = dead_letters_since(session, topic, start_offsets)
        scored = scored_decisions(session, ids)
        top = [acct for acct, _ in payers.most_common(3)]
        aggregates = account_aggregates(session, top, "slide_1h")
    finally:
        cluster.shutdown()
    result.scored = len(scored)

    log("delivering the alerts (dispatcher -> local SMTP server, SMS gateway and chat webhook)...")
    with local_providers() as providers:
        flagged_payers = {payer for decision, *_, payer in scored.values() if decision != "APPROVE"}
        stats = deliver_alerts(settings, flagged_payers)
        delivered = _delivered(providers)
    result.delivered = Counter({k: len(v) for k, v in delivered.items()})

    log(RULE)
    _print_summary(result, summary, aggregates, log)
    _print_detection(scored, frauds, log)
    _print_drift(result.drift_events, log)
    _print_delivery(stats, delivered, log)
    log(RULE)
    log(
        "RESULT: "
        + (
            "OK - every valid event landed once and was scored, every bad record dead-lettered with its reason"
            if result.ok
            else "MISMATCH - see the counts above"
        )
    )
    if web is None:
        log("Kafka and Cassandra keep running (`txmon infra status`); stop them with `txmon infra down`.")
    else:
        print_web_access(settings, web, log)
    return result


def scored_decisions(session, ids: list[str]) -> dict[str, tuple]:
    """txn_id -> (decision, risk_score, rules_fired, reasons JSON, payer) for scored transactions."""
    return {
        row.txn_id: (row.decision, row.risk_score, row.rules_fired or [], row.reasons, row.payer_account)
        for row in rows_in(session, session.prepare(SCORED_DEMO_IN), ids, in_flight=32)
    }


# ------------------------------------------------------------------ the summary


def _print_summary(result: DemoResult, summary, aggregates, log) -> None:
    missing = result.produced - result.landed
    log(f"events produced (valid)         {result.produced:>10,}   bad records {sum(result.bad_sent.values()):,}")
    log(
        f"landed in Cassandra             {result.landed:>10,}   ({'all of them' if not missing else f'MISSING {missing:,}'})"
    )
    log(f"dead-lettered                   {sum(result.dead_lettered.values()):>10,}   by reason:")
    reasons = [f"{reason} {n}" for reason, n in sorted(result.dead_lettered.items())]
    for i in range(0, len(reasons), 4):
        log("    " + ", ".join(reasons[i : i + 4]))
    log(f"fraud labels sent (delayed)     {summary.labels_sent:>10,}")
    log(
        f"produced / end to end / Spark   {summary.rate:>10,.0f} / "
        f"{result.produced / result.end_to_end_seconds:,.0f} / {result.spark_rows_per_second:,.0f} events/s "
        f"(end to end over {result.end_to_end_seconds:.0f}s)"
    )
    log("busiest accounts, last hour:")
    for row in aggregates:
        log(
            f"    {mask_account(row.payer_account):<16} {row.window_start:%d %b %H:%M}-{row.window_end:%H:%M}  "
            f"txns={row.txn_count:<4} total=₹{row.total_paise / 100:>11,.2f}  payees={row.distinct_payees}"
        )


def _print_detection(scored: dict, frauds: dict, log) -> None:
    decisions = Counter(d for d, *_ in scored.values())
    flagged = {t for t, (d, *_) in scored.items() if d != "APPROVE"}
    legit = [t for t in scored if t not in frauds]
    rate = f"; alert rate on legitimate traffic {sum(t in flagged for t in legit) / len(legit):.2%}" if legit else ""
    log(
        f"scored transactions             {len(scored):>10,}   "
        + " ".join(f"{k}={decisions.get(k, 0):,}" for k in ("APPROVE", "REVIEW", "BLOCK"))
        + rate
    )
    by_scenario: dict[str, list[bool]] = {}
    for txn, scenario in frauds.items():
        if txn in scored:
            by_scenario.setdefault(scenario, []).append(txn in flagged)
    if by_scenario:
        log("fraud caught, by simulated scenario (rules + champion model, if any):")
        cells = [
            f"{scenario:<30}{sum(hits):>4}/{len(hits):<4} {sum(hits) / len(hits):>4.0%}"
            for scenario, hits in sorted(by_scenario.items())
        ]
        for i in range(0, len(cells), 2):
            log("    " + "   ".join(cells[i : i + 2]))
    examples = [t for t in sorted(flagged) if t in frauds][:2]
    if examples:
        log("example alerts:")
    for txn in examples:
        decision, risk, _fired, reasons, payer = scored[txn]
        words = "; ".join(r["description"] for r in json.loads(reasons or "[]"))[:100]
        log(f"    {decision:<6} risk={risk:<3} {mask_account(payer):<16} {words}")


def _print_drift(events: list, log) -> None:
    if not events:
        log(
            "drift events                    none (score signals judge payers known 30+ days; "
            "labels judge recall and precision)"
        )
        return
    log(
        f"drift events                    {len(events):>10,}   recorded in Cassandra drift_events "
        "(Airflow, when running, retrains on them):"
    )
    for event in events[:3]:
        log(
            f"    {event.signal.value:<22} window mean {event.mean_before:.3f} -> {event.mean_after:.3f} "
            f"after {event.n_seen:,} values"
        )


def _delivered(providers: SimpleNamespace) -> dict[str, list]:
    return {
        "email": providers.smtp.messages(),
        "sms": list(providers.gateway.messages.values()),
        "webhook": list(providers.webhook.posts),
    }


def _print_delivery(stats, delivered: dict[str, list], log) -> None:
    """What the stand-ins accepted, per channel, and one example of each kind (masked)."""
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.outcomes.items())) or "none"
    log(f"alerts dispatched               {stats.alerts:>10,}   deliveries: {outcomes}")
    mails = delivered["email"]
    recipients = Counter(to for mail in mails for to in mail.rcpt_tos)
    log(
        f"    email {len(mails):,} to the local SMTP server ("
        + ", ".join(f"{redact(to)} {n:,}" for to, n in recipients.most_common(3))
        + ")"
    )
    texts = delivered["sms"]
    log(
        f"    SMS {len(texts):,} to the local gateway ({len({t.get('To') for t in texts}):,} customers); "
        f"chat webhook posts {len(delivered['webhook']):,}"
    )
    if texts:
        log(f"    example SMS to {mask_phone(texts[0].get('To'))}: {redact(texts[0].get('Body'))[:150]}")
    if mails:
        mail = mails[0]
        body = next((line.strip() for line in mail.text().splitlines() if line.strip()), "")
        log(f"    example email to {redact(', '.join(mail.rcpt_tos))}: {redact(str(mail.message['Subject']))[:110]}")
        log(f"        {redact(body)[:120]}")


def start_web(settings: Settings, log=print) -> WebAppService | None:
    """Start the web application (scoring API + console) in the background unless this
    state dir's one runs; its start-up overlaps the demo, :func:`print_web_access` waits
    for it. None when the web application is not installed."""
    if importlib.util.find_spec("txmon.webapp") is None:
        return None

    web = webapp_service(settings, load_api_settings().port)
    started = web.start()
    log(
        f"web application (scoring API + console): {'starting' if started else 'already running'} (pid {web.process.pid()})"
    )
    return web


def print_web_access(settings: Settings, web: WebAppService, log=print) -> None:
    """The demo's last lines: where the API and the console answer, a key and a login to
    use them with (each secret shown only by the run that made it; later runs say which
    file keeps it), and how to stop everything."""

    web.wait_ready(READY_TIMEOUT_S)
    key = ensure_api_key(settings)
    login = ensure_console_login(settings)
    event = write_example_event(settings)
    url = web.url

    def row(label: str, text: str) -> None:
        log(f"  {label:<20}{text}")

    log(f"web application (pid {web.process.pid()}, loopback only, log {web.process.log_file}):")
    row("scoring API docs", f"{url}/docs")
    scopes = ", ".join(API_KEY_SCOPES)
    if key.new_value:
        row("API key", f"{key.new_value}  (scopes {scopes})")
        row("", f"shown this once; kept in {key.path} (mode 0600)")
    else:
        row("API key", f"in {key.path}  (scopes {scopes})")
    row(
        "try it",
        f'curl -s -H "Authorization: Bearer $(cat {quote(str(key.path))})" '
        f"-H 'Content-Type: application/json' --data @{quote(str(event))} {url}/v1/score",
    )
    console = f"{url}/console/"
    if login.password is None:
        row("fraud-desk console", f"{console}  log in as one of your users (`txmon console users list`)")
        row("", f"(the demo's user {login.user} exists with a password the demo does not hold;")
        row("", f"`txmon console users add {login.user} --role admin` sets a new one)")
    elif login.password.new_value:
        row("fraud-desk console", f"{console}  log in as {login.user} / {login.password.new_value}")
        row("", f"shown this once; kept in {login.password.path} (mode 0600)")
    else:
        row("fraud-desk console", f"{console}  log in as {login.user}, password in {login.password.path}")
    log("Kafka, Cassandra and the web application keep running (`txmon infra status`); `txmon infra down` stops them.")
