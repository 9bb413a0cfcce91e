"""No alert storm: at most one message per (account, rule, channel, recipient) per window.

The first alert for a key is sent and opens a window of ``throttle.window_s``. Later
alerts for the same key inside the window are *folded*: recorded, not sent. When the
window closes with folded alerts, one follow-up summarises them all and opens the next
window; a window that closes with nothing folded is forgotten. The rule of an alert
is its primary reason (largest contribution).

Windows and folds live in Cassandra (``alert_throttle``, ``alert_folds``), one scope
per Kafka partition of the dispatcher's group, so a restart or a rebalance picks up
exactly the windows of the partitions it now owns. Windows run on the dispatcher's
clock (injected, so tests drive it).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from txmon.alerting.channels.base import Recipient
from txmon.alerting.config import ThrottleConfig
from txmon.alerting.contract import ALERT_ID_NAMESPACE, Alert
from txmon.alerting.store import WindowRow

Verdict = Literal["send", "fold"]


class ThrottleStore(Protocol):
    def load_windows(self, scope: str) -> list[WindowRow]: ...
    def save_window(self, scope: str, w: WindowRow) -> None: ...
    def delete_window(self, scope: str, throttle_key: str) -> None: ...
    def load_folds(self, scope: str) -> list[tuple[str, uuid.UUID, datetime]]: ...
    def add_fold(
        self, scope: str, throttle_key: str, alert_id: uuid.UUID, window_start: datetime, at: datetime
    ) -> None: ...
    def delete_folds(self, scope: str, throttle_key: str, alert_ids: list[uuid.UUID]) -> None: ...


def throttle_key(account: str, rule: str, channel: str, recipient_key: str) -> str:
    """Hash of the key parts; ``account`` is the alert's ``payer_ref``, which the hash keeps
    out of the table too.

    >>> throttle_key("123456789012", "AMOUNT_SPIKE", "sms", "ab12") == throttle_key("123456789012", "AMOUNT_SPIKE", "sms", "ab12")
    True
    >>> len(throttle_key("123456789012", "AMOUNT_SPIKE", "sms", "ab12"))
    32
    """
    return hashlib.sha256(f"{account}|{rule}|{channel}|{recipient_key}".encode()).hexdigest()[:32]


@dataclass
class Window:
    scope: str
    row: WindowRow
    folded: set[uuid.UUID] = field(default_factory=set)
    recipient: Recipient | None = None  # known when opened in this process; else resolved at flush
    route: str = ""
    retry_at: datetime | None = None  # a failed follow-up is tried again from then on

    @property
    def key(self) -> str:
        return self.row.throttle_key

    @property
    def followup_id(self) -> uuid.UUID:
        """Deterministic id of this window's follow-up: a resend after a crash is recognised."""
        start = self.row.window_start.isoformat(timespec="milliseconds")
        return uuid.uuid5(ALERT_ID_NAMESPACE, f"followup:{self.scope}:{self.key}:{start}")


class Throttle:
    """Throttle windows of the scopes (partitions) this dispatcher owns. Thread-safe."""

    def __init__(self, store: ThrottleStore, config: ThrottleConfig, now: Callable[[], datetime]) -> None:
        self.store, self.config, self.now = store, config, now
        self.window = timedelta(seconds=config.window_s)
        self._windows: dict[tuple[str, str], Window] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------- ownership
    def load(self, scope: str) -> None:
        """Take over a scope: its windows and folds from the store. Folds older than
        their window were already summarised (a crash hit between follow-up and
        clean-up) and are removed."""
        rows = {w.throttle_key: w for w in self.store.load_windows(scope)}
        stale: dict[str, list[uuid.UUID]] = {}
        with self._lock:
            for key, row in rows.items():
                self._windows[(scope, key)] = Window(scope, row)
            for key, alert_id, window_start in self.store.load_folds(scope):
                window = self._windows.get((scope, key))
                if window is None or window_start < window.row.window_start:
                    stale.setdefault(key, []).append(alert_id)
                else:
                    window.folded.add(alert_id)
        for key, ids in stale.items():
            self.store.delete_folds(scope, key, ids)

    def forget(self, scope: str) -> None:
        with self._lock:
            for k in [k for k in self._windows if k[0] == scope]:
                del self._windows[k]

    def scopes(self) -> set[str]:
        with self._lock:
            return {s for s, _ in self._windows}

    # --------------------------------------------------------------- verdicts
    def admit(self, scope: str, alert: Alert, recipient: Recipient, route: str) -> tuple[Verdict, Window | None]:
        """Send this alert to this recipient now, or fold it into the open window."""
        if not self.config.enabled:
            return "send", None
        rule = alert.primary_reason.code
        key = throttle_key(alert.payer_ref, rule, recipient.channel, recipient.key)
        now = self.now()
        with self._lock:
            window = self._windows.get((scope, key))
            if window is not None and window.row.lead_alert_id == alert.alert_id:
                return "send", window  # the window's own first alert, replayed after a crash
            if window is None or (now >= window.row.window_end and not window.folded):
                row = WindowRow(key, now, now + self.window, alert.alert_id, recipient.channel, recipient.key, rule)
                self.store.save_window(scope, row)
                window = Window(scope, row, recipient=recipient, route=route)
                self._windows[(scope, key)] = window
                return "send", window
            self.store.add_fold(scope, key, alert.alert_id, window.row.window_start, now)
            window.folded.add(alert.alert_id)
            if window.recipient is None:
                window.recipient, window.route = recipient, route
            return "fold", window

    def due(self) -> list[Window]:
        """Closed windows with folded alerts, whose follow-up is to be sent now."""
        now = self.now()
        with self._lock:
            return [
                w
                for w in self._windows.values()
                if w.folded and now >= w.row.window_end and (w.retry_at is None or now >= w.retry_at)
            ]

    def followup_sent(self, window: Window, folded: set[uuid.UUID]) -> None:
        """The follow-up for ``folded`` went out: open the next window, drop the folds."""
        now = self.now()
        with self._lock:
            window.row = WindowRow(
                window.key,
                now,
                now + self.window,
                window.followup_id,
                window.row.channel,
                window.row.recipient_key,
                window.row.rule_code,
            )
            window.folded -= folded
            window.retry_at = None
            self.store.save_window(window.scope, window.row)
        self.store.delete_folds(window.scope, window.key, sorted(folded))

    def followup_failed(self, window: Window, retry_after_s: float) -> None:
        with self._lock:
            window.retry_at = self.now() + timedelta(seconds=max(retry_after_s, 1.0))

    def sweep(self) -> int:
        """Forget windows that closed with nothing folded; returns how many."""
        now = self.now()
        with self._lock:
            idle = [w for w in self._windows.values() if not w.folded and now >= w.row.window_end]
            for w in idle:
                del self._windows[(w.scope, w.key)]
        for w in idle:
            self.store.delete_window(w.scope, w.key)
        return len(idle)
