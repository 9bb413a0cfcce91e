"""Alert dispatch against input and providers we did not write: hostile alert messages
and stored rows, hostile contacts, SMTP servers and SMS gateways that misbehave at every
stage, and digests of every size. Whatever comes in, one delivery fails on its own (a
ChannelError the delivery log records) or one message is dead-lettered (an
AlertContractError); nothing else escapes, and no address or secret is echoed."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.unit.test_alert_delivery import MemoryStore
from txmon.alerting.channels import EmailChannel, OutboundMessage, Recipient, SmsChannel
from txmon.alerting.channels.base import Channel, Receipt
from txmon.alerting.channels.email import build_email
from txmon.alerting.cli import alerts_app
from txmon.alerting.config import BankConfig, RetryConfig, SmsConfig, SmtpConfig
from txmon.alerting.contract import alert_from_row, alert_row, from_json, to_json
from txmon.alerting.delivery import Deliverer, Job, build_message
from txmon.alerting.digest import render_digest, summarize
from txmon.alerting.errors import AlertContractError, AlertingConfigError, ChannelError
from txmon.alerting.render import render_message
from txmon.alerting.routing import mask_recipient
from txmon.alerting.testing import SmsGatewayStub, SmtpSink, make_alert

SID = "AC" + "0" * 32
TOKEN = "tok-very-secret-123"
PHONE = "+919812345678"
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- alert messages

VALID = json.loads(to_json(make_alert(1)))
NASTY_TEXT = st.text(
    st.sampled_from(["\r", "\n", "\x00", "\x1b", "\u2028", "₹", "é", "日", "a", " ", "@", ",", "<", '"']),
    max_size=40,
) | st.text(max_size=600)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | NASTY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@HYPOTHESIS
@given(
    field=st.sampled_from([*VALID, "unexpected_field"]),
    value=ANY_JSON | st.sampled_from([3, 0, -1, 2**63, 2**63 - 1, "0001-01-01T00:00:00+05:30", "9999-12-31T23:00:00Z"]),
    drop=st.booleans(),
)
def test_any_alert_message_is_an_alert_or_a_contract_error(field, value, drop):
    data = dict(VALID)
    if drop:
        data.pop(field, None)
    else:
        data[field] = value
    try:
        alert = from_json(json.dumps(data))
    except AlertContractError:
        return
    # Whatever was accepted can be stored, dayed and re-read.
    assert alert_from_row(alert_row(alert)) == alert


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,  # was RecursionError out of json.loads (reading the schema version)
        b'{"a":' * 5_000,
        json.dumps({**VALID, "event_time": "0001-01-01T00:00:00+05:30"}).encode(),  # was OverflowError
        json.dumps({**VALID, "created_at": "9999-12-31T23:59:59-05:00"}).encode(),
        # valid in UTC, but its IST day does not exist: alert_day overflowed afterwards
        json.dumps({**VALID, "event_time": "9999-12-31T23:00:00Z"}).encode(),
        # accepted, then too large for the Cassandra bigint column: the insert failed
        json.dumps({**VALID, "amount_paise": 2**63}).encode(),
        json.dumps({**VALID, "schema_version": 3}).encode(),
        b"\xff\xfe\x00",
        b"",
    ],
)
def test_hostile_messages_are_dead_letter_material(raw):
    with pytest.raises(AlertContractError):
        from_json(raw)


def test_the_largest_storable_amount_is_an_alert():
    assert from_json(json.dumps({**VALID, "amount_paise": 2**63 - 1})).amount_paise == 2**63 - 1


@pytest.mark.parametrize(
    "broken",
    [
        {"reasons": "not json ["},
        {"reasons": "[" * 100_000},
        {"reasons": None},
        {"event_time": None},
        {"amount_paise": -5},
    ],
)
def test_a_corrupt_stored_row_is_a_contract_error(broken):
    row = {**alert_row(make_alert(2)), **broken}
    with pytest.raises(AlertContractError, match="stored alert"):
        alert_from_row(row)


# ---------------------------------------------------------------- rendering

BANK = BankConfig()


@HYPOTHESIS
@given(description=NASTY_TEXT.filter(lambda s: 1 <= len(s) <= 500), value=st.text(max_size=200))
def test_hostile_reason_text_stays_inside_the_body(description, value):
    alert = make_alert(
        3,
        reasons=[{"code": "RULE_X", "description": description, "value": value, "contribution": 1.0}],
    )
    recipient = Recipient("email", "desk@bank.example", "de***@bank.example", "staff", "fraud_desk")
    for audience in ("staff", "customer"):
        rendered = render_message(audience, "email", BANK, alert=alert)
        raw = build_email(build_message(alert.alert_id, "alert", recipient, rendered), "a <a@bank.example>").as_bytes()
        parsed = message_from_bytes(raw, policy=email_policy.default)
        # One recipient, one subject, no header smuggled in by the reason.
        assert parsed.get_all("To") == ["desk@bank.example"]
        assert parsed.get_all("Bcc") is None and parsed.get_all("Cc") is None
        assert "\n" not in str(parsed["Subject"]) and "\r" not in str(parsed["Subject"])
        sms = render_message(audience, "sms", BANK, alert=alert, max_sms_segments=2).text
        assert "\n" not in sms and "\r" not in sms


# ---------------------------------------------------------------- contacts

HOSTILE_EMAILS = [
    "a@b.in\r\nBcc: evil@x.com",
    "a@b.in\nSubject: hi",
    "a@b.in, c@d.in",
    "a@b.in;c@d.in",
    "<a@b.in>",
    "Jürgen@b.de",  # was UnicodeEncodeError out of smtplib
    "a@bü.de",
    "x" * 5000 + "@b.in",
    " ",
    "a@b.in\x00",
    "@b.in",
    "a@",
]
HOSTILE_PHONES = [
    "919812345678",
    "+919812345678\r\nX",
    "+91 98123,+9198",
    "९८१२३४५६७८",
    "+" + "9" * 5000,
    "+91981234567a",
    " ",
]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def gateway(monkeypatch) -> Iterator[SmsGatewayStub]:
    monkeypatch.setenv("TEST_SMS_TOKEN", TOKEN)
    with SmsGatewayStub(token=TOKEN) as stub:
        yield stub


def _sms(base_url: str, timeout_s: float = 2.0) -> SmsChannel:
    return SmsChannel(
        SmsConfig(
            base_url=base_url, account_sid=SID, token_env="TEST_SMS_TOKEN", from_number="TXMONB", timeout_s=timeout_s
        )
    )


def _recipient(channel: str, address: str) -> Recipient:
    return Recipient(channel, address, mask_recipient(channel, address, "customer"), "customer", "customer")


@pytest.mark.parametrize("address", HOSTILE_EMAILS)
def test_a_hostile_email_address_fails_that_delivery_only(smtp, address):
    channel = EmailChannel(SmtpConfig(port=smtp.port, security="none"))
    recipient = _recipient("email", address)
    with pytest.raises(ChannelError) as caught:
        channel.send(OutboundMessage("k1", recipient, "s", "t"))
    assert not caught.value.transient
    assert smtp.messages() == []
    assert recipient.masked == "invalid email address"  # no part of it reaches a log line
    assert address.strip() not in str(caught.value) or not address.strip()


@pytest.mark.parametrize("address", HOSTILE_PHONES)
def test_a_hostile_phone_number_fails_that_delivery_only(gateway, address):
    with pytest.raises(ChannelError) as caught:
        _sms(gateway.base_url).send(OutboundMessage("k1", _recipient("sms", address), "", "hello"))
    assert not caught.value.transient
    assert gateway.requests == []


@pytest.mark.parametrize("phone", ["919876543210", "+91 9876543210", "+91987654321a"])
def test_contacts_import_refuses_a_phone_an_sms_channel_would_refuse(tmp_path, phone):
    # The same E.164 rule as the channels' (PHONE_PATTERN): a contact stored without its
    # country code would fail every SMS to it, after the alert was raised.
    path = tmp_path / "contacts.csv"
    path.write_text(f"account,phone,email\n123456789,{phone},a@b.in\n", encoding="utf-8")
    result = CliRunner().invoke(alerts_app, ["contacts-import", str(path)])
    assert isinstance(result.exception, AlertingConfigError), result.output
    assert "phone must be E.164" in str(result.exception)


@pytest.mark.parametrize(
    ("email", "error"),
    [
        ("a@b.in\u2028Bcc: x@y.in", "email must be one plain ASCII address"),
        ('"a@b.in, c@d.in"', "email must be one plain ASCII address"),
        ("Jürgen@b.de", "email must be one plain ASCII address"),
    ],
)
def test_contacts_import_refuses_an_undeliverable_email(tmp_path, email, error):
    path = tmp_path / "contacts.csv"
    path.write_text(f"account,phone,email\n123456789,+919876543210,{email}\n", encoding="utf-8")
    result = CliRunner().invoke(alerts_app, ["contacts-import", str(path)])
    assert isinstance(result.exception, AlertingConfigError), result.output
    assert error in str(result.exception)


# ---------------------------------------------------------------- a scripted SMTP server


class ScriptedSmtp:
    """A loopback SMTP server answering each command from a script: ``replies`` maps the
    stage (greeting, EHLO, MAIL, RCPT, DATA, END = after the message) to the line to
    answer, ``"close"`` to drop the connection or ``"hang"`` to say nothing."""

    DEFAULT: ClassVar[dict[str, str]] = {
        "greeting": "220 mx ready",
        "EHLO": "250 mx",
        "HELO": "250 mx",
        "MAIL": "250 ok",
        "RCPT": "250 ok",
        "DATA": "354 go ahead",
        "END": "250 queued",
        "QUIT": "221 bye",
        "RSET": "250 ok",
    }

    def __init__(self, **replies: str) -> None:
        self.replies = {**self.DEFAULT, **replies}
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _answer(self, conn: socket.socket, stage: str) -> bool:
        reply = self.replies[stage]
        if reply == "close":
            return False
        if reply == "hang":
            self.done.wait(10)
            return False
        conn.sendall(reply.encode() + b"\r\n")
        return True

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                self._converse(conn)

    def _converse(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        if not self._answer(conn, "greeting"):
            return
        in_data = False
        for line in reader:
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    if not self._answer(conn, "END"):
                        return
                continue
            verb = line.split(b" ", 1)[0].strip().decode(errors="replace").upper()
            stage = verb if verb in self.replies else "RSET"
            if not self._answer(conn, stage):
                return
            if verb == "DATA" and self.replies["DATA"].startswith("354"):
                in_data = True
            if verb == "QUIT":
                return

    def close(self) -> None:
        self.done.set()
        self.sock.close()


@pytest.mark.parametrize(
    ("script", "transient"),
    [
        ({"greeting": "421 4.3.2 busy"}, True),
        ({"greeting": "554 5.7.1 go away"}, False),
        ({"greeting": "close"}, True),
        ({"greeting": "hang"}, True),
        ({"EHLO": "421 4.3.2 closing", "HELO": "421 4.3.2 closing"}, True),
        ({"EHLO": "550 no", "HELO": "550 no"}, False),
        ({"EHLO": "close"}, True),
        ({"MAIL": "451 4.3.0 later"}, True),
        ({"MAIL": "553 5.7.1 sender refused"}, False),
        ({"MAIL": "hang"}, True),
        ({"RCPT": "450 4.2.1 mailbox busy"}, True),
        ({"RCPT": "550 5.1.1 <rahul.sharma@example.in> unknown"}, False),
        ({"RCPT": "close"}, True),
        ({"DATA": "451 4.3.0 later"}, True),
        ({"DATA": "554 5.6.0 no"}, False),
        ({"DATA": "close"}, True),
        ({"END": "452 4.3.1 full"}, True),
        ({"END": "552 5.3.4 too big"}, False),
        ({"END": "close"}, True),
        ({"END": "hang"}, True),
        ({"greeting": "garbage without a code"}, False),  # not an SMTP server: the config is wrong
    ],
)
def test_an_smtp_server_misbehaving_at_any_stage_is_a_classified_channel_error(script, transient):
    server = ScriptedSmtp(**script)
    try:
        channel = EmailChannel(SmtpConfig(port=server.port, security="none", timeout_s=0.5))
        recipient = _recipient("email", "rahul.sharma@example.in")
        with pytest.raises(ChannelError) as caught:
            channel.send(OutboundMessage("k1", recipient, "s", "t"))
    finally:
        server.close()
    assert caught.value.transient is transient
    assert "rahul.sharma" not in str(caught.value) and "rahul.sharma" not in caught.value.response


def test_an_smtp_server_that_accepts_is_a_receipt():
    server = ScriptedSmtp()
    try:
        channel = EmailChannel(SmtpConfig(port=server.port, security="none", timeout_s=2))
        receipt = channel.send(OutboundMessage("k1", _recipient("email", "desk@bank.example"), "s", "t"))
    finally:
        server.close()
    assert receipt.response.startswith("250")


# ---------------------------------------------------------------- a scripted SMS gateway


def _raw_http(reply: Callable[[socket.socket], Any]) -> tuple[socket.socket, str]:
    """A loopback server that reads one request per connection and answers with ``reply``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(3)
                    conn.recv(65536)
                    reply(conn)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _hold(seconds: float) -> Callable[[socket.socket], None]:
    def wait(conn: socket.socket) -> None:
        threading.Event().wait(seconds)

    return wait


def _send_all(*chunks: bytes | Callable[[socket.socket], None]) -> Callable[[socket.socket], None]:
    def reply(conn: socket.socket) -> None:
        for chunk in chunks:
            chunk(conn) if callable(chunk) else conn.sendall(chunk)

    return reply


HTTP_CASES: dict[str, tuple[Callable[[socket.socket], None], bool | None]] = {
    # name: (reply, transient; None = accepted)
    "400": (_send_all(b'HTTP/1.1 400 Bad\r\nContent-Length: 37\r\n\r\n{"message":"bad To +919812345678"}  '), False),
    "401": (_send_all(b"HTTP/1.1 401 No\r\nContent-Length: 2\r\n\r\n{}"), False),
    "429": (_send_all(b"HTTP/1.1 429 Slow\r\nContent-Length: 2\r\n\r\n{}"), True),
    "500": (_send_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 9\r\n\r\nnot json!"), True),
    # the status came, its body never did: was a TimeoutError out of the error handler
    "503 stalled body": (_send_all(b"HTTP/1.1 503 X\r\nContent-Length: 10\r\n\r\n", _hold(1.5)), True),
    "503 cut body": (_send_all(b"HTTP/1.1 503 X\r\nContent-Length: 500\r\n\r\nerr"), True),
    # was AttributeError: 'list' object has no attribute 'get'
    "200 json list": (_send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n[1,2,3]"), None),
    "200 json string": (_send_all(b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"abc"'), None),
    "200 not json": (_send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n<html"), None),
    "200 huge body": (_send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n" + b"x" * 3_000_000), None),
    "200 stalled body": (_send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", _hold(1.5)), True),
    "closed without reply": (_send_all(), True),
    # was http.client.BadStatusLine / HTTPException escaping the channel
    "not http": (_send_all(b"220 smtp.example ESMTP\r\n\r\n"), True),
    "too many headers": (_send_all(b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 200 + b"\r\n{}"), True),
}


@pytest.mark.parametrize("name", sorted(HTTP_CASES))
def test_an_sms_gateway_answering_anything_is_a_receipt_or_a_classified_channel_error(monkeypatch, name):
    monkeypatch.setenv("TEST_SMS_TOKEN", TOKEN)
    reply, transient = HTTP_CASES[name]
    sock, url = _raw_http(reply)
    try:
        channel = _sms(url, timeout_s=0.5)
        message = OutboundMessage("k1", _recipient("sms", PHONE), "", "hello")
        if transient is None:
            assert channel.send(message).response.startswith("HTTP 200")
            return
        with pytest.raises(ChannelError) as caught:
            channel.send(message)
    finally:
        sock.close()
    assert caught.value.transient is transient
    said = f"{caught.value} {caught.value.response}"
    assert "9812345678" not in said and TOKEN not in said
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_nor_counted_as_sent(monkeypatch, status):
    """urllib followed a 302 as a GET without the message, to wherever Location pointed,
    with the gateway's Authorization header, and counted that GET's 200 as sent."""
    monkeypatch.setenv("TEST_SMS_TOKEN", TOKEN)
    seen: list[str | None] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"sid":"SM1","status":"queued"}')

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    location = f"http://127.0.0.1:{other.server_address[1]}/collect"
    sock, url = _raw_http(
        _send_all(f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode())
    )
    try:
        with pytest.raises(ChannelError, match="redirects are not followed") as caught:
            _sms(url).send(OutboundMessage("k1", _recipient("sms", PHONE), "", "hello"))
    finally:
        sock.close()
        other.shutdown()
        other.server_close()
    assert not caught.value.transient
    assert seen == []


# ---------------------------------------------------------------- the delivery log


class Exploding(Channel):
    name = "email"

    def send(self, message: OutboundMessage) -> Receipt:
        if "bad" in message.recipient.address:
            raise ValueError(f"cannot encode {message.recipient.address}")
        return Receipt("250 ok")


def test_an_unexpected_exception_from_a_channel_fails_that_delivery_only(caplog):
    store = MemoryStore()
    deliverer = Deliverer({"email": Exploding()}, store, RetryConfig(attempts=2, initial_s=0.01), sleep=lambda s: None)
    alert = make_alert(4)
    outcomes = []
    for address in ("bad.person@x.in", "good@x.in"):
        recipient = Recipient("email", address, mask_recipient("email", address, "c"), "customer", "customer")
        job = Job(alert.alert_id, "alert", "block", date(2026, 1, 5), OutboundMessage("k", recipient, "s", "t"))
        outcomes.append(deliverer.deliver(job))
    assert [o.status for o in outcomes] == ["failed", "sent"]
    assert outcomes[0].response == "email channel failed unexpectedly (ValueError)"
    assert len(store.failures) == 1  # left to retry-failed, as any permanent failure
    assert "bad.person" not in caplog.text


# ---------------------------------------------------------------- the digest


def _rows(n: int) -> list[dict[str, Any]]:
    t0 = datetime(2026, 1, 4, 18, 30, tzinfo=UTC)  # 00:00 IST on the 5th
    return [
        {
            "payer_ref": f"{i % 97:032x}",
            "payer_account_masked": f"XXXXXXXX{i % 97:04d}",
            "decision": "BLOCK" if i % 3 else "REVIEW",
            "severity": ("LOW", "MEDIUM", "HIGH", "CRITICAL")[i % 4],
            "amount_paise": 2**62 if i == 0 else 100 + i,
            "reason_codes": ["AMOUNT_SPIKE", "NEW_PAYEE"][: 1 + i % 2],
            "event_time": t0 + timedelta(seconds=i * 86_399 // max(n, 1)),
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [0, 1, 5000])
def test_the_digest_of_an_empty_a_single_and_a_busy_day(n):
    data = summarize(_rows(n), date(2026, 1, 5))
    assert data.total == n == sum(data.by_decision.values())
    assert sum(sum(hours) for hours in data.hourly.values()) == n
    assert len(data.top_accounts) == min(n, 10)
    rendered = render_digest(data, BANK)
    assert f"{n} alerts" in rendered.subject
    assert "\n" not in rendered.subject
    if n == 0:
        assert data.busiest_hour == "none"
