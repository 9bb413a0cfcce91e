"""Errors the alerting package raises on purpose; each message names the fix.

They all derive from :class:`infra.errors.TxmonError`, so the command line prints
them as one line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

from txmon.infra.errors import TxmonError


class AlertContractError(TxmonError):
    """An alert message does not satisfy the alert contract (alerting/contract.py)."""


class AlertingConfigError(TxmonError):
    """config/alerting.yaml (or a TXMON_ALERTING__* variable) is invalid."""


class SecretMissingError(TxmonError):
    """A credential the configuration points at is not in the environment."""


class ChannelError(TxmonError):
    """A channel could not deliver a message.

    ``transient`` errors (connection refused, timeouts, 5xx, 4xx SMTP replies) are
    retried with backoff; permanent ones (bad recipient, 4xx from the SMS gateway)
    are recorded as failed at once. ``response`` is what the provider said, kept in
    the delivery log (never containing an unmasked identifier).
    """

    def __init__(self, message: str, *, transient: bool, response: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.response = response or message


class AlertStoreUnavailableError(TxmonError):
    """Cassandra is unreachable or lacks the alerting tables."""
