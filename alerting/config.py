"""Alerting configuration: routing, recipients, channels, retries, throttling.

Read from ``config/alerting.yaml`` (``TXMON_ALERTING_CONFIG`` names another file) and
overridden key by key by ``TXMON_ALERTING__<SECTION>__<KEY>`` environment variables
(e.g. ``TXMON_ALERTING__SMTP__PORT=2525``). Frozen, unknown keys rejected.

Secrets are never in the file: it names the environment variable that holds each
one (``password_env``, ``token_env``, ``url_env``), read when the channel is built.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from txmon.alerting.errors import AlertingConfigError, SecretMissingError
from txmon.infra.errors import ConfigError
from txmon.infra.settings import DEFAULT_ALERTING_CONFIG, Section, YamlBackedSettings
from txmon.models.risk import AlertDecision, Severity

CUSTOMER = "customer"
"""Route target meaning "the payer's own contact details" (customer_contacts table)."""

ChannelName = Literal["email", "sms", "webhook"]
CHANNEL_NAMES: tuple[str, ...] = ("email", "sms", "webhook")
Port = Annotated[int, Field(ge=1, le=65535)]
EnvName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]
# The one definition of a deliverable address, used for the staff addresses here and for
# the customer contacts checked at import (alerting.cli) and again at send time (the
# channels: customer_contacts rows may come from elsewhere). One plain ASCII mailbox: the
# email channel speaks neither SMTPUTF8 nor address lists, and a CR/LF, comma or angle
# bracket would smuggle a header or a second recipient into the message.
EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63}){1,8}$"
PHONE_PATTERN = r"^\+[0-9]{8,15}$"  # E.164: an SMS gateway refuses a number without its country code
_ADDRESS_PATTERNS = {"email": EMAIL_PATTERN, "sms": PHONE_PATTERN}


def deliverable(channel: str, address: str) -> bool:
    """Whether ``address`` is one its channel can send to safely: one plain ASCII mailbox,
    an E.164 number (a webhook's address is its configured URL: always).

    >>> deliverable("email", "a@b.in"), deliverable("email", "a@b.in\\r\\nBcc: x@y.in"), deliverable("sms", "919812345678")
    (True, False, False)
    """
    pattern = _ADDRESS_PATTERNS.get(channel)
    return pattern is None or re.fullmatch(pattern, address) is not None


Email = Annotated[str, Field(pattern=EMAIL_PATTERN)]
Phone = Annotated[str, Field(pattern=PHONE_PATTERN)]


def _secret(env: str | None, what: str) -> SecretStr | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        raise SecretMissingError(f"{what} is read from the environment variable {env}, which is not set; export it")
    return SecretStr(value)


class SmtpConfig(Section):
    """Outgoing mail server. ``security``: ``ssl`` (implicit TLS, port 465),
    ``starttls`` (upgrade, port 587) or ``none`` (loopback relays and tests only)."""

    host: str = "127.0.0.1"
    port: Port = 587
    security: Literal["none", "starttls", "ssl"] = "starttls"
    username: str | None = None
    password_env: EnvName | None = "TXMON_SMTP_PASSWORD"
    from_address: str = "txmon alerts <alerts@bank.example>"
    timeout_s: float = Field(10, gt=0)

    @field_validator("from_address")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # The email package refuses a header that str.splitlines() would break (CR, LF and
        # the other line breaks): such a From would fail every send, not just one.
        if value and value.splitlines() != [value]:
            raise ValueError("must be one line: a line break in From would start a mail header of its own")
        return value

    def password(self) -> SecretStr | None:
        """The password, read now from ``password_env``; only needed with a username."""
        return _secret(self.password_env, "the SMTP password") if self.username else None


class SmsConfig(Section):
    """An HTTP SMS gateway of the common Twilio REST shape: ``POST
    {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`` with form fields
    To/From/Body and HTTP basic auth (account sid, token)."""

    base_url: str = Field("https://api.twilio.com", pattern=r"^https?://")
    account_sid: str = "AC00000000000000000000000000000000"
    token_env: EnvName = "TXMON_SMS_TOKEN"
    from_number: str = "TXMONB"
    timeout_s: float = Field(10, gt=0)
    max_segments: int = Field(2, ge=1, le=10)

    def token(self) -> SecretStr:
        secret = _secret(self.token_env, "the SMS gateway token")
        assert secret is not None
        return secret


class WebhookConfig(Section):
    """Incoming-webhook chat channels (Slack, Teams): a JSON ``{"text": ...}`` POST.
    Each recipient group names the environment variable holding its URL."""

    timeout_s: float = Field(10, gt=0)


class RetryConfig(Section):
    """Two layers of retry, both in the dispatcher.

    Per delivery, exponential backoff: waits initial_s, initial_s*multiplier, ... capped
    at max_s, for ``attempts`` tries in all (fewer if the channel's circuit opens).

    A delivery whose tries ran out on a transient error, or that met an open circuit, is
    *deferred*: parked in the dispatcher and handed back to its channel once the circuit
    lets sends through again. Each hand-back that fails again is a round; after
    ``requeue_rounds`` rounds or ``requeue_max_age_s`` parked (counted from when this
    dispatcher process parked it), it is recorded ``failed`` and left to ``txmon alerts
    retry-failed``. ``requeue_rounds: 0`` switches parking off: tries used up means
    failed at once.
    """

    attempts: int = Field(5, ge=1, le=20)
    initial_s: float = Field(0.5, gt=0)
    multiplier: float = Field(2.0, ge=1)
    max_s: float = Field(30, gt=0)
    requeue_rounds: int = Field(10, ge=0, le=1000)
    requeue_max_age_s: float = Field(3600, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least initial_s ({self.initial_s})")
        return self


class CircuitConfig(Section):
    """Per-channel circuit breaker (alerting/circuit.py): ``failure_threshold``
    consecutive transient failures open it; after ``open_s`` one probe send is let
    through (half-open); a failed probe re-opens it for ``multiplier`` times longer, up
    to ``max_open_s``; an answered one closes it and the parked deliveries go out."""

    failure_threshold: int = Field(5, ge=1, le=1000)
    open_s: float = Field(5, gt=0)
    multiplier: float = Field(2.0, ge=1)
    max_open_s: float = Field(60, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> CircuitConfig:
        if self.max_open_s < self.open_s:
            raise ValueError(f"max_open_s ({self.max_open_s}) must be at least open_s ({self.open_s})")
        return self


class ThrottleConfig(Section):
    """At most one message per (account, rule, channel, recipient) per window; alerts
    arriving inside an open window fold into one follow-up sent when it closes."""

    enabled: bool = True
    window_s: float = Field(600, gt=0)


class DispatcherConfig(Section):
    group_id: str = "txmon-alert-dispatcher"
    topic: str | None = None  # default: kafka.topics.alerts of the main configuration
    poll_ms: int = Field(500, ge=10, le=60_000)
    max_poll_records: int = Field(100, ge=1, le=10_000)
    workers: int = Field(4, ge=1, le=64)
    session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000)
    """How soon the group notices a dead dispatcher and hands its partitions on."""
    in_doubt: Literal["resend", "skip"] = "resend"
    """A delivery found 'sending' after a crash may or may not have reached the provider.
    ``resend`` (default: nothing lost) sends it again with the same Message-ID /
    Idempotency-Key so the receiver can collapse it; ``skip`` records it as sent."""


class BankConfig(Section):
    """How customer messages sign off and where they call."""

    name: str = "txmon Bank"
    helpline: str = "1800-000-0000"


class RecipientGroup(Section):
    """Staff recipients by channel. Webhook URLs are secrets: the group names the
    environment variable holding its URL."""

    email: tuple[Email, ...] = ()
    sms: tuple[Phone, ...] = ()
    webhook_url_env: EnvName | None = None


class RouteMatch(Section):
    """All given conditions must hold; an omitted one matches anything."""

    decisions: tuple[AlertDecision, ...] | None = None
    severities: tuple[Severity, ...] | None = None
    reason_codes: tuple[str, ...] | None = None  # any of the alert's codes
    min_risk_score: int | None = Field(None, ge=0, le=100)


class Target(Section):
    channel: ChannelName
    to: str  # "customer" or a recipient group name


class Route(Section):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    match: RouteMatch = RouteMatch()
    deliver: tuple[Target, ...] = Field(min_length=1)


class DigestConfig(Section):
    recipients: str = "fraud_desk"
    top_accounts: int = Field(10, ge=1, le=100)
    top_rules: int = Field(15, ge=1, le=100)


class AlertingConfig(YamlBackedSettings):
    """Everything the dispatcher, retry job and digest need besides Kafka/Cassandra."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="TXMON_ALERTING__",
        env_nested_delimiter="__",
    )

    smtp: SmtpConfig = SmtpConfig()
    sms: SmsConfig = SmsConfig()
    webhook: WebhookConfig = WebhookConfig()
    retry: RetryConfig = RetryConfig()
    circuit: CircuitConfig = CircuitConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    bank: BankConfig = BankConfig()
    digest: DigestConfig = DigestConfig()
    recipients: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], RecipientGroup] = Field(
        default_factory=dict
    )
    routes: tuple[Route, ...] = ()

    @classmethod
    def yaml_path(cls) -> Path:
        return alerting_config_path()

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        # A delivery is recorded under its route's name (alerting/store.py): two routes of one
        # name could not be told apart there, and a second copy is most often an edit that
        # meant to replace the first.
        seen: set[str] = set()
        for route in routes:
            if route.name in seen:
                raise ValueError(f"route name {route.name!r} appears twice; route names must be unique")
            seen.add(route.name)
        return routes

    @model_validator(mode="after")
    def _targets_resolve(self) -> AlertingConfig:
        for route in self.routes:
            for target in route.deliver:
                if target.to == CUSTOMER:
                    if target.channel == "webhook":
                        raise ValueError(f"route {route.name}: customers have no webhook; use sms or email")
                    continue
                group = self.recipients.get(target.to)
                if group is None:
                    raise ValueError(
                        f"route {route.name}: recipient group {target.to!r} is not defined "
                        f"under recipients (or use 'customer')"
                    )
                if target.channel == "webhook" and group.webhook_url_env is None:
                    raise ValueError(f"route {route.name}: group {target.to!r} has no webhook_url_env")
                if target.channel in ("email", "sms") and not getattr(group, target.channel):
                    raise ValueError(f"route {route.name}: group {target.to!r} lists no {target.channel} recipients")
        if self.digest.recipients not in self.recipients or not self.recipients[self.digest.recipients].email:
            raise ValueError(f"digest.recipients {self.digest.recipients!r} must name a group with email addresses")
        return self


def alerting_config_path() -> Path:
    return Path(os.environ.get("TXMON_ALERTING_CONFIG", DEFAULT_ALERTING_CONFIG))


def load_alerting_config(**overrides: Any) -> AlertingConfig:
    """Read the alerting configuration now (file and environment at call time).

    Raises AlertingConfigError listing every problem and where to fix it.
    """
    path = alerting_config_path()
    if not path.is_file():
        raise AlertingConfigError(
            f"alerting config {path} not found: set TXMON_ALERTING_CONFIG to an existing YAML file"
        )
    try:
        return AlertingConfig.load(**overrides)
    except ConfigError as exc:  # the file or a variable could not be parsed at all
        raise AlertingConfigError(str(exc)) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'alerting'}: {re.sub(r'^Value error, ', '', err['msg'])}"
            for err in exc.errors()
        )
        raise AlertingConfigError(
            f"invalid alerting configuration ({problems}); fix {path} or the TXMON_ALERTING__* environment variables"
        ) from None


__all__ = [
    "CHANNEL_NAMES",
    "CUSTOMER",
    "EMAIL_PATTERN",
    "PHONE_PATTERN",
    "AlertingConfig",
    "BankConfig",
    "ChannelName",
    "CircuitConfig",
    "DigestConfig",
    "DispatcherConfig",
    "RecipientGroup",
    "RetryConfig",
    "Route",
    "RouteMatch",
    "SmsConfig",
    "SmtpConfig",
    "Target",
    "ThrottleConfig",
    "WebhookConfig",
    "alerting_config_path",
    "deliverable",
    "load_alerting_config",
]
