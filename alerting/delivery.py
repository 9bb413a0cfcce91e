"""Delivering one message exactly as the delivery log allows: idempotent, retried with
exponential backoff (tenacity), every attempt recorded before and after it is made.

Per (delivery id, channel, recipient key) the log goes through::

    sending -> sent                        (accepted by the provider)
    sending -> retrying -> sending -> ...  (transient error, backoff)
    ... -> deferred -> sending -> ...      (tries used up or circuit open: parked in the
                                            dispatcher, handed back when the channel is back)
    ... -> failed                          (permanent error, or parking's bounds reached)

A delivery whose latest status is ``sent``, ``folded`` or ``no_recipient`` is never
sent again; ``failed`` ones are left to :func:`alerting.retry.retry_failed_deliveries`.
A latest status of ``sending`` means the process died mid-send: the provider may or
may not have the message ("in doubt"); see ``dispatcher.in_doubt``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Protocol

from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, stop_any, wait_exponential

from txmon.alerting.channels.base import Channel, OutboundMessage, Receipt, Recipient
from txmon.alerting.circuit import Breakers, State
from txmon.alerting.config import CircuitConfig, RetryConfig
from txmon.alerting.errors import ChannelError
from txmon.alerting.store import Attempt, Failure

if TYPE_CHECKING:
    from txmon.alerting.render import Rendered

log = logging.getLogger("txmon.alerting")

DONE = frozenset({"sent", "folded", "no_recipient"})
"""Latest statuses after which a delivery is never attempted again."""
DEFERRED = "deferred"
"""Latest status of a delivery parked in the dispatcher until its channel is back."""


class DeliveryLog(Protocol):
    def latest_attempt(self, delivery_id: uuid.UUID, channel: str, recipient_key: str) -> tuple[int, str] | None: ...
    def record_attempt(self, attempt: Attempt) -> None: ...
    def add_failure(self, failure: Failure) -> None: ...
    def remove_failure(self, day: date, delivery_id: uuid.UUID, channel: str, recipient_key: str) -> None: ...


@dataclass(frozen=True)
class Job:
    """One message to one recipient. ``day`` is the failures-table partition for
    retry-failed (None: the caller retries it itself, e.g. follow-ups and digests)."""

    delivery_id: uuid.UUID
    kind: str
    route: str
    day: date | None
    message: OutboundMessage

    @property
    def recipient(self) -> Recipient:
        return self.message.recipient


@dataclass(frozen=True)
class Outcome:
    status: str  # sent | done (already delivered earlier) | failed | pending (failed earlier; not retried here)
    #              | deferred (transient failure, to be handed back by the caller's RetryQueue)
    attempts: int = 0
    response: str = ""


def idempotency_key(delivery_id: uuid.UUID, recipient: Recipient) -> str:
    """``<delivery id>.<channel>.<recipient key>``: Message-ID and Idempotency-Key."""
    return f"{delivery_id}.{recipient.channel}.{recipient.key}"


def build_message(delivery_id: uuid.UUID, kind: str, recipient: Recipient, rendered: Rendered) -> OutboundMessage:
    return OutboundMessage(
        idempotency_key(delivery_id, recipient),
        recipient,
        rendered.subject,
        rendered.text,
        rendered.html,
        headers=(("X-Txmon-Alert-Id", str(delivery_id)), ("X-Txmon-Kind", kind)),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


class _CircuitOpen(ChannelError):
    """Raised instead of sending while the channel's circuit is open: not retried here."""

    def __init__(self, channel: str) -> None:
        super().__init__(f"not attempted: {channel} circuit open after repeated failures", transient=True)


def _send(channel: Channel, message: OutboundMessage) -> Receipt:
    """``channel.send``, with anything but a ChannelError made a permanent one.

    Channels classify what providers do; an exception of another type is a case nobody
    classified (a reply or an address no one foresaw). It fails this delivery, which
    goes to retry-failed, instead of escaping into the dispatcher and stopping the other
    alerts. Only the exception's type is kept: its text may quote the address."""
    try:
        return channel.send(message)
    except ChannelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other type is one nobody classified: see above
        log.error(
            "%s channel raised %s sending to %s: recorded as failed",
            channel.name,
            type(exc).__name__,
            message.recipient.masked,
        )
        raise ChannelError(
            f"{channel.name} channel failed unexpectedly ({type(exc).__name__})", transient=False
        ) from None


class Deliverer:
    """Sends jobs through the channels, keeping the delivery log. Thread-safe.

    Every send asks the channel's circuit breaker first (alerting/circuit.py) and tells
    it the answer, so a provider that is down opens the circuit for all deliveries on
    that channel and one probe finds out when it is back."""

    def __init__(
        self,
        channels: dict[str, Channel],
        log_store: DeliveryLog,
        retry: RetryConfig,
        *,
        circuit: CircuitConfig | None = None,
        in_doubt: str = "resend",
        now: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channels, self.store, self.retry = channels, log_store, retry
        self.in_doubt, self.now, self.sleep, self.monotonic = in_doubt, now, sleep, monotonic
        self.breakers = Breakers(circuit or CircuitConfig(), monotonic)

    # ---------------------------------------------------------------- records
    def _record(
        self,
        job_or_id: Job | uuid.UUID,
        recipient: Recipient,
        attempt: int,
        status: str,
        response: str,
        kind: str = "alert",
        route: str = "",
    ) -> None:
        if isinstance(job_or_id, Job):
            delivery_id, kind, route = job_or_id.delivery_id, job_or_id.kind, job_or_id.route
        else:
            delivery_id = job_or_id
        self.store.record_attempt(
            Attempt(
                delivery_id,
                recipient.channel,
                recipient.key,
                attempt,
                kind,
                route,
                recipient.masked,
                status,
                response[:1000],
                self.now(),
            )
        )

    def state(self, delivery_id: uuid.UUID, recipient: Recipient) -> tuple[int, str] | None:
        return self.store.latest_attempt(delivery_id, recipient.channel, recipient.key)

    def mark(
        self,
        delivery_id: uuid.UUID,
        recipient: Recipient,
        status: str,
        response: str,
        *,
        kind: str = "alert",
        route: str = "",
    ) -> bool:
        """Record a terminal non-send outcome (folded, no_recipient) unless one is there.
        Returns False when the delivery was already done."""
        state = self.state(delivery_id, recipient)
        if state is not None and state[1] in DONE:
            return False
        self._record(delivery_id, recipient, (state[0] + 1) if state else 1, status, response, kind, route)
        return True

    # ---------------------------------------------------------------- deliver
    def deliver(self, job: Job, *, retry_failed: bool = False, defer: bool = False) -> Outcome:
        """Send unless the log says it is done; retry transient errors with backoff;
        record every attempt. Errors from the log itself (Cassandra) propagate.

        With ``defer``, a transient failure that outlasts the backoff (or an open
        circuit) is recorded ``deferred`` instead of ``failed``: the caller parks the job
        and hands it back later (alerting.retry.RetryQueue)."""
        recipient = job.recipient
        state = self.state(job.delivery_id, recipient)
        last = state[0] if state else 0
        if state is not None:
            status = state[1]
            if status in DONE:
                return Outcome("done", 0)
            if status == "failed" and not retry_failed:
                return Outcome("pending", 0)
            if status == "sending":
                log.warning(
                    "%s %s to %s was in flight when the dispatcher stopped: in doubt, %s",
                    job.kind,
                    job.delivery_id,
                    recipient.masked,
                    "sending again with the same message id" if self.in_doubt == "resend" else "assumed sent",
                )
                if self.in_doubt == "skip":
                    self._record(
                        job, recipient, last + 1, "sent", "in doubt after a crash; assumed sent (in_doubt=skip)"
                    )
                    return Outcome("sent", 0, "assumed")
        channel = self.channels[recipient.channel]
        breaker = self.breakers[recipient.channel]

        attempts = 0
        retrying = Retrying(
            # Stop early once the circuit is open: waiting out the backoff would only meet it.
            # tenacity calls any callable(retry_state) as a stop; its stubs only name stop_base.
            stop=stop_any(stop_after_attempt(self.retry.attempts), lambda _: breaker.state is not State.CLOSED),  # type: ignore[arg-type]
            wait=wait_exponential(
                multiplier=self.retry.initial_s, exp_base=self.retry.multiplier, max=self.retry.max_s
            ),
            retry=retry_if_exception(
                lambda e: isinstance(e, ChannelError) and e.transient and not isinstance(e, _CircuitOpen)
            ),
            sleep=self.sleep,
        )
        try:
            for trial in retrying:
                with trial:
                    if not breaker.acquire():
                        raise _CircuitOpen(recipient.channel)
                    attempts += 1
                    number = last + attempts
                    try:
                        self._record(job, recipient, number, "sending", "")
                        receipt = _send(channel, job.message)
                    except ChannelError as exc:
                        breaker.failed() if exc.transient else breaker.succeeded()
                        self._record(job, recipient, number, "retrying" if exc.transient else "failed", exc.response)
                        log.info(
                            "%s %s via %s to %s: attempt %d failed (%s)",
                            job.kind,
                            job.delivery_id,
                            recipient.channel,
                            recipient.masked,
                            attempts,
                            exc.response,
                        )
                        raise
                    except BaseException:
                        breaker.abandon()
                        raise
                    breaker.succeeded()
                    self._record(job, recipient, number, "sent", receipt.response)
        except (ChannelError, RetryError) as exc:
            error = exc.last_attempt.exception() if isinstance(exc, RetryError) else exc
            assert isinstance(error, ChannelError)
            number = last + attempts if attempts else last + 1  # overwrite the last 'retrying' row
            if error.transient and defer:
                self._record(job, recipient, number, DEFERRED, error.response)
                log.info(
                    "%s %s via %s to %s deferred after %d attempt(s) (%s): parked until the channel is back",
                    job.kind,
                    job.delivery_id,
                    recipient.channel,
                    recipient.masked,
                    attempts,
                    error.response,
                )
                return Outcome(DEFERRED, attempts, error.response)
            self._record(job, recipient, number, "failed", error.response)
            self._fail(job, error.response)
            log.warning(
                "%s %s via %s to %s FAILED after %d attempt(s): %s",
                job.kind,
                job.delivery_id,
                recipient.channel,
                recipient.masked,
                attempts,
                error,
            )
            return Outcome("failed", attempts, error.response)
        if retry_failed and job.day is not None:
            self.store.remove_failure(job.day, job.delivery_id, recipient.channel, recipient.key)
        log.info(
            "%s %s via %s to %s: sent (attempt %d) %s",
            job.kind,
            job.delivery_id,
            recipient.channel,
            recipient.masked,
            attempts,
            receipt.response,
        )
        return Outcome("sent", attempts, receipt.response)

    def give_up(self, job: Job, why: str) -> Outcome:
        """End a deferred delivery as ``failed`` (and queue it for retry-failed), unless
        the log shows it done meanwhile."""
        state = self.state(job.delivery_id, job.recipient)
        if state is not None and state[1] in DONE:
            return Outcome("done", 0)
        self._record(job, job.recipient, (state[0] + 1) if state else 1, "failed", why)
        self._fail(job, why)
        log.warning(
            "%s %s via %s to %s FAILED: %s; left to `txmon alerts retry-failed`",
            job.kind,
            job.delivery_id,
            job.recipient.channel,
            job.recipient.masked,
            why,
        )
        return Outcome("failed", 0, why)

    def _fail(self, job: Job, response: str) -> None:
        if job.day is not None:
            self.store.add_failure(
                Failure(
                    job.day,
                    job.delivery_id,
                    job.recipient.channel,
                    job.recipient.key,
                    job.kind,
                    job.recipient.masked,
                    response[:1000],
                    self.now(),
                )
            )
