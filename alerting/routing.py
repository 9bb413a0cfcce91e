"""Which recipients an alert goes to, over which channels: plain Python over the config.

Staff addresses come from ``recipients`` groups (webhook URLs from the environment,
read once when the :class:`Directory` is built); the customer's phone and email come
from the ``customer_contacts`` table, passed in as a :class:`Contact` (the store finds
it by the clear payer account, which alerts do not carry: alerting.store.contact_for).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from txmon.alerting.channels.base import Recipient
from txmon.alerting.config import CUSTOMER, AlertingConfig, Route, RouteMatch, deliverable
from txmon.alerting.contract import Alert
from txmon.alerting.errors import SecretMissingError
from txmon.infra.masking import mask_account, mask_email, mask_phone


@dataclass(frozen=True)
class Contact:
    """A customer's contact details (customer_contacts row)."""

    account: str
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Unreachable:
    """A route wanted to tell the customer but there is no phone/email on file: logged
    and recorded as ``no_recipient`` rather than dropped silently."""

    route: str
    channel: str
    recipient: Recipient  # a placeholder recipient: masked account, stable key


@dataclass(frozen=True)
class Target:
    route: str
    recipient: Recipient


def mask_recipient(channel: str, address: str, group: str) -> str:
    """How a recipient appears in logs and the delivery log.

    >>> mask_recipient("sms", "+919876543210", "customer")
    '+91XXXXXX3210'
    >>> mask_recipient("email", "fraud-desk@bank.example", "fraud_desk")
    'fr***@bank.example'
    >>> mask_recipient("webhook", "https://hooks.slack.com/services/T/B/secret", "fraud_desk")
    'webhook:fraud_desk'
    >>> mask_recipient("email", "a@b.in\\r\\nBcc: x@y.in", "customer")
    'invalid email address'
    """
    if not deliverable(channel, address):
        # Masking keeps parts of the address: of a malformed one those parts could be a
        # line break (log injection) or a whole second address.
        return f"invalid {channel} address"
    if channel == "sms":
        return mask_phone(address)
    if channel == "email":
        return mask_email(address)
    return f"webhook:{group}"


def matches(match: RouteMatch, alert: Alert) -> bool:
    """True when the alert meets every condition given in ``match``."""
    if match.decisions is not None and alert.decision not in match.decisions:
        return False
    if match.severities is not None and alert.severity not in match.severities:
        return False
    if match.reason_codes is not None and not set(match.reason_codes) & set(alert.reason_codes):
        return False
    return not (match.min_risk_score is not None and alert.risk_score < match.min_risk_score)


class Directory:
    """Staff recipients per (group, channel), resolved once (webhook URLs from env)."""

    def __init__(
        self, config: AlertingConfig, environ: Mapping[str, str] | None = None, channels: set[str] | None = None
    ) -> None:
        """``channels``: only those will be used (default all), so e.g. the digest does
        not need the webhook secrets."""
        env = os.environ if environ is None else environ
        self.config = config
        self._staff: dict[tuple[str, str], list[Recipient]] = {}
        used = {(t.to, t.channel) for r in config.routes for t in r.deliver if t.to != CUSTOMER}
        used |= {(config.digest.recipients, "email")}
        for name, group in config.recipients.items():
            for channel, addresses in (("email", group.email), ("sms", group.sms)):
                self._staff[(name, channel)] = [
                    Recipient(channel, a, mask_recipient(channel, a, name), "staff", name) for a in addresses
                ]
            if group.webhook_url_env and (name, "webhook") in used and (channels is None or "webhook" in channels):
                url = env.get(group.webhook_url_env)
                if not url:
                    raise SecretMissingError(
                        f"the webhook URL of recipient group {name!r} is read from {group.webhook_url_env}, "
                        "which is not set; export it (or drop the webhook route)"
                    )
                self._staff[(name, "webhook")] = [Recipient("webhook", url, f"webhook:{name}", "staff", name)]

    def staff(self, group: str, channel: str) -> list[Recipient]:
        return self._staff.get((group, channel), [])

    def needs_contact(self, alert: Alert) -> bool:
        return any(t.to == CUSTOMER for r in self.routes_for(alert) for t in r.deliver)

    def routes_for(self, alert: Alert) -> list[Route]:
        return [r for r in self.config.routes if matches(r.match, alert)]

    def resolve(self, alert: Alert, contact: Contact | None) -> tuple[list[Target], list[Unreachable]]:
        """Every (route, recipient) the alert goes to, each (channel, recipient) once,
        in route order; plus customer targets that have no address on file."""
        targets: list[Target] = []
        unreachable: list[Unreachable] = []
        seen: set[tuple[str, str]] = set()
        for route in self.routes_for(alert):
            for target in route.deliver:
                if target.to == CUSTOMER:
                    address = (
                        getattr(contact, "phone" if target.channel == "sms" else "email", None) if contact else None
                    )
                    if not address:
                        placeholder = Recipient(
                            target.channel,
                            f"customer:{alert.payer_ref}",
                            f"customer {mask_account(alert.payer_account_masked)}",
                            "customer",
                            CUSTOMER,
                        )
                        if (target.channel, placeholder.key) not in seen:
                            seen.add((target.channel, placeholder.key))
                            unreachable.append(Unreachable(route.name, target.channel, placeholder))
                        continue
                    recipients = [
                        Recipient(
                            target.channel,
                            address,
                            mask_recipient(target.channel, address, CUSTOMER),
                            "customer",
                            CUSTOMER,
                        )
                    ]
                else:
                    recipients = self.staff(target.to, target.channel)
                for recipient in recipients:
                    if (recipient.channel, recipient.key) not in seen:
                        seen.add((recipient.channel, recipient.key))
                        targets.append(Target(route.name, recipient))
        return targets, unreachable
