"""One HTTP POST with the error classification the SMS and webhook channels share.

The standard library's ``urllib`` is enough for a single POST per message; 429 and
5xx replies, timeouts and refused connections are transient, other 4xx permanent.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from txmon.alerting.errors import ChannelError
from txmon.infra.masking import redact


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answered, not followed: urllib would re-send a POST as a body-less GET
    carrying our Authorization header to wherever Location points, and count that GET's
    200 as a delivered message."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect)


def _error_body(exc: urllib.error.HTTPError) -> str:
    # The status already says what happened; a body that is cut off or never comes (the
    # provider closed or stalled) must not turn that into an exception of another kind.
    try:
        return exc.read(2048).decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return ""


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, what: str) -> HttpReply:
    """POST and return the 2xx reply, or raise ChannelError saying what went wrong.
    The URL is never put in an error (webhook URLs are secrets)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as reply:
            return HttpReply(reply.status, reply.read(4096).decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        text = redact(_error_body(exc))
        transient = exc.code == 429 or exc.code >= 500
        if 300 <= exc.code < 400:
            hint = "; redirects are not followed: set the provider URL to where it redirects"
        else:
            hint = "" if transient else "; check the recipient and the gateway account"
        raise ChannelError(
            f"{what} answered HTTP {exc.code}{hint}", transient=transient, response=f"HTTP {exc.code} {text}"[:1000]
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        # OSError: refused, reset, timed out (URLError is one); HTTPException: the peer
        # closed mid-reply or answered something that is not HTTP. Worth another try,
        # with the same Idempotency-Key, in case it did take the message.
        reason = getattr(exc, "reason", exc)
        raise ChannelError(
            f"{what} unreachable: {type(reason).__name__}: {' '.join(redact(str(reason)).split())[:200]}",
            transient=True,
        ) from None
