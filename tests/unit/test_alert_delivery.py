"""Delivery log semantics (idempotency, retries with exponential backoff, circuit,
in-doubt sends, deferral) and throttle windows, with an in-memory log and a scripted channel.
The Cassandra-backed versions are exercised end to end in tests/integration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from txmon.alerting.channels.base import Channel, OutboundMessage, Receipt, Recipient
from txmon.alerting.config import CircuitConfig, RetryConfig, ThrottleConfig
from txmon.alerting.delivery import Deliverer, Job, idempotency_key
from txmon.alerting.errors import ChannelError
from txmon.alerting.retry import RetryQueue
from txmon.alerting.store import Attempt
from txmon.alerting.testing import make_alert
from txmon.alerting.throttle import Throttle

RECIPIENT = Recipient("sms", "+919876543210", "+91XXXXXX3210", "customer", "customer")
DAY = datetime(2026, 1, 5).date()


class MemoryStore:
    """The DeliveryLog and ThrottleStore protocols over dicts."""

    def __init__(self):
        self.attempts = {}  # (id, channel, key) -> {attempt: (status, response)}
        self.failures = {}
        self.windows, self.folds = {}, {}

    def latest_attempt(self, delivery_id, channel, key):
        rows = self.attempts.get((delivery_id, channel, key))
        if not rows:
            return None
        n = max(rows)
        return n, rows[n][0]

    def record_attempt(self, a):
        self.attempts.setdefault((a.delivery_id, a.channel, a.recipient_key), {})[a.attempt] = (
            a.status,
            a.provider_response,
        )

    def add_failure(self, f):
        self.failures[(f.day, f.delivery_id, f.channel, f.recipient_key)] = f

    def remove_failure(self, day, delivery_id, channel, key):
        self.failures.pop((day, delivery_id, channel, key), None)

    def load_windows(self, scope):
        return [w for (s, _), w in self.windows.items() if s == scope]

    def save_window(self, scope, w):
        self.windows[(scope, w.throttle_key)] = w

    def delete_window(self, scope, key):
        self.windows.pop((scope, key), None)

    def load_folds(self, scope):
        return [(k, a, start) for (s, k, a), start in self.folds.items() if s == scope]

    def add_fold(self, scope, key, alert_id, window_start, at):
        self.folds[(scope, key, alert_id)] = window_start

    def delete_folds(self, scope, key, ids):
        for i in ids:
            self.folds.pop((scope, key, i), None)

    def statuses(self, delivery_id, recipient=RECIPIENT):
        rows = self.attempts.get((delivery_id, recipient.channel, recipient.key), {})
        return [rows[n][0] for n in sorted(rows)]


class ScriptedChannel(Channel):
    """Answers from a script: 'ok', 'transient' or 'permanent', one entry per send."""

    name = "sms"

    def __init__(self, *script: str):
        self.script = list(script)
        self.sent: list[str] = []

    def send(self, message: OutboundMessage) -> Receipt:
        step = self.script.pop(0) if self.script else "ok"
        self.sent.append(message.idempotency_key)
        if step == "ok":
            return Receipt("201 queued")
        raise ChannelError(f"gateway said {step}", transient=step == "transient", response=f"HTTP {step}")


class Clock:
    def __init__(self):
        self.t = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s

    def monotonic(self):
        return self.t

    def now(self):
        return datetime(2026, 1, 5, tzinfo=UTC) + timedelta(seconds=self.t)


def _deliverer(channel, store, clock, circuit=None, **retry):
    cfg = RetryConfig(**{"attempts": 4, "initial_s": 0.5, "multiplier": 2, "max_s": 30, **retry})
    circuit = circuit or CircuitConfig(failure_threshold=4, open_s=60, max_open_s=600)
    return Deliverer(
        {"sms": channel}, store, cfg, circuit=circuit, now=clock.now, sleep=clock.sleep, monotonic=clock.monotonic
    )


def _job(n=1, day=DAY):
    alert_id = uuid.uuid5(uuid.NAMESPACE_DNS, str(n))
    return Job(
        alert_id,
        "alert",
        "block",
        day,
        OutboundMessage(idempotency_key(alert_id, RECIPIENT), RECIPIENT, "", f"alert {n}"),
    )


def test_transient_errors_are_retried_with_exponential_backoff_and_logged():
    store, clock = MemoryStore(), Clock()
    channel = ScriptedChannel("transient", "transient", "transient", "ok")
    outcome = _deliverer(channel, store, clock).deliver(_job())
    assert outcome.status == "sent" and outcome.attempts == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert store.statuses(_job().delivery_id) == ["retrying", "retrying", "retrying", "sent"]
    assert len(set(channel.sent)) == 1  # every try carries the same idempotency key


def test_retries_run_out_then_failed_is_recorded_and_queued_and_the_circuit_opens():
    store, clock = MemoryStore(), Clock()
    channel = ScriptedChannel(*["transient"] * 4)
    deliverer = _deliverer(channel, store, clock)
    assert deliverer.deliver(_job(1)).status == "failed"
    assert store.statuses(_job(1).delivery_id) == ["retrying", "retrying", "retrying", "failed"]
    assert (DAY, _job(1).delivery_id, "sms", RECIPIENT.key) in store.failures

    # Circuit open: the next delivery fails at once instead of waiting out the backoff.
    sleeps = len(clock.sleeps)
    assert deliverer.deliver(_job(2)).status == "failed"
    assert len(channel.sent) == 4 and len(clock.sleeps) == sleeps
    assert store.statuses(_job(2).delivery_id) == ["failed"]

    # The dispatcher leaves failed ones to retry-failed; once the circuit lets a probe through they go.
    assert deliverer.deliver(_job(1)).status == "pending"
    clock.t += 60
    outcome = deliverer.deliver(_job(1), retry_failed=True)
    assert outcome.status == "sent"
    assert store.statuses(_job(1).delivery_id)[-1] == "sent"
    assert (DAY, _job(1).delivery_id, "sms", RECIPIENT.key) not in store.failures


def test_a_permanent_error_is_not_retried():
    store, clock = MemoryStore(), Clock()
    channel = ScriptedChannel("permanent")
    deliverer = _deliverer(channel, store, clock)
    assert deliverer.deliver(_job()).status == "failed"
    assert store.statuses(_job().delivery_id) == ["failed"] and clock.sleeps == []
    assert deliverer.deliver(_job(2)).status == "sent"  # a recipient's refusal does not open the circuit


def test_a_delivery_recorded_as_sent_is_never_sent_again():
    store, clock = MemoryStore(), Clock()
    channel = ScriptedChannel()
    deliverer = _deliverer(channel, store, clock)
    assert deliverer.deliver(_job()).status == "sent"
    assert deliverer.deliver(_job()).status == "done"
    assert deliverer.deliver(_job(), retry_failed=True).status == "done"
    assert len(channel.sent) == 1


def test_folded_and_no_recipient_marks_are_terminal():
    store, clock = MemoryStore(), Clock()
    channel = ScriptedChannel()
    deliverer = _deliverer(channel, store, clock)
    job = _job()
    assert deliverer.mark(job.delivery_id, RECIPIENT, "folded", "into window")
    assert not deliverer.mark(job.delivery_id, RECIPIENT, "folded", "into window")
    assert deliverer.deliver(job).status == "done" and channel.sent == []


@pytest.mark.parametrize(("policy", "sends", "last"), [("resend", 1, "sent"), ("skip", 0, "sent")])
def test_a_send_in_doubt_after_a_crash(policy, sends, last):
    store, clock = MemoryStore(), Clock()
    job = _job()
    store.record_attempt(
        Attempt(
            job.delivery_id, "sms", RECIPIENT.key, 1, "alert", "block", RECIPIENT.masked, "sending", "", clock.now()
        )
    )
    channel = ScriptedChannel()
    deliverer = _deliverer(channel, store, clock)
    deliverer.in_doubt = policy
    assert deliverer.deliver(job).status == "sent"
    assert len(channel.sent) == sends
    assert store.statuses(job.delivery_id) == ["sending", last]
    if sends:
        assert channel.sent == [job.message.idempotency_key]  # same key: the provider can collapse it


# ------------------------------------------------------------------ deferral and the retry queue


class Inline:
    """An executor that runs the queue's hand-backs one after the other, in order."""

    def map(self, fn, items):
        return [fn(item) for item in items]


def _outage(**retry):
    """A deliverer whose circuit opens after 4 failures and probes after 60 s (x2 per
    failed probe), and its retry queue."""
    store, clock = MemoryStore(), Clock()
    channel = ScriptedChannel()
    deliverer = _deliverer(channel, store, clock, **retry)
    return store, clock, channel, deliverer, RetryQueue(deliverer, deliverer.retry)


def test_deferred_deliveries_wait_for_the_circuit_and_go_once_when_a_probe_succeeds():
    store, clock, channel, deliverer, queue = _outage()
    channel.script = ["transient"] * 4
    first = deliverer.deliver(_job(1), defer=True)  # tries used up; the 4th failure opens the circuit
    assert (first.status, first.attempts) == ("deferred", 4)
    second = deliverer.deliver(_job(2), defer=True)  # circuit open: not even tried
    assert (second.status, second.attempts) == ("deferred", 0) and len(channel.sent) == 4
    assert store.statuses(_job(1).delivery_id) == ["retrying", "retrying", "retrying", "deferred"]
    assert store.statuses(_job(2).delivery_id) == ["deferred"]
    assert store.failures == {}  # deferred is not failed: nothing for retry-failed
    assert queue.park(_job(1), (0, 10), first.response) and queue.park(_job(2), (0, 11), second.response)
    assert not queue.park(_job(2), (0, 11), second.response)  # the same alert twice is parked once

    assert queue.run_due(Inline(), limit=100) == [] and len(channel.sent) == 4  # still open: no send
    clock.t += deliverer.breakers["sms"].retry_in()
    channel.script = ["transient"]  # the provider is still down: the probe fails
    (probe,) = queue.run_due(Inline(), limit=100)
    assert probe.status == "deferred" and len(channel.sent) == 5 and len(queue) == 2
    assert deliverer.breakers["sms"].retry_in() == 120.0  # the backoff doubled

    clock.t += 120  # back: the next probe (the other delivery: they rotate) closes it, the rest follow
    outcomes = queue.run_due(Inline(), limit=100)
    assert [o.status for o in outcomes] == ["sent", "sent"] and len(queue) == 0
    assert channel.sent[5:] == [_job(2).message.idempotency_key, _job(1).message.idempotency_key]
    for n in (1, 2):
        assert store.statuses(_job(n).delivery_id)[-1] == "sent"
    assert queue.run_due(Inline(), limit=100) == [] and len(channel.sent) == 7  # each went exactly once


def test_a_parked_delivery_sent_meanwhile_by_someone_else_is_not_sent_again():
    store, clock, channel, deliverer, queue = _outage()
    channel.script = ["transient"] * 4
    queue.park(_job(1), None, deliverer.deliver(_job(1), defer=True).response)
    store.record_attempt(
        Attempt(
            _job(1).delivery_id, "sms", RECIPIENT.key, 9, "alert", "block", RECIPIENT.masked, "sent", "201", clock.now()
        )
    )
    clock.t += 60
    assert [o.status for o in queue.run_due(Inline(), limit=100)] == ["done"]
    assert len(channel.sent) == 4 and len(queue) == 0


def test_a_delivery_failing_round_after_round_ends_failed_for_retry_failed():
    store, clock, channel, deliverer, queue = _outage(requeue_rounds=2)
    channel.script = ["transient"] * 6
    queue.park(_job(1), (0, 3), deliverer.deliver(_job(1), defer=True).response)
    clock.t += 60
    assert [o.status for o in queue.run_due(Inline(), limit=100)] == ["deferred"]
    clock.t += 120
    (last,) = queue.run_due(Inline(), limit=100)
    assert last.status == "failed" and "still failing after 2 rounds parked" in last.response
    assert len(queue) == 0 and queue.held() == {}
    assert store.statuses(_job(1).delivery_id)[-1] == "failed"
    assert (DAY, _job(1).delivery_id, "sms", RECIPIENT.key) in store.failures
    clock.t += 240
    assert deliverer.deliver(_job(1), retry_failed=True).status == "sent"  # what retry-failed does
    assert (DAY, _job(1).delivery_id, "sms", RECIPIENT.key) not in store.failures


def test_a_delivery_parked_longer_than_the_limit_ends_failed_without_another_try():
    store, clock, channel, deliverer, queue = _outage(requeue_max_age_s=30)
    channel.script = ["transient"] * 4
    queue.park(_job(1), None, deliverer.deliver(_job(1), defer=True).response)
    clock.t += 29.9
    assert queue.run_due(Inline(), limit=100) == []
    clock.t += 0.1
    (expired,) = queue.run_due(Inline(), limit=100)
    assert expired.status == "failed" and expired.response.startswith("parked 30 s, the limit")
    assert len(channel.sent) == 4 and (DAY, _job(1).delivery_id, "sms", RECIPIENT.key) in store.failures


def test_offsets_are_held_at_the_oldest_parked_record_of_each_partition():
    _store, _clock, _channel, _deliverer, queue = _outage()
    for n, origin in [(1, (0, 7)), (2, (0, 5)), (3, (1, 3))]:
        queue.park(_job(n), origin, "down")
    assert queue.held() == {0: 5, 1: 3}
    assert queue.drop_partitions({1}) == 1 and queue.held() == {0: 5}
    outcomes = queue.run_due(Inline(), limit=1)  # the circuit is closed: they go, one per call here
    assert [o.status for o in outcomes] == ["sent"] and queue.held() == {0: 5}
    queue.run_due(Inline(), limit=1)
    assert queue.held() == {} and len(queue) == 0


def test_parking_can_be_given_up_for_retry_failed_at_the_end_of_a_run():
    store, _clock, channel, _deliverer, queue = _outage()
    queue.park(_job(1), (0, 1), "down")
    (outcome,) = queue.give_up_all("the run ended")
    assert outcome.status == "failed" and len(queue) == 0 and channel.sent == []
    assert (DAY, _job(1).delivery_id, "sms", RECIPIENT.key) in store.failures


# ------------------------------------------------------------------ throttle


def _throttle(store, clock, window_s=600):
    return Throttle(store, ThrottleConfig(window_s=window_s), clock.now)


def test_a_burst_for_one_account_and_rule_sends_one_and_folds_the_rest():
    store, clock = MemoryStore(), Clock()
    throttle = _throttle(store, clock)
    verdicts = [throttle.admit("g/0", make_alert(i, account="500000000001"), RECIPIENT, "block")[0] for i in range(50)]
    assert verdicts == ["send"] + ["fold"] * 49
    assert throttle.due() == []  # window still open

    clock.t += 600
    (window,) = throttle.due()
    assert len(window.folded) == 49 and window.recipient == RECIPIENT
    throttle.followup_sent(window, set(window.folded))
    assert throttle.due() == [] and store.folds == {}
    # The follow-up opened a new window: more alerts keep folding into it.
    assert throttle.admit("g/0", make_alert(50, account="500000000001"), RECIPIENT, "block")[0] == "fold"


def test_other_accounts_rules_and_recipients_are_not_throttled_together():
    store, clock = MemoryStore(), Clock()
    throttle = _throttle(store, clock)
    other = Recipient("email", "d@bank.example", "d***@bank.example", "staff", "fraud_desk")
    other_rule = [{"code": "NEW_DEVICE", "description": "new phone", "contribution": 1.0}]
    assert throttle.admit("g/0", make_alert(1, account="500000000001"), RECIPIENT, "r")[0] == "send"
    assert throttle.admit("g/0", make_alert(2, account="500000000002"), RECIPIENT, "r")[0] == "send"
    assert throttle.admit("g/0", make_alert(3, account="500000000001"), other, "r")[0] == "send"
    assert throttle.admit("g/0", make_alert(4, account="500000000001", reasons=other_rule), RECIPIENT, "r")[0] == "send"
    assert throttle.admit("g/0", make_alert(5, account="500000000001"), RECIPIENT, "r")[0] == "fold"


def test_a_quiet_window_is_forgotten_and_the_next_alert_is_sent():
    store, clock = MemoryStore(), Clock()
    throttle = _throttle(store, clock)
    throttle.admit("g/0", make_alert(1, account="500000000001"), RECIPIENT, "r")
    clock.t += 601
    assert throttle.sweep() == 1 and store.windows == {}
    assert throttle.admit("g/0", make_alert(2, account="500000000001"), RECIPIENT, "r")[0] == "send"


def test_windows_and_folds_survive_a_restart_and_the_lead_alert_replays_as_send():
    store, clock = MemoryStore(), Clock()
    first = _throttle(store, clock)
    for i in range(5):
        first.admit("g/0", make_alert(i, account="500000000001"), RECIPIENT, "r")

    restarted = _throttle(store, clock)
    restarted.load("g/0")
    # The lead alert, re-delivered by Kafka after the crash, is still sent; others fold.
    assert restarted.admit("g/0", make_alert(0, account="500000000001"), RECIPIENT, "r")[0] == "send"
    assert restarted.admit("g/0", make_alert(3, account="500000000001"), RECIPIENT, "r")[0] == "fold"
    clock.t += 600
    (window,) = restarted.due()
    assert len(window.folded) == 4 and window.recipient == RECIPIENT


def test_folds_left_over_from_a_finished_window_are_cleaned_on_load():
    store, clock = MemoryStore(), Clock()
    throttle = _throttle(store, clock)
    for i in range(3):
        throttle.admit("g/0", make_alert(i, account="500000000001"), RECIPIENT, "r")
    clock.t += 600
    (window,) = throttle.due()
    stale = dict(store.folds)
    throttle.followup_sent(window, set(window.folded))
    store.folds.update(stale)  # as if the process died before deleting them

    restarted = _throttle(store, clock)
    restarted.load("g/0")
    clock.t += 600
    assert restarted.due() == [] and store.folds == {}


def test_throttling_can_be_switched_off():
    store, clock = MemoryStore(), Clock()
    throttle = Throttle(store, ThrottleConfig(enabled=False), clock.now)
    assert {throttle.admit("g/0", make_alert(i, account="500000000001"), RECIPIENT, "r")[0] for i in range(5)} == {
        "send"
    }
