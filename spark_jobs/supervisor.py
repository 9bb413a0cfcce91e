"""Keeping the streaming job alive: is it running and progressing, and (re)start it if not.

Two callers, one judgement: ``txmon stream --supervise`` (:func:`run_supervised`) checks
every few seconds, without Airflow, and restarts with backoff; the ``stream_supervisor``
DAG calls :func:`supervise` every few minutes as the scheduled check. The job is

* **dead** when no process of ours runs it (pid file + ownership marker, see
  :class:`infra.airflow.DetachedCommand`);
* **stalled** when it runs but its heartbeat (:mod:`spark_jobs.heartbeat`) is older than
  ``airflow.stream_stall_after_s``, or a query reading the topic has made no progress
  for that long while Kafka holds records past the query's offsets;
* **starting** within that same grace period after a (re)start, before its first
  heartbeat;
* **waiting** when its heartbeat is fresh and says it is waiting out a Kafka or
  Cassandra outage (spark_jobs/recovery.py): it will restart its queries itself, and a
  new process would only wait the same way; **running** otherwise.

Dead or stalled: the old process group is stopped, ``txmon spark-submit
spark_jobs/transactions_stream.py`` is started detached (pid file, log under
``<state_dir>/logs/stream.out``), and the restart is appended to
``<state_dir>/stream/restarts.jsonl`` with the reason and the DAG run that did it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psutil

from txmon.infra.airflow import MARKER_ENV, DetachedCommand
from txmon.infra.errors import StreamLockedError, StreamSupervisionError
from txmon.infra.readback import kafka_end_offsets
from txmon.infra.settings import PROJECT_ROOT, Settings
from txmon.spark_jobs.checkpoint_lock import CheckpointLock
from txmon.spark_jobs.heartbeat import heartbeat_path, read_heartbeat
from txmon.spark_jobs.recovery import Backoff
from txmon.spark_jobs.transactions_stream import StreamOptions

STREAM_JOB = "spark_jobs/transactions_stream.py"
SUPERVISE_TRIGGER = "txmon stream --supervise"
State = Literal["running", "starting", "waiting", "dead", "stalled"]

__all__ = [
    "STREAM_JOB",
    "StreamHealth",
    "check",
    "restart",
    "restarts",
    "restarts_path",
    "run_supervised",
    "stream_process",
    "supervise",
]


def stream_process(settings: Settings) -> DetachedCommand:
    return DetachedCommand("stream", settings.state_path)


def restarts_path(settings: Settings) -> Path:
    return settings.state_path / "stream" / "restarts.jsonl"


@dataclass(frozen=True)
class StreamHealth:
    state: State
    reason: str
    pid: int | None = None
    heartbeat_age_s: float | None = None
    lag: int | None = None
    queries: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_restart(self) -> bool:
        return self.state in ("dead", "stalled")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _lag(query: dict[str, Any], topic: str, end_offsets: dict[int, int]) -> int | None:
    """Records in Kafka past what this query has processed (None: it does not read the topic)."""
    done = (query.get("end_offsets") or {}).get(topic)
    if done is None:
        return None
    return sum(max(0, end - int(done.get(str(p), 0))) for p, end in end_offsets.items())


def check(
    settings: Settings,
    *,
    topic: str | None = None,
    now: datetime | None = None,
    end_offsets: Callable[[str], dict[int, int]] | None = None,
) -> StreamHealth:
    """Judge the streaming job from its process and heartbeat (see the module docstring).

    ``end_offsets(topic)`` gives Kafka's end offsets per partition (default: asked from
    the broker); it is only called when the heartbeat alone cannot decide.
    """
    now = now or datetime.now(UTC)
    topic = topic or settings.kafka.topics.transactions
    stall = settings.airflow.stream_stall_after_s
    pid = stream_process(settings).pid()
    if pid is None:
        return StreamHealth("dead", "no streaming job running")
    try:
        started = datetime.fromtimestamp(psutil.Process(pid).create_time(), UTC)
    except psutil.Error:
        return StreamHealth("dead", "the streaming job exited")
    beat = read_heartbeat(heartbeat_path(settings.state_path)) or {}
    written = _parse_time(beat.get("written_at"))
    if written is None or written < started:  # nothing yet from this process
        up_for = (now - started).total_seconds()
        if up_for <= stall:
            return StreamHealth("starting", f"started {up_for:.0f}s ago, no heartbeat yet", pid)
        return StreamHealth("stalled", f"no heartbeat in the {up_for:.0f}s since it started", pid)
    age = (now - written).total_seconds()
    queries = beat.get("queries") or {}
    if age > stall:
        return StreamHealth("stalled", f"no heartbeat for {age:.0f}s (limit {stall:.0f}s)", pid, age, None, queries)
    recovery = beat.get("recovery") or {}
    if recovery.get("state") == "waiting":
        return StreamHealth(
            "waiting",
            f"waiting out an outage since {recovery.get('since')} "
            f"(attempt {recovery.get('attempt')}): {recovery.get('last_error')}",
            pid,
            age,
            None,
            queries,
        )
    stale = {
        name: q
        for name, q in queries.items()
        if (now - (_parse_time(q.get("last_progress_at")) or started)).total_seconds() > stall
    }
    lag_total = None
    if stale:
        offsets = (end_offsets or _kafka_end_offsets(settings))(topic)
        for name, q in stale.items():
            lag = _lag(q, topic, offsets)
            if lag:
                return StreamHealth(
                    "stalled",
                    f"query {name} made no progress for more than {stall:.0f}s "
                    f"while Kafka holds {lag} unread records of {topic}",
                    pid,
                    age,
                    lag,
                    queries,
                )
            lag_total = (lag_total or 0) + (lag or 0)
    return StreamHealth(
        "running",
        "heartbeat fresh" + ("" if not stale else ", idle with nothing to read"),
        pid,
        age,
        lag_total,
        queries,
    )


def _kafka_end_offsets(settings: Settings) -> Callable[[str], dict[int, int]]:
    return lambda topic: kafka_end_offsets(settings.kafka.bootstrap, topic)


def restart(
    settings: Settings,
    reason: str,
    *,
    job_args: list[str] | None = None,
    triggered_by: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Stop whatever is left of the job, start it again detached, record the restart."""
    proc = stream_process(settings)
    old_pid = proc.pid()
    if old_pid is not None:
        proc.stop(timeout=60)
    _stop_leftovers(proc)
    argv = [str(Path(sys.executable).with_name("txmon")), "spark-submit", STREAM_JOB, *(job_args or [])]
    child_env = dict(os.environ if env is None else env)
    child_env["TXMON_STATE_DIR"] = str(settings.state_path)
    # spark-submit finds SPARK_HOME with the first python3 on PATH: make it the venv's.
    child_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + child_env.get("PATH", "")
    pid = proc.start_with_env(argv, cwd=PROJECT_ROOT, env=child_env)
    record = {
        "at": datetime.now(UTC).isoformat(),
        "reason": reason,
        "old_pid": old_pid,
        "pid": pid,
        "argv": argv[1:],
        "triggered_by": triggered_by,
        "log": str(proc.log_file),
    }
    path = restarts_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")
    return record


def _stop_leftovers(proc: DetachedCommand) -> None:
    """Kill what is left of an earlier run whose leader is gone: a kill -9 of the
    ``txmon spark-submit`` leader leaves its Spark JVM and Python driver running, and that
    driver still holds the checkpoint lock, so a new stream could not start. Ours are
    the processes carrying the run's marker in their environment (children inherit it)."""
    leftovers = []
    for candidate in psutil.process_iter():
        try:
            if candidate.environ().get(MARKER_ENV) == proc.marker_value:
                leftovers.append(candidate)
        except psutil.Error:
            continue
    for leftover in leftovers:
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    psutil.wait_procs(leftovers, timeout=30)


def restarts(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded restart, oldest first."""
    try:
        return [json.loads(line) for line in restarts_path(settings).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def supervise(
    settings: Settings,
    *,
    topic: str | None = None,
    job_args: list[str] | None = None,
    triggered_by: str | None = None,
    now: datetime | None = None,
    end_offsets: Callable[[str], dict[int, int]] | None = None,
) -> dict[str, Any]:
    """Check once; restart if dead or stalled. Returns the health (and the restart, if any)."""
    health = check(settings, topic=topic, now=now, end_offsets=end_offsets)
    result: dict[str, Any] = {"health": asdict(health), "restart": None}
    if health.needs_restart:
        args = list(job_args or [])
        if topic and "--topic" not in args:
            args += ["--topic", topic]
        result["restart"] = restart(
            settings, f"{health.state}: {health.reason}", job_args=args, triggered_by=triggered_by
        )
    return result


# ------------------------------------------------------------------ txmon stream --supervise


def _option(args: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in a job's arguments.

    >>> _option(["--topic", "tx", "--checkpoint-dir=/c"], "--checkpoint-dir"), _option([], "--topic")
    ('/c', None)
    """
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _say(message: str) -> None:
    print(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} txmon supervise: {message}", flush=True)


def _foreign_lock_holder(settings: Settings, checkpoint_dir: str, proc: DetachedCommand) -> dict[str, Any] | None:
    """Who holds the checkpoint, if it is not a process of the supervised run."""
    lock = CheckpointLock(checkpoint_dir)
    holder = lock.holder()
    if holder is None:
        return None
    try:
        if holder.get("pid") and psutil.Process(holder["pid"]).environ().get(MARKER_ENV) == proc.marker_value:
            return None  # ours: restart() clears what is left of an earlier run
    except psutil.Error:
        pass
    return {**holder, "message": lock._message(holder)}


def run_supervised(
    settings: Settings,
    job_args: list[str] | None = None,
    *,
    log: Callable[[str], None] = _say,
    stop: threading.Event | None = None,
) -> int:
    """``txmon stream --supervise``: run the stream as a child process and keep it alive.

    Every ``recovery.supervise_poll_s`` the stream is judged as the DAG judges it
    (:func:`check`); a dead or stalled one is restarted (:func:`restart`: recorded in
    restarts.jsonl), after a backoff when the previous start never got to run. Gives up
    with :class:`StreamSupervisionError` after ``recovery.supervise_max_failed_starts``
    starts in a row that died before running. SIGTERM or SIGINT stops the child, then
    the supervisor. A stream already running under this state directory (started by the
    DAG, or by a supervisor that was killed) is adopted, not started twice. Returns the
    number of starts it made.
    """
    args = list(job_args or [])
    r = settings.recovery
    backoff = Backoff(r.supervise_restart_initial_s, r.supervise_restart_max_s, math.inf)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    topic = _option(args, "--topic")
    checkpoint_dir = _option(args, "--checkpoint-dir") or StreamOptions.from_settings(settings).checkpoint_dir
    proc = stream_process(settings)
    starts, failed_starts, checks = 0, 0, 0
    log(f"watching the stream every {r.supervise_poll_s:g}s (state {settings.state_path}, checkpoint {checkpoint_dir})")
    try:
        while not stop.is_set():
            checks += 1
            health = check(settings, topic=topic)
            if health.state in ("running", "waiting"):
                if failed_starts:
                    log(f"stream {health.state} (pid {health.pid}): {health.reason}")
                failed_starts = 0
            elif health.needs_restart:
                foreign = _foreign_lock_holder(settings, checkpoint_dir, proc)
                if foreign is not None:
                    if checks == 1:
                        raise StreamLockedError(foreign["message"])
                    log(f"not restarting: {foreign['message']}")
                elif failed_starts >= r.supervise_max_failed_starts:
                    raise StreamSupervisionError(
                        f"the stream died {failed_starts} times in a row before it ran (last: {health.reason}); "
                        f"see {proc.log_file} and {restarts_path(settings)}, fix the cause, then run "
                        f"`txmon stream --supervise` again (limit recovery.supervise_max_failed_starts)"
                    )
                else:
                    if failed_starts:
                        delay = backoff.delay(failed_starts)
                        log(f"stream {health.state} again ({health.reason}); restarting in {delay:.0f}s")
                        if stop.wait(delay):
                            break
                    reason = f"{health.state}: {health.reason}"
                    record = restart(settings, reason, job_args=args, triggered_by=SUPERVISE_TRIGGER)
                    starts += 1
                    failed_starts += 1
                    log(
                        f"stream {reason}; started pid {record['pid']} (log {record['log']}; "
                        f"recorded in {restarts_path(settings)})"
                    )
            stop.wait(r.supervise_poll_s)
    finally:
        if stop.is_set() and proc.pid() is not None:
            log(f"stopping the stream (pid {proc.pid()})")
            proc.stop(timeout=60)
            _stop_leftovers(proc)
    return starts
