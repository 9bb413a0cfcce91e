"""The alert contract: the one module that defines what an alert is.

The detection engine builds :class:`Alert` objects with :func:`build_alert` and writes
them to the Kafka ``alerts`` topic with :func:`to_json` / :func:`kafka_key`; the
dispatcher reads them back with :func:`from_json`. Cassandra keeps the same fields
(``alerts`` and ``alerts_by_day`` in infra/schema.cql; :func:`alert_row` gives the column
values, :data:`ALERT_COLUMNS` / :data:`ALERT_BY_DAY_COLUMNS` name them).

Wire format, schema version 2: one compact JSON object per alert, keys in declaration
order, optional fields omitted when absent, times in UTC with a ``Z`` suffix, money as
integer paise.

No account number or VPA leaves the stream in clear (docs/security-pii.md): an alert
carries them masked for display (``payer_account_masked`` ...), and the payer as
``payer_ref``, a keyed pseudonym (infra.masking.account_ref) that tells accounts apart
for the Kafka key, the throttle and the digest. Whoever needs the clear number reads
it from ``transactions`` by ``txn_id``: the dispatcher does, to find the customer's
contacts. Version 1 carried the clear values; :func:`from_json` and
:func:`alert_from_row` still read it, masking on the way in.

The alert id is derived from the transaction id (:func:`alert_id_for`), never drawn at
random: a replayed or re-scored transaction yields the same alert id, so the
``alerts`` table is upserted, not duplicated, and a delivery already sent for that id
is not sent again.

>>> from datetime import datetime, timezone
>>> alert = build_alert(
...     key=b"k" * 32,
...     txn_id="TXN0000000001", created_at=datetime(2026, 1, 5, 9, 0, 2, tzinfo=timezone.utc),
...     event_time=datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone.utc),
...     payer_account="123456789012", payer_vpa="rahul.sharma@okaxis", payee_vpa="shop@ybl",
...     amount_paise=4_999_900, channel="UPI", txn_type="P2M", risk_score=91,
...     decision="BLOCK", severity="CRITICAL",
...     reasons=[{"code": "NEW_PAYEE", "description": "first payment to shop@ybl",
...               "value": "49999.00", "contribution": 0.6}],
...     model_version="iforest-3", rules_version="rules-7")
>>> alert.alert_id == alert_id_for("TXN0000000001")
True
>>> alert.payer_account_masked, alert.payer_vpa_masked, alert.reasons[0].description
('XXXXXXXX9012', 'ra***@okaxis', 'first payment to sh***@ybl')
>>> from_json(to_json(alert)) == alert
True
>>> kafka_key(alert) == alert.payer_ref.encode()
True
>>> alert_day(alert).isoformat()
'2026-01-05'
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal

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

from txmon.alerting.errors import AlertContractError
from txmon.infra.masking import account_ref, mask_account, mask_identifiers, mask_vpa, pii_token_key
from txmon.infra.settings import describe_errors, settings
from txmon.infra.statements import (
    ALERT_BY_DAY_COLUMNS,
    ALERT_BY_PARTY_COLUMNS,
    ALERT_BY_RANK_COLUMNS,
    ALERT_COLUMNS,
)
from txmon.ingestion.events import (
    ACCOUNT_NUMBER_PATTERN,
    IST,
    TXN_ID_PATTERN,
    VPA_PATTERN,
    Channel,
    TxnType,
)
from txmon.models.risk import SEVERITIES, AlertDecision, Severity

__all__ = [
    "ALERT_BY_DAY_COLUMNS",
    "ALERT_BY_PARTY_COLUMNS",
    "ALERT_BY_RANK_COLUMNS",
    "ALERT_COLUMNS",
    "ALERT_ID_NAMESPACE",
    "DAY_TZ",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "Alert",
    "Reason",
    "alert_day",
    "alert_from_row",
    "alert_id_for",
    "alert_parties",
    "alert_party_rows",
    "alert_rank_row",
    "alert_row",
    "build_alert",
    "from_json",
    "kafka_key",
    "to_json",
    "upgrade_day_row",
]

SCHEMA_VERSION: Final = 2
"""Version written by this code; bump it on any change a reader of the previous version
could not read. 2: identifiers masked, the payer as ``payer_ref`` (1 had them in clear)."""

SUPPORTED_VERSIONS = (1, 2)
"""Versions :func:`from_json` and :func:`alert_from_row` accept (1 is upgraded on read)."""

ALERT_ID_NAMESPACE = uuid.UUID("5d8f3a52-7c1e-5b7a-9f0e-2b1d6c4e8a90")
"""uuid5 namespace of alert ids. Fixed forever: changing it would re-send every alert."""

DAY_TZ = IST
"""The ``day`` an alert belongs to (digest, ``alerts_by_day``) is its event's date in
IST: the fraud desk works Indian days. Part of the table layout, so not configurable."""

AccountNumber = Annotated[str, StringConstraints(pattern=ACCOUNT_NUMBER_PATTERN)]
Vpa = Annotated[str, StringConstraints(pattern=VPA_PATTERN)]
TxnId = Annotated[str, StringConstraints(pattern=TXN_ID_PATTERN)]
ReasonCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=500)]
# What infra.masking makes of a valid account number (9-18 digits: all but the last four
# hidden) and of a VPA: patterns a clear value cannot match, so a producer that forgets
# to mask is refused here rather than published.
MaskedAccount = Annotated[str, StringConstraints(pattern=r"^X{5,14}[0-9]{4}$")]
MaskedVpa = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,2}\*\*\*@[A-Za-z][A-Za-z0-9]{1,63}$")]
PayerRef = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
MAX_BIGINT: Final = 2**63 - 1
"""Largest ``amount_paise`` an alert may carry: the Cassandra ``bigint`` column it is stored
in. A larger one would pass here and fail the insert, stopping the dispatcher's batch."""


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


class _AlertChecks(_Contract):
    """Checks every version makes (fields are declared per version, in wire order)."""

    @model_validator(mode="before")
    @classmethod
    def _derive_alert_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("alert_id") is None and isinstance(data.get("txn_id"), str):
            data = {**data, "alert_id": alert_id_for(data["txn_id"])}
        return data

    @field_validator("created_at", "event_time", check_fields=False)
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("time has no UTC offset; append 'Z' or '+05:30' - naive times are ambiguous")
        try:
            # Also in IST: alert_day takes the IST date, which must exist too. At the ends of
            # the calendar (year 1, 9999) the shift overflows, and an OverflowError would
            # escape validation instead of dead-lettering the message.
            value.astimezone(DAY_TZ)
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("time is out of range once shifted to UTC or IST") from None

    @model_validator(mode="after")
    def _id_matches_txn(self) -> Any:
        # The fields are declared by the model this check is mixed into.
        if self.alert_id != alert_id_for(self.txn_id):  # type: ignore[attr-defined]
            raise ValueError("alert_id must be alert_id_for(txn_id); omit it and it is filled in")
        return self


class Alert(_AlertChecks):
    """One flagged transaction, as the detection engine raises it (schema version 2).

    ``alert_id`` may be omitted: it is filled in from ``txn_id``; a different value is
    rejected. Times must carry a UTC offset and are kept in UTC. The parties are masked
    and the payer is ``payer_ref``; build one from clear values with :func:`build_alert`.
    """

    schema_version: Literal[2] = SCHEMA_VERSION
    alert_id: uuid.UUID
    txn_id: TxnId
    created_at: datetime
    event_time: datetime
    payer_ref: PayerRef
    payer_account_masked: MaskedAccount
    payer_vpa_masked: MaskedVpa | None = None
    payee_account_masked: MaskedAccount | None = None
    payee_vpa_masked: MaskedVpa | None = None
    amount_paise: StrictInt = Field(gt=0, le=MAX_BIGINT)
    channel: Channel
    txn_type: TxnType
    risk_score: StrictInt = Field(ge=0, le=100)
    decision: AlertDecision
    severity: Severity
    reasons: tuple[Reason, ...] = Field(min_length=1)
    model_version: NonEmpty
    rules_version: NonEmpty

    @property
    def primary_reason(self) -> Reason:
        """The reason with the largest contribution (first one on a tie): the alert's rule."""
        return max(self.reasons, key=lambda r: r.contribution)  # max keeps the first maximum

    @property
    def reason_codes(self) -> list[str]:
        return [r.code for r in self.reasons]


class AlertV1(_AlertChecks):
    """Schema version 1, parties in clear: read from old messages and rows, never written."""

    schema_version: Literal[1] = 1
    alert_id: uuid.UUID
    txn_id: TxnId
    created_at: datetime
    event_time: datetime
    payer_account: AccountNumber
    payer_vpa: Vpa | None = None
    payee_account: AccountNumber | None = None
    payee_vpa: Vpa | None = None
    amount_paise: StrictInt = Field(gt=0, le=MAX_BIGINT)
    channel: Channel
    txn_type: TxnType
    risk_score: StrictInt = Field(ge=0, le=100)
    decision: AlertDecision
    severity: Severity
    reasons: tuple[Reason, ...] = Field(min_length=1)
    model_version: NonEmpty
    rules_version: NonEmpty


def build_alert(
    *,
    key: bytes,
    payer_account: str,
    payer_vpa: str | None = None,
    payee_account: str | None = None,
    payee_vpa: str | None = None,
    reasons: Any,
    **fields: Any,
) -> Alert:
    """The alert of a flagged transaction, from its clear identifiers: masked for display,
    the payer pseudonymised with ``key`` (infra.masking.pii_token_key), and every identifier
    of the transaction masked inside the reasons' texts too (a rule's wording may quote
    one). Called once per alert, never per transaction."""
    accounts, vpas = (payer_account, payee_account), (payer_vpa, payee_vpa)

    def scrub(reason: Any) -> Any:
        data = reason.model_dump() if isinstance(reason, Reason) else dict(reason)
        for name in ("description", "value"):
            if isinstance(data.get(name), str):
                data[name] = mask_identifiers(data[name], accounts, vpas)
        return data

    return Alert(
        payer_ref=account_ref(payer_account, key),
        payer_account_masked=mask_account(payer_account),
        payer_vpa_masked=mask_vpa(payer_vpa) or None,
        payee_account_masked=mask_account(payee_account) or None,
        payee_vpa_masked=mask_vpa(payee_vpa) or None,
        reasons=[scrub(r) for r in reasons],
        **fields,
    )


_process_key: bytes | None = None


def _key() -> bytes:
    """This process's pseudonym key, for version-1 data only (the stream passes its own)."""
    global _process_key
    if _process_key is None:
        _process_key = pii_token_key(settings().state_path)
    return _process_key


def _upgrade(old: AlertV1) -> Alert:
    """A version-1 alert as version 2: masked, pseudonymised with this process's key."""
    data = old.model_dump(exclude={"schema_version", "payer_account", "payer_vpa", "payee_account", "payee_vpa"})
    return build_alert(
        key=_key(),
        payer_account=old.payer_account,
        payer_vpa=old.payer_vpa,
        payee_account=old.payee_account,
        payee_vpa=old.payee_vpa,
        **data,
    )


def upgrade_day_row(row: dict[str, Any]) -> dict[str, Any]:
    """An ``alerts_by_day`` row as version 2 has it: a version-1 row's clear
    ``payer_account`` becomes ``payer_ref`` and ``payer_account_masked``, and is dropped."""
    row = dict(row)
    clear = row.pop("payer_account", None)
    if row.get("payer_ref") is None and clear:
        row["payer_ref"], row["payer_account_masked"] = account_ref(clear, _key()), mask_account(clear)
    return row


def to_json(alert: Alert) -> bytes:
    """Serialise compactly; the same alert always gives the same bytes."""
    return alert.__pydantic_serializer__.to_json(alert, exclude_none=True)


def _version(raw: bytes | str) -> Any:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # deeply nested arrays exhaust json's recursion
        return None
    return data.get("schema_version") if isinstance(data, dict) else None


def from_json(raw: bytes | str) -> Alert:
    """Parse and validate one alert message (version 1 is upgraded: masked on the way in).

    Raises AlertContractError naming every broken field (the dispatcher dead-letters
    such a message with that text as the reason).
    """
    try:
        return Alert.model_validate_json(raw)
    except ValidationError as exc:
        error = exc
    if _version(raw) == 1:
        try:
            return _upgrade(AlertV1.model_validate_json(raw))
        except ValidationError as exc:
            error = exc
    raise AlertContractError(
        f"not a valid alert ({describe_errors(error)}); producers must build it with alerting.contract.build_alert"
    ) from None


def kafka_key(alert: Alert) -> bytes:
    """Kafka key: the payer's ref, so one account's alerts stay ordered in one partition
    (throttling per account relies on seeing them in order) without naming the account."""
    return alert.payer_ref.encode("ascii")


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
        "payer_ref": alert.payer_ref,
        "payer_account_masked": alert.payer_account_masked,
        "payer_vpa_masked": alert.payer_vpa_masked,
        "payee_account_masked": alert.payee_account_masked,
        "payee_vpa_masked": alert.payee_vpa_masked,
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


def alert_rank_row(alert: Alert) -> tuple:
    """The ``alerts_by_rank`` row of an alert, in :data:`ALERT_BY_RANK_COLUMNS` order."""
    values = {
        "day": alert_day(alert),
        "risk_score": alert.risk_score,
        "severity_rank": SEVERITIES.index(alert.severity.value),
        "event_time": alert.event_time,
        "alert_id": alert.alert_id,
        "created_at": alert.created_at,
        "decision": alert.decision,
        "severity": alert.severity.value,
        "channel": alert.channel.value,
        "txn_type": alert.txn_type.value,
        "payer_account_masked": alert.payer_account_masked,
        "payee_masked": alert.payee_vpa_masked or alert.payee_account_masked,
        "amount_paise": alert.amount_paise,
        "reason_codes": alert.reason_codes,
    }
    return tuple(values[c] for c in ALERT_BY_RANK_COLUMNS)


def alert_parties(alert: Alert) -> list[str]:
    """The ``alerts_by_party`` partitions an alert is listed under: its payer's pseudonym
    and its payee as masked (when it has one)."""
    parties = [f"payer:{alert.payer_ref}"]
    payee = alert.payee_vpa_masked or alert.payee_account_masked
    if payee:
        parties.append(f"payee:{payee}")
    return parties


def alert_party_rows(alert: Alert) -> list[tuple]:
    """The ``alerts_by_party`` rows of an alert, in :data:`ALERT_BY_PARTY_COLUMNS` order."""
    rows = []
    for party in alert_parties(alert):
        values = {
            "party": party,
            "event_time": alert.event_time,
            "alert_id": alert.alert_id,
            "txn_id": alert.txn_id,
            "risk_score": alert.risk_score,
            "decision": alert.decision,
            "severity": alert.severity.value,
            "amount_paise": alert.amount_paise,
            "payer_account_masked": alert.payer_account_masked,
            "reason_codes": alert.reason_codes,
        }
        rows.append(tuple(values[c] for c in ALERT_BY_PARTY_COLUMNS))
    return rows


def alert_from_row(row: Any) -> Alert:
    """Rebuild an alert from an ``alerts`` row (named tuple or dict), e.g. for retries; a
    version-1 row (clear columns, no ``payer_ref``) is upgraded as :func:`from_json` does."""
    data = row._asdict() if hasattr(row, "_asdict") else dict(row)
    v1 = data.get("schema_version") == 1
    model: type[BaseModel] = AlertV1 if v1 else Alert
    fields = {k: v for k, v in data.items() if k in model.model_fields and v is not None}
    try:
        fields["reasons"] = json.loads(data["reasons"])
        for key in ("created_at", "event_time"):
            if fields[key].tzinfo is None:  # the driver returns naive UTC datetimes
                fields[key] = fields[key].replace(tzinfo=UTC)
        if v1:
            return _upgrade(AlertV1.model_validate(fields))
        return Alert.model_validate(fields)
    except ValidationError as exc:
        problem = describe_errors(exc)
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        # A row written by other tools or older code: a missing column, reasons that are
        # not JSON. One such row must not stop a retry run over the others.
        problem = f"{type(exc).__name__} reading the row"
    raise AlertContractError(
        f"stored alert {data.get('alert_id')} is not a valid alert ({problem}); it cannot be re-sent"
    ) from None
