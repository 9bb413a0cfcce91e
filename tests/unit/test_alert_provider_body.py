"""What an HTTP provider's 2xx reply body says, and how long it may take to say it; and
control characters kept out of every rendered message. Real loopback servers throughout:
the Twilio-shaped gateway and the webhook sink of alerting.testing, raw sockets where
the reply must be malformed or slow, and the aiosmtpd sink for email."""

from __future__ import annotations

import socket
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_alert_delivery import MemoryStore
from tests.unit.test_alert_hostile import _raw_http, _send_all
from txmon.alerting.channels import EmailChannel, OutboundMessage, Recipient, SmsChannel, WebhookChannel
from txmon.alerting.config import AlertingConfig, BankConfig, RetryConfig, SmsConfig, SmtpConfig, WebhookConfig
from txmon.alerting.delivery import Deliverer, Job, build_message
from txmon.alerting.errors import ChannelError
from txmon.alerting.notify import email_now
from txmon.alerting.render import FollowUp, render_message
from txmon.alerting.testing import SmsGatewayStub, SmtpSink, WebhookSink, make_alert

TOKEN = "tok-provider-body"
PHONE = "+919812345678"
TIMEOUT_S = 1.0


class SayingGateway(SmsGatewayStub):
    """The gateway stand-in, answering 200 with ``reply`` to every request it would accept."""

    def __init__(self, reply: Any) -> None:
        super().__init__(token=TOKEN)
        self.reply = reply

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        status, accepted = super().handle(path, headers, body)
        return (200, self.reply) if status == 201 else (status, accepted)


def _sms(base_url: str, account_sid: str = "AC" + "0" * 32) -> SmsChannel:
    return SmsChannel(
        SmsConfig(
            base_url=base_url,
            account_sid=account_sid,
            token_env="TEST_SMS_TOKEN",
            from_number="TXMONB",
            timeout_s=TIMEOUT_S,
        )
    )


def _message(text: str = "Blocked Rs.1,250.00 from a/c XXXXXXXX9012.") -> OutboundMessage:
    return OutboundMessage("0b7c.k1", Recipient("sms", PHONE, "+91XXXXXX5678", "customer", "customer"), "", text)


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SMS_TOKEN", TOKEN)


@pytest.fixture
def say() -> Iterator[Callable[[Any], SayingGateway]]:
    started: list[SayingGateway] = []

    def start(reply: Any) -> SayingGateway:
        gateway = SayingGateway(reply).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


# ---------------------------------------------------------------- a 2xx that says "failed"


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        ({"status": "failed", "error": "invalid destination"}, "invalid destination"),
        ({"sid": "SM1", "status": "REJECTED", "message": "DND registered"}, "DND registered"),
        ({"status": "Error"}, '"Error"'),
        ({"success": False, "message": "insufficient credit"}, "insufficient credit"),
        ({"status": "queued", "error": {"code": 30007, "text": "carrier filtered"}}, "carrier filtered"),
    ],
)
def test_a_2xx_whose_body_says_failed_is_a_permanent_failure_recorded_with_its_reason(
    say: Callable[[Any], SayingGateway], reply: dict[str, Any], said: str
) -> None:
    gateway = say(reply)
    store = MemoryStore()
    deliverer = Deliverer(
        {"sms": _sms(gateway.base_url)}, store, RetryConfig(attempts=3, initial_s=0.01), sleep=lambda s: None
    )
    delivery_id = uuid.uuid4()
    outcome = deliverer.deliver(Job(delivery_id, "alert", "block", date(2026, 1, 5), _message()))

    assert outcome.status == "failed"
    assert outcome.attempts == 1  # the provider's own refusal: sending again would be refused again
    assert len(gateway.requests) == 1
    assert said in outcome.response and outcome.response.startswith("HTTP 200")
    (rows,) = store.attempts.values()
    assert rows[max(rows)] == ("failed", outcome.response)
    assert len(store.failures) == 1  # left to retry-failed like any permanent failure


def test_the_refusal_names_the_reason_and_masks_the_number(say: Callable[[Any], SayingGateway]) -> None:
    gateway = say({"status": "failed", "error": f"{PHONE} is not a mobile number"})
    with pytest.raises(ChannelError) as caught:
        _sms(gateway.base_url).send(_message())
    assert not caught.value.transient
    assert "refused the message" in str(caught.value) and "not a mobile number" in str(caught.value)
    said = f"{caught.value} {caught.value.response}"
    assert "9812345678" not in said and TOKEN not in said


@pytest.mark.parametrize(
    "reply",
    [
        {"sid": "SM1", "status": "queued"},
        {"status": "sent", "success": True, "error": None, "error_message": None},
        {"status": "accepted", "error": "", "errors": []},
        {"status": "queued", "success": 0},  # only the JSON false says it failed
        [{"status": "failed"}],  # not an object: no top-level verdict
    ],
)
def test_a_2xx_whose_body_does_not_say_failed_is_sent(say: Callable[[Any], SayingGateway], reply: Any) -> None:
    gateway = say(reply)
    receipt = _sms(gateway.base_url).send(_message())
    assert receipt.response.startswith("HTTP 200")
    assert len(gateway.requests) == 1


@pytest.mark.parametrize(
    "body",
    [b"OK", b"queued: failed later is not our business", b'{"status": "failed"', b"[" * 5000],
)
def test_a_2xx_whose_body_is_not_a_json_object_is_sent(body: bytes) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    sock, url = _raw_http(_send_all(reply))
    try:
        receipt = _sms(url).send(_message())
    finally:
        sock.close()
    assert receipt.response.startswith("HTTP 200")


def test_the_webhook_channel_reads_the_body_the_same_way() -> None:
    class Refusing(WebhookSink):
        def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
            status, _ = super().handle(path, headers, body)
            return status, {"ok": False, "error": "invalid_token"}

    with Refusing() as sink:
        recipient = Recipient("webhook", sink.url, "webhook:fraud_desk", "staff", "fraud_desk")
        with pytest.raises(ChannelError) as caught:
            WebhookChannel(WebhookConfig(timeout_s=TIMEOUT_S)).send(OutboundMessage("k1", recipient, "", "hello"))
    assert not caught.value.transient
    assert "invalid_token" in caught.value.response


# ---------------------------------------------------------------- a body that trickles in


def _trickle(head: bytes, piece: bytes, *, pieces: int = 40, every_s: float = 0.2) -> Callable[[socket.socket], None]:
    """Send ``head`` then ``piece`` every ``every_s`` seconds: each within any per-read
    timeout, the whole (``pieces`` x ``every_s`` = 8 s) far past the deadline."""

    def reply(conn: socket.socket) -> None:
        conn.sendall(head)
        stop = threading.Event()
        for _ in range(pieces):
            if stop.wait(every_s):
                return
            conn.sendall(piece)

    return reply


TRICKLES = {
    "until close": _trickle(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"x"),
    "content-length": _trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"x"),
    # Inside http.client's chunked framing: no read loop of ours sees the clock there.
    "chunked trailer": _trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n", b"X: y\r\n"),
    "error body": _trickle(b"HTTP/1.1 503 Busy\r\nContent-Length: 1000\r\n\r\n", b"x"),
}


@pytest.mark.parametrize("name", sorted(TRICKLES))
def test_a_body_trickling_past_the_deadline_is_a_retryable_failure_in_bounded_time(name: str) -> None:
    sock, url = _raw_http(TRICKLES[name])
    try:
        started = time.monotonic()
        with pytest.raises(ChannelError) as caught:
            _sms(url).send(_message())
        took = time.monotonic() - started
    finally:
        sock.close()
    assert caught.value.transient
    assert took < 3 * TIMEOUT_S  # the trickle alone lasts 8 s
    if name != "error body":  # a 503 is retryable whatever its body; a 200 only for its slowness
        assert "did not finish its reply" in str(caught.value)


def _pause(seconds: float) -> Callable[[socket.socket], None]:
    def wait(conn: socket.socket) -> None:
        threading.Event().wait(seconds)

    return wait


def test_a_slow_body_within_the_deadline_is_read_whole() -> None:
    # The head at once, then nothing for 0.3 s, then the body: inside the deadline, so its
    # verdict counts.
    body = b'{"status": "failed"}'
    sock, url = _raw_http(_send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), _pause(0.3), body))
    try:
        with pytest.raises(ChannelError) as caught:
            _sms(url).send(_message())
    finally:
        sock.close()
    assert not caught.value.transient and "refused the message" in str(caught.value)


# ---------------------------------------------------------------- control characters

BANK = BankConfig()
CONTROLS = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t")
NASTY = st.text(st.sampled_from([*CONTROLS, "a", " ", "\n", "\t", "₹", "日", "<", "&"]), min_size=1, max_size=60)


def _controls(text: str) -> set[str]:
    """Control characters in ``text`` other than newline and tab."""
    return {c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\t"}


def test_the_control_set_is_every_c0_and_c1_code_but_newline_and_tab() -> None:
    assert _controls(CONTROLS) == set(CONTROLS) and len(CONTROLS) == 32 - 2 + 1 + 32


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(description=st.text(min_size=1, max_size=200) | NASTY, value=st.text(max_size=60) | NASTY)
def test_no_control_character_reaches_a_rendered_message(description: str, value: str) -> None:
    if not description.strip():
        description = f"x{description}"  # the contract wants a non-blank reason
    alert = make_alert(7, reasons=[{"code": "RULE_X", "description": description, "value": value, "contribution": 1.0}])
    for audience in ("staff", "customer"):
        for channel in ("email", "sms", "webhook"):
            if audience == "customer" and channel == "webhook":
                continue  # no customer webhook template
            for what in ({"alert": alert}, {"followup": FollowUp("RULE_X", (alert,))}):
                rendered = render_message(audience, channel, BANK, max_sms_segments=4, **what)
                for part in (rendered.subject, rendered.text, rendered.html or ""):
                    assert not _controls(part), (audience, channel, part)


def _nasty_alert() -> Any:
    return make_alert(
        8,
        reasons=[
            {
                "code": "RULE_X",
                "description": "amount\x1b[31m spike\x00 from\rabroad\x07\x85",
                "value": "12\x0b500\x7f",
                "contribution": 1.0,
            }
        ],
    )


def test_an_email_with_control_characters_in_the_reason_arrives_without_them() -> None:
    alert = _nasty_alert()
    recipient = Recipient("email", "desk@bank.example", "de***@bank.example", "staff", "fraud_desk")
    with SmtpSink() as sink:
        rendered = render_message("staff", "email", BANK, alert=alert)
        EmailChannel(SmtpConfig(port=sink.port, security="none", timeout_s=5)).send(
            build_message(alert.alert_id, "alert", recipient, rendered)
        )
        (mail,) = sink.wait_for(1, timeout_s=10)
    text, html = mail.text().replace("\r\n", "\n"), mail.html().replace("\r\n", "\n")
    assert "amount [31m spike" in text  # the reason is there, its controls are not
    assert not _controls(text) and not _controls(html) and not _controls(str(mail.message["Subject"]))


def test_an_sms_with_control_characters_in_the_reason_arrives_without_them() -> None:
    alert = _nasty_alert()
    with SmsGatewayStub(token=TOKEN) as gateway:
        text = render_message("staff", "sms", BANK, alert=alert, max_sms_segments=4).text
        _sms(gateway.base_url, gateway.account_sid).send(_message(text))
        (sent,) = gateway.messages.values()
    assert "spike" in sent["Body"]
    assert not _controls(sent["Body"])


def test_an_operator_notice_with_control_characters_arrives_without_them() -> None:
    with SmtpSink() as sink:
        config = AlertingConfig(smtp=SmtpConfig(port=sink.port, security="none", timeout_s=5))
        email_now(
            ["ops@bank.example"], "task\x1b[1m failed", "log:\x1b[31mERROR\x1b[0m\x00 done\n", key="k", config=config
        )
        (mail,) = sink.wait_for(1, timeout_s=10)
    text = mail.text().replace("\r\n", "\n")
    assert "ERROR" in text
    assert not _controls(text) and not _controls(str(mail.message["Subject"]))
