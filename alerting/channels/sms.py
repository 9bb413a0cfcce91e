"""SMS through an HTTP gateway of the Twilio REST shape.

``POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`` with form fields
``To``, ``From``, ``Body`` and HTTP basic auth (account sid, token); the reply is JSON
with the message ``sid`` and ``status``; a 2xx whose JSON says the gateway refused the
message (``status`` failed, ``success`` false, an ``error``: channels.http.refusal) is a
permanent failure, not a sent SMS. An ``Idempotency-Key`` header carries the
delivery's idempotency key for gateways that collapse repeats.
"""

from __future__ import annotations

import base64
import urllib.parse

from txmon.alerting.channels.base import Channel, OutboundMessage, Receipt, check_address
from txmon.alerting.channels.http import json_object, post
from txmon.alerting.config import SmsConfig
from txmon.alerting.errors import ChannelError
from txmon.alerting.segments import sms_segments


class SmsChannel(Channel):
    name = "sms"

    def __init__(self, config: SmsConfig) -> None:
        self.config = config
        token = config.token()  # read from the environment now: fail at start-up
        auth = base64.b64encode(f"{config.account_sid}:{token.get_secret_value()}".encode()).decode()
        self._auth_header = f"Basic {auth}"
        self.url = f"{config.base_url.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}/Messages.json"

    def send(self, message: OutboundMessage) -> Receipt:
        check_address(message.recipient)
        segments = sms_segments(message.text)
        if segments > self.config.max_segments:
            raise ChannelError(
                f"SMS is {segments} segments (max {self.config.max_segments}); shorten the template", transient=False
            )
        body = urllib.parse.urlencode(
            {"To": message.recipient.address, "From": self.config.from_number, "Body": message.text}
        ).encode()
        reply = post(
            self.url,
            body,
            {
                "Authorization": self._auth_header,
                "Content-Type": "application/x-www-form-urlencoded",
                "Idempotency-Key": message.idempotency_key,
                "Accept": "application/json",
            },
            self.config.timeout_s,
            "SMS gateway",
        )
        # post() has already turned a body refusing the message into an error; otherwise
        # the body is only for the log.
        data = json_object(reply.body) or {}
        sid, status = data.get("sid", "?"), data.get("status", "?")
        return Receipt(f"HTTP {reply.status} sid={sid} status={status} segments={segments}")
