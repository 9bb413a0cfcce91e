"""Plain notices to bank staff outside the alert flow: Airflow failure emails to the
operator, and retraining outcomes to the fraud desk.

Two paths, on purpose:

* :func:`email_now` speaks SMTP directly (no Cassandra): a failure notice must go out
  even when the failure is Cassandra's.
* :func:`notify_group` goes through the delivery log like alerts and digests do, keyed
  by a caller-chosen id, so a re-run of the same DAG run does not send it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from txmon.alerting.channels.base import OutboundMessage, Recipient
from txmon.alerting.channels.email import EmailChannel
from txmon.alerting.config import AlertingConfig, load_alerting_config
from txmon.alerting.contract import ALERT_ID_NAMESPACE
from txmon.alerting.delivery import Job, Outcome
from txmon.alerting.dispatcher import build_message
from txmon.alerting.errors import AlertingConfigError
from txmon.alerting.render import Rendered, printable
from txmon.alerting.runtime import runtime
from txmon.infra.masking import mask_email, redact

__all__ = ["email_now", "notice_id", "notify_group", "retraining_email"]


def notice_id(key: str) -> uuid.UUID:
    """Delivery id of a notice: the same key (e.g. a DAG run) gives the same id."""
    return uuid.uuid5(ALERT_ID_NAMESPACE, f"notice:{key}")


def email_now(
    to: Sequence[str], subject: str, text: str, *, key: str, config: AlertingConfig | None = None
) -> list[str]:
    """Send one plain-text email to each address now; return the (masked) recipients it
    reached. Raises :class:`~alerting.errors.ChannelError` on the first refusal."""
    config = config or load_alerting_config()
    channel = EmailChannel(config.smtp)
    sent = []
    try:
        for address in to:
            recipient = Recipient("email", address, mask_email(address), "staff", "operator")
            channel.send(
                OutboundMessage(
                    f"{notice_id(key)}.email.{recipient.key}",
                    recipient,
                    printable(subject),
                    printable(redact(text)),
                    headers=(("X-Txmon-Kind", "operator-notice"),),
                )
            )
            sent.append(recipient.masked)
    finally:
        channel.close()
    return sent


def notify_group(
    settings,
    group: str,
    subject: str,
    text: str,
    *,
    key: str,
    kind: str = "notice",
    html: str | None = None,
    config: AlertingConfig | None = None,
) -> list[Outcome]:
    """Email every address of an alerting.yaml recipients ``group`` through the delivery
    log (retries with backoff; a notice already sent under ``key`` is not sent again)."""
    config = config or load_alerting_config()
    if group not in config.recipients or not config.recipients[group].email:
        raise AlertingConfigError(
            f"recipients group {group!r} has no email addresses in the alerting config; "
            "add it under recipients: or choose another group"
        )
    delivery_id = notice_id(key)
    rendered = Rendered(printable(subject), printable(redact(text)), None if html is None else printable(html))
    outcomes = []
    with runtime(settings, config, needed={"email"}) as rt:
        for recipient in rt.directory.staff(group, "email"):
            message = build_message(delivery_id, kind, recipient, rendered)
            outcomes.append(rt.deliverer.deliver(Job(delivery_id, kind, kind, None, message), retry_failed=True))
    return outcomes


def retraining_email(
    plan: dict[str, Any], result: dict[str, Any], promoted: str | None, comparison: str
) -> tuple[str, str]:
    """(subject, text) telling the fraud desk what a retraining run decided and why;
    ``comparison`` is the metrics table (:func:`spark_jobs.retraining.comparison_markdown`).

    >>> s, t = retraining_email({"run_id": "r1", "start": "a", "end": "b", "reason": "drift",
    ...     "drift_event": {"signal": "anomaly_score", "detected_at": "t", "mean_before": 0.2, "mean_after": 0.4}},
    ...     {"promote": True, "reason": "challenger better", "champion_version": "v3",
    ...      "challenger_version": "v4"}, "v4", "| metric | ... |")
    >>> s
    '[txmon] Model retraining (drift): challenger v4 promoted over v3'
    >>> print(t.splitlines()[4])
    Drift:     anomaly_score at t: mean 0.2 -> 0.4
    """
    champion_v = result.get("champion_version") or "none"
    challenger_v = result.get("challenger_version") or "?"
    if promoted:
        verdict = f"challenger {promoted} promoted over {champion_v}"
    else:
        verdict = f"champion {champion_v} kept; challenger {challenger_v} not promoted"
    reason = plan.get("reason") or "schedule"
    lines = [
        f"Decision:  {verdict} ({result.get('reason', '')})",
        f"Window:    {plan.get('start')} to {plan.get('end')}",
        f"Run:       {plan.get('run_id')}",
        f"Reason:    {reason}",
    ]
    drift = plan.get("drift_event")
    if drift:
        lines.append(
            f"Drift:     {drift.get('signal')} at {drift.get('detected_at')}: mean "
            f"{drift.get('mean_before')} -> {drift.get('mean_after')}"
        )
    lines += [
        "",
        comparison.rstrip(),
        "",
        "Roll back with `txmon models rollback` if the new champion misbehaves; "
        "`txmon models list` shows every version.",
    ]
    return f"[txmon] Model retraining ({reason}): {verdict}", "\n".join(lines)
