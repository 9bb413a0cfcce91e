"""Local stand-ins for the providers, for tests, the latency benchmark and demos.

* :class:`SmtpSink` - a real SMTP server (aiosmtpd) on loopback that keeps every
  accepted message, can refuse or be stopped for a while, and can log in users.
* :class:`SmsGatewayStub` - a real HTTP server speaking the Twilio Messages REST shape
  (basic auth, form fields, JSON reply, Idempotency-Key honoured like a provider would).
* :class:`WebhookSink` - a real HTTP server taking chat-webhook JSON posts.

They bind 127.0.0.1 only. aiosmtpd is a test dependency (``pip install txmon[test]``).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from txmon.alerting.contract import build_alert
from txmon.infra.process import wait_until
from txmon.infra.statements import TRANSACTION_PAYER_INSERT

__all__ = [
    "TEST_PII_KEY",
    "ReceivedMail",
    "SmsGatewayStub",
    "SmtpSink",
    "WebhookSink",
    "clear_parties",
    "free_port",
    "land_payers",
    "make_alert",
    "payer_of",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ReceivedMail:
    accepted_at: float  # time.time() when the server answered 250
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage = field(repr=False)

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"]).strip()

    @property
    def alert_id(self) -> str | None:
        value = self.message["X-Txmon-Alert-Id"]
        return str(value) if value else None

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part else ""

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part else ""

    def raw(self) -> str:
        return self.message.as_string()


class SmtpSink:
    """A real SMTP server on loopback that stores what it accepts.

    ``refuse(code_text, times)`` answers the next DATA commands with an error;
    ``stop()``/``start()`` take the server away and bring it back on the same port;
    ``before_accept`` is called with each message before the server answers 250.
    """

    def __init__(self, port: int | None = None, credentials: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.credentials = credentials
        self.received: list[ReceivedMail] = []
        self.before_accept: Callable[[ReceivedMail], None] | None = None
        self._refusals: list[str] = []
        self._lock = threading.Lock()
        self._controller: Any = None

    def _handler(self) -> Any:
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink._lock:
                    if sink._refusals:
                        return sink._refusals.pop(0)
                message = email.message_from_bytes(
                    envelope.original_content or envelope.content, policy=email.policy.default
                )
                mail = ReceivedMail(time.time(), envelope.mail_from, list(envelope.rcpt_tos), message)
                if sink.before_accept is not None:
                    sink.before_accept(mail)
                with sink._lock:
                    mail.accepted_at = time.time()
                    sink.received.append(mail)
                    n = len(sink.received)
                return f"250 OK queued as Q{n:06d}"

        return Handler()

    def _authenticator(self) -> Any:
        # aiosmtpd is a test dependency: loaded only when a sink starts.
        from aiosmtpd.smtp import AuthResult, LoginPassword

        def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
            ok = (
                isinstance(auth_data, LoginPassword)
                and self.credentials is not None
                and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
            )
            return AuthResult(success=ok, handled=False)

        return check

    def start(self) -> SmtpSink:
        kwargs: dict[str, Any] = {}
        if self.credentials:
            kwargs.update(authenticator=self._authenticator(), auth_require_tls=False, auth_required=True)
        self._controller = Controller(self._handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def refuse(self, reply: str = "451 4.3.0 try again later", times: int = 1) -> None:
        with self._lock:
            self._refusals.extend([reply] * times)

    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[ReceivedMail]:
        """Wait until at least ``count`` messages arrived (bounded), return all."""
        wait_until(lambda: len(self.received) >= count, timeout_s, interval=0.02)
        return self.messages()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _HttpStub:
    """A threaded HTTP server on loopback; subclasses answer POSTs in ``handle``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with stub._lock:
                    failure = stub._failures.pop(0) if stub._failures else None
                if failure is not None:
                    status, reply = failure, {"message": "service unavailable", "status": failure}
                else:
                    status, reply = stub.handle(self.path, dict(self.headers.items()), body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._stopped = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def fail(self, status: int = 503, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status``."""
        with self._lock:
            self._failures.extend([status] * times)

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SmsGatewayStub(_HttpStub):
    """Twilio-shaped ``POST /2010-04-01/Accounts/{sid}/Messages.json``.

    ``requests`` keeps every accepted POST; ``messages`` one entry per distinct
    Idempotency-Key (a repeat gets the first one's sid back, as an idempotent provider
    answers). 401 on a wrong account or token, 400 (code 21211) on a malformed number.
    """

    def __init__(self, account_sid: str = "AC" + "0" * 32, token: str = "test-token") -> None:
        super().__init__()
        self.account_sid, self.token = account_sid, token
        self.messages: dict[str, dict[str, Any]] = {}

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return 404, {"code": 20404, "message": "not found"}
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.token}".encode()).decode()
        if headers.get("Authorization") != expected:
            return 401, {"code": 20003, "message": "authenticate"}
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        to = form.get("To", "")
        if not (to.startswith("+") and to[1:].isdigit() and 8 <= len(to) <= 16) or not form.get("Body"):
            return 400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number."}
        key = headers.get("Idempotency-Key") or f"none-{len(self.requests)}"
        with self._lock:
            self.requests.append({"at": time.time(), "key": key, **form})
            if key not in self.messages:
                self.messages[key] = {"sid": f"SM{len(self.messages) + 1:032d}", **form}
            sid = self.messages[key]["sid"]
        return 201, {"sid": sid, "status": "queued", "to": to, "from": form.get("From"), "body": form["Body"]}


class WebhookSink(_HttpStub):
    """An incoming-webhook endpoint (Slack/Teams shape): keeps each JSON body posted."""

    path = "/services/T000/B000/XXXX"

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if path != self.path:
            return 404, {"error": "no_service"}
        payload = json.loads(body)
        with self._lock:
            self.requests.append({"key": headers.get("Idempotency-Key"), **payload})
            self.posts.append(payload)
        return 200, {"ok": True}


def provider_env(smtp: SmtpSink, gateway: SmsGatewayStub, sms_token_env: str, **extra: str) -> dict[str, str]:
    """TXMON_* variables pointing the alerting config at these local providers (the same
    variables a deployment sets), plus ``extra``; the SMS token is read from ``sms_token_env``."""
    return {
        "TXMON_ALERTING__SMTP__PORT": str(smtp.port),
        "TXMON_ALERTING__SMTP__SECURITY": "none",
        "TXMON_ALERTING__SMS__BASE_URL": gateway.base_url,
        "TXMON_ALERTING__SMS__ACCOUNT_SID": gateway.account_sid,
        "TXMON_ALERTING__SMS__TOKEN_ENV": sms_token_env,
        sms_token_env: "gw-token",
        **extra,
    }


TEST_PII_KEY = b"txmon-tests-only-pii-token-key-000000"
"""The key :func:`make_alert` pseudonymises payers with (the stream uses the deployment's)."""

_PARTIES: dict[str, dict[str, Any]] = {}


def clear_parties(alert: Any) -> dict[str, Any]:
    """The clear identifiers :func:`make_alert` masked into ``alert`` (payer_account,
    payer_vpa, payee_account, payee_vpa): what a test checks outputs against."""
    return dict(_PARTIES[alert.txn_id])


def payer_of(alert: Any) -> str:
    """The clear payer account of an alert made by :func:`make_alert`."""
    return _PARTIES[alert.txn_id]["payer_account"]


def land_payers(session: Any, pairs: Any) -> None:
    """Write (txn_id, payer_account) rows to ``transactions``, standing in for the stream's
    landing of the transactions behind hand-made alerts: the dispatcher reads the clear
    payer account there to find the customer's contacts. ``session``: bound to the keyspace."""
    stmt = session.prepare(TRANSACTION_PAYER_INSERT)
    for txn_id, account in pairs:
        session.execute(stmt, (txn_id, account))


def make_alert(n: int, *, account: str | None = None, created_at: Any = None, **overrides: Any) -> Any:
    """A valid, deterministic alert number ``n`` (BLOCK/CRITICAL by default), for tests
    and the benchmark. Account ``5000000000nn``-style numbers and VPAs derive from n;
    overrides may give the clear ``payer_account``, ``payer_vpa``, ``payee_account`` and
    ``payee_vpa``, which are masked as the stream masks them (alerting.contract.build_alert)."""
    base = datetime(2026, 1, 5, 3, 30, tzinfo=UTC)  # 09:00 IST
    fields: dict[str, Any] = {
        "txn_id": f"TXNT{n:012d}",
        "created_at": created_at or base + timedelta(seconds=n, milliseconds=800),
        "event_time": base + timedelta(seconds=n),
        "payer_account": account or f"5{n:011d}",
        "payer_vpa": f"payer{n}.name@okhdfc",
        "payee_account": f"9{(n * 7919) % 10**11:011d}",
        "payee_vpa": f"merchant{n}@ybl",
        "amount_paise": 1_250_000 + n,
        "channel": "UPI",
        "txn_type": "P2P",
        "risk_score": 92,
        "decision": "BLOCK",
        "severity": "CRITICAL",
        "reasons": [
            {
                "code": "AMOUNT_SPIKE",
                "description": "amount is 25 times this account's usual payment",
                "value": "12500.00",
                "contribution": 0.55,
            },
            {
                "code": "NEW_PAYEE_VPA",
                "description": "first payment to this payee",
                "value": f"merchant{n}@ybl",
                "contribution": 0.25,
            },
        ],
        "model_version": "iforest-test",
        "rules_version": "rules-test",
    }
    fields.update(overrides)
    alert = build_alert(key=TEST_PII_KEY, **fields)
    _PARTIES[alert.txn_id] = {k: fields[k] for k in ("payer_account", "payer_vpa", "payee_account", "payee_vpa")}
    return alert
