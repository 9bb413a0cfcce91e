"""Alert dispatch against the real Kafka and Cassandra, a real SMTP server (aiosmtpd) on
loopback, a local HTTP server playing the Twilio-shaped SMS gateway and a webhook sink.

Each test has its own topic, consumer group, accounts and (where the day matters) its
own IST day, so tests and repeated runs never see each other's alerts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from txmon.alerting.config import (
    DEFAULT_ALERTING_CONFIG,
    AlertingConfig,
    CircuitConfig,
    RetryConfig,
    ThrottleConfig,
    load_alerting_config,
)
from txmon.alerting.contract import Alert
from txmon.alerting.publish import publish_alerts
from txmon.alerting.retry import retry_failed_deliveries
from txmon.alerting.runtime import dispatch, runtime
from txmon.alerting.segments import is_gsm7, sms_segments
from txmon.alerting.store import AlertStore
from txmon.alerting.testing import (
    SmsGatewayStub,
    SmtpSink,
    WebhookSink,
    clear_parties,
    land_payers,
    make_alert,
    payer_of,
)
from txmon.infra.kafka_client import client_config
from txmon.infra.process import wait_until
from txmon.infra.readback import dead_letters_since, kafka_end_offsets

ROOT = Path(__file__).resolve().parents[2]
SMS_TOKEN_ENV = "TXMON_TEST_SMS_TOKEN"


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def gateway():
    with SmsGatewayStub(token="gw-token") as gw:
        yield gw


@pytest.fixture
def webhook(monkeypatch):
    with WebhookSink() as sink:
        monkeypatch.setenv("TXMON_WEBHOOK_FRAUD_DESK", sink.url)
        yield sink


@pytest.fixture
def store(cassandra_session) -> AlertStore:
    return AlertStore(cassandra_session)


@pytest.fixture
def alerting_env(monkeypatch, smtp, gateway, webhook):
    """Point the alerting config at the local providers, through the environment
    (the same variables a deployment sets), and return a loader for it."""
    from txmon.alerting.testing import provider_env

    env = provider_env(
        smtp,
        gateway,
        SMS_TOKEN_ENV,
        TXMON_ALERTING__DISPATCHER__POLL_MS="100",
        TXMON_ALERTING__RETRY__INITIAL_S="0.05",
        TXMON_ALERTING__RETRY__MAX_S="0.5",
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TXMON_ALERTING_CONFIG", raising=False)
    return env


def _config(**overrides) -> AlertingConfig:
    return load_alerting_config(**overrides)


def _unique_day(name: str) -> date:
    return date(2100, 1, 1) + timedelta(days=zlib.crc32(name.encode()) % 2_000_000)


def _accounts(topic: str, n: int) -> list[str]:
    base = zlib.crc32(topic.encode()) % 10**6
    return [f"7{base:06d}{i:05d}" for i in range(n)]


def _phone(account: str) -> str:
    return "+919" + account[-9:]


def _alerts(topic: str, n: int, *, day: date | None = None, **overrides) -> list[Alert]:
    out = []
    for i, account in enumerate(_accounts(topic, n)):
        fields = {
            "txn_id": f"{topic}-{i:05d}".replace("_", "-")[:60],
            "payer_account": account,
            "payer_vpa": f"cust{i}.{account[-4:]}@okaxis",
            **overrides,
        }
        if day is not None:
            moment = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=6, seconds=i)
            fields.update(event_time=moment, created_at=moment + timedelta(seconds=1))
        out.append(make_alert(i, **fields))
    return out


def _save_contacts(store: AlertStore, alerts: list[Alert]) -> None:
    """Contacts of the alerts' payers, and their transactions' rows, where the dispatcher
    reads the clear payer account (the alerts carry it masked)."""
    store.save_contacts([(payer_of(a), _phone(payer_of(a)), None, None) for a in alerts], datetime.now(UTC))
    land_payers(store.session, [(a.txn_id, payer_of(a)) for a in alerts])


def _committed(settings, group: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=group, enable_auto_commit=False, **client_config(settings)
    )
    try:
        found = {p: consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic)}
    finally:
        consumer.close(autocommit=False)
    return {p: o for p, o in found.items() if o}


def _end_offsets(settings, topic: str) -> dict[int, int]:
    return {p: o for p, o in kafka_end_offsets(settings.kafka.bootstrap, topic).items() if o > 0}


def _latest_statuses(store: AlertStore, alert: Alert) -> dict[str, str]:
    """channel -> latest status of this alert's deliveries (one recipient per channel here)."""
    latest: dict[str, tuple[int, str]] = {}
    for a in store.attempts(alert.alert_id):
        if a.channel not in latest or a.attempt > latest[a.channel][0]:
            latest[a.channel] = (a.attempt, a.status)
    return {c: s for c, (_, s) in latest.items()}


def _raw_identifiers(alert: Alert) -> list[str]:
    return [v for v in clear_parties(alert).values() if v] + [_phone(payer_of(alert))[3:]]


# ------------------------------------------------------------------ tests


def test_alerts_on_kafka_arrive_as_masked_emails_sms_and_webhooks(
    services, topic, unique_name, alerting_env, smtp, gateway, webhook, store, cassandra_session, caplog
):
    block = _alerts(topic, 3, severity="CRITICAL")  # SMS to customer, email to desk, chat webhook
    review = _alerts(topic + "r", 2, decision="REVIEW", severity="MEDIUM")  # email to analysts
    no_phone = _alerts(topic + "n", 1, severity="HIGH")  # SMS wanted, no contact on file
    _save_contacts(store, block)
    alerts = block + review + no_phone
    publish_alerts(services, alerts, topic, raw=[(b"junk", b'{"schema_version": 1, "txn_id": "x"}')])

    caplog.set_level("INFO", logger="txmon.alerting")
    group = unique_name("g")
    stats = dispatch(services, _config(), topic=topic, group_id=group, max_messages=len(alerts) + 1)

    assert stats.alerts == 6 and stats.dead_letters == 1
    # Email: one per BLOCK alert to the fraud desk, one per REVIEW alert to analysts.
    mails = smtp.messages()
    by_alert = {m.alert_id: m for m in mails}
    assert len(mails) == 6 and set(by_alert) == {str(a.alert_id) for a in alerts}
    for a in block + no_phone:
        mail = by_alert[str(a.alert_id)]
        assert mail.rcpt_tos == ["fraud-desk@bank.example"]
        assert mail.message["Subject"] == (
            f"[txmon] BLOCK {a.severity.value}: ₹12,500.{a.amount_paise % 100:02d} UPI "
            f"from XXXXXXXX{payer_of(a)[-4:]} (AMOUNT_SPIKE)"
        )
        for body in (mail.text(), mail.html()):
            assert "amount is 25 times this account" in body and "Call the customer" in body
            assert "cu***@okaxis" in body
    for a in review:
        assert by_alert[str(a.alert_id)].rcpt_tos == ["fraud-analysts@bank.example"]
        assert "queued for review" in by_alert[str(a.alert_id)].text()
    # SMS: one per BLOCK customer with a phone, GSM-7, at most two segments.
    sms = {m["To"]: m["Body"] for m in gateway.messages.values()}
    assert set(sms) == {_phone(payer_of(a)) for a in block}
    for a in block:
        body = sms[_phone(payer_of(a))]
        assert body.startswith(
            f"txmon Bank: We BLOCKED a UPI payment of Rs.12,500.{a.amount_paise % 100:02d} "
            f"from a/c XXXXXXXX{payer_of(a)[-4:]}"
        )
        assert is_gsm7(body) and sms_segments(body) <= 2
    # Webhook: CRITICAL alerts only.
    assert len(webhook.posts) == 3 and all(p["text"].startswith("*BLOCK CRITICAL*") for p in webhook.posts)

    # Nothing anywhere shows a raw account number, VPA or phone number.
    everything = "\n".join(
        [m.raw() for m in mails] + list(sms.values()) + [p["text"] for p in webhook.posts] + [caplog.text]
    )
    log_rows = [a for alert in alerts for a in store.attempts(alert.alert_id)]
    everything += "\n".join(f"{a.recipient_masked} {a.provider_response}" for a in log_rows)
    for alert in alerts:
        for raw in _raw_identifiers(alert):
            assert raw not in everything

    # The delivery log has every outcome, including the customer nobody could reach.
    assert _latest_statuses(store, block[0]) == {"sms": "sent", "email": "sent", "webhook": "sent"}
    assert _latest_statuses(store, review[0]) == {"email": "sent"}
    assert _latest_statuses(store, no_phone[0]) == {"sms": "no_recipient", "email": "sent"}
    sent_sms = next(a for a in store.attempts(block[0].alert_id) if a.channel == "sms")
    assert sent_sms.recipient_masked == f"+91XXXXXX{payer_of(block[0])[-4:]}"
    assert sent_sms.provider_response.startswith("HTTP 201 sid=SM") and sent_sms.route == "block"

    # The bad record is dead-lettered with its reason, not dropped.
    zero = dict.fromkeys(range(services.kafka.partitions), 0)
    assert dead_letters_since(cassandra_session, topic, zero) == Counter({"invalid_alert": 1})
    # Offsets were committed after the outcomes were recorded.
    assert _committed(services, group, topic) == _end_offsets(services, topic)
    # The alerts are in Cassandra for the digest and for retries.
    assert store.load_alert(review[1].alert_id) == review[1]

    # Replaying the whole topic (a new group from the start) sends nothing again.
    again = dispatch(services, _config(), topic=topic, group_id=unique_name("g"), max_messages=len(alerts) + 1)
    assert again.outcomes.get("sent", 0) == 0
    assert len(smtp.messages()) == 6 and len(gateway.requests) == 3 and len(webhook.posts) == 3


def test_smtp_down_for_a_while_delivers_after_it_returns_none_lost_none_twice(
    services, topic, unique_name, alerting_env, smtp, store
):
    alerts = _alerts(topic, 5, decision="REVIEW", severity="LOW")  # email only
    smtp.stop()
    publish_alerts(services, alerts, topic)
    # The per-delivery backoff alone rides out a short outage (the circuit never opens here).
    config = _config(
        retry=RetryConfig(attempts=20, initial_s=0.05, multiplier=1.5, max_s=0.3),
        circuit=CircuitConfig(failure_threshold=1000),
    )
    result: dict = {}

    def run() -> None:
        try:
            result["stats"] = dispatch(services, config, topic=topic, group_id=unique_name("g"), max_messages=5)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertions below
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)  # a failed wait must not hang pytest at exit
    worker.start()

    # Bring the server back once the dispatcher has demonstrably been failing and backing off.
    def retrying() -> list:
        return [a for alert in alerts for a in store.attempts(alert.alert_id) if a.status == "retrying"]

    wait_until(lambda: len(retrying()) >= 3, 30, interval=0.05, abort=lambda: not worker.is_alive())
    first = next(iter(retrying()), None)
    assert first is not None, f"the dispatcher never hit the outage: {result}"
    smtp.start()
    worker.join(timeout=120)
    assert not worker.is_alive()

    mails = smtp.messages()
    assert sorted(m.alert_id for m in mails) == sorted(str(a.alert_id) for a in alerts)  # each exactly once
    assert len({m.message_id for m in mails}) == 5
    for alert in alerts:
        assert _latest_statuses(store, alert) == {"email": "sent"}
    # The outage was waited out with backoff, not skipped: retries are in the log, then 'sent'.
    log = [a for alert in alerts for a in store.attempts(alert.alert_id)]
    assert sum(a.status == "retrying" for a in log) >= 3
    assert "Connection refused" in first.provider_response
    assert result["stats"].outcomes == {"sent": 5}


def test_a_bounded_run_ending_during_an_outage_records_failed_then_retry_failed_delivers_them_once(
    services, topic, unique_name, alerting_env, smtp, store
):
    day = _unique_day(topic)
    alerts = _alerts(topic, 4, decision="REVIEW", severity="LOW", day=day)
    smtp.stop()
    publish_alerts(services, alerts, topic)
    group = unique_name("g")
    config = _config(
        retry=RetryConfig(attempts=2, initial_s=0.05, max_s=0.1),
        circuit=CircuitConfig(failure_threshold=3, open_s=300, max_open_s=300),
    )

    stats = dispatch(services, config, topic=topic, group_id=group, max_messages=4)

    # Parked while the server was down; the run ended (max_messages) before it came back,
    # so they were handed to retry-failed rather than kept by a process that is exiting.
    assert stats.outcomes == {"failed": 4} and stats.deferred == 4
    assert {(f.delivery_id, f.channel) for f in store.failures(day)} == {(a.alert_id, "email") for a in alerts}
    # Once the circuit opened, no delivery waited out the rest of its backoff: fewer sends
    # reached the dead server than deliveries x attempts (partitions run side by side, so
    # which ones tried depends on timing).
    logs = {x.alert_id: sorted(store.attempts(x.alert_id), key=lambda a: a.attempt) for x in alerts}
    assert all([a.status for a in log][-2:] == ["deferred", "failed"] for log in logs.values())
    tried = [
        a for log in logs.values() for a in log if a.status != "failed" and "circuit open" not in a.provider_response
    ]
    assert 1 <= len(tried) < len(alerts) * config.retry.attempts
    assert all("Connection refused" in a.provider_response for a in tried)
    # Failed is an outcome: offsets are committed, nothing is re-consumed.
    assert _committed(services, group, topic) == _end_offsets(services, topic)

    smtp.start()
    with runtime(services, config) as rt:
        report = retry_failed_deliveries([day], rt)
        assert (report.sent, report.still_failed) == (4, 0)
        assert store.failures(day) == []
        again = retry_failed_deliveries([day], rt)
        assert (again.sent, again.still_failed, again.already_done) == (0, 0, 0)
    assert sorted(m.alert_id for m in smtp.messages()) == sorted(str(a.alert_id) for a in alerts)
    for alert in alerts:
        assert _latest_statuses(store, alert) == {"email": "sent"}
    # The dispatcher, restarted on its group, has nothing left to do and sends nothing.
    rerun = dispatch(services, config, topic=topic, group_id=group, idle_timeout_s=0.5)
    assert rerun.records == 0 and len(smtp.messages()) == 4


def test_a_dispatcher_stopped_with_deliveries_parked_sends_them_once_after_its_restart(
    services, topic, unique_name, alerting_env, smtp, store
):
    day = _unique_day(topic)
    alerts = _alerts(topic, 6, decision="REVIEW", severity="LOW", day=day)  # email only
    smtp.stop()
    publish_alerts(services, alerts, topic)
    config = _config(
        retry=RetryConfig(attempts=2, initial_s=0.05, max_s=0.1),
        circuit=CircuitConfig(failure_threshold=2, open_s=300, max_open_s=300),
    )
    group, stop = unique_name("g"), threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["stats"] = dispatch(services, config, topic=topic, group_id=group, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertions below
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    wait_until(
        lambda: all(_latest_statuses(store, a) == {"email": "deferred"} for a in alerts),
        60,
        interval=0.1,
        abort=lambda: not worker.is_alive(),
    )
    stop.set()  # SIGTERM, as a service manager stops it
    worker.join(60)
    assert not worker.is_alive() and "error" not in result, result
    assert result["stats"].deferred == 6 and result["stats"].outcomes == {}
    # Parked, not failed: nothing for retry-failed, and no record committed past a parked one.
    assert store.failures(day) == []
    assert _committed(services, group, topic) == {}

    smtp.start()
    again = dispatch(services, config, topic=topic, group_id=group, idle_timeout_s=1)

    # The restarted dispatcher re-consumed the held records, parked them again and, its
    # circuit being closed, sent each once.
    assert again.outcomes == {"sent": 6} and again.deferred == 6
    mails = smtp.messages()
    assert sorted(m.alert_id for m in mails) == sorted(str(a.alert_id) for a in alerts)
    for alert in alerts:
        assert _latest_statuses(store, alert) == {"email": "sent"}
    assert _committed(services, group, topic) == _end_offsets(services, topic)


class FakeClock:
    def __init__(self):
        self.t = datetime.now(UTC)

    def __call__(self):
        return self.t


def test_a_burst_of_50_alerts_for_one_account_sends_a_bounded_number_of_messages(
    services, topic, unique_name, alerting_env, smtp, gateway, store
):
    account = _accounts(topic, 1)[0]
    alerts = [
        make_alert(i, account=account, txn_id=f"{topic}-{i:03d}".replace("_", "-"), severity="HIGH") for i in range(50)
    ]
    _save_contacts(store, alerts)  # one account: one contact; each alert's own transaction
    publish_alerts(services, alerts, topic)
    config = _config(throttle=ThrottleConfig(window_s=600))
    clock, group = FakeClock(), unique_name("g")

    first = dispatch(services, config, topic=topic, group_id=group, max_messages=50, now=clock)

    assert first.outcomes == {"sent": 2, "folded": 98}  # one SMS + one email; the rest folded
    assert len(smtp.messages()) == 1 and len(gateway.messages) == 1
    for alert in alerts[1:]:
        assert _latest_statuses(store, alert) == {"sms": "folded", "email": "folded"}

    # The window closes (the dispatcher restarted meanwhile): one follow-up per recipient.
    # The mail server is busy for a while: the SMS follow-up goes, the email one fails ...
    clock.t += timedelta(seconds=601)
    smtp.refuse("451 4.3.0 busy, try later", times=config.retry.attempts)
    second = dispatch(services, config, topic=topic, group_id=group, idle_timeout_s=0.5, now=clock)
    assert second.followups == 1 and len(smtp.messages()) == 1 and len(gateway.messages) == 2
    texts = [m["Body"] for m in gateway.messages.values()]
    assert texts[1].startswith(f"txmon Bank: 49 more payments from a/c XXXXXXXX{account[-4:]} were flagged")
    assert sms_segments(texts[1]) <= 2

    # ... and is sent by a later run, once.
    clock.t += timedelta(seconds=config.circuit.max_open_s + 1)
    third = dispatch(services, config, topic=topic, group_id=group, idle_timeout_s=0.5, now=clock)
    assert third.followups == 1
    mails = smtp.messages()
    assert len(mails) == 2 and len(gateway.messages) == 2
    assert mails[1].message["Subject"] == f"[txmon] 49 more AMOUNT_SPIKE alerts on XXXXXXXX{account[-4:]}"
    assert "Decisions: 49 BLOCK" in mails[1].text()

    # Nothing else is pending: later runs send nothing more.
    clock.t += timedelta(seconds=601)
    fourth = dispatch(services, config, topic=topic, group_id=group, idle_timeout_s=0.5, now=clock)
    assert fourth.followups == 0 and len(smtp.messages()) == 2 and len(gateway.messages) == 2


def _dispatch_cli(env: dict[str, str], topic: str, group: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "txmon.infra.cli", "alerts", "dispatch", "--topic", topic, "--group-id", group, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_dispatcher_killed_mid_run_and_restarted_delivers_every_alert_once_per_channel(
    services, topic, unique_name, alerting_env, smtp, gateway, store
):
    alerts = _alerts(topic, 24, severity="HIGH")  # BLOCK: SMS + email each
    _save_contacts(store, alerts)
    publish_alerts(services, alerts, topic)
    # The restart waits for the group to drop the killed member: keep that short.
    env = {**os.environ, "TXMON_ALERTS_LOG_LEVEL": "WARNING", "TXMON_ALERTING__DISPATCHER__SESSION_TIMEOUT_MS": "6000"}
    group = unique_name("g")

    # Kill the process at the worst moment: the 10th email is in the SMTP server's hands
    # but the dispatcher has not heard the 250 yet, so it cannot have recorded it.
    in_hand, killed = threading.Event(), threading.Event()

    def hold_the_tenth(mail):
        if len(smtp.received) == 9 and not in_hand.is_set():
            in_hand.set()
            killed.wait(60)

    smtp.before_accept = hold_the_tenth
    proc = _dispatch_cli(env, topic, group)
    assert in_hand.wait(120), proc.communicate(timeout=5)[0] if proc.poll() is not None else "no 10th email"
    proc.kill()
    proc.wait(30)
    killed.set()
    smtp.wait_for(10)
    smtp.before_accept = None
    in_doubt = smtp.messages()[9]
    assert len(smtp.messages()) < 24  # the first run really was cut short

    rerun = _dispatch_cli(env, topic, group, "--idle-timeout", "1")
    output = rerun.communicate(timeout=180)[0]
    assert rerun.returncode == 0, output

    mails = smtp.messages()
    per_alert = Counter(m.alert_id for m in mails)
    assert set(per_alert) == {str(a.alert_id) for a in alerts}
    assert len({m.message_id for m in mails}) == 24  # one message per alert and channel
    # An email goes out twice only if it was in flight at the kill (the held 10th for sure;
    # partitions run side by side, so maybe one more), and then with the same Message-ID,
    # so the mailbox collapses it; the log shows why: its first attempt never finished.
    by_id = Counter(m.message_id for m in mails)
    twice = {m.alert_id for m in mails if by_id[m.message_id] > 1}
    assert in_doubt.alert_id in twice and by_id[in_doubt.message_id] == 2
    assert len(twice) <= 2 and all(by_id[m.message_id] <= 2 for m in mails)
    for alert in alerts:
        log = [
            a.status for a in sorted(store.attempts(alert.alert_id), key=lambda a: a.attempt) if a.channel == "email"
        ]
        if str(alert.alert_id) in twice:
            assert log == ["sending", "sent"]
        else:  # sent once; a send cut off before the server took it is simply sent again
            assert log in (["sent"], ["sending", "sent"])
    # SMS: the gateway honours the idempotency key, so each customer got exactly one.
    assert sorted(m["To"] for m in gateway.messages.values()) == sorted(_phone(payer_of(a)) for a in alerts)
    # A request repeats only if it was in flight at the kill: at most one per partition handled
    # side by side (the gateway accepted it, the store had not recorded it yet), never twice.
    requests_per_key = Counter(r["key"] for r in gateway.requests)
    assert set(requests_per_key) == set(gateway.messages)
    repeated = [key for key, n in requests_per_key.items() if n > 1]
    assert all(requests_per_key[key] == 2 for key in repeated), requests_per_key
    assert len(repeated) <= min(services.kafka.partitions, _config().dispatcher.workers), repeated
    for alert in alerts:
        assert _latest_statuses(store, alert) == {"sms": "sent", "email": "sent"}
    assert _committed(services, group, topic) == _end_offsets(services, topic)


def _latest_by_recipient(store: AlertStore, alert: Alert) -> dict[tuple[str, str], str]:
    """(channel, recipient key) -> latest status of this alert's deliveries."""
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    for a in store.attempts(alert.alert_id):
        key = (a.channel, a.recipient_key)
        if key not in latest or a.attempt > latest[key][0]:
            latest[key] = (a.attempt, a.status)
    return {k: s for k, (_, s) in latest.items()}


def test_mail_server_down_for_a_while_then_back_the_dispatcher_alone_delivers_every_alert_once(
    services, topic, unique_name, alerting_env, smtp, gateway, store, tmp_path, record_property
):
    """The drill: the mail server is stopped while alerts keep flowing, then started again on
    the same port. The running `txmon alerts dispatch` parks the emails (circuit open),
    probes, and sends them once the server answers - with no `retry-failed` run."""
    outage_s = float(os.environ.get("TXMON_TEST_MAIL_OUTAGE_S", "60"))
    # Every BLOCK alert goes to two fraud-desk addresses by email and to the customer by SMS.
    desk = ["fraud-desk@bank.example", "fraud-oncall@bank.example"]
    raw = yaml.safe_load(DEFAULT_ALERTING_CONFIG.read_text())
    raw["recipients"]["fraud_desk"]["email"] = desk
    config_file = tmp_path / "alerting.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    day = _unique_day(topic)
    pool = _alerts(topic, 1000, day=day, severity="HIGH")  # BLOCK, HIGH: no chat webhook
    _save_contacts(store, pool)
    env = {
        **os.environ,
        "TXMON_ALERTING_CONFIG": str(config_file),
        "TXMON_ALERTS_LOG_LEVEL": "INFO",
        "TXMON_ALERTING__RETRY__ATTEMPTS": "3",
        "TXMON_ALERTING__CIRCUIT__FAILURE_THRESHOLD": "3",
        "TXMON_ALERTING__CIRCUIT__OPEN_S": "1",
        "TXMON_ALERTING__CIRCUIT__MAX_OPEN_S": "4",
    }
    group = unique_name("g")
    log_file = tmp_path / "dispatch.log"
    with log_file.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "txmon.infra.cli", "alerts", "dispatch", "--topic", topic, "--group-id", group],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    published: list[Alert] = []
    try:

        def publish(n: int) -> None:
            batch = pool[len(published) : len(published) + n]
            publish_alerts(services, batch, topic)
            published.extend(batch)

        def all_sent(alerts: list[Alert]) -> bool:
            return all(
                set(_latest_by_recipient(store, a).values()) == {"sent"} and len(_latest_by_recipient(store, a)) == 3
                for a in alerts
            )

        # Before: delivered normally; wait until the log has every outcome, so nothing is in
        # flight when the server goes (a mail cut off mid-DATA could legitimately arrive twice).
        publish(10)
        wait_until(lambda: all_sent(published), 120, interval=0.2, abort=lambda: proc.poll() is not None)
        assert all_sent(published), log_file.read_text()[-3000:]
        assert len(smtp.messages()) == 20

        # The outage: the server is stopped while alerts keep coming, three a second.
        smtp.stop()
        before_outage = len(published)
        sms_at_stop = len(gateway.messages)
        back_at = time.monotonic() + outage_s
        while time.monotonic() < back_at:
            publish(3)
            time.sleep(min(1.0, max(0.0, back_at - time.monotonic())))
        during = published[before_outage:]
        deferred = [
            a
            for a in during
            if any(x.status == "deferred" and x.channel == "email" for x in store.attempts(a.alert_id))
        ]
        assert deferred, "no email was deferred: the dispatcher never met the outage"
        assert len(smtp.messages()) == 20
        # Other channels are not held up by the mail server: the customers' SMS kept going.
        assert len(gateway.messages) > sms_at_stop

        # Back on the same port; alerts keep flowing for a few more seconds.
        smtp.start()
        for _ in range(5):
            publish(3)
            time.sleep(1)

        expected_mails = len(published) * len(desk)
        wait_until(
            lambda: len(smtp.messages()) >= expected_mails and all_sent(published),
            180,
            abort=lambda: proc.poll() is not None,
        )
        assert proc.poll() is None, log_file.read_text()[-3000:]
    finally:
        proc.terminate()  # SIGTERM: the dispatcher finishes its poll and exits cleanly
        proc.wait(60)
    output = log_file.read_text()
    assert proc.returncode == 0, output[-3000:]

    # Every alert, once per recipient and channel: no more, no less, no duplicate Message-ID.
    mails = smtp.messages()
    assert len(mails) == len(published) * len(desk)
    assert Counter(m.message_id for m in mails).most_common(1)[0][1] == 1
    assert {(m.alert_id, tuple(m.rcpt_tos)) for m in mails} == {
        (str(a.alert_id), (address,)) for a in published for address in desk
    }
    assert len(gateway.requests) == len(gateway.messages) == len(published)
    assert sorted(m["To"] for m in gateway.messages.values()) == sorted(_phone(payer_of(a)) for a in published)
    for alert in published:
        latest = _latest_by_recipient(store, alert)
        assert sorted(c for c, _ in latest) == ["email", "email", "sms"] and set(latest.values()) == {"sent"}
    # Sent by the dispatcher itself: nothing ever reached the failures table for retry-failed.
    assert store.failures(day) == []
    # Its own account: every delivery sent exactly once, some of them deferred on the way.
    (summary,) = [line for line in output.splitlines() if " records: " in line]
    record_property("outage_s", outage_s)
    record_property("alerts", f"{len(published)} ({len(during)} during the outage)")
    record_property("dispatcher", summary)
    sent = len(published) * 3
    assert f"deliveries: sent {sent} (" in summary, summary
    assert int(summary.split(" (")[1].split(" deferred")[0]) >= len(deferred)
    # The circuit opened, was probed, and closed when the server answered.
    assert "email circuit open (3 consecutive failures)" in output
    assert "email circuit half-open" in output and "email circuit closed" in output
    if outage_s >= 10:
        assert "email circuit open (the probe failed)" in output
    # Nothing left uncommitted: a restart would not see these alerts again.
    assert _committed(services, group, topic) == _end_offsets(services, topic)
    # No raw account numbers or phone numbers in what the dispatcher logged.
    for alert in published[:20]:
        assert payer_of(alert) not in output and _phone(payer_of(alert))[3:] not in output
