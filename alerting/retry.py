"""Second chances: deliveries whose retries ran out are retried here, by the
alert-dispatch DAG (``txmon alerts retry-failed``), once the channel is back.

Work is keyed by the alerts' IST days (``alert_delivery_failures`` partitions), passed
in by the caller - never "now" - so a DAG run is repeatable for its data interval.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable

from alerting.contract import alert_day
from alerting.delivery import Job
from alerting.dispatcher import build_message
from alerting.render import render_message
from alerting.runtime import Runtime

log = logging.getLogger("txmon.alerting")


@dataclass
class RetryReport:
    sent: int = 0
    still_failed: int = 0
    already_done: int = 0
    unresolved: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"retried deliveries: {self.sent} sent, {self.still_failed} still failing, "
                f"{self.already_done} already done, {len(self.unresolved)} no longer routable")


def retry_failed_deliveries(days: Iterable[date], rt: Runtime | None = None) -> RetryReport:
    """Retry every failed alert delivery of the given IST days (with the usual backoff);
    sent ones leave the failures table, still-failing ones stay for the next run.

    The alert-dispatch DAG calls ``retry_failed_deliveries([logical_date, ...])``: without
    ``rt`` it connects with the configuration of the environment (config/txmon.yaml,
    config/alerting.yaml) and disconnects when done."""
    days = list(days)
    if rt is None:
        from alerting.config import load_alerting_config
        from alerting.runtime import runtime
        from infra.settings import load_settings

        with runtime(load_settings(), load_alerting_config()) as opened:
            return retry_failed_deliveries(days, opened)
    report = RetryReport()
    for day in days:
        for failure in rt.store.failures(day):
            if failure.kind != "alert":
                continue
            alert = rt.store.load_alert(failure.delivery_id)
            target = None
            if alert is not None:
                contact = rt.store.contact(alert.payer_account) if rt.directory.needs_contact(alert) else None
                targets, _ = rt.directory.resolve(alert, contact)
                target = next((t for t in targets if (t.recipient.channel, t.recipient.key)
                               == (failure.channel, failure.recipient_key)), None)
            if alert is None or target is None:
                report.unresolved.append(f"{failure.delivery_id} {failure.channel} {failure.recipient_masked}")
                log.warning("failed delivery %s via %s to %s: alert or route gone; left in the failures table",
                            failure.delivery_id, failure.channel, failure.recipient_masked)
                continue
            rendered = render_message(target.recipient.audience, target.recipient.channel, rt.config.bank,
                                      alert=alert, max_sms_segments=rt.config.sms.max_segments)
            job = Job(alert.alert_id, "alert", target.route, alert_day(alert),
                      build_message(alert.alert_id, "alert", target.recipient, rendered))
            outcome = rt.deliverer.deliver(job, retry_failed=True)
            if outcome.status == "sent":
                report.sent += 1
            elif outcome.status == "done":
                rt.store.remove_failure(day, failure.delivery_id, failure.channel, failure.recipient_key)
                report.already_done += 1
            else:
                report.still_failed += 1
    return report
