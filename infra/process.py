"""Background JVM processes: launch, pid files, liveness, ports, stop.

A pid file alone is not proof: pids get reused. A process counts as ours only if
it is alive *and* its command line carries the ``-Dtxmon.service=<name>`` marker
and our state directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import psutil

from txmon.infra.errors import JavaMissingError, PortInUseError

T = TypeVar("T")


def find_java() -> str:
    """Path of the ``java`` to run services with: $JAVA_HOME/bin/java, else PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise JavaMissingError(
            "java not found: install a JDK 17+ (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
        )
    return java


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listener_pid(port: int) -> int | None:
    """Pid of the process listening on ``port`` (None if unknown or not visible)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except (psutil.AccessDenied, PermissionError):
        return None
    return None


def ensure_port_free(service: str, host: str, port: int, env_hint: str) -> None:
    """Fail fast, with the fix, when another process holds a port we need."""
    if port_open(host, port):
        pid = listener_pid(port)
        who = f" by pid {pid} ({_cmd_summary(pid)})" if pid else ""
        raise PortInUseError(
            f"{service}: port {host}:{port} is already in use{who}; stop that process "
            f"or choose another port with {env_hint}"
        )


def _cmd_summary(pid: int) -> str:
    try:
        cmd = psutil.Process(pid).cmdline()
    except psutil.Error:
        return "unknown"
    return " ".join(cmd)[:80]


@dataclass(frozen=True)
class ManagedProcess:
    """One service process owned by a state directory."""

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.out"

    @property
    def marker(self) -> str:
        return f"-Dtxmon.service={self.name}"

    def pid(self) -> int | None:
        """Pid of our live process, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return pid if self.owns(proc) else None
        except psutil.Error:
            return None

    def owns(self, proc: psutil.Process) -> bool:
        """Is this live process ours (not a stranger that reused the pid)? Java services
        carry ``-Dtxmon.service`` and ``-Dtxmon.state`` flags on their command line."""
        cmd = proc.cmdline()
        return self.marker in cmd and f"-Dtxmon.state={self.state_dir}" in cmd

    def start(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
        """Launch detached (own session) with output to the log file; write the pid file.

        ``env`` adds to (never replaces) this process's environment.
        """
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={**os.environ, **env} if env else None,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def exited(self) -> bool:
        return self.pid() is None

    def stop(self, timeout: float = 45.0) -> bool:
        """SIGTERM, wait, then SIGKILL. Returns True if a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        self.pid_file.unlink(missing_ok=True)
        return True

    def rss_mb(self) -> float | None:
        pid = self.pid()
        if pid is None:
            return None
        try:
            return psutil.Process(pid).memory_info().rss / 2**20
        except psutil.Error:
            return None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.5, abort: Callable[[], object] | None = None
) -> T | Literal[False]:
    """Poll ``predicate`` every ``interval`` seconds until it returns a true value, and
    return that value (so a wait can hand back what it waited for); after ``timeout``,
    its last answer. Stop early, returning False, when ``abort()`` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        if abort is not None and abort():
            return False
        time.sleep(interval)
    return predicate()
