"""The one interface every alert channel implements, and what flows through it.

Channels are thin edges: they turn an :class:`OutboundMessage` into one provider call
and report what the provider said, raising :class:`~alerting.errors.ChannelError`
(transient or permanent) when it did not accept the message. Retries, idempotency and
the delivery log live in :mod:`alerting.delivery`, not here.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from txmon.alerting.config import deliverable
from txmon.alerting.errors import ChannelError

Audience = Literal["customer", "staff"]


@dataclass(frozen=True)
class Recipient:
    """Where one delivery goes. ``address`` is raw (email, phone number, webhook URL)
    and never logged or stored: everything else uses ``masked`` and ``key``."""

    channel: str
    address: str = field(repr=False)
    masked: str
    audience: Audience
    group: str  # "customer" or the staff group name

    @property
    def key(self) -> str:
        """Stable, non-reversible id of the recipient: part of the idempotency key."""
        return hashlib.sha256(f"{self.channel}:{self.address}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class InlineImage:
    """An image shown inside an HTML email, referenced as ``cid:<cid>``."""

    cid: str
    data: bytes = field(repr=False)
    subtype: str = "png"


@dataclass(frozen=True)
class OutboundMessage:
    """One rendered message for one recipient.

    ``idempotency_key`` is ``<delivery id>.<channel>.<recipient key>``: the email
    Message-ID and the gateways' Idempotency-Key are built from it, so a resend after a
    crash carries the same id and the receiving side can collapse it.
    """

    idempotency_key: str
    recipient: Recipient
    subject: str
    text: str
    html: str | None = None
    inline_images: tuple[InlineImage, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Receipt:
    """The provider accepted the message; ``response`` is what it said (redacted)."""

    response: str


def check_address(recipient: Recipient) -> None:
    """Refuse, as a permanent failure of this one delivery, an address its channel cannot
    send to safely. Customer addresses come from the ``customer_contacts`` table, which
    other tools may fill: a CR/LF there would inject mail headers, a comma a second
    recipient, non-ASCII makes smtplib raise instead of answering. The error names the
    masked form only."""
    if not deliverable(recipient.channel, recipient.address):
        raise ChannelError(
            f"not a deliverable {recipient.channel} address ({recipient.masked}); fix the contact "
            f"({'one plain ASCII mailbox' if recipient.channel == 'email' else 'E.164, e.g. +919876543210'})",
            transient=False,
        )


class Channel(ABC):
    """Deliver a message or raise ChannelError. Implementations must be thread-safe:
    the dispatcher sends one alert's deliveries in parallel."""

    name: ClassVar[str]

    @abstractmethod
    def send(self, message: OutboundMessage) -> Receipt:
        """Hand the message to the provider; return its acceptance or raise ChannelError."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (default: nothing to release)."""
