"""Per-channel circuit breakers: stop hammering a provider that is down, and find out
cheaply when it is back, so deliveries parked meanwhile can go out.

One breaker per channel (email, sms, webhook), in the dispatcher's memory::

    closed    --failure_threshold consecutive transient failures-->  open
    open      --backoff elapsed, next send is let through------->  half-open (one probe)
    half-open --probe answered------------------------------------->  closed
    half-open --probe failed--------------------------------------->  open, backoff x multiplier

The backoff starts at ``circuit.open_s`` and grows by ``circuit.multiplier`` with each
failed probe, capped at ``circuit.max_open_s``. Only transient failures (refused
connections, timeouts, 4xx SMTP / 5xx HTTP replies) count; a permanent refusal means the
provider answered, which is what the breaker wants to know. Time comes from an injected
monotonic clock, so tests drive it.

>>> from txmon.alerting.config import CircuitConfig
>>> clock = [0.0]
>>> b = CircuitBreaker("email", CircuitConfig(failure_threshold=2, open_s=10), lambda: clock[0])
>>> b.acquire(), b.failed(), b.acquire(), b.failed(), b.state.value
(True, None, True, None, 'open')
>>> b.acquire(), b.retry_in()
(False, 10.0)
>>> clock[0] = 10.0
>>> b.acquire(), b.acquire(), b.state.value   # one probe; others wait for its answer
(True, False, 'half_open')
>>> b.succeeded(), b.state.value
(None, 'closed')
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from txmon.alerting.config import CircuitConfig

log = logging.getLogger("txmon.alerting")


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """The state machine of one channel. Thread-safe: a channel's deliveries run in parallel.

    A caller asks :meth:`acquire` before each send and reports the answer with
    :meth:`succeeded` or :meth:`failed` (or :meth:`abandon` if it never sent).
    """

    def __init__(self, name: str, config: CircuitConfig, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name, self.config, self.monotonic = name, config, monotonic
        self._state = State.CLOSED
        self._failures = 0  # consecutive, while closed
        self._level = 0  # failed probes since it last closed: the backoff's exponent
        self._opened_at = 0.0
        self._probe_out = False
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- reading
    def backoff_s(self) -> float:
        c = self.config
        return min(c.max_open_s, c.open_s * c.multiplier**self._level)

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def retry_in(self) -> float:
        """Seconds until a probe may go (0 unless open)."""
        with self._lock:
            if self._state is not State.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.backoff_s() - self.monotonic())

    def ready(self) -> bool:
        """Whether :meth:`acquire` would let a send through now (without taking it)."""
        with self._lock:
            if self._state is State.CLOSED:
                return True
            if self._state is State.HALF_OPEN:
                return not self._probe_out
            return self.monotonic() >= self._opened_at + self.backoff_s()

    # ----------------------------------------------------------------- sending
    def acquire(self) -> bool:
        """May one send go now? Closed: yes. Open with the backoff elapsed: yes, as the
        half-open probe. Otherwise (open, or a probe already out): no."""
        with self._lock:
            if self._state is State.CLOSED:
                return True
            if self._state is State.OPEN:
                if self.monotonic() < self._opened_at + self.backoff_s():
                    return False
                self._state = State.HALF_OPEN
                log.info(
                    "%s circuit half-open after %.1f s: probing the provider with one send", self.name, self.backoff_s()
                )
            if self._probe_out:
                return False
            self._probe_out = True
            return True

    def succeeded(self) -> None:
        """The provider answered: close (or stay closed) and forget past failures."""
        with self._lock:
            was = self._state
            self._state, self._failures, self._level, self._probe_out = State.CLOSED, 0, 0, False
        if was is not State.CLOSED:
            log.warning("%s circuit closed: the provider answered again; parked deliveries resume", self.name)

    def failed(self) -> None:
        """A send failed transiently: count it while closed, re-open after a failed probe."""
        with self._lock:
            if self._state is State.CLOSED:
                self._failures += 1
                if self._failures < self.config.failure_threshold:
                    return
                self._level, why = 0, f"{self._failures} consecutive failures"
            elif self._state is State.HALF_OPEN:
                self._level, why = self._level + 1, "the probe failed"
            else:
                return  # already open: a send that started before it opened
            self._state, self._opened_at, self._probe_out = State.OPEN, self.monotonic(), False
            wait = self.backoff_s()
        log.warning("%s circuit open (%s): deliveries are parked; next probe in %.1f s", self.name, why, wait)

    def abandon(self) -> None:
        """An acquired send never reached the provider (e.g. the delivery log failed):
        give the probe back, so the breaker does not wait for an answer that never comes."""
        with self._lock:
            if self._state is State.HALF_OPEN and self._probe_out:
                self._probe_out = False


class Breakers:
    """One breaker per channel name, made on first use."""

    def __init__(self, config: CircuitConfig, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config, self.monotonic = config, monotonic
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def __getitem__(self, channel: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(channel)
            if breaker is None:
                breaker = self._breakers[channel] = CircuitBreaker(channel, self.config, self.monotonic)
            return breaker


__all__ = ["Breakers", "CircuitBreaker", "State"]
