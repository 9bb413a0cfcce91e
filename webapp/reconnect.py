"""A connection to Cassandra opened on first use, and a short back-off after a failed attempt:
the web application's one way of connecting (the scoring API's store, webapp/api/store.py,
and the console's, webapp/console/web.py).

While Cassandra is down or unreachable, a connect can take the driver's whole connect
timeout (seconds, against a host that drops packets instead of refusing them). Trying
again on every request, one after another behind a lock, made every request wait for
attempts it could not help. Here one caller at a time connects, outside the lock; after a
failure every caller is refused at once (:class:`NotConnected`, with the seconds until the
next attempt, for a 503's Retry-After) until the back-off has passed. The interval starts
at ``first_s`` and grows by ``factor`` with each failure in a row, up to ``max_s``; a
success resets it, so the service recovers by itself, without a restart, at most ``max_s``
after Cassandra is back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from txmon.infra.errors import TxmonError

log = logging.getLogger(__name__)

T = TypeVar("T")


def cassandra_unavailable() -> tuple[type[Exception], ...]:
    """The driver's errors for a Cassandra that cannot answer now (down, unreachable, too
    slow): what the API and the console answer with a 503 the client can retry."""
    # lazy: cassandra (248 ms to import); the web app's workers load this module without it
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    return (NoHostAvailable, OperationTimedOut, Unavailable, ReadTimeout, WriteTimeout)


class NotConnected(TxmonError):
    """No connection now: the last attempt failed (``cause``: its exception's class name,
    ``reason``: that and its text) and the next is ``retry_after`` seconds away, or another
    caller is connecting (``cause`` "connecting")."""

    def __init__(self, cause: str, reason: str, retry_after: float) -> None:
        super().__init__(f"Cassandra unavailable ({reason}); retry in {retry_after:.1f} s")
        self.cause = cause
        self.reason = reason
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """``retry_after`` as HTTP's Retry-After: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class Reconnect(Generic[T]):
    """``connect()``'s value, made on first use and kept; thread-safe.

    ``wait_first``: a caller arriving while the first attempt (or the first since a
    success or :meth:`forget`) is in progress waits for the connection instead of being
    refused, so that a burst of requests at start-up is served once the connection is up;
    if that attempt fails after its back-off has already run out (a slow failure), one of
    the waiting callers tries again and the others keep waiting. A caller arriving after
    a failure never waits: during a reconnect it is refused at once.
    """

    def __init__(
        self,
        connect: Callable[[], T],
        *,
        first_s: float = 1.0,
        max_s: float = 15.0,
        factor: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wait_first: bool = False,
        name: str = "Cassandra",
    ) -> None:
        if not 0 < first_s <= max_s or factor < 1:
            raise ValueError(f"back-off needs 0 < first_s <= max_s and factor >= 1 (got {first_s}, {max_s}, {factor})")
        self._connect = connect
        self.first_s, self.max_s, self.factor = first_s, max_s, factor
        self._clock = clock
        self.wait_first = wait_first
        self.name = name
        self._cond = threading.Condition()  # held only to read and change the fields below, never across connect()
        self._value: T | None = None
        self._connecting = False
        self._failures = 0  # in a row, since the last success
        self._interval = 0.0  # the back-off after the last failure
        self._due = -math.inf  # on the clock: the earliest next attempt
        self._burst_due = -math.inf  # the same for a caller of the start-up burst (wait_first)
        self._cause = "not connected yet"
        self._reason = "not connected yet"

    @property
    def value(self) -> T | None:
        """The connection if it is up, without connecting."""
        return self._value

    @property
    def interval(self) -> float:
        """The back-off after the last failure (0: none since the last success)."""
        return self._interval

    def get(self) -> T:
        """The connection; connects if none is up and no back-off is running. Raises
        :class:`NotConnected` when it is not the caller's turn, or when its attempt fails."""
        value = self._value
        if value is not None:
            return value
        with self._cond:
            # Decided once, on arrival: a caller of the start-up burst keeps waiting through
            # the attempts that follow a slow failed first one, as a request queued for the
            # first connect did before; a caller arriving after a failure never waits.
            patient = self.wait_first and self._failures == 0
            while True:
                if self._value is not None:
                    return self._value
                if not self._connecting:
                    remaining = (self._burst_due if patient else self._due) - self._clock()
                    if remaining > 0:
                        raise NotConnected(self._cause, self._reason, remaining)
                    break
                if not patient:
                    raise NotConnected("connecting", f"connecting to {self.name}", self._next_interval())
                self._cond.wait()
            self._connecting = True
            started = self._clock()
        try:
            value = self._connect()
        except BaseException as exc:
            with self._cond:
                self._connecting = False
                self._interval = self._next_interval()
                self._failures += 1
                self._due = self._clock() + self._interval
                # For the start-up burst the interval counts from the attempt's start: a
                # first connect that spent the driver's whole timeout failing has made its
                # waiters wait long enough, and one of them tries again at once.
                self._burst_due = started + self._interval
                self._cause = type(exc).__name__
                self._reason = f"{self._cause}: {str(exc)[:200]}"
                self._cond.notify_all()
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not an outage
                raise
            log.warning("%s: no connection (%s); next attempt in %.1f s", self.name, self._reason, self._interval)
            raise NotConnected(self._cause, self._reason, self._interval) from exc
        with self._cond:
            self._value = value
            self._connecting = False
            self._failures = 0
            self._interval = 0.0
            self._due = self._burst_due = -math.inf
            self._cond.notify_all()
        return value

    def forget(self) -> T | None:
        """Drop the connection (the caller closes it, returned here); the next :meth:`get`
        connects again at once."""
        with self._cond:
            value, self._value = self._value, None
            self._failures, self._interval, self._due, self._burst_due = 0, 0.0, -math.inf, -math.inf
            return value

    def _next_interval(self) -> float:
        """The back-off a failure now would start."""
        if self._failures == 0:
            return self.first_s
        return min(self._interval * self.factor, self.max_s)
