"""The alert contract: the one module that defines what an alert is.

The detection engine builds :class:`Alert` objects and writes them to the Kafka
``alerts`` topic with :func:`to_json` / :func:`kafka_key`; the dispatcher reads them
back with :func:`from_json`. Cassandra keeps the same fields (``alerts`` and
``alerts_by_day`` in infra/schema.cql; :func:`alert_row` gives the column values).

Wire format, schema version 1: one compact JSON object per alert, keys in declaration
order, optional fields omitted when absent, times in UTC with a ``Z`` suffix, money as
integer paise.

The alert id is derived from the transaction id (:func:`alert_id_for`), never drawn at
random: a replayed or re-scored transaction yields the same alert id, so the
``alerts`` table is upserted, not duplicated, and a delivery already sent for that id
is not sent again.

>>> from datetime import datetime, timezone
>>> alert = Alert(
...     txn_id="TXN0000000001", created_at=datetime(2026, 1, 5, 9, 0, 2, tzinfo=timezone.utc),
...     event_time=datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone.utc),
...     payer_account="123456789012", payer_vpa="rahul.sharma@okaxis", payee_vpa="shop@ybl",
...     amount_paise=4_999_900, channel="UPI", txn_type="P2M", risk_score=91,
...     decision="BLOCK", severity="CRITICAL",
...     reasons=[{"code": "AMOUNT_SPIKE", "description": "amount 40x the usual",
...               "value": "49999.00", "contribution": 0.6}],
...     model_version="iforest-3", rules_version="rules-7")
>>> alert.alert_id == alert_id_for("TXN0000000001")
True
>>> from_json(to_json(alert)) == alert
True
>>> kafka_key(alert)
b'123456789012'
>>> alert_day(alert).isoformat()
'2026-01-05'
"""
from __future__ import annotations

import json
import math
import uuid
from datetime import date, datetime, timezone
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from alerting.errors import AlertContractError
from infra.settings import describe_errors
from ingestion.events import (
    ACCOUNT_NUMBER_PATTERN,
    IST,
    TXN_ID_PATTERN,
    VPA_PATTERN,
    Channel,
    TxnType,
)

__all__ = [
    "ALERT_ID_NAMESPACE", "DAY_TZ", "DECISIONS", "SCHEMA_VERSION", "SEVERITIES",
    "Alert", "Decision", "Reason", "Severity",
    "alert_day", "alert_from_row", "alert_id_for", "alert_row", "from_json", "kafka_key", "to_json",
]

SCHEMA_VERSION = 1
"""Version written by this code; bump it on any change a version-1 reader could not read."""

ALERT_ID_NAMESPACE = uuid.UUID("5d8f3a52-7c1e-5b7a-9f0e-2b1d6c4e8a90")
"""uuid5 namespace of alert ids. Fixed forever: changing it would re-send every alert."""

DAY_TZ = IST
"""The ``day`` an alert belongs to (digest, ``alerts_by_day``) is its event's date in
IST: the fraud desk works Indian days. Part of the table layout, so not configurable."""

Decision = Literal["REVIEW", "BLOCK"]
DECISIONS: tuple[str, ...] = ("REVIEW", "BLOCK")


class Severity(StrEnum):
    """How urgent the alert is, set by the detection engine (ordered, low to high)."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


SEVERITIES: tuple[str, ...] = tuple(s.value for s in Severity)

AccountNumber = Annotated[str, StringConstraints(pattern=ACCOUNT_NUMBER_PATTERN)]
Vpa = Annotated[str, StringConstraints(pattern=VPA_PATTERN)]
TxnId = Annotated[str, StringConstraints(pattern=TXN_ID_PATTERN)]
ReasonCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=500)]


def alert_id_for(txn_id: str) -> uuid.UUID:
    """The alert id of a transaction: uuid5, so every replay yields the same id.

    >>> alert_id_for("TXN0000000001") == alert_id_for("TXN0000000001")
    True
    >>> alert_id_for("TXN0000000001") == alert_id_for("TXN0000000002")
    False
    """
    return uuid.uuid5(ALERT_ID_NAMESPACE, txn_id)


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reason(_Contract):
    """One reason the transaction was flagged, in words a customer could read.

    ``code`` is the rule or model feature (e.g. ``AMOUNT_SPIKE``) - dedup, throttling and
    the digest count by it; ``value`` is the observed value as text; ``contribution`` is
    its share of the risk score (any finite number; higher means more important).
    """

    code: ReasonCode
    description: NonEmpty
    value: Annotated[str, StringConstraints(max_length=200)] = ""
    contribution: float = 0.0

    @field_validator("contribution")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("contribution must be a finite number")
        return value


class Alert(_Contract):
    """One flagged transaction, as the detection engine raises it (schema version 1).

    ``alert_id`` may be omitted: it is filled in from ``txn_id``; a different value is
    rejected. Times must carry a UTC offset and are kept in UTC.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    alert_id: uuid.UUID
    txn_id: TxnId
    created_at: datetime
    event_time: datetime
    payer_account: AccountNumber
    payer_vpa: Vpa | None = None
    payee_account: AccountNumber | None = None
    payee_vpa: Vpa | None = None
    amount_paise: StrictInt = Field(gt=0)
    channel: Channel
    txn_type: TxnType
    risk_score: StrictInt = Field(ge=0, le=100)
    decision: Decision
    severity: Severity
    reasons: tuple[Reason, ...] = Field(min_length=1)
    model_version: NonEmpty
    rules_version: NonEmpty

    @model_validator(mode="before")
    @classmethod
    def _derive_alert_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("alert_id") is None and isinstance(data.get("txn_id"), str):
            data = {**data, "alert_id": alert_id_for(data["txn_id"])}
        return data

    @field_validator("created_at", "event_time")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("time has no UTC offset; append 'Z' or '+05:30' - naive times are ambiguous")
        return value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _id_matches_txn(self) -> Alert:
        if self.alert_id != alert_id_for(self.txn_id):
            raise ValueError("alert_id must be alert_id_for(txn_id); omit it and it is filled in")
        return self

    @property
    def primary_reason(self) -> Reason:
        """The reason with the largest contribution (first one on a tie): the alert's rule."""
        return max(self.reasons, key=lambda r: r.contribution)  # max keeps the first maximum

    @property
    def reason_codes(self) -> list[str]:
        return [r.code for r in self.reasons]


def to_json(alert: Alert) -> bytes:
    """Serialise compactly; the same alert always gives the same bytes."""
    return alert.__pydantic_serializer__.to_json(alert, exclude_none=True)


def from_json(raw: bytes | str) -> Alert:
    """Parse and validate one alert message.

    Raises AlertContractError naming every broken field (the dispatcher dead-letters
    such a message with that text as the reason).
    """
    try:
        return Alert.model_validate_json(raw)
    except ValidationError as exc:
        raise AlertContractError(
            f"not a valid alert ({describe_errors(exc)}); producers must build it with alerting.contract.Alert"
        ) from None


def kafka_key(alert: Alert) -> bytes:
    """Kafka key: the payer account, so one account's alerts stay ordered in one partition
    (throttling per account relies on seeing them in order)."""
    return alert.payer_account.encode("ascii")


def alert_day(alert: Alert) -> date:
    """The IST date of the transaction: the ``alerts_by_day`` partition and the digest day."""
    return alert.event_time.astimezone(DAY_TZ).date()


def alert_row(alert: Alert) -> dict[str, Any]:
    """Column values of the Cassandra ``alerts`` table (reasons as a JSON array)."""
    return {
        "alert_id": alert.alert_id,
        "schema_version": alert.schema_version,
        "txn_id": alert.txn_id,
        "created_at": alert.created_at,
        "event_time": alert.event_time,
        "day": alert_day(alert),
        "payer_account": alert.payer_account,
        "payer_vpa": alert.payer_vpa,
        "payee_account": alert.payee_account,
        "payee_vpa": alert.payee_vpa,
        "amount_paise": alert.amount_paise,
        "channel": alert.channel.value,
        "txn_type": alert.txn_type.value,
        "risk_score": alert.risk_score,
        "decision": alert.decision,
        "severity": alert.severity.value,
        "reasons": json.dumps([r.model_dump() for r in alert.reasons], separators=(",", ":")),
        "reason_codes": alert.reason_codes,
        "model_version": alert.model_version,
        "rules_version": alert.rules_version,
    }


def alert_from_row(row: Any) -> Alert:
    """Rebuild an alert from an ``alerts`` row (named tuple or dict), e.g. for retries."""
    data = row._asdict() if hasattr(row, "_asdict") else dict(row)
    fields = {k: v for k, v in data.items() if k in Alert.model_fields and v is not None}
    fields["reasons"] = json.loads(data["reasons"])
    for key in ("created_at", "event_time"):
        if fields[key].tzinfo is None:  # the driver returns naive UTC datetimes
            fields[key] = fields[key].replace(tzinfo=timezone.utc)
    return Alert.model_validate(fields)
