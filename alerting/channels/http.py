"""One HTTP POST with the error classification the SMS and webhook channels share.

The standard library's ``urllib`` is enough for a single POST per message; 429 and
5xx replies, timeouts and refused connections are transient, other 4xx permanent.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from txmon.alerting.errors import ChannelError
from txmon.infra.masking import redact


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: str


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, what: str) -> HttpReply:
    """POST and return the 2xx reply, or raise ChannelError saying what went wrong.
    The URL is never put in an error (webhook URLs are secrets)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return HttpReply(reply.status, reply.read(4096).decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        text = redact(exc.read(2048).decode(errors="replace"))
        transient = exc.code == 429 or exc.code >= 500
        hint = "" if transient else "; check the recipient and the gateway account"
        raise ChannelError(
            f"{what} answered HTTP {exc.code}{hint}", transient=transient, response=f"HTTP {exc.code} {text}"[:1000]
        ) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ChannelError(
            f"{what} unreachable: {type(reason).__name__}: {redact(str(reason))}", transient=True
        ) from None
