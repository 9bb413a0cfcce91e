"""Second chances for deliveries whose own retries (alerting.delivery) did not get
them through, at two levels:

* :class:`RetryQueue` - in the dispatcher (``txmon alerts dispatch``): deliveries
  *deferred* by a transient failure or an open circuit are parked and handed back to
  their channel as soon as its circuit breaker (alerting.circuit) lets sends through,
  i.e. once the provider is back. Bounded by ``retry.requeue_rounds`` and
  ``retry.requeue_max_age_s``; past them the delivery is recorded ``failed``.
* :func:`retry_failed_deliveries` - the ``failed`` ones, retried by the alert-dispatch
  DAG (``txmon alerts retry-failed``). Work is keyed by the alerts' IST days
  (``alert_delivery_failures`` partitions), passed in by the caller - never "now" - so
  a DAG run is repeatable for its data interval.

Both go through :meth:`alerting.delivery.Deliverer.deliver`, so the delivery log keeps
each delivery to one send per recipient and channel whichever path gets it out.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from txmon.alerting.circuit import State
from txmon.alerting.config import RetryConfig, load_alerting_config
from txmon.alerting.contract import alert_day
from txmon.alerting.delivery import DEFERRED, Deliverer, Job, Outcome, build_message
from txmon.alerting.errors import AlertContractError
from txmon.alerting.render import render_message
from txmon.infra.settings import load_settings

if TYPE_CHECKING:
    from txmon.alerting.runtime import Runtime

log = logging.getLogger("txmon.alerting")


ParkKey = tuple[object, str, str]  # (delivery id, channel, recipient key)


@dataclass
class Parked:
    """A deferred delivery waiting for its channel. ``origin`` is the (partition, offset)
    of the alert's Kafka record, which the dispatcher keeps uncommitted meanwhile, so a
    crash re-consumes the alert and parks the delivery again instead of losing it."""

    job: Job
    origin: tuple[int, int] | None
    since: float  # monotonic time it was parked in this process
    response: str = ""
    rounds: int = 0  # hand-backs that reached the provider and failed again

    @property
    def key(self) -> ParkKey:
        return (self.job.delivery_id, self.job.recipient.channel, self.job.recipient.key)


class RetryQueue:
    """Deferred deliveries per channel, oldest first. Thread-safe: partitions park into
    it side by side; the dispatcher's loop hands them back (:meth:`run_due`)."""

    def __init__(self, deliverer: Deliverer, config: RetryConfig) -> None:
        self.deliverer, self.config = deliverer, config
        self._parked: dict[str, OrderedDict[ParkKey, Parked]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._parked.values())

    def park(self, job: Job, origin: tuple[int, int] | None, response: str) -> bool:
        """Hold a deferred delivery; False if it is parked already (the alert came twice)."""
        entry = Parked(job, origin, self.deliverer.monotonic(), response)
        with self._lock:
            queue = self._parked.setdefault(job.recipient.channel, OrderedDict())
            if entry.key in queue:
                return False
            queue[entry.key] = entry
            return True

    def held(self) -> dict[int, int]:
        """partition -> offset of its oldest record with a parked delivery (not to be committed past)."""
        out: dict[int, int] = {}
        with self._lock:
            for queue in self._parked.values():
                for entry in queue.values():
                    if entry.origin is not None:
                        partition, offset = entry.origin
                        out[partition] = min(offset, out.get(partition, offset))
        return out

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget deliveries of partitions this dispatcher no longer owns: their records
        are uncommitted, so the new owner re-consumes and parks them. Returns how many."""
        with self._lock:
            dropped = 0
            for queue in self._parked.values():
                for key in [k for k, e in queue.items() if e.origin is not None and e.origin[0] in partitions]:
                    del queue[key]
                    dropped += 1
            return dropped

    def _remove(self, entry: Parked) -> None:
        with self._lock:
            self._parked.get(entry.job.recipient.channel, OrderedDict()).pop(entry.key, None)

    def _to_back(self, entry: Parked) -> None:
        """Rotate: the next probe tries another delivery, so one cannot use up all the rounds."""
        with self._lock:
            queue = self._parked.get(entry.job.recipient.channel)
            if queue is not None and entry.key in queue:
                queue.move_to_end(entry.key)

    def _give_up(self, entry: Parked, why: str) -> Outcome:
        self._remove(entry)
        return self.deliverer.give_up(entry.job, f"{why}; last error: {entry.response}"[:1000])

    def _hand_back(self, entry: Parked) -> Outcome:
        outcome = self.deliverer.deliver(entry.job, defer=True)
        if outcome.status != DEFERRED:
            self._remove(entry)  # sent, done meanwhile, or refused for good (recorded failed)
            return outcome
        if outcome.attempts:
            entry.rounds += 1
            entry.response = outcome.response
            if entry.rounds >= self.config.requeue_rounds:
                return self._give_up(entry, f"still failing after {entry.rounds} rounds parked")
        self._to_back(entry)
        return outcome

    def _expire(self) -> list[Outcome]:
        now = self.deliverer.monotonic()
        with self._lock:
            old = [
                e for q in self._parked.values() for e in q.values() if now - e.since >= self.config.requeue_max_age_s
            ]
        return [self._give_up(e, f"parked {now - e.since:.0f} s, the limit (retry.requeue_max_age_s)") for e in old]

    def run_due(self, pool: Executor, limit: int) -> list[Outcome]:
        """Hand parked deliveries back to channels whose circuit lets sends through:
        closed - up to ``limit`` per channel, in parallel; open but due a probe - one
        delivery as the probe, then (if that closed it) the rest. Deliveries past their
        bounds are recorded failed. Returns the outcomes (``deferred`` for those still parked)."""
        outcomes = self._expire()
        with self._lock:
            channels = {name: list(q.values())[:limit] for name, q in self._parked.items() if q}
        for name, entries in channels.items():
            breaker = self.deliverer.breakers[name]
            if not breaker.ready():
                continue
            if breaker.state is not State.CLOSED:
                outcomes.append(self._hand_back(entries[0]))
                entries = entries[1:]
                if breaker.state is not State.CLOSED:
                    continue
            sent_before = sum(o.status == "sent" for o in outcomes)
            outcomes.extend(pool.map(self._hand_back, entries))
            sent = sum(o.status == "sent" for o in outcomes) - sent_before
            log.info(
                "handed %d parked %s deliveries back: %d sent, %d still parked",
                len(entries),
                name,
                sent,
                len(self._parked.get(name, ())),
            )
        return outcomes

    def give_up_all(self, why: str) -> list[Outcome]:
        """Record every parked delivery failed (for retry-failed): the run is ending for good."""
        with self._lock:
            entries = [e for q in self._parked.values() for e in q.values()]
        return [self._give_up(e, why) for e in entries]


@dataclass
class RetryReport:
    sent: int = 0
    still_failed: int = 0
    already_done: int = 0
    unresolved: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"retried deliveries: {self.sent} sent, {self.still_failed} still failing, "
            f"{self.already_done} already done, {len(self.unresolved)} no longer routable"
        )


def retry_failed_deliveries(days: Iterable[date], rt: Runtime | None = None) -> RetryReport:
    """Retry every failed alert delivery of the given IST days (with the usual backoff);
    sent ones leave the failures table, still-failing ones stay for the next run.

    The alert-dispatch DAG calls ``retry_failed_deliveries([logical_date, ...])``: without
    ``rt`` it connects with the configuration of the environment (config/txmon.yaml,
    config/alerting.yaml) and disconnects when done."""
    days = list(days)
    if rt is None:
        # Imported here: runtime imports the dispatcher, which imports this module.
        from txmon.alerting.runtime import runtime

        with runtime(load_settings(), load_alerting_config()) as opened:
            return retry_failed_deliveries(days, opened)
    report = RetryReport()
    for day in days:
        for failure in rt.store.failures(day):
            if failure.kind != "alert":
                continue
            try:
                alert = rt.store.load_alert(failure.delivery_id)
            except AlertContractError as exc:
                # A corrupt stored alert is this failure's problem only: it stays listed.
                log.error("failed delivery %s: %s", failure.delivery_id, exc)
                alert = None
            target = None
            if alert is not None:
                contact = rt.store.contact_for(alert) if rt.directory.needs_contact(alert) else None
                targets, _ = rt.directory.resolve(alert, contact)
                target = next(
                    (
                        t
                        for t in targets
                        if (t.recipient.channel, t.recipient.key) == (failure.channel, failure.recipient_key)
                    ),
                    None,
                )
            if alert is None or target is None:
                report.unresolved.append(f"{failure.delivery_id} {failure.channel} {failure.recipient_masked}")
                log.warning(
                    "failed delivery %s via %s to %s: alert or route gone; left in the failures table",
                    failure.delivery_id,
                    failure.channel,
                    failure.recipient_masked,
                )
                continue
            rendered = render_message(
                target.recipient.audience,
                target.recipient.channel,
                rt.config.bank,
                alert=alert,
                max_sms_segments=rt.config.sms.max_segments,
            )
            job = Job(
                alert.alert_id,
                "alert",
                target.route,
                alert_day(alert),
                build_message(alert.alert_id, "alert", target.recipient, rendered),
            )
            outcome = rt.deliverer.deliver(job, retry_failed=True)
            if outcome.status == "sent":
                report.sent += 1
            elif outcome.status == "done":
                rt.store.remove_failure(day, failure.delivery_id, failure.channel, failure.recipient_key)
                report.already_done += 1
            else:
                report.still_failed += 1
    return report
