"""One HTTP POST with the error classification the SMS and webhook channels share.

The standard library's ``urllib`` is enough for a single POST per message; 429 and
5xx replies, timeouts and refused connections are transient, other 4xx permanent. A
2xx whose JSON body says the provider refused the message (:func:`refusal`) is a
permanent failure too. The reply body is read within one overall deadline and up to
:data:`BODY_LIMIT` bytes (:func:`_read_body`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from txmon.alerting.errors import ChannelError
from txmon.infra.masking import redact

BODY_LIMIT = 64 * 1024
"""Bytes of a reply body read at most. What lies beyond is left unread: a 2xx body cut
there is (almost always) no longer JSON, so it counts as an acceptance, as the status says."""

REFUSED_STATUSES = frozenset({"failed", "error", "rejected"})
"""``status`` values (any case) by which a gateway answering 2xx says it refused the message."""


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: str


class _SlowBody(Exception):
    """The reply's body did not arrive within the deadline."""


class _Response(http.client.HTTPResponse):
    """An HTTPResponse that keeps its socket, so a deadline can end a read waiting on it."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.deadline_socket = sock


class _HttpConnection(http.client.HTTPConnection):
    response_class = _Response


class _HttpsConnection(http.client.HTTPSConnection):
    response_class = _Response


class _HttpHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> http.client.HTTPResponse:
        return super().do_open(_HttpConnection, req, **kwargs)


class _HttpsHandler(urllib.request.HTTPSHandler):
    # do_open, not https_open: the TLS context and hostname check arrive as its arguments.
    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> http.client.HTTPResponse:
        return super().do_open(_HttpsConnection, req, **kwargs)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answered, not followed: urllib would re-send a POST as a body-less GET
    carrying our Authorization header to wherever Location points, and count that GET's
    200 as a delivered message."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect, _HttpHandler, _HttpsHandler)


class _Watchdog:
    """Shuts a socket down at a deadline unless stopped first: the socket's timeout bounds
    each read, not their sum, and a reply sending one byte within every timeout (or an
    endless chunked trailer, read inside http.client where no loop here can look at a
    clock) would otherwise hold the sending thread for ever."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._lock = threading.Lock()  # so the shutdown never runs once the reader has let go of the socket
        self._stopped = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.fired = True
            with contextlib.suppress(OSError):
                # The plain socket's shutdown also for TLS: SSLSocket.shutdown would drop the
                # TLS state under the thread reading through it; this only ends its wait.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._timer.cancel()


def _read_body(reply: http.client.HTTPResponse, seconds: float, limit: int) -> bytes:
    """At most ``limit`` bytes of the body, all read within ``seconds``, or _SlowBody."""
    sock = getattr(reply, "deadline_socket", None)
    watchdog = _Watchdog(sock, seconds) if isinstance(sock, socket.socket) else None
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    size = 0
    try:
        while size < limit:
            piece = reply.read1(limit - size)
            if not piece:
                break
            chunks.append(piece)
            size += len(piece)
            if time.monotonic() > deadline:
                raise _SlowBody
    except (OSError, http.client.HTTPException):
        if watchdog is not None and watchdog.fired:
            raise _SlowBody from None
        raise
    finally:
        if watchdog is not None:
            watchdog.stop()
    if watchdog is not None and watchdog.fired:  # a socket shut down mid-body can read as its end
        raise _SlowBody
    return b"".join(chunks)


def json_object(body: str) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (not JSON, a list, too deep)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def refusal(body: str) -> str | None:
    """What a 2xx reply's body says went wrong, or None when it does not say so.

    Gateways answer 200 to requests they then refuse, saying so in the body only. The
    rule, applied to a top-level JSON object: ``status`` is one of
    :data:`REFUSED_STATUSES` (any case), ``success`` is ``false``, or ``error`` is present
    and truthy. A body that is not a JSON object, or has none of these, is no refusal.

    >>> refusal('{"status": "Failed", "error": "invalid destination"}')
    'status="Failed" error="invalid destination"'
    >>> refusal('{"success": false}'), refusal('{"error": null, "status": "queued"}'), refusal("OK")
    ('success=false', None, None)
    """
    data = json_object(body)
    if data is None:
        return None
    status, success, error = data.get("status"), data.get("success"), data.get("error")
    if not ((isinstance(status, str) and status.lower() in REFUSED_STATUSES) or success is False or bool(error)):
        return None
    said = [
        f"{key}={json.dumps(data[key], ensure_ascii=False)}"
        for key in ("status", "success", "error", "message")
        if key in data
    ]
    return " ".join(redact(" ".join(said)).split())[:300]


def _error_body(exc: urllib.error.HTTPError, seconds: float) -> str:
    # The status already says what happened; a body that is cut off, never comes or
    # trickles (the provider closed or stalled) must not turn that into another error.
    try:
        if isinstance(exc.fp, http.client.HTTPResponse):
            return _read_body(exc.fp, seconds, 2048).decode(errors="replace")
        return exc.read(2048).decode(errors="replace")
    except (OSError, http.client.HTTPException, _SlowBody):
        return ""


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, what: str) -> HttpReply:
    """POST and return the 2xx reply, or raise ChannelError saying what went wrong.
    The URL is never put in an error (webhook URLs are secrets)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as reply:
            status = reply.status
            text = _read_body(reply, timeout_s, BODY_LIMIT).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        text = redact(_error_body(exc, timeout_s))
        transient = exc.code == 429 or exc.code >= 500
        if 300 <= exc.code < 400:
            hint = "; redirects are not followed: set the provider URL to where it redirects"
        else:
            hint = "" if transient else "; check the recipient and the gateway account"
        raise ChannelError(
            f"{what} answered HTTP {exc.code}{hint}", transient=transient, response=f"HTTP {exc.code} {text}"[:1000]
        ) from None
    except _SlowBody:
        # Accepted or not, the reply never ended: another try, with the same
        # Idempotency-Key, lets a provider that did take the message collapse the repeat.
        raise ChannelError(f"{what} did not finish its reply within {timeout_s:g}s", transient=True) from None
    except (OSError, http.client.HTTPException) as exc:
        # OSError: refused, reset, timed out (URLError is one); HTTPException: the peer
        # closed mid-reply or answered something that is not HTTP. Worth another try,
        # with the same Idempotency-Key, in case it did take the message.
        reason = getattr(exc, "reason", exc)
        raise ChannelError(
            f"{what} unreachable: {type(reason).__name__}: {' '.join(redact(str(reason)).split())[:200]}",
            transient=True,
        ) from None
    refused = refusal(text)
    if refused is not None:
        # The provider's own verdict on this message: sending it again would be refused again.
        raise ChannelError(
            f"{what} answered HTTP {status} but refused the message: {refused}",
            transient=False,
            response=f"HTTP {status} {redact(text)}"[:1000],
        )
    return HttpReply(status, text)
