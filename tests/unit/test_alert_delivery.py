"""Delivery log semantics (idempotency, retries with exponential backoff, circuit,
in-doubt sends) and throttle windows, with an in-memory log and a scripted channel.
The Cassandra-backed versions are exercised end to end in tests/integration."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from alerting.channels.base import Channel, OutboundMessage, Receipt, Recipient
from alerting.config import RetryConfig, ThrottleConfig
from alerting.delivery import Deliverer, Job, idempotency_key
from alerting.errors import ChannelError
from alerting.store import Attempt
from alerting.throttle import Throttle
from alerting.testing import make_alert

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
        self.attempts.setdefault((a.delivery_id, a.channel, a.recipient_key), {})[a.attempt] = (a.status, a.provider_response)

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
        return datetime(2026, 1, 5, tzinfo=timezone.utc) + timedelta(seconds=self.t)


def _deliverer(channel, store, clock, **retry):
    cfg = RetryConfig(**{"attempts": 4, "initial_s": 0.5, "multiplier": 2, "max_s": 30, "circuit_cooldown_s": 60,
                         **retry})
    return Deliverer({"sms": channel}, store, cfg, now=clock.now, sleep=clock.sleep, monotonic=clock.monotonic)


def _job(n=1, day=DAY):
    alert_id = uuid.uuid5(uuid.NAMESPACE_DNS, str(n))
    return Job(alert_id, "alert", "block", day, OutboundMessage(idempotency_key(alert_id, RECIPIENT), RECIPIENT,
                                                                "", f"alert {n}"))


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

    # The dispatcher leaves failed ones to retry-failed; after the cooldown they go.
    assert deliverer.deliver(_job(1)).status == "pending"
    clock.t += 61
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


@pytest.mark.parametrize("policy, sends, last", [("resend", 1, "sent"), ("skip", 0, "sent")])
def test_a_send_in_doubt_after_a_crash(policy, sends, last):
    store, clock = MemoryStore(), Clock()
    job = _job()
    store.record_attempt(Attempt(job.delivery_id, "sms", RECIPIENT.key, 1, "alert", "block", RECIPIENT.masked,
                                 "sending", "", clock.now()))
    channel = ScriptedChannel()
    deliverer = _deliverer(channel, store, clock)
    deliverer.in_doubt = policy
    assert deliverer.deliver(job).status == "sent"
    assert len(channel.sent) == sends
    assert store.statuses(job.delivery_id) == ["sending", last]
    if sends:
        assert channel.sent == [job.message.idempotency_key]  # same key: the provider can collapse it


# ------------------------------------------------------------------ throttle

def _throttle(store, clock, window_s=600):
    return Throttle(store, ThrottleConfig(window_s=window_s), clock.now)


def test_a_burst_for_one_account_and_rule_sends_one_and_folds_the_rest():
    store, clock = MemoryStore(), Clock()
    throttle = _throttle(store, clock)
    verdicts = [throttle.admit("g/0", make_alert(i, account="500000000001"), RECIPIENT, "block")[0]
                for i in range(50)]
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
    assert {throttle.admit("g/0", make_alert(i, account="500000000001"), RECIPIENT, "r")[0] for i in range(5)} == {"send"}
