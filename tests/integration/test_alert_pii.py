"""No account number or VPA of a transaction leaves the stream in clear, and the customer
still gets the alert: simulated traffic through the real stream, then the real dispatcher
over its alerts topic to a local SMTP server and SMS gateway (docs/security-pii.md)."""

from __future__ import annotations

import logging
import re
import shutil
import zlib
from collections import Counter
from datetime import UTC

import pytest
import yaml

from tests.integration.streams import stream_options, stream_topics
from txmon.alerting.config import DEFAULT_ALERTING_CONFIG, load_alerting_config
from txmon.alerting.contract import alert_day, from_json
from txmon.alerting.runtime import dispatch
from txmon.alerting.store import AlertStore
from txmon.alerting.testing import SmsGatewayStub, SmtpSink, provider_env
from txmon.infra.masking import account_ref, mask_account, pii_token_key
from txmon.infra.settings import PROJECT_ROOT
from txmon.ingestion.producer import TransactionProducer
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.spark_jobs.transactions_stream import start_all

SEED = 20261205
EVENTS = 3_000
# A rule whose reason quotes every party of the transaction: the stream must mask what a
# rule author's wording puts in an alert, not only the alert's own fields.
QUOTING_RULE = {
    "id": "QUOTES_PARTIES",
    "description": "Names the parties (test only)",
    "condition": "amount_paise > 0",
    "score": 1,
    "severity": "LOW",
    "reason": "from {payer_account} ({payer_vpa}) to {payee_account} / {payee_vpa}",
}
_DIGIT_RUN = re.compile(r"\d+")
_VPA_LIKE = re.compile(r"[A-Za-z0-9._-]{2,256}@[A-Za-z][A-Za-z0-9]{1,63}")


def _parties(event) -> dict:
    return {
        "payer_account": event.payer.account_number,
        "payer_vpa": event.payer.vpa,
        "payee_account": event.payee.account_number,
        "payee_vpa": event.payee.vpa,
    }


def _phone(account: str) -> str:
    return "+919" + account[-9:]


def _clear_values(text: str, identifiers: set[str]) -> set[str]:
    """The identifiers of the traffic found in ``text``: every digit run and VPA-shaped
    token looked up, and every 9-18 digit window of a longer run too."""
    found = {m for m in _VPA_LIKE.findall(text) if m in identifiers}
    for run in _DIGIT_RUN.findall(text):
        for size in range(9, min(18, len(run)) + 1):
            found |= {run[i : i + size] for i in range(len(run) - size + 1)} & identifiers
    return found


@pytest.fixture(scope="module")
def streamed(services, spark, cassandra_session, tmp_path_factory):
    """Simulated traffic (every scenario) run once through the full stream, rules only."""

    tmp = tmp_path_factory.mktemp("pii")
    base = f"pii_{zlib.crc32(str(tmp).encode()):x}"
    names = stream_topics(services, base)
    rules = yaml.safe_load((PROJECT_ROOT / "config" / "rules.yaml").read_text())
    rules["rules"].append(QUOTING_RULE)
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    cassandra_session.execute("TRUNCATE feature_profiles")
    sim = simulator_for(
        SimulateOptions(seed=SEED, count=EVENTS, rate=None, fraud_rate=0.1, n_customers=500, live=False, progress=False)
    )
    items = list(sim.generate(EVENTS))
    producer = TransactionProducer(services, topic=names["tx"], labels_topic=names["labels"])
    for item in items:
        producer.send_event(item.event)
    producer.close()
    opts = stream_options(
        services,
        names,
        tmp,
        available_now=True,
        rules_path=str(tmp / "rules.yaml"),
    )
    for q in start_all(spark, services, opts):
        q.awaitTermination(timeout=900)
        assert q.exception() is None, q.exception()
    shutil.rmtree(tmp / "ckpt", ignore_errors=True)
    events = {i.event.txn_id: i.event for i in items}
    identifiers = {v for e in events.values() for v in _parties(e).values() if v}
    return {"names": names, "events": events, "identifiers": identifiers}


@pytest.fixture(scope="module")
def published(streamed, services):
    """Every record of the alerts topic: (key, value) bytes, read as the dispatcher's
    consumer reads them (a group of its own, from the earliest offset)."""
    from txmon.alerting.dispatcher import make_consumer

    consumer = make_consumer(
        services.kafka.bootstrap, f"{streamed['names']['alerts']}_read", load_alerting_config().dispatcher
    )
    consumer.subscribe([streamed["names"]["alerts"]])
    records, idle = [], 0
    while idle < 5:  # five empty polls in a row: the topic is read to its end
        got = [r for rs in consumer.poll(timeout_ms=2_000).values() for r in rs]
        records += [(r.key, r.value) for r in got]
        idle = 0 if got else idle + 1
    consumer.close(autocommit=False)
    return records


def test_no_alert_on_the_topic_holds_a_clear_account_or_vpa(streamed, published, services):
    events, identifiers = streamed["events"], streamed["identifiers"]
    assert len(published) > 20, "the traffic must raise alerts"
    key = pii_token_key(services.state_path)
    quoted = 0
    for raw_key, raw_value in published:
        text = raw_key.decode() + "\n" + raw_value.decode()
        alert = from_json(raw_value)
        event = events[alert.txn_id]
        own = {v for v in _parties(event).values() if v}
        assert not [v for v in own if v in text], alert.txn_id
        assert not _clear_values(text, identifiers), alert.txn_id
        # Masked for display, the payer pseudonymised with the deployment's key.
        assert alert.payer_account_masked == mask_account(event.payer.account_number)
        assert alert.payer_ref == account_ref(event.payer.account_number, key) and raw_key == alert.payer_ref.encode()
        quoted += "QUOTES_PARTIES" in alert.reason_codes
    assert quoted == len(published)  # every alert carried the reason that quotes the parties


def test_no_row_of_alerts_or_alerts_by_day_holds_a_clear_account_or_vpa(streamed, published, cassandra_session):
    identifiers = streamed["identifiers"]
    alerts = [from_json(value) for _, value in published]
    by_id = cassandra_session.prepare("SELECT * FROM alerts WHERE alert_id = ?")
    by_day = cassandra_session.prepare("SELECT * FROM alerts_by_day WHERE day = ? AND alert_id = ?")
    for alert in alerts:
        for row in (
            cassandra_session.execute(by_id, (alert.alert_id,)).one(),
            cassandra_session.execute(by_day, (alert_day(alert), alert.alert_id)).one(),
        ):
            assert row is not None, alert.alert_id
            values = row._asdict()
            assert values.get("payer_account") is None and values.get("payer_vpa") is None  # version-1 columns
            assert not _clear_values(" ".join(map(str, values.values())), identifiers), alert.alert_id
    # The clear values stay reachable for whoever is allowed: transactions, by txn id.
    (alert,) = alerts[:1]
    row = cassandra_session.execute("SELECT payer_account FROM transactions WHERE txn_id = %s", (alert.txn_id,)).one()
    assert row.payer_account == streamed["events"][alert.txn_id].payer.account_number


def test_the_dispatcher_still_reaches_each_payer_and_logs_no_clear_value(
    streamed, published, services, cassandra_session, monkeypatch, unique_name, caplog, tmp_path
):
    events = streamed["events"]
    alerts = [from_json(value) for _, value in published]
    payers = {events[a.txn_id].payer.account_number for a in alerts}
    AlertStore(cassandra_session).save_contacts([(p, _phone(p), None, None) for p in payers], _now())
    with SmtpSink() as smtp, SmsGatewayStub(token="gw-token") as gateway:
        for k, v in provider_env(
            smtp, gateway, "TXMON_TEST_SMS_TOKEN", TXMON_ALERTING__DISPATCHER__POLL_MS="100"
        ).items():
            monkeypatch.setenv(k, v)
        # Every alert: an SMS to its customer and an email to the desk, no throttle.
        raw = yaml.safe_load(DEFAULT_ALERTING_CONFIG.read_text())
        raw["throttle"] = {**raw.get("throttle", {}), "enabled": False}
        raw["routes"] = [
            {
                "name": "all",
                "match": {"decisions": ["REVIEW", "BLOCK"]},
                "deliver": [{"channel": "sms", "to": "customer"}, {"channel": "email", "to": "fraud_desk"}],
            }
        ]
        (tmp_path / "alerting.yaml").write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("TXMON_ALERTING_CONFIG", str(tmp_path / "alerting.yaml"))
        with caplog.at_level(logging.INFO, logger="txmon.alerting"):
            stats = dispatch(
                services,
                load_alerting_config(),
                topic=streamed["names"]["alerts"],
                group_id=unique_name("g"),
                max_messages=len(published),
            )
        mails = smtp.wait_for(len(alerts), timeout_s=120)
        sms = list(gateway.messages.values())
    assert stats.outcomes == {"sent": 2 * len(alerts)}, stats.line()
    # Each SMS went to the phone of the payer of its own transaction.
    assert Counter(m["To"] for m in sms) == Counter(_phone(events[a.txn_id].payer.account_number) for a in alerts)
    for m in sms:
        account = next(p for p in payers if _phone(p) == m["To"])
        assert f"a/c {mask_account(account)}" in m["Body"]
    assert {m.alert_id for m in mails} == {str(a.alert_id) for a in alerts}
    # Nothing the dispatcher sent or logged holds a clear account or VPA.
    assert " payer XXXX" in caplog.text  # its per-alert log lines were captured
    outputs = [m.raw() for m in mails] + [m["Body"] for m in sms] + [caplog.text]
    for text in outputs:
        assert not _clear_values(text, streamed["identifiers"])


def _now():
    from datetime import datetime

    return datetime.now(UTC)
