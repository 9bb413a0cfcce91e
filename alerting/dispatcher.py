"""The alert dispatcher: consumes the ``alerts`` topic and delivers every alert.

For each record: validate it against the contract (a bad one goes to the
``dead_letters`` table with the reason), upsert it into ``alerts``, route it, fold it
or send it on every channel (in parallel), and record each outcome in
``alert_deliveries``. Only when all of a poll's records have their outcomes durably
recorded are their offsets committed, so a crash re-delivers rather than loses, and
the delivery log stops anything already sent from being sent twice.

A channel that is down opens its circuit (alerting.circuit); its deliveries are
*deferred* and parked in the dispatcher's :class:`~alerting.retry.RetryQueue`, which
hands them back once a probe finds the provider answering again - no second command
needed. A parked delivery's record is not committed past, so a crash meanwhile
re-consumes the alert and parks it again. When a bounded run (``max_messages``,
``idle_timeout_s``) ends, what is still parked is recorded failed for
``txmon alerts retry-failed``; a stopped service (``stop``) leaves it to its next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from txmon.alerting.channels.base import Recipient
from txmon.alerting.config import AlertingConfig
from txmon.alerting.contract import Alert, alert_day, from_json
from txmon.alerting.delivery import DEFERRED, DONE, Deliverer, Job, Outcome, build_message, utcnow
from txmon.alerting.errors import AlertContractError
from txmon.alerting.render import FollowUp, Rendered, render_message
from txmon.alerting.retry import RetryQueue
from txmon.alerting.routing import Directory
from txmon.alerting.store import AlertStore
from txmon.alerting.throttle import Throttle, Window
from txmon.infra.kafka_client import client_config
from txmon.infra.masking import mask_party
from txmon.infra.process import wait_until

log = logging.getLogger("txmon.alerting")


@dataclass
class DispatchStats:
    records: int = 0
    alerts: int = 0
    dead_letters: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    followups: int = 0
    deferred: int = 0  # deliveries parked until their channel is back (their end is in outcomes)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, status: str, n: int = 1) -> None:
        with self._lock:
            self.outcomes[status] = self.outcomes.get(status, 0) + n

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def line(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.records} records: {self.alerts} alerts, {self.dead_letters} dead-lettered; "
            f"deliveries: {parts or 'none'} ({self.deferred} deferred on the way); "
            f"follow-ups sent: {self.followups}"
        )


__all__ = ["DispatchStats", "Dispatcher", "await_topic_metadata", "build_message", "make_consumer"]


class Dispatcher:
    """Alert handling independent of Kafka (``process_alert``, ``flush_due``), plus the
    consumer loop (``run``)."""

    def __init__(
        self,
        config: AlertingConfig,
        store: AlertStore,
        deliverer: Deliverer,
        directory: Directory,
        *,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config, self.store, self.deliverer, self.directory = config, store, deliverer, directory
        self.throttle = Throttle(store, config.throttle, now)
        self.pool = ThreadPoolExecutor(max_workers=config.dispatcher.workers, thread_name_prefix="deliver")
        # Partitions of one poll are handled side by side; records of one partition (hence
        # of one account: the key) stay in order, which the throttle relies on.
        self.partitions = ThreadPoolExecutor(max_workers=config.dispatcher.workers, thread_name_prefix="partition")
        self.stats = DispatchStats()
        self.requeue = RetryQueue(deliverer, config.retry)
        self.defer = config.retry.requeue_rounds > 0

    def close(self) -> None:
        self.partitions.shutdown(wait=True)
        self.pool.shutdown(wait=True)

    def _deliver(self, job: Job) -> Outcome:
        return self.deliverer.deliver(job, defer=self.defer)

    def handle_partition(self, records: list[Any], scope: str) -> None:
        for record in records:
            self.handle_record(record, scope)

    def _render(self, recipient: Recipient, **what: Any) -> Rendered:
        return render_message(
            recipient.audience,
            recipient.channel,
            self.config.bank,
            max_sms_segments=self.config.sms.max_segments,
            **what,
        )

    # ------------------------------------------------------------ one alert
    def process_alert(self, alert: Alert, scope: str, origin: tuple[int, int] | None = None) -> list[Outcome]:
        """Record, route, throttle and deliver one alert; returns the send outcomes.
        ``origin`` (partition, offset) is where the alert came from, held uncommitted
        while one of its deliveries is parked."""
        self.store.save_alert(alert)
        self.stats.add("alerts")
        contact = self.store.contact_for(alert) if self.directory.needs_contact(alert) else None
        targets, unreachable = self.directory.resolve(alert, contact)
        for miss in unreachable:
            if self.deliverer.mark(
                alert.alert_id,
                miss.recipient,
                "no_recipient",
                f"no {miss.channel} contact on file for the customer",
                route=miss.route,
            ):
                self.stats.count("no_recipient")
                log.warning(
                    "alert %s: no %s contact for %s; recorded no_recipient",
                    alert.alert_id,
                    miss.channel,
                    miss.recipient.masked,
                )
        jobs = []
        for target in targets:
            state = self.deliverer.state(alert.alert_id, target.recipient)
            if state is not None and (state[1] in DONE or state[1] == "failed"):
                self.stats.count("already")
                continue
            if state is not None and state[1] == DEFERRED:
                # Parked before a restart (its record was held uncommitted). The throttle
                # admitted it back then: park it again, or send it if parking is now off.
                job = Job(
                    alert.alert_id,
                    "alert",
                    target.route,
                    alert_day(alert),
                    build_message(
                        alert.alert_id, "alert", target.recipient, self._render(target.recipient, alert=alert)
                    ),
                )
                if not self.defer:
                    jobs.append(job)
                elif self.requeue.park(job, origin, "parked before the dispatcher restarted"):
                    self.stats.add("deferred")
                continue
            verdict, window = self.throttle.admit(scope, alert, target.recipient, target.route)
            if verdict == "fold":
                assert window is not None
                self.deliverer.mark(
                    alert.alert_id,
                    target.recipient,
                    "folded",
                    f"folded into the follow-up of window {window.row.window_start:%H:%M:%S}Z",
                    route=target.route,
                )
                self.stats.count("folded")
                continue
            rendered = self._render(target.recipient, alert=alert)
            jobs.append(
                Job(
                    alert.alert_id,
                    "alert",
                    target.route,
                    alert_day(alert),
                    build_message(alert.alert_id, "alert", target.recipient, rendered),
                )
            )
        outcomes = list(self.pool.map(self._deliver, jobs))
        for job, outcome in zip(jobs, outcomes):
            if outcome.status == DEFERRED:
                if self.requeue.park(job, origin, outcome.response):
                    self.stats.add("deferred")
            else:
                self.stats.count(outcome.status)
        log.info(
            "alert %s %s/%s risk %d payer %s: %s",
            alert.alert_id,
            alert.decision,
            alert.severity.value,
            alert.risk_score,
            mask_party(alert.payer_account_masked, alert.payer_vpa_masked),
            ", ".join(f"{j.recipient.channel}->{j.recipient.masked} {o.status}" for j, o in zip(jobs, outcomes))
            or "nothing to send",
        )
        return outcomes

    def handle_record(self, record: Any, scope: str) -> None:
        """One Kafka record: an alert, or a dead letter with the reason."""
        self.stats.add("records")
        try:
            alert = from_json(record.value)
        except AlertContractError as exc:
            self.stats.add("dead_letters")
            raw = (
                record.value.decode("utf-8", errors="replace") if isinstance(record.value, bytes) else str(record.value)
            )
            key = record.key.decode("utf-8", errors="replace") if record.key else None
            stamp = datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp else None
            self.store.dead_letter(
                record.topic,
                record.partition,
                record.offset,
                "invalid_alert",
                str(exc)[:2000],
                key,
                raw,
                stamp,
                utcnow(),
            )
            log.error(
                "alert record %s[%d]@%d dead-lettered: invalid_alert", record.topic, record.partition, record.offset
            )
            return
        self.process_alert(alert, scope, (record.partition, record.offset))

    # ------------------------------------------------------------ follow-ups
    def _followup_recipient(self, window: Window, alerts: list[Alert]) -> tuple[Recipient, str] | None:
        if window.recipient is not None:
            return window.recipient, window.route
        for alert in alerts:  # after a restart: the recipient is re-resolved from the routing
            contact = self.store.contact_for(alert) if self.directory.needs_contact(alert) else None
            for target in self.directory.resolve(alert, contact)[0]:
                if (target.recipient.channel, target.recipient.key) == (window.row.channel, window.row.recipient_key):
                    return target.recipient, target.route
        return None

    def flush_due(self) -> int:
        """Send the follow-up of every closed window with folded alerts; returns how many went."""
        sent = 0
        for window in self.throttle.due():
            folded = set(window.folded)
            alerts = self.store.load_alerts(folded)
            found = self._followup_recipient(window, alerts)
            if found is None or not alerts:
                log.error(
                    "follow-up of %d folded alerts: recipient no longer routed; dropping the window "
                    "(each alert stays recorded as folded)",
                    len(folded),
                )
                self.throttle.followup_sent(window, folded)
                continue
            recipient, route = found
            rendered = self._render(recipient, followup=FollowUp(window.row.rule_code, tuple(alerts)))
            job = Job(
                window.followup_id,
                "followup",
                route,
                None,
                build_message(window.followup_id, "followup", recipient, rendered),
            )
            outcome = self.deliverer.deliver(job, retry_failed=True)  # a failed follow-up is tried again
            if outcome.status in ("sent", "done"):
                self.throttle.followup_sent(window, folded)
                sent += outcome.status == "sent"
            else:
                # The throttle owns follow-up retries: next when the channel may be back.
                retry_in = self.deliverer.breakers[recipient.channel].retry_in()
                self.throttle.followup_failed(window, max(retry_in, self.config.circuit.open_s))
        self.stats.add("followups", sent)
        self.throttle.sweep()
        return sent

    # ------------------------------------------------------------ parked deliveries
    def retry_parked(self) -> int:
        """Hand parked deliveries back to channels whose circuit lets sends through;
        returns how many were sent."""
        outcomes = self.requeue.run_due(self.pool, limit=self.config.dispatcher.max_poll_records)
        for outcome in outcomes:
            if outcome.status != DEFERRED:
                self.stats.count(outcome.status)
        return sum(o.status == "sent" for o in outcomes)

    def end_parked(self, stopped: bool) -> None:
        """At the end of a run: a stopped service leaves parked deliveries to its next start
        (their records are uncommitted); a bounded run records them failed for retry-failed."""
        if not len(self.requeue):
            return
        if stopped:
            log.warning(
                "%d deferred deliveries still parked at shutdown; their alerts stay uncommitted and are "
                "parked again at the next start",
                len(self.requeue),
            )
            return
        outcomes = self.requeue.give_up_all("the dispatcher run ended while the channel was still failing")
        for outcome in outcomes:
            self.stats.count(outcome.status)

    # ------------------------------------------------------------ the loop
    def run(
        self,
        consumer: Any,
        *,
        topic: str,
        group_id: str,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
        stop: threading.Event | None = None,
    ) -> DispatchStats:
        """Consume until ``max_messages`` records, ``idle_timeout_s`` without a record
        (counted from when the group gave this consumer its partitions), or ``stop`` is
        set. Offsets are committed after each poll's outcomes are stored, up to (not past)
        the oldest record with a parked delivery."""
        # kafka-python only for the consumer: rendering and delivery are used without it.
        from kafka import ConsumerRebalanceListener, TopicPartition
        from kafka.structs import OffsetAndMetadata

        throttle, requeue = self.throttle, self.requeue
        assigned_at: list[float] = []  # idle time counts from the first assignment
        consumed: dict[int, int] = {}  # partition -> next offset after what this process handled
        committed: dict[int, int] = {}

        class Ownership(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                for tp in revoked:
                    throttle.forget(scope_of(tp.partition))
                    consumed.pop(tp.partition, None)
                    committed.pop(tp.partition, None)
                dropped = requeue.drop_partitions({tp.partition for tp in revoked})
                if dropped:
                    log.info("%d parked deliveries of revoked partitions left to their new owner", dropped)

            def on_partitions_assigned(self, assigned: Any) -> None:
                for tp in assigned:
                    throttle.load(scope_of(tp.partition))
                assigned_at.append(time.monotonic())

        def scope_of(partition: int) -> str:
            return f"{group_id}/{topic}/{partition}"

        def commit() -> None:
            held = requeue.held()
            offsets = {}
            for partition, upto in consumed.items():
                offset = min(upto, held.get(partition, upto))
                if committed.get(partition) != offset:
                    offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(offset, "", -1)
            if offsets:
                consumer.commit(offsets)  # every outcome up to there is already in Cassandra
                committed.update({tp.partition: meta.offset for tp, meta in offsets.items()})

        await_topic_metadata(consumer, topic)
        consumer.subscribe([topic], listener=Ownership())
        stop = stop or threading.Event()
        processed, last_record = 0, 0.0
        poll_ms = self.config.dispatcher.poll_ms
        while not stop.is_set():
            remaining = None if max_messages is None else max_messages - processed
            batch = consumer.poll(
                timeout_ms=poll_ms, max_records=min(remaining or 10**9, self.config.dispatcher.max_poll_records)
            )
            if batch:
                futures = [
                    self.partitions.submit(self.handle_partition, records, scope_of(tp.partition))
                    for tp, records in batch.items()
                ]
                for future in futures:
                    future.result()  # a failure (e.g. Cassandra down) stops here: nothing is committed
                for tp, records in batch.items():
                    consumed[tp.partition] = records[-1].offset + 1
                processed += sum(len(records) for records in batch.values())
                last_record = time.monotonic()
                commit()
            self.flush_due()
            self.retry_parked()
            commit()  # a no-op unless a parked delivery ended or a batch moved the offsets
            if max_messages is not None and processed >= max_messages:
                break
            if (
                idle_timeout_s is not None
                and assigned_at
                and time.monotonic() - max(last_record, assigned_at[0]) >= idle_timeout_s
            ):
                break
        self.end_parked(stopped=stop.is_set())
        commit()
        return self.stats


def await_topic_metadata(consumer: Any, topic: str, timeout_s: float = 15.0) -> bool:
    """Wait (bounded) until the consumer's metadata lists ``topic``'s partitions.

    A group leader whose metadata lacks a just-created topic assigns no partitions, and
    kafka-python only notices at its next metadata refresh (``metadata_max_age_ms``, 5
    min): the dispatcher would sit idle that long (seen in CI as kafka's warning "No
    partition metadata for topic"). A topic that does not exist yet is still subscribed
    to after the wait, as before: the group picks it up once it is created.
    """
    if wait_until(lambda: bool(consumer.partitions_for_topic(topic)), timeout_s, interval=0.2):
        return True
    log.warning("alerts topic %s has no partitions yet; subscribing anyway", topic)
    return False


def make_consumer(bootstrap: str, group_id: str, config: Any) -> Any:
    """Manual commits only; a new group starts from the earliest alert (none skipped)."""
    # lazy: kafka (553 ms to import); the DAG processor parses this file every 30 s
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id="txmon-alert-dispatcher",
        **client_config(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=config.max_poll_records,
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.session_timeout_ms // 3,
    )
