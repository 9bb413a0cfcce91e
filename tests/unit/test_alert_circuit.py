"""The per-channel circuit breaker's state machine, on an injected clock (no sleeping)."""

from __future__ import annotations

import logging
import random
import threading

import pytest
from pydantic import ValidationError

from txmon.alerting.circuit import Breakers, CircuitBreaker, State
from txmon.alerting.config import CircuitConfig


class Clock:
    def __init__(self, t: float = 500.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _breaker(clock, **config):
    return CircuitBreaker(
        "email",
        CircuitConfig(**{"failure_threshold": 3, "open_s": 10, "multiplier": 2, "max_open_s": 35, **config}),
        clock,
    )


def _fail(breaker, n):
    for _ in range(n):
        assert breaker.acquire()
        breaker.failed()


def test_it_opens_only_after_the_threshold_of_consecutive_failures():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 2)
    assert breaker.acquire()
    breaker.succeeded()  # an answer in between: the count starts over
    _fail(breaker, 2)
    assert breaker.state is State.CLOSED
    _fail(breaker, 1)
    assert breaker.state is State.OPEN
    assert not breaker.acquire() and not breaker.ready()
    assert breaker.retry_in() == 10.0


def test_after_the_backoff_exactly_one_probe_goes_and_an_answer_closes_it():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.t += 9.999
    assert not breaker.acquire()
    clock.t += 0.001
    assert breaker.ready()
    assert breaker.acquire()  # the probe
    assert breaker.state is State.HALF_OPEN
    assert not breaker.ready() and not breaker.acquire()  # others wait for its answer
    breaker.succeeded()
    assert breaker.state is State.CLOSED and breaker.retry_in() == 0.0
    assert all(breaker.acquire() for _ in range(5))  # closed: everyone goes
    _fail(breaker, 2)
    assert breaker.state is State.CLOSED  # the count started from zero when it closed


def test_a_failed_probe_reopens_with_a_growing_capped_backoff_reset_by_success():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    waits = []
    for _ in range(4):
        waits.append(breaker.retry_in())
        clock.t += breaker.retry_in()
        assert breaker.acquire()
        breaker.failed()  # the probe failed
        assert breaker.state is State.OPEN
    assert waits == [10.0, 20.0, 35.0, 35.0]  # x2 each time, capped at max_open_s

    clock.t += breaker.retry_in()
    assert breaker.acquire()
    breaker.succeeded()
    _fail(breaker, 3)
    assert breaker.retry_in() == 10.0  # a new outage starts from open_s again


def test_a_probe_that_never_reached_the_provider_is_given_back():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.t += 10
    assert breaker.acquire()
    breaker.abandon()  # e.g. the delivery log could not record the attempt
    assert breaker.acquire()  # the next caller probes instead


def test_failures_of_sends_started_before_it_opened_do_not_extend_the_backoff():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.t += 4
    breaker.failed()  # a slow send that was let through while it was still closed
    assert breaker.retry_in() == 6.0


def test_only_one_of_many_concurrent_callers_gets_the_probe():
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.t += 10
    start = threading.Barrier(8)
    granted = []

    def caller():
        start.wait()
        granted.append(breaker.acquire())

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(granted) == [False] * 7 + [True]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_seeded_random_walk_keeps_the_invariants(seed):
    """Random sends, answers and waits: never two probes out at once, never a send let
    through while open before the backoff, closed after every answer, open after
    ``failure_threshold`` consecutive failures."""
    rng, clock = random.Random(seed), Clock()
    breaker = _breaker(clock)
    out: list[str] = []  # sends let through and not yet answered: the state they went in
    consecutive, opened = 0, 0
    for _ in range(2000):
        action = rng.choice(["send", "send", "ok", "fail", "fail", "wait"])
        if action == "send":
            before = breaker.state
            due = breaker.retry_in() == 0.0
            if breaker.acquire():
                assert before is State.CLOSED or due
                out.append(breaker.state.value)
                assert out.count("half_open") <= 1
            else:
                assert before is not State.CLOSED
        elif action in ("ok", "fail") and out:
            went = out.pop(rng.randrange(len(out)))
            if action == "ok":
                breaker.succeeded()
                consecutive = 0
                assert breaker.state is State.CLOSED
                out = ["closed" for _ in out]  # still answered later, but no longer a probe
            else:
                was = breaker.state
                breaker.failed()
                if was is State.CLOSED:
                    consecutive += 1
                    assert (breaker.state is State.OPEN) == (consecutive >= 3)
                elif was is State.HALF_OPEN and went == "half_open":
                    assert breaker.state is State.OPEN
                if breaker.state is State.OPEN and was is not State.OPEN:
                    consecutive, opened = 0, opened + 1
                    out = [s for s in out if s != "half_open"]
        elif action == "wait":
            clock.t += rng.choice([0.5, 3, 12, 40])
    assert opened > 0  # the walk did exercise the open state


def test_transitions_are_logged_with_the_channel(caplog):
    caplog.set_level(logging.INFO, logger="txmon.alerting")
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.t += 10
    breaker.acquire()
    breaker.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "email circuit open (3 consecutive failures): deliveries are parked; next probe in 10.0 s",
        "email circuit half-open after 10.0 s: probing the provider with one send",
        "email circuit closed: the provider answered again; parked deliveries resume",
    ]


def test_each_channel_has_its_own_breaker():
    clock = Clock()
    breakers = Breakers(CircuitConfig(failure_threshold=1), clock)
    assert breakers["email"].acquire()
    breakers["email"].failed()
    assert breakers["email"].state is State.OPEN and breakers["sms"].state is State.CLOSED
    assert breakers["email"] is breakers["email"]


def test_a_cap_below_the_first_wait_is_rejected():
    with pytest.raises(ValidationError, match="max_open_s"):
        CircuitConfig(open_s=10, max_open_s=5)
