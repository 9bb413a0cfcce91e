"""Routing from config/alerting.yaml, and the config's validation."""

from __future__ import annotations

import pytest

from txmon.alerting.config import AlertingConfig, load_alerting_config
from txmon.alerting.errors import AlertingConfigError, SecretMissingError
from txmon.alerting.routing import Contact, Directory, mask_recipient
from txmon.alerting.testing import make_alert

HOOK = "https://hooks.example/services/T/B/secret-token"


@pytest.fixture
def config(monkeypatch) -> AlertingConfig:
    monkeypatch.setenv("TXMON_WEBHOOK_FRAUD_DESK", HOOK)
    monkeypatch.delenv("TXMON_ALERTING_CONFIG", raising=False)
    return load_alerting_config()


def _routes(directory, alert, contact):
    targets, unreachable = directory.resolve(alert, contact)
    return (
        [(t.route, t.recipient.channel, t.recipient.masked) for t in targets],
        [(u.route, u.channel, u.recipient.masked) for u in unreachable],
    )


def test_block_critical_goes_to_customer_sms_desk_email_and_chat(config):
    contact = Contact("500000000001", phone="+919876543210", email="c@example.in")
    targets, missing = _routes(Directory(config), make_alert(1), contact)
    assert targets == [
        ("block", "sms", "+91XXXXXX3210"),
        ("block", "email", "fr***@bank.example"),
        ("critical-chat", "webhook", "webhook:fraud_desk"),
    ]
    assert missing == []


def test_review_goes_to_the_analyst_queue_only(config):
    alert = make_alert(2, decision="REVIEW", severity="MEDIUM")
    directory = Directory(config)
    assert not directory.needs_contact(alert)
    assert _routes(directory, alert, None) == ([("review", "email", "fr***@bank.example")], [])
    assert directory.resolve(alert, None)[0][0].recipient.address == "fraud-analysts@bank.example"


def test_a_customer_without_a_phone_is_reported_not_dropped(config):
    targets, missing = _routes(Directory(config), make_alert(3, severity="HIGH"), None)
    assert targets == [("block", "email", "fr***@bank.example")]
    assert missing == [("block", "sms", "customer XXXXXXXX0003")]


def test_a_recipient_is_served_once_per_alert_across_routes(monkeypatch):
    monkeypatch.setenv("TXMON_WEBHOOK_FRAUD_DESK", HOOK)
    config = AlertingConfig(
        routes=[
            {"name": "a", "match": {"decisions": ["BLOCK"]}, "deliver": [{"channel": "email", "to": "fraud_desk"}]},
            {"name": "b", "match": {"min_risk_score": 50}, "deliver": [{"channel": "email", "to": "fraud_desk"}]},
            {
                "name": "c",
                "match": {"reason_codes": ["NOPE"]},
                "deliver": [{"channel": "email", "to": "analyst_queue"}],
            },
        ]
    )
    targets, _ = Directory(config).resolve(make_alert(1), None)
    assert [(t.route, t.recipient.masked) for t in targets] == [("a", "fr***@bank.example")]


def test_recipient_keys_are_stable_and_do_not_reveal_the_address(config):
    contact = Contact("500000000001", phone="+919876543210")
    first = Directory(config).resolve(make_alert(1), contact)[0][0].recipient
    again = Directory(config).resolve(make_alert(5), contact)[0][0].recipient
    assert first.key == again.key and "9876543210" not in first.key
    assert "9876543210" not in repr(first)  # the raw address never shows in a repr (logs, tracebacks)


def test_webhook_url_secret_must_be_in_the_environment(monkeypatch):
    monkeypatch.delenv("TXMON_WEBHOOK_FRAUD_DESK", raising=False)
    config = load_alerting_config()
    with pytest.raises(SecretMissingError, match="TXMON_WEBHOOK_FRAUD_DESK"):
        Directory(config)
    Directory(config, channels={"email"})  # the digest needs no webhook secret


def test_environment_overrides_any_key(monkeypatch):
    monkeypatch.setenv("TXMON_ALERTING__SMTP__PORT", "2525")
    monkeypatch.setenv("TXMON_ALERTING__THROTTLE__WINDOW_S", "60")
    config = load_alerting_config()
    assert (config.smtp.port, config.throttle.window_s) == (2525, 60)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "routes:\n  - name: x\n    deliver: [{channel: email, to: nobody}]\n",
            "recipient group 'nobody' is not defined",
        ),
        ("smtp:\n  prot: 25\n", "smtp.prot"),
        ("routes:\n  - name: x\n    deliver: [{channel: webhook, to: customer}]\n", "customers have no webhook"),
        ("routes:\n  - name: x\n    deliver: [{channel: fax, to: customer}]\n", "channel"),
        ("smtp:\n  security: tls\n", "smtp.security"),
    ],
)
def test_bad_config_is_rejected_naming_key_and_fix(tmp_path, monkeypatch, yaml_text, message):
    path = tmp_path / "alerting.yaml"
    path.write_text("recipients:\n  fraud_desk: {email: [d@bank.example]}\n" + yaml_text)
    monkeypatch.setenv("TXMON_ALERTING_CONFIG", str(path))
    with pytest.raises(AlertingConfigError) as err:
        load_alerting_config()
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_config_file_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TXMON_ALERTING_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(AlertingConfigError, match="TXMON_ALERTING_CONFIG"):
        load_alerting_config()


def test_mask_recipient_never_shows_a_webhook_url():
    assert mask_recipient("webhook", HOOK, "desk") == "webhook:desk"
