"""A local Spark standalone cluster: one master and N workers, from the pip-installed pyspark.

Each daemon is ``bin/spark-class org.apache.spark.deploy.master.Master`` (or
``...deploy.worker.Worker``) started detached with a pid file under the state directory,
like Kafka and Cassandra (infra/process.py). ``spark-class`` execs the JVM, so the pid we
record is the daemon's own; ``SPARK_DAEMON_JAVA_OPTS`` carries the ``-Dtxmon.service`` /
``-Dtxmon.state`` markers by which a pid counts as ours. Ready means the master's JSON
endpoint lists every worker ALIVE.

The point is to run the *same* jobs as on one machine, unchanged, on a real cluster
manager: ``txmon spark-submit --master spark://127.0.0.1:7077 spark_jobs/transactions_stream.py``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from txmon.infra.errors import ServiceStartError
from txmon.infra.process import ManagedProcess, ensure_port_free, find_java, wait_until
from txmon.infra.services.base import ServiceStatus
from txmon.infra.settings import Settings

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
PORT_HINT = "TXMON_SPARK__CLUSTER__MASTER_PORT / ..._MASTER_WEBUI_PORT / ..._WORKER_WEBUI_PORT"


def spark_class_bin() -> str:
    """``spark-class`` of the installed pyspark (the launcher that builds the JVM command)."""
    # pyspark only where a Spark cluster is started: every txmon command imports this module.
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


@dataclass(frozen=True)
class Daemon:
    """One master or worker process and the argv that starts it."""

    name: str
    process: ManagedProcess
    argv: tuple[str, ...]
    ports: tuple[int, ...]  # ports that must be free before starting


def daemons(settings: Settings) -> list[Daemon]:
    """The master first, then the workers (start order; stop in reverse)."""
    c = settings.spark.cluster
    state = settings.state_path
    spark_class = spark_class_bin()
    out = [
        Daemon(
            "spark-master",
            ManagedProcess("spark-master", state),
            (
                spark_class,
                MASTER_CLASS,
                "--host",
                c.host,
                "--port",
                str(c.master_port),
                "--webui-port",
                str(c.master_webui_port),
            ),
            (c.master_port, c.master_webui_port),
        )
    ]
    for i in range(1, c.workers + 1):
        name = f"spark-worker-{i}"
        ui = c.worker_webui_port + i - 1
        out.append(
            Daemon(
                name,
                ManagedProcess(name, state),
                (
                    spark_class,
                    WORKER_CLASS,
                    "--host",
                    c.host,
                    "--cores",
                    str(c.worker_cores),
                    "--memory",
                    c.worker_memory,
                    "--webui-port",
                    str(ui),
                    "--work-dir",
                    str(work_dir(settings) / name),
                    c.master_url,
                ),
                (ui,),
            )
        )
    return out


def work_dir(settings: Settings) -> Path:
    return settings.state_path / "spark-cluster"


def _env(settings: Settings, daemon: Daemon) -> dict[str, str]:
    c = settings.spark.cluster
    conf_dir = work_dir(settings) / "conf"  # empty: no stray spark-defaults.conf is picked up
    local = work_dir(settings) / "local" / daemon.name
    for d in (conf_dir, local):
        d.mkdir(parents=True, exist_ok=True)
    return {
        "SPARK_DAEMON_JAVA_OPTS": f"{daemon.process.marker} -Dtxmon.state={settings.state_path} -Duser.timezone=UTC",
        "SPARK_DAEMON_MEMORY": c.daemon_memory,
        "SPARK_LOCAL_IP": c.host,
        "SPARK_LOCAL_DIRS": str(local),
        "SPARK_CONF_DIR": str(conf_dir),
        "SPARK_LOG_DIR": str(settings.state_path / "logs"),
        "PYSPARK_PYTHON": sys.executable,  # executors' Python workers: the project's interpreter
        "TZ": "UTC",
    }


def master_state(settings: Settings, timeout: float = 2.0) -> dict | None:
    """The master's JSON status page (workers, apps), or None if it does not answer."""
    c = settings.spark.cluster
    try:
        with urllib.request.urlopen(f"http://{c.host}:{c.master_webui_port}/json/", timeout=timeout) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


def alive_workers(settings: Settings) -> list[dict]:
    state = master_state(settings) or {}
    return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]


@dataclass(frozen=True)
class ClusterReport:
    master_url: str
    started: list[str]
    workers_alive: int
    ready_after_s: float


def up(settings: Settings, log=print) -> ClusterReport:
    """Start the master and workers that are not running; wait until every worker is ALIVE.

    Idempotent, like ``txmon infra up``. Raises ServiceStartError with the log tail if a
    daemon exits or the workers do not register in time; the daemons this call started
    are stopped again then, so a failed start leaves nothing holding the ports.
    """
    started: list[str] = []
    try:
        return _up(settings, log, started)
    except BaseException:
        for d in reversed(daemons(settings)):
            if d.name in started:
                d.process.stop(timeout=30)
        raise


def _up(settings: Settings, log, started: list[str]) -> ClusterReport:
    find_java()  # a clear error before spark-class prints its own
    c = settings.spark.cluster
    t0 = time.monotonic()
    for daemon in daemons(settings):
        if daemon.process.pid() is not None:
            log(f"{daemon.name}: already running (pid {daemon.process.pid()})")
            continue
        for port in daemon.ports:
            ensure_port_free(daemon.name, c.host, port, PORT_HINT)
        pid = daemon.process.start(list(daemon.argv), cwd=work_dir(settings), env=_env(settings, daemon))
        started.append(daemon.name)
        log(f"{daemon.name}: starting (pid {pid})")
        if daemon.name == "spark-master":  # workers register with a master that answers
            _wait(settings, daemon, lambda: master_state(settings) is not None, c.ready_timeout_s)
    # Not ManagedProcess.exited(): until spark-class execs the JVM the command line lacks our marker.
    dead = lambda: any(_gone(d) for d in daemons(settings))
    ok = wait_until(lambda: len(alive_workers(settings)) >= c.workers, c.ready_timeout_s, interval=1.0, abort=dead)
    if not ok:
        culprit = next((d for d in daemons(settings) if _gone(d)), daemons(settings)[-1])
        raise ServiceStartError(
            f"spark cluster not ready: {len(alive_workers(settings))} of {c.workers} workers alive after "
            f"{time.monotonic() - t0:.0f}s; log {culprit.process.log_file}:\n{culprit.process.log_tail()}"
        )
    report = ClusterReport(c.master_url, started, len(alive_workers(settings)), time.monotonic() - t0)
    log(
        f"spark cluster: {report.master_url} with {report.workers_alive} workers "
        f"(UI http://{c.host}:{c.master_webui_port}) ready after {report.ready_after_s:.1f}s"
    )
    return report


def _gone(daemon: Daemon) -> bool:
    """The launched process (spark-class, then the JVM it execs) is no longer alive."""

    try:
        pid = int(daemon.process.pid_file.read_text().strip())
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except (FileNotFoundError, ValueError, psutil.Error):
        return True


def _wait(settings: Settings, daemon: Daemon, predicate, timeout: float) -> None:
    if not wait_until(predicate, timeout, interval=0.5, abort=lambda: _gone(daemon)):
        raise ServiceStartError(
            f"{daemon.name} failed to start; log {daemon.process.log_file}:\n{daemon.process.log_tail()}"
        )


def status(settings: Settings) -> list[ServiceStatus]:
    """Pid, port and health of every daemon (a worker is healthy when the master lists it ALIVE)."""
    c = settings.spark.cluster
    state = master_state(settings)
    alive_uis = {
        w.get("webuiaddress", "").rsplit(":", 1)[-1]
        for w in (state or {}).get("workers", [])
        if w.get("state") == "ALIVE"
    }
    out = []
    for d in daemons(settings):
        pid = d.process.pid()
        port = d.ports[0]
        if pid is None:
            out.append(ServiceStatus(d.name, None, port, False, "not running"))
        elif d.name == "spark-master":
            healthy = state is not None
            out.append(
                ServiceStatus(
                    d.name,
                    pid,
                    c.master_port,
                    healthy,
                    "healthy" if healthy else "web UI not answering",
                    d.process.rss_mb(),
                )
            )
        else:
            healthy = str(port) in alive_uis
            out.append(
                ServiceStatus(
                    d.name,
                    pid,
                    port,
                    healthy,
                    "healthy" if healthy else "not registered with the master",
                    d.process.rss_mb(),
                )
            )
    return out


def down(settings: Settings, purge: bool = False, log=print) -> None:
    """Stop the workers (they take their executors with them), then the master."""
    for d in reversed(daemons(settings)):
        stopped = d.process.stop(timeout=30)
        log(f"{d.name}: {'stopped' if stopped else 'was not running'}")
    if purge:
        shutil.rmtree(work_dir(settings), ignore_errors=True)
