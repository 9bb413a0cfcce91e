"""Turning alerts into messages with the Jinja2 templates in ``alerting/templates``.

Templates never see a raw identifier: an alert carries its account and VPAs masked
(alerting.contract), and the *view* a template gets (:func:`alert_view`) masks them
again and redacts the free-text reason fields, so no template edit can leak one. SMS texts
are fitted into the configured number of segments by shortening the reason, never by
cutting the warning or the helpline.
Template files are named ``<audience>_<channel>.<part>.j2`` (parts: subject, txt, html).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from txmon.alerting.config import BankConfig
from txmon.alerting.contract import Alert
from txmon.alerting.errors import AlertingConfigError
from txmon.alerting.segments import sms_segments
from txmon.infra.masking import mask_account, mask_party, mask_vpa, redact
from txmon.ingestion.events import IST, format_inr
from txmon.models.risk import Severity

TEMPLATES_DIR = Path(__file__).with_name("templates")

PAYMENT_WORDS = {
    "UPI": "UPI payment",
    "IMPS": "IMPS transfer",
    "NEFT": "NEFT transfer",
    "RTGS": "RTGS transfer",
    "CARD_POS": "card payment",
    "CARD_ECOM": "online card payment",
    "ATM": "ATM withdrawal",
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True)
class FollowUp:
    """Alerts folded into one window by the throttle, summarised in one message."""

    rule: str
    alerts: tuple[Alert, ...]


def inr_ascii(paise: int) -> str:
    """Rupees for SMS: 'Rs.' instead of the rupee sign, which would force UCS-2.

    >>> inr_ascii(123456700)
    'Rs.12,34,567.00'
    """
    return format_inr(paise).replace("₹", "Rs.")


def _when(t: datetime) -> str:
    return t.astimezone(IST).strftime("%d %b %Y %H:%M:%S IST")


def _when_short(t: datetime) -> str:
    return t.astimezone(IST).strftime("%d-%b %H:%M")


def alert_view(alert: Alert) -> dict[str, Any]:
    """Everything a template may show about an alert, identifiers masked."""
    primary = alert.primary_reason
    return {
        "alert_id": str(alert.alert_id),
        "txn_id": alert.txn_id,
        "decision": alert.decision,
        "severity": alert.severity.value,
        "risk_score": alert.risk_score,
        "amount": format_inr(alert.amount_paise),
        "amount_ascii": inr_ascii(alert.amount_paise),
        "when": _when(alert.event_time),
        "when_short": _when_short(alert.event_time),
        "channel": alert.channel.value,
        "txn_type": alert.txn_type.value,
        "payment": PAYMENT_WORDS.get(alert.channel.value, "payment"),
        # Masking a masked value changes nothing: this holds only if a clear one slipped in.
        "payer": mask_party(alert.payer_account_masked, alert.payer_vpa_masked),
        "payer_account": mask_account(alert.payer_account_masked),
        "payee": mask_party(alert.payee_account_masked, alert.payee_vpa_masked) or "an unknown payee",
        "payee_short": (
            mask_vpa(alert.payee_vpa_masked) if alert.payee_vpa_masked else mask_account(alert.payee_account_masked)
        ),
        "primary_code": primary.code,
        "primary_reason": redact(primary.description),
        "reasons": [
            {
                "code": r.code,
                "description": redact(r.description),
                "value": redact(r.value),
                "contribution": r.contribution,
            }
            for r in sorted(alert.reasons, key=lambda r: -r.contribution)
        ],
        "model_version": alert.model_version,
        "rules_version": alert.rules_version,
    }


def followup_view(followup: FollowUp, latest: int = 5) -> dict[str, Any]:
    alerts = sorted(followup.alerts, key=lambda a: (a.event_time, a.txn_id))
    decisions = Counter(a.decision for a in alerts)
    return {
        "count": len(alerts),
        "rule": followup.rule,
        "first": _when(alerts[0].event_time),
        "last": _when(alerts[-1].event_time),
        "first_short": _when_short(alerts[0].event_time),
        "last_short": _when_short(alerts[-1].event_time)[-5:],
        "total": format_inr(sum(a.amount_paise for a in alerts)),
        "total_ascii": inr_ascii(sum(a.amount_paise for a in alerts)),
        "max_risk": max(a.risk_score for a in alerts),
        "decisions": ", ".join(f"{n} {d}" for d, n in sorted(decisions.items())),
        "worst_decision": "BLOCK" if decisions.get("BLOCK") else "REVIEW",
        "worst_severity": max((a.severity for a in alerts), key=list(Severity).index).value,
        "latest": [alert_view(a) for a in alerts[-latest:][::-1]],
    }


@lru_cache(maxsize=4)
def environment(templates_dir: Path = TEMPLATES_DIR) -> Environment:
    return Environment(
        loader=FileSystemLoader(str(templates_dir)),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


# C0 controls but tab and newline, DEL, and the C1 controls.
_CONTROLS = dict.fromkeys([*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)], " ")


def printable(text: str) -> str:
    r"""``text`` with every control character except newline and tab made a space.

    A rule's reason, a bank name or a notice's text may carry NUL, ESC (terminal escape
    sequences), CR or C1 codes; mail clients, terminals and SMS gateways show them as
    garbage or act on them. A space, not U+FFFD: that would force an SMS into UCS-2.

    >>> printable("amount\x1b[31m spike\x00\r\n\tnext\x85")
    'amount [31m spike  \n\tnext '
    """
    return text.translate(_CONTROLS)


def render_template(name: str, context: dict[str, Any]) -> str:
    """A template rendered, control characters made spaces: every alert, follow-up and
    digest message (email subject, text and HTML, SMS, webhook) is built here."""
    return printable(environment().get_template(name).render(**context)).strip()


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 0)].rsplit(" ", 1)[0].rstrip(" ,;:")
    return f"{cut}..." if cut else ""


def render_message(
    audience: str,
    channel: str,
    bank: BankConfig,
    *,
    alert: Alert | None = None,
    followup: FollowUp | None = None,
    max_sms_segments: int = 2,
) -> Rendered:
    """The message for one alert (or one follow-up) to one audience over one channel."""
    if (alert is None) == (followup is None):
        raise ValueError("give exactly one of alert or followup")
    if alert is not None:
        shown = alert
    else:
        assert followup is not None  # exactly one of the two, checked above
        shown = max(followup.alerts, key=lambda a: (a.event_time, a.txn_id))
    context: dict[str, Any] = {
        "alert": alert_view(shown),
        "bank": bank,
        "followup": followup_view(followup) if followup else None,
        "title": "txmon alert",
    }
    base = f"{audience}_{channel}"
    reason = context["alert"]["primary_reason"]
    if channel == "sms":
        return Rendered("", _fit_sms(base, context, reason, max_sms_segments))
    context["reason"] = reason
    text = render_template(f"{base}.txt.j2", context)
    if channel == "webhook":
        return Rendered("", text)
    subject = " ".join(render_template(f"{base}.subject.j2", context).split())
    return Rendered(subject, text, render_template(f"{base}.html.j2", context))


def _fit_sms(template: str, context: dict[str, Any], reason: str, max_segments: int) -> str:
    """Render, shortening the reason until the text fits ``max_segments``. A reason in
    another script forces UCS-2 (70 characters a segment) and is dropped rather than the
    warning; the rupee sign is spelt 'Rs.' to stay in GSM-7."""
    reason = reason.replace("₹", "Rs.")
    limit = len(reason)
    while True:
        text = " ".join(render_template(f"{template}.txt.j2", {**context, "reason": _shorten(reason, limit)}).split())
        if sms_segments(text) <= max_segments:
            return text
        if limit == 0:
            raise AlertingConfigError(
                f"the {template} SMS is longer than {max_segments} segments even without the reason "
                f"({len(text)} characters); shorten bank.name / bank.helpline or the template"
            )
        limit = max(limit - 10, 0) if limit > 10 else 0
