"""One contract, every channel: each implementation is run against a real local
provider (aiosmtpd SMTP server, Twilio-shaped HTTP gateway, webhook endpoint) on
loopback and must behave the same way. A new channel joins CASES and is covered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from txmon.alerting.channels import (
    CHANNEL_CLASSES,
    EmailChannel,
    OutboundMessage,
    Recipient,
    SmsChannel,
    WebhookChannel,
)
from txmon.alerting.channels.base import InlineImage
from txmon.alerting.config import SmsConfig, SmtpConfig, WebhookConfig
from txmon.alerting.errors import ChannelError, SecretMissingError
from txmon.alerting.testing import SmsGatewayStub, SmtpSink, WebhookSink

PHONE = "+919812345678"
# Loopback test servers log in without TLS on purpose; aiosmtpd warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@dataclass
class Case:
    """A channel wired to its local provider, with the same handles for every kind."""

    channel: Any
    recipient: Recipient
    received: Callable[[], list[dict[str, str]]]  # [{"key": idempotency key, "text": body}]
    go_down: Callable[[], None]  # provider unreachable / answering a transient error
    reject: Callable[[], None]  # provider refusing permanently once
    stop: Callable[[], None]


def _email_case(monkeypatch) -> Case:
    sink = SmtpSink(credentials=("alerts", "s3cret")).start()
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    channel = EmailChannel(
        SmtpConfig(port=sink.port, security="none", username="alerts", password_env="TEST_SMTP_PASSWORD")
    )
    return Case(
        channel,
        Recipient("email", "desk@bank.example", "de***@bank.example", "staff", "fraud_desk"),
        lambda: [{"key": m.message_id.strip("<>").removesuffix("@txmon"), "text": m.text()} for m in sink.messages()],
        lambda: sink.refuse("421 4.3.2 service shutting down", times=10),
        lambda: sink.refuse("550 5.1.1 mailbox unavailable", times=1),
        sink.stop,
    )


def _sms_case(monkeypatch) -> Case:
    gateway = SmsGatewayStub(token="tok-123").start()
    monkeypatch.setenv("TEST_SMS_TOKEN", "tok-123")
    channel = SmsChannel(
        SmsConfig(
            base_url=gateway.base_url, account_sid=gateway.account_sid, token_env="TEST_SMS_TOKEN", from_number="TXMONB"
        )
    )
    return Case(
        channel,
        Recipient("sms", PHONE, "+91XXXXXX5678", "customer", "customer"),
        lambda: [{"key": k, "text": m["Body"]} for k, m in gateway.messages.items()],
        lambda: gateway.fail(503, times=10),
        lambda: gateway.fail(400, times=1),
        gateway.stop,
    )


def _webhook_case(monkeypatch) -> Case:
    sink = WebhookSink().start()
    channel = WebhookChannel(WebhookConfig())
    return Case(
        channel,
        Recipient("webhook", sink.url, "webhook:fraud_desk", "staff", "fraud_desk"),
        lambda: [{"key": r["key"], "text": r["text"]} for r in sink.requests],
        lambda: sink.fail(502, times=10),
        lambda: sink.fail(404, times=1),
        sink.stop,
    )


CASES = {"email": _email_case, "sms": _sms_case, "webhook": _webhook_case}


def test_every_channel_has_a_contract_case():
    assert set(CASES) == set(CHANNEL_CLASSES)


@pytest.fixture(params=sorted(CASES))
def case(request, monkeypatch):
    c = CASES[request.param](monkeypatch)
    yield c
    c.stop()


def _message(recipient: Recipient, key: str = "0b7c.k1") -> OutboundMessage:
    return OutboundMessage(
        key, recipient, "[txmon] BLOCK", "Blocked Rs.1,250.00 from a/c XXXXXXXX9012.", "<p>Blocked <b>₹1,250.00</b></p>"
    )


def test_delivers_once_with_the_idempotency_key_and_reports_the_provider_reply(case):
    receipt = case.channel.send(_message(case.recipient))

    received = case.received()
    assert [r["key"] for r in received] == ["0b7c.k1"]
    assert "XXXXXXXX9012" in received[0]["text"]
    assert receipt.response  # what the provider said is kept for the delivery log
    assert PHONE not in receipt.response and "9812345678" not in receipt.response


def test_an_unavailable_provider_is_a_transient_error(case):
    case.go_down()
    with pytest.raises(ChannelError) as err:
        case.channel.send(_message(case.recipient))
    assert err.value.transient
    assert case.received() == []


def test_a_refusal_is_a_permanent_error(case):
    case.reject()
    with pytest.raises(ChannelError) as err:
        case.channel.send(_message(case.recipient))
    assert not err.value.transient
    case.channel.send(_message(case.recipient, "0b7c.k2"))  # the next message goes through
    assert [r["key"] for r in case.received()] == ["0b7c.k2"]


def test_a_provider_that_is_not_listening_is_a_transient_error(case):
    case.stop()
    with pytest.raises(ChannelError) as err:
        case.channel.send(_message(case.recipient))
    assert err.value.transient


# ------------------------------------------------------------- channel specifics


def test_email_has_text_html_inline_image_and_stable_message_id(monkeypatch):
    with SmtpSink() as sink:
        channel = EmailChannel(SmtpConfig(port=sink.port, security="none"))
        msg = OutboundMessage(
            "abc.email.k",
            Recipient("email", "desk@bank.example", "de***@bank.example", "staff", "fraud_desk"),
            "Digest ₹",
            "plain body",
            '<img src="cid:chart@txmon">',
            inline_images=(InlineImage("chart@txmon", b"\x89PNG\r\n\x1a\nfake"),),
            headers=(("X-Txmon-Alert-Id", "abc"),),
        )
        channel.send(msg)
        mail = sink.messages()[0]
    assert mail.message_id == "<abc.email.k@txmon>"
    assert mail.alert_id == "abc"
    assert mail.message["Subject"] == "Digest ₹"
    assert mail.text().strip() == "plain body"
    assert 'src="cid:chart@txmon"' in mail.html()
    images = [p for p in mail.message.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0]["Content-ID"] == "<chart@txmon>"
    assert images[0].get_content() == b"\x89PNG\r\n\x1a\nfake"


def test_email_login_with_a_wrong_password_is_permanent_and_names_the_fix(monkeypatch):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
    with SmtpSink(credentials=("alerts", "s3cret")) as sink:
        channel = EmailChannel(
            SmtpConfig(port=sink.port, security="none", username="alerts", password_env="TEST_SMTP_PASSWORD")
        )
        with pytest.raises(ChannelError) as err:
            channel.send(_message(Recipient("email", "d@bank.example", "d***@bank.example", "staff", "x")))
    assert not err.value.transient
    assert "password" in str(err.value)


def test_secrets_come_from_the_environment_and_a_missing_one_is_named(monkeypatch):
    monkeypatch.delenv("TEST_SMS_TOKEN", raising=False)
    with pytest.raises(SecretMissingError, match="TEST_SMS_TOKEN"):
        SmsChannel(SmsConfig(token_env="TEST_SMS_TOKEN"))
    monkeypatch.delenv("TEST_SMTP_PASSWORD", raising=False)
    with pytest.raises(SecretMissingError, match="TEST_SMTP_PASSWORD"):
        EmailChannel(SmtpConfig(username="alerts", password_env="TEST_SMTP_PASSWORD"))


def test_sms_gateway_gets_twilio_form_fields_with_basic_auth(monkeypatch):
    monkeypatch.setenv("TEST_SMS_TOKEN", "tok-123")
    with SmsGatewayStub(token="tok-123") as gateway:
        channel = SmsChannel(
            SmsConfig(
                base_url=gateway.base_url,
                account_sid=gateway.account_sid,
                token_env="TEST_SMS_TOKEN",
                from_number="TXMONB",
            )
        )
        receipt = channel.send(_message(Recipient("sms", PHONE, "+91XXXXXX5678", "customer", "customer")))
        request = gateway.requests[0]
    assert (request["To"], request["From"]) == (PHONE, "TXMONB")
    assert receipt.response.startswith("HTTP 201 sid=SM") and "segments=1" in receipt.response


def test_sms_with_a_wrong_token_is_a_permanent_error(monkeypatch):
    monkeypatch.setenv("TEST_SMS_TOKEN", "not-the-token")
    with SmsGatewayStub(token="tok-123") as gateway:
        channel = SmsChannel(
            SmsConfig(base_url=gateway.base_url, account_sid=gateway.account_sid, token_env="TEST_SMS_TOKEN")
        )
        with pytest.raises(ChannelError) as err:
            channel.send(_message(Recipient("sms", PHONE, "+91XXXXXX5678", "customer", "customer")))
    assert not err.value.transient and "HTTP 401" in err.value.response


def test_sms_over_the_segment_limit_is_refused_before_sending(monkeypatch):
    monkeypatch.setenv("TEST_SMS_TOKEN", "tok-123")
    with SmsGatewayStub(token="tok-123") as gateway:
        channel = SmsChannel(
            SmsConfig(
                base_url=gateway.base_url, account_sid=gateway.account_sid, token_env="TEST_SMS_TOKEN", max_segments=2
            )
        )
        long = OutboundMessage("k", Recipient("sms", PHONE, "+91XXXXXX5678", "customer", "customer"), "", "x" * 307)
        with pytest.raises(ChannelError, match="3 segments"):
            channel.send(long)
        assert gateway.requests == []
