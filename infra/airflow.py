"""The project's own local Airflow: set-up, start/stop, login, and triggering DAG runs.

``txmon airflow up`` keeps everything below ``<state_dir>/airflow`` (AIRFLOW_HOME):
Airflow's generated ``airflow.cfg`` (its own random secrets), the SQLite metadata DB,
task logs and the simple auth manager's generated password file. Everything txmon
decides is passed as ``AIRFLOW__*`` environment variables built by :func:`airflow_env`
(DAG folder ``dags/``, no examples, ports, connections), so nothing is edited in the
generated file and a change of config/txmon.yaml applies at the next start.

DAG files are named ``<dag_id>_dag.py``: Airflow puts ``dags/`` first on the import path
of every task process, so a DAG file named like a package (``ingestion.py``) would hide
that package from the tasks (tests/unit/test_dags.py keeps it so).

Connections (Kafka, Cassandra, Spark, SMTP, SMS) are ``AIRFLOW_CONN_*`` variables made
from the project's configuration; the SMTP password and SMS token are copied from the
environment variables config/alerting.yaml names, never written to disk.

Code elsewhere (the drift monitor) calls :func:`trigger_dag` / :func:`on_drift_event`,
which speak to Airflow 3's REST API (``/api/v2``) with a JWT from ``/auth/token``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from txmon.alerting.config import load_alerting_config
from txmon.infra.errors import AirflowApiError, ServiceNotRunningError, ServiceStartError
from txmon.infra.process import ManagedProcess, ensure_port_free, wait_until
from txmon.infra.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from txmon.models.drift import DriftEvent

DAGS_FOLDER = PROJECT_ROOT / "dags"
MARKER_ENV = "TXMON_PROCESS"
"""Environment variable that marks a process (and its children) as started by txmon
for one state directory: pids are reused, so a pid file alone proves nothing."""
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
RETRAINING_DAG = "model_retraining"


# ------------------------------------------------------------------ processes


@dataclass(frozen=True)
class DetachedCommand(ManagedProcess):
    """A non-JVM background command (Airflow, a spark-submit wrapper) with a pid file.

    Like :class:`~infra.process.ManagedProcess`, but ownership is proven by the
    :data:`MARKER_ENV` environment variable instead of ``-D`` flags on a java command
    line. The command gets its own process group, and :meth:`stop` signals the whole
    group, so children (Airflow's scheduler, api-server, task runners; Spark's JVM and
    Python workers) go with it.
    """

    @property
    def marker_value(self) -> str:
        return f"{self.name}@{self.state_dir}"

    def owns(self, proc: psutil.Process) -> bool:
        return proc.environ().get(MARKER_ENV) == self.marker_value

    def start_with_env(self, argv: list[str], cwd: Path, env: dict[str, str]) -> int:
        """Start detached with ``env`` (plus the ownership marker); write the pid file."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**env, MARKER_ENV: self.marker_value},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid_file.write_text(str(proc.pid))
        # Until the child has exec'd, /proc shows the parent's environment (no marker):
        # wait for it, so pid() right after a start is reliable.
        wait_until(lambda: self.pid() is not None or proc.poll() is not None, timeout=10, interval=0.02)
        return proc.pid

    def stop(self, timeout: float = 45.0, first_signal: int = signal.SIGTERM) -> bool:
        """``first_signal`` to the leader, SIGTERM to the rest of its process group after
        a third of ``timeout``, SIGKILL to whatever is left at the end."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        group = _group_members(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first_signal)
        _, alive = psutil.wait_procs(group, timeout=timeout / 3)
        for proc in alive:
            _signal(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs(alive, timeout=timeout * 2 / 3)
        for proc in alive:
            _signal(proc, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)
        self.pid_file.unlink(missing_ok=True)
        return True


def _group_members(pid: int) -> list[psutil.Process]:
    """The leader and every process in its process group (children that re-parented
    included), found by pgid rather than by name."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return []
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


def airflow_process(settings: Settings) -> DetachedCommand:
    return DetachedCommand("airflow", settings.state_path)


# ------------------------------------------------------------------ configuration


def connections(settings: Settings) -> dict[str, dict[str, Any]]:
    """Airflow connections (id -> JSON form) from the project's configuration.

    Secrets come from the environment variables config/alerting.yaml names; a secret
    that is not set is left out (the connection still describes the endpoint).
    """
    alerting = load_alerting_config()
    smtp: dict[str, Any] = {
        "conn_type": "smtp",
        "host": alerting.smtp.host,
        "port": alerting.smtp.port,
        "extra": {
            "from_email": alerting.smtp.from_address,
            "disable_ssl": alerting.smtp.security != "ssl",
            "disable_tls": alerting.smtp.security != "starttls",
            "timeout": alerting.smtp.timeout_s,
        },
    }
    if alerting.smtp.username:
        smtp["login"] = alerting.smtp.username
        if alerting.smtp.password_env and os.environ.get(alerting.smtp.password_env):
            smtp["password"] = os.environ[alerting.smtp.password_env]
    sms_url = urllib.parse.urlsplit(alerting.sms.base_url)
    sms: dict[str, Any] = {
        "conn_type": "http",
        "host": sms_url.hostname,
        "schema": sms_url.scheme,
        "login": alerting.sms.account_sid,
        "extra": {"from_number": alerting.sms.from_number},
    }
    if sms_url.port:
        sms["port"] = sms_url.port
    if os.environ.get(alerting.sms.token_env):
        sms["password"] = os.environ[alerting.sms.token_env]
    return {
        "txmon_kafka": {
            "conn_type": "generic",
            "host": settings.kafka.host,
            "port": settings.kafka.port,
            "extra": {"bootstrap.servers": settings.kafka.bootstrap, "topics": settings.kafka.topics.model_dump()},
        },
        "txmon_cassandra": {
            "conn_type": "generic",
            "host": settings.cassandra.host,
            "port": settings.cassandra.port,
            "schema": settings.cassandra.keyspace,
        },
        "txmon_spark": {
            "conn_type": "generic",
            "host": settings.spark.master,
            "extra": {"deploy_mode": "client", "spark_submit": f"{_txmon_bin()} spark-submit"},
        },
        "txmon_smtp": smtp,
        "txmon_sms": sms,
    }


def _txmon_bin() -> str:
    return str(Path(sys.executable).with_name("txmon"))


def airflow_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment Airflow runs with: ``base`` (default: this process's) plus
    AIRFLOW_HOME, txmon's ``AIRFLOW__*`` settings and ``AIRFLOW_CONN_*`` connections.

    The venv's bin directory goes first on PATH: tasks run ``txmon`` and ``airflow``.
    """
    env = dict(os.environ if base is None else base)
    home = settings.airflow_home
    af = settings.airflow
    url = af.url
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",  # 2-core machine: a few tasks at a time
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{af.admin_user}:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": af.host,
            "AIRFLOW__API__PORT": str(af.port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # Every TXMON_* setting of this process travels with it, so tasks see the same
            # state dir, ports and keyspace as the command that started Airflow.
            "TXMON_STATE_DIR": str(settings.state_path),
        }
    )
    for conn_id, conn in connections(settings).items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    return env


def write_env_file(settings: Settings, env: dict[str, str]) -> Path:
    """``<AIRFLOW_HOME>/txmon-airflow.env``: the non-secret settings as shell exports, so
    an operator can ``source`` it and use the plain ``airflow`` command on this home."""
    path = settings.airflow_home / "txmon-airflow.env"
    keys = sorted(k for k in env if k == "AIRFLOW_HOME" or k.startswith("AIRFLOW__"))
    lines = ["# Written by `txmon airflow up`; source it to use `airflow ...` on this AIRFLOW_HOME."]
    lines += [f"export {k}={_shell_quote(env[k])}" for k in keys]
    path.write_text("\n".join(lines) + "\n")
    return path


def _shell_quote(value: str) -> str:
    return shlex.quote(value)


# ------------------------------------------------------------------ up / down / status


@dataclass(frozen=True)
class Login:
    url: str
    user: str
    password: str | None
    password_file: Path

    def line(self) -> str:
        where = (
            f"password: {self.password} (generated, kept in {self.password_file})"
            if self.password
            else f"password: not generated yet; it will be in {self.password_file}"
        )
        return f"Airflow UI {self.url}  user: {self.user}  {where}"


@dataclass(frozen=True)
class AirflowStatus:
    pid: int | None
    url: str
    healthy: bool
    detail: str
    rss_mb: float | None = None


def login(settings: Settings) -> Login:
    """Where to log in and with what: the simple auth manager generates the password
    on first start and keeps it (plain text, mode 0600) in AIRFLOW_HOME."""
    path = settings.airflow_home / PASSWORD_FILE
    password = None
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        password = json.loads(path.read_text()).get(settings.airflow.admin_user)
    return Login(settings.airflow.url, settings.airflow.admin_user, password, path)


def _all_admins() -> bool:
    """Airflow runs without login (``[core] simple_auth_manager_all_admins``), e.g. for a
    docs screenshot; txmon never turns it on itself."""
    return os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true"


def health(settings: Settings) -> dict[str, Any] | None:
    """``/api/v2/monitor/health`` as JSON, or None if the API server does not answer."""
    try:
        with urllib.request.urlopen(f"{settings.airflow.url}/api/v2/monitor/health", timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def _healthy(report: dict[str, Any] | None) -> tuple[bool, str]:
    if report is None:
        return False, "API server not answering"
    bad = [
        name
        for name in ("metadatabase", "scheduler", "dag_processor", "triggerer")
        if (report.get(name) or {}).get("status") != "healthy"
    ]
    return (not bad), ("healthy" if not bad else "not healthy: " + ", ".join(bad))


def status(settings: Settings) -> AirflowStatus:
    proc = airflow_process(settings)
    pid = proc.pid()
    if pid is None:
        return AirflowStatus(None, settings.airflow.url, False, "not running")
    ok, detail = _healthy(health(settings))
    return AirflowStatus(pid, settings.airflow.url, ok, detail, _tree_rss_mb(pid))


def reachable(settings: Settings) -> bool:
    """Is there an Airflow to tell? The project's own runs (its pid file names a live
    process of this state dir), or TXMON_AIRFLOW_PASSWORD (or no-login mode) says one runs
    elsewhere. Without either, a drift event has nobody to trigger: it is only recorded."""
    return (
        airflow_process(settings).pid() is not None or bool(os.environ.get("TXMON_AIRFLOW_PASSWORD")) or _all_admins()
    )


def _tree_rss_mb(pid: int) -> float | None:
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return None


def up(settings: Settings, log: Callable[[str], None] = print) -> tuple[AirflowStatus, Login, float]:
    """Start Airflow's components in the background (if not running; see
    :mod:`txmon.infra.airflow_components`) and wait until the API server, scheduler, DAG
    processor and triggerer report healthy and the login exists. Returns (status, login,
    seconds waited). Idempotent."""
    proc = airflow_process(settings)
    started = time.monotonic()
    home = settings.airflow_home
    if proc.pid() is None:
        ensure_port_free("airflow", settings.airflow.host, settings.airflow.port, "TXMON_AIRFLOW__PORT")
        home.mkdir(parents=True, exist_ok=True)
        env = airflow_env(settings)
        write_env_file(settings, env)
        pid = proc.start_with_env([sys.executable, "-m", "txmon.infra.airflow_components"], cwd=PROJECT_ROOT, env=env)
        log(
            f"airflow: starting scheduler, DAG processor, triggerer and API server (pid {pid}), "
            f"AIRFLOW_HOME={home}, log {proc.log_file}"
        )
    else:
        log(f"airflow: already running (pid {proc.pid()})")

    def ready() -> bool:
        return _healthy(health(settings))[0] and (_all_admins() or login(settings).password is not None)

    if not wait_until(ready, settings.airflow.ready_timeout_s, interval=2, abort=proc.exited):
        detail = "exited" if proc.exited() else f"not ready after {settings.airflow.ready_timeout_s:.0f}s"
        raise ServiceStartError(
            f"airflow {detail}; see {proc.log_file}:\n{proc.log_tail()}\n"
            "fix the cause, then `txmon airflow down` and `txmon airflow up` again"
        )
    waited = time.monotonic() - started
    return status(settings), login(settings), waited


def down(settings: Settings, log: Callable[[str], None] = print) -> bool:
    """Stop Airflow and all its components. The components' parent shuts them down on
    SIGINT; anything left in its process group is terminated after that."""
    stopped = airflow_process(settings).stop(timeout=60, first_signal=signal.SIGINT)
    log(f"airflow: {'stopped' if stopped else 'was not running'}")
    return stopped


# ------------------------------------------------------------------ REST API


class AirflowClient:
    """Minimal client of Airflow 3's public REST API, authenticated with a JWT from
    ``POST /auth/token`` (user and generated password of the simple auth manager;
    TXMON_AIRFLOW_PASSWORD overrides the password)."""

    def __init__(self, settings: Settings, timeout_s: float = 30) -> None:
        self.settings = settings
        self.base = settings.airflow.url
        self.timeout_s = timeout_s
        self._token: str | None = None

    def _password(self) -> str:
        password = os.environ.get("TXMON_AIRFLOW_PASSWORD") or login(self.settings).password
        if not password:
            raise ServiceNotRunningError(
                f"no Airflow password: {login(self.settings).password_file} does not exist; start Airflow with "
                "`txmon airflow up` (or set TXMON_AIRFLOW_PASSWORD)"
            )
        return password

    def token(self) -> str:
        if self._token is None and _all_admins():  # no login at all: Airflow hands out admin tokens
            self._token = self._request("GET", "/auth/token", auth=False)["access_token"]
        if self._token is None:
            body = {"username": self.settings.airflow.admin_user, "password": self._password()}
            self._token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
        return self._token

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AirflowApiError(f"{method} {path}: HTTP {exc.code} {detail}", status=exc.code) from None
        except OSError as exc:
            raise ServiceNotRunningError(
                f"Airflow at {self.base} is not answering ({exc}); start it with `txmon airflow up`"
            ) from None

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)


def trigger_dag(
    settings: Settings,
    dag_id: str,
    conf: dict[str, Any] | None = None,
    *,
    run_id: str | None = None,
    logical_date: datetime | None = None,
    client: AirflowClient | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """Create a manual run of ``dag_id`` with ``conf``; return its dag run id.

    Without ``logical_date`` the run has no data interval (its tasks use the moment it
    was triggered); with one, Airflow gives it the interval its schedule has there, as a
    scheduled run of that time would get (e.g. to redo a past interval).

    With ``run_id``, triggering the same run again is not an error: the existing run's
    id is returned (Airflow answers 409 for a taken run id). A paused DAG still gets
    the run, queued until the DAG is unpaused: a warning says so.
    """
    client = client or AirflowClient(settings)
    quoted = urllib.parse.quote(dag_id, safe="")
    try:
        dag = client.get(f"/api/v2/dags/{quoted}")
    except AirflowApiError as exc:
        if exc.status == 404:
            raise AirflowApiError(
                f"DAG {dag_id!r} is not known to Airflow: check the name (`txmon airflow status` lists "
                "the DAGs) or look for import errors in the UI",
                status=404,
            ) from None
        raise
    if logical_date is not None and logical_date.tzinfo is None:
        raise AirflowApiError(
            f"logical date {logical_date.isoformat()} has no time zone; give e.g. 2026-11-23T02:00:00Z"
        )
    body: dict[str, Any] = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": conf or {}}
    if run_id is not None:
        body["dag_run_id"] = run_id
    try:
        created = client.post(f"/api/v2/dags/{quoted}/dagRuns", body)
    except AirflowApiError as exc:
        if exc.status == 409 and run_id is not None:
            return run_id
        raise
    if dag.get("is_paused") and log is not None:
        log(
            f"DAG {dag_id} is paused: run {created['dag_run_id']} waits until it is unpaused "
            f"(UI, or `txmon airflow unpause {dag_id}`)"
        )
    return created["dag_run_id"]


def drift_run_id(event: DriftEvent) -> str:
    """One retraining run per drift alarm: the same event triggers the same run."""
    at = event.detected_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    return f"drift__{event.signal}__{at}"


def on_drift_event(settings: Settings, event: DriftEvent) -> str:
    """Start ``model_retraining`` for a drift alarm (the drift monitor calls this).

    conf = ``{"reason": "drift", "drift_event": <event as JSON>}``; the run id comes from
    the event, so a repeated call for one alarm does not start a second run.
    """
    conf = {"reason": "drift", "drift_event": event.model_dump(mode="json")}
    return trigger_dag(
        settings, RETRAINING_DAG, conf, run_id=drift_run_id(event), log=logging.getLogger("txmon.airflow").warning
    )


def dag_runs(settings: Settings, dag_id: str, client: AirflowClient | None = None) -> list[dict[str, Any]]:
    client = client or AirflowClient(settings)
    return client.get(f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns?limit=100")["dag_runs"]


def list_dags(settings: Settings, client: AirflowClient | None = None) -> list[dict[str, Any]]:
    client = client or AirflowClient(settings)
    return client.get("/api/v2/dags?limit=100")["dags"]


def set_paused(settings: Settings, dag_id: str, paused: bool, client: AirflowClient | None = None) -> None:
    client = client or AirflowClient(settings)
    client.patch(f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}", {"is_paused": paused})


def parse_conf(text: str | None) -> dict[str, Any]:
    """``--conf`` JSON to a dict, with a clear error for anything else.

    >>> parse_conf('{"file": "a.csv"}')
    {'file': 'a.csv'}
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AirflowApiError(
            f"--conf is not JSON ({exc.msg} at character {exc.pos}); "
            'give an object, e.g. --conf \'{"file": "drop.csv"}\''
        ) from None
    except RecursionError:
        raise AirflowApiError(
            '--conf nests too deeply to be read; give a flat object, e.g. --conf \'{"file": "drop.csv"}\''
        ) from None
    if not isinstance(value, dict):
        raise AirflowApiError('--conf must be a JSON object, e.g. --conf \'{"start": "2026-11-01"}\'')
    return value
