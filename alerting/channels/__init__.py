"""Alert channels: email (SMTP), SMS (HTTP gateway), webhook (chat), one interface.

>>> sorted(CHANNEL_CLASSES)
['email', 'sms', 'webhook']
"""

from __future__ import annotations

from collections.abc import Callable

from txmon.alerting.channels.base import Audience, Channel, InlineImage, OutboundMessage, Receipt, Recipient
from txmon.alerting.channels.email import EmailChannel
from txmon.alerting.channels.sms import SmsChannel
from txmon.alerting.channels.webhook import WebhookChannel
from txmon.alerting.config import AlertingConfig

__all__ = [
    "CHANNEL_CLASSES",
    "Audience",
    "Channel",
    "EmailChannel",
    "InlineImage",
    "OutboundMessage",
    "Receipt",
    "Recipient",
    "SmsChannel",
    "WebhookChannel",
    "build_channels",
]

CHANNEL_CLASSES: dict[str, type[Channel]] = {
    "email": EmailChannel,
    "sms": SmsChannel,
    "webhook": WebhookChannel,
}


def build_channels(config: AlertingConfig, needed: set[str] | None = None) -> dict[str, Channel]:
    """The channels the routes use (or ``needed``), each reading its secret now, so a
    missing credential stops the dispatcher at start-up with the variable named."""
    if needed is None:
        needed = {t.channel for r in config.routes for t in r.deliver} | {"email"}
    build: dict[str, Callable[[], Channel]] = {
        "email": lambda: EmailChannel(config.smtp),
        "sms": lambda: SmsChannel(config.sms),
        "webhook": lambda: WebhookChannel(config.webhook),
    }
    return {name: build[name]() for name in sorted(needed)}
