"""Every error txmon raises on purpose, in one place.

Each message says what went wrong *and what to do about it*; the command line prints
the message as one line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class TxmonError(Exception):
    """Base class: a problem the user can fix. The message names the fix."""


class ConfigError(TxmonError):
    """Configuration file or environment variable is invalid."""


class YamlError(ConfigError):
    """A YAML file's text cannot be read as plain data. The message is a clause that
    follows the file's name; each loader raises its own error class with it."""


class JavaMissingError(TxmonError):
    """No usable `java` on PATH (or in JAVA_HOME)."""


class JarsMissingError(TxmonError):
    """The JVM artifacts have not been fetched from Maven Central yet."""


class PortInUseError(TxmonError):
    """A port a service needs is taken by another process."""


class ServiceStartError(TxmonError):
    """A service process died or never became ready."""


class ServiceNotRunningError(TxmonError):
    """An operation needs a service that is not running."""


class StreamLockedError(TxmonError):
    """Another stream holds the checkpoint this one was asked to use."""


class StreamRecoveryError(TxmonError):
    """The stream's queries kept failing for longer than its recovery allows."""


class StreamSupervisionError(TxmonError):
    """``txmon stream --supervise`` gave up restarting a stream that keeps dying."""


class EventValidationError(TxmonError):
    """A transaction event does not satisfy the event contract.

    ``reason`` is a short machine-readable code (e.g. ``missing_field``) used as the
    dead-letter reason; the message carries the human detail.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class AirflowApiError(TxmonError):
    """Airflow's REST API refused a request (unknown DAG, bad conf, ...)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
