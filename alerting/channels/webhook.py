"""Chat incoming webhooks (Slack, Microsoft Teams): a JSON ``{"text": ...}`` POST to a
URL that is itself the secret (it comes from the environment, never from config)."""

from __future__ import annotations

import json

from txmon.alerting.channels.base import Channel, OutboundMessage, Receipt
from txmon.alerting.channels.http import post
from txmon.alerting.config import WebhookConfig


class WebhookChannel(Channel):
    name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    def send(self, message: OutboundMessage) -> Receipt:
        body = json.dumps({"text": message.text}).encode()
        reply = post(
            message.recipient.address,
            body,
            {
                "Content-Type": "application/json",
                "Idempotency-Key": message.idempotency_key,
            },
            self.config.timeout_s,
            "webhook",
        )
        return Receipt(f"HTTP {reply.status} {reply.body[:200]}")
