"""The daily digest and the batch commands, against real Cassandra and a real SMTP server."""

from __future__ import annotations

import zlib
from datetime import date, datetime, timedelta

import pytest
from typer.testing import CliRunner

from txmon.alerting.config import RetryConfig, load_alerting_config
from txmon.alerting.contract import DAY_TZ
from txmon.alerting.digest import CHART_CID, digest_id, send_digest
from txmon.alerting.runtime import runtime
from txmon.alerting.store import AlertStore
from txmon.alerting.testing import SmtpSink, make_alert
from txmon.infra.cli import app


@pytest.fixture
def smtp(monkeypatch):
    with SmtpSink() as sink:
        monkeypatch.setenv("TXMON_ALERTING__SMTP__PORT", str(sink.port))
        monkeypatch.setenv("TXMON_ALERTING__SMTP__SECURITY", "none")
        monkeypatch.delenv("TXMON_ALERTING_CONFIG", raising=False)
        yield sink


def _day_alerts(name: str):
    """A seeded day of alerts: 3 accounts, mixed decisions and rules, spread over IST hours."""
    day = date(2100, 1, 1) + timedelta(days=zlib.crc32(name.encode()) % 2_000_000)
    start = datetime.combine(day, datetime.min.time(), DAY_TZ)
    accounts = [f"8{zlib.crc32(name.encode()) % 10**6:06d}{i:05d}" for i in range(3)]
    alerts = []
    for i in range(12):
        reasons = [{"code": "AMOUNT_SPIKE", "description": "big", "contribution": 0.6}]
        if i % 3 == 0:
            reasons.append({"code": "NEW_DEVICE", "description": "new phone", "contribution": 0.3})
        alerts.append(
            make_alert(
                i,
                txn_id=f"{name}-{i:03d}".replace("_", "-"),
                account=accounts[min(i % 4, 2)],
                event_time=start + timedelta(hours=2 * i, minutes=5),
                created_at=start + timedelta(hours=2 * i, minutes=6),
                decision="BLOCK" if i % 2 == 0 else "REVIEW",
                reasons=reasons,
            )
        )
    # One alert from the IST day before (UTC date of the same day) must not be counted.
    alerts.append(
        make_alert(
            99,
            txn_id=f"{name}-099".replace("_", "-"),
            account=accounts[0],
            event_time=start - timedelta(minutes=1),
            created_at=start,
        )
    )
    return day, accounts, alerts


def test_digest_email_counts_masks_and_inlines_the_chart_once_per_day(services, cassandra_session, unique_name, smtp):
    day, accounts, alerts = _day_alerts(unique_name("digest"))
    store = AlertStore(cassandra_session)
    for alert in alerts:
        store.save_alert(alert)

    config = load_alerting_config()
    with runtime(services, config, needed={"email"}) as rt:
        result = send_digest(rt, day)
        again = send_digest(rt, day)

    assert [o.status for o in result.outcomes] == ["sent"] and [o.status for o in again.outcomes] == ["done"]
    d = result.data
    assert d.total == 12 and d.by_decision == {"BLOCK": 6, "REVIEW": 6}
    assert d.by_rule == [("AMOUNT_SPIKE", 12), ("NEW_DEVICE", 4)]
    assert [(a["account"], a["alerts"]) for a in d.top_accounts] == [
        (f"XXXXXXXX{accounts[2][-4:]}", 6),
        (f"XXXXXXXX{accounts[1][-4:]}", 3),
        (f"XXXXXXXX{accounts[0][-4:]}", 3),
    ]
    # (ties on count rank by amount: account 1's payments are the larger ones)
    assert [sum(v[h] for v in d.hourly.values()) for h in range(0, 24, 2)] == [1] * 12

    (mail,) = smtp.messages()
    assert mail.rcpt_tos == ["fraud-desk@bank.example"]
    assert mail.message["Subject"] == f"[txmon] Daily fraud digest {day}: 12 alerts (6 BLOCK, 6 REVIEW)"
    assert mail.message_id.startswith(f"<{digest_id(day)}.email.")
    html = mail.html()
    assert f'src="cid:{CHART_CID}"' in html and "AMOUNT_SPIKE" in html
    (png,) = [p for p in mail.message.walk() if p.get_content_type() == "image/png"]
    assert png["Content-ID"] == f"<{CHART_CID}>" and png.get_content().startswith(b"\x89PNG")
    raw = mail.raw()
    for account in accounts:
        assert account not in raw and f"XXXXXXXX{account[-4:]}" in html


def test_cli_contacts_import_digest_out_and_retry_failed(services, cassandra_session, unique_name, smtp, tmp_path):
    name = unique_name("cli")
    day, accounts, alerts = _day_alerts(name)
    store = AlertStore(cassandra_session)
    for alert in alerts:
        store.save_alert(alert)
    runner = CliRunner()

    contacts = tmp_path / "contacts.csv"
    contacts.write_text("account,phone,email,name\n" + "".join(f"{a},+9199{a[-8:]},,\n" for a in accounts))
    result = runner.invoke(app, ["alerts", "contacts-import", str(contacts)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "3 contacts upserted"
    contact = store.contact(accounts[1])
    assert contact is not None and contact.phone == f"+9199{accounts[1][-8:]}"

    bad = tmp_path / "bad.csv"
    bad.write_text("account,phone,email\n12,+911,\n")
    result = runner.invoke(app, ["alerts", "contacts-import", str(bad)])
    assert result.exit_code != 0 and "account is not 9-18 digits" in str(result.exception)

    result = runner.invoke(app, ["alerts", "digest", "--date", day.isoformat(), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"digest {day}: 12 alerts (BLOCK 6, REVIEW 6); written to" in result.output
    assert (tmp_path / "out" / f"digest-{day}.png").read_bytes().startswith(b"\x89PNG")
    assert f'src="digest-{day}.png"' in (tmp_path / "out" / f"digest-{day}.html").read_text()
    assert smtp.messages() == []  # --out writes, never sends

    result = runner.invoke(
        app,
        ["alerts", "retry-failed", "--date", day.isoformat()],
        env={"TXMON_WEBHOOK_FRAUD_DESK": "http://127.0.0.1:9/hook", "TXMON_SMS_TOKEN": "x"},
    )
    assert result.exit_code == 0, result.output
    assert "retried deliveries: 0 sent, 0 still failing" in result.output

    result = runner.invoke(app, ["alerts", "digest", "--date", "05-01-2026"])
    assert result.exit_code != 0 and "give it as YYYY-MM-DD" in str(result.exception)


def test_a_digest_that_could_not_be_sent_is_sent_by_the_next_run(services, cassandra_session, unique_name, smtp):
    day, _, alerts = _day_alerts(unique_name("digest"))
    store = AlertStore(cassandra_session)
    for alert in alerts:
        store.save_alert(alert)
    config = load_alerting_config(retry=RetryConfig(attempts=2, initial_s=0.05))

    smtp.refuse("451 4.3.0 busy", times=2)
    with runtime(services, config, needed={"email"}) as rt:
        assert [o.status for o in send_digest(rt, day).outcomes] == ["failed"]
    with runtime(services, config, needed={"email"}) as rt:  # e.g. the DAG task's retry
        assert [o.status for o in send_digest(rt, day).outcomes] == ["sent"]
        assert [o.status for o in send_digest(rt, day).outcomes] == ["done"]
    assert len(smtp.messages()) == 1
