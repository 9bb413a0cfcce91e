"""What every locally managed service offers to `txmon infra`."""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from txmon.infra.errors import ServiceStartError
from txmon.infra.process import ManagedProcess, ensure_port_free, find_java, wait_until
from txmon.infra.settings import Settings


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    port: int
    healthy: bool
    detail: str
    rss_mb: float | None = None


class Service(ABC):
    """A JVM service started from Maven jars, owned by one state directory."""

    name: str
    port_env_hint: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess(self.name, settings.state_path)

    @property
    def home(self) -> Path:
        return self.settings.state_path / self.name

    @property
    @abstractmethod
    def ports(self) -> list[int]: ...

    @property
    @abstractmethod
    def host(self) -> str: ...

    @abstractmethod
    def prepare(self) -> None:
        """Write config files and initialise storage (idempotent)."""

    @abstractmethod
    def command(self, java: str) -> list[str]: ...

    @abstractmethod
    def probe(self) -> str | None:
        """None when the service answers its protocol; otherwise why not."""

    def ready_probe(self) -> str | None:
        """None when the service is far enough up for :meth:`bootstrap` (default: healthy)."""
        return self.probe()

    @abstractmethod
    def bootstrap(self) -> None:
        """Create what the pipeline needs (topics / schema); idempotent."""

    def start(self) -> bool:
        """Start unless already running. Returns True if a process was launched."""
        if self.process.pid() is not None:
            return False
        java = find_java()
        for port in self.ports:
            ensure_port_free(self.name, self.host, port, self.port_env_hint)
        self.prepare()
        self.process.start(self.command(java), cwd=self.home)
        return True

    def wait_ready(self, timeout: float) -> float:
        """Block until the service answers; returns seconds waited."""
        t0 = time.monotonic()
        ok = wait_until(lambda: self.ready_probe() is None, timeout, interval=1.0, abort=self.process.exited)
        if not ok:
            why = "process exited" if self.process.exited() else f"not ready after {timeout:.0f}s"
            raise ServiceStartError(
                f"{self.name} failed to start ({why}); log {self.process.log_file}:\n{self.process.log_tail()}"
            )
        return time.monotonic() - t0

    def status(self) -> ServiceStatus:
        pid = self.process.pid()
        port = self.ports[0]
        if pid is None:
            return ServiceStatus(self.name, None, port, False, "not running")
        problem = self.probe()
        return ServiceStatus(self.name, pid, port, problem is None, problem or "healthy", self.process.rss_mb())

    def stop(self) -> bool:
        return self.process.stop()

    def purge(self) -> None:
        """Delete the service's data, config and logs (process must be stopped)."""
        shutil.rmtree(self.home, ignore_errors=True)
        self.process.log_file.unlink(missing_ok=True)
