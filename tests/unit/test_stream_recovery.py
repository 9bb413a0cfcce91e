"""Riding out outages: the backoff policy, retried Cassandra calls, the in-process query
restarts, one stream per checkpoint, and the supervisor's judgement of a waiting stream.

Time is injected everywhere: a fake clock that the fake sleep advances, so the tests
check which waits happen, not how long they took."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from txmon.infra.cli import app
from txmon.infra.errors import StreamLockedError, StreamRecoveryError
from txmon.infra.settings import PROJECT_ROOT, load_settings
from txmon.spark_jobs.checkpoint_lock import LOCK_FILE, CheckpointLock
from txmon.spark_jobs.heartbeat import heartbeat_path, write_json_atomic
from txmon.spark_jobs.recovery import Backoff, call_with_retry, cassandra_outage_errors, keep_running
from txmon.spark_jobs.supervisor import check, stream_process


class FakeTime:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then answers."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("Connection reset by peer")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "written"


def _retry(policy, fn, t: FakeTime):
    return call_with_retry(
        policy, "writing rows to transactions", fn, retryable=lambda: (ConnectionError,), clock=t.clock, sleep=t.sleep
    )


# ------------------------------------------------------------------ backoff policy


def test_backoff_doubles_from_its_start_up_to_its_cap():
    assert [Backoff(0.5, 5, 30).delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert Backoff(2, 60, 0, multiplier=3).delay(3) == 18.0


def test_recovery_settings_come_from_the_environment_and_are_validated(monkeypatch):
    monkeypatch.setenv("TXMON_RECOVERY__RESTART_MAX_S", "90")
    s = load_settings()
    assert Backoff.query_restarts(s) == Backoff(1, 90, 1800)
    assert Backoff.cassandra_calls(s) == Backoff(0.5, 5, 30)
    monkeypatch.setenv("TXMON_RECOVERY__RESTART_MAX_S", "0.5")
    with pytest.raises(Exception, match="restart_max_s must be at least restart_initial_s"):
        load_settings()


def test_a_healthy_call_is_made_once_and_never_waits():
    t, fn = FakeTime(), Flaky(0)
    assert _retry(Backoff(0.5, 5, 30), fn, t) == "written"
    assert fn.calls == 1 and t.sleeps == []


def test_a_call_failing_while_cassandra_is_down_is_retried_with_backoff_until_it_answers():
    t, fn = FakeTime(), Flaky(4)
    assert _retry(Backoff(0.5, 5, 30), fn, t) == "written"
    assert fn.calls == 5 and t.sleeps == [0.5, 1.0, 2.0, 4.0]


def test_retries_stop_at_the_budget_and_raise_the_last_error():
    t, fn = FakeTime(), Flaky(1000)
    with pytest.raises(ConnectionError, match="Connection reset by peer"):
        _retry(Backoff(0.5, 5, 30), fn, t)
    # Waits add up to 27.5 s; one more (5 s) would end past the 30 s budget.
    assert t.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0] and t.now <= 30
    assert fn.calls == len(t.sleeps) + 1


def test_a_bug_is_not_retried_and_no_budget_means_no_retry():
    t = FakeTime()
    bug = Flaky(1, ValueError("Invalid column name"))
    with pytest.raises(ValueError, match="Invalid column name"):
        _retry(Backoff(0.5, 5, 30), bug, t)
    down = Flaky(1)
    with pytest.raises(ConnectionError):
        _retry(Backoff(0.5, 5, 0), down, t)
    assert bug.calls == down.calls == 1 and t.sleeps == []


def test_what_the_cassandra_driver_raises_in_an_outage_is_retryable_and_a_bad_statement_is_not():
    from cassandra import InvalidRequest, OperationTimedOut, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    errors = cassandra_outage_errors()
    assert all(issubclass(e, errors) for e in (NoHostAvailable, OperationTimedOut, WriteTimeout, ConnectionResetError))
    assert not issubclass(InvalidRequest, errors)


# ------------------------------------------------------------------ restarting the queries


class FakeQueries:
    """Queries that fail ``script`` times in turn: each entry is (error or None, made progress)."""

    def __init__(self, script, failing_starts: dict[int, BaseException] | None = None) -> None:
        self.script = list(script)
        self.failing_starts = failing_starts or {}
        self.attempts = self.starts = self.stops = 0
        self._progress = False

    def start(self) -> None:
        self.attempts += 1
        if self.attempts in self.failing_starts:
            raise self.failing_starts[self.attempts]
        self.starts += 1

    def wait(self):
        error, self._progress = self.script.pop(0)
        return error

    def made_progress(self) -> bool:
        return self._progress

    def stop(self) -> None:
        self.stops += 1


class Beats:
    def __init__(self) -> None:
        self.states: list[dict] = []

    def recovery(self, **fields) -> None:
        self.states.append(fields)


def _probe(answers):
    answers = list(answers)
    return lambda: answers.pop(0) if answers else {"kafka": None, "cassandra": None}


def _wall():
    return datetime(2026, 12, 5, tzinfo=UTC)


def test_a_failed_query_waits_for_its_dependencies_then_restarts_from_the_checkpoint():
    t, beats = FakeTime(), Beats()
    queries = FakeQueries([(RuntimeError("NoHostAvailable: Connection reset by peer"), False), (None, True)])
    down = {"kafka": None, "cassandra": "CQL not answering: NoHostAvailable"}
    restarts = keep_running(
        queries,
        probe=_probe([down, down, down]),
        heartbeat=beats,
        policy=Backoff(1, 30, 1800),
        clock=t.clock,
        sleep=t.sleep,
        wall=_wall,
    )
    assert restarts == 1 and queries.starts == 2
    assert t.sleeps == [1.0, 2.0, 4.0, 8.0]  # three probes found Cassandra down, the fourth restarted
    waiting = [b for b in beats.states if b["state"] == "waiting"]
    assert [b["attempt"] for b in waiting] == [1, 2, 3, 4]
    assert "NoHostAvailable" in waiting[0]["last_error"] and "cassandra down" in waiting[1]["last_error"]
    assert beats.states[-1]["state"] == "running" and beats.states[-1]["restarts"] == 1


def test_a_restart_that_fails_counts_as_another_failure():
    t, beats = FakeTime(), Beats()
    queries = FakeQueries(
        [(RuntimeError("Kafka: TimeoutException"), False), (None, False)],
        failing_starts={2: ConnectionError("broker not available")},
    )
    restarts = keep_running(
        queries,
        probe=_probe([]),
        heartbeat=beats,
        policy=Backoff(1, 30, 1800),
        clock=t.clock,
        sleep=t.sleep,
        wall=_wall,
    )
    assert restarts == 1 and t.sleeps == [1.0, 2.0] and queries.starts == 2
    assert "restart failed: ConnectionError: broker not available" in beats.states[-2]["last_error"]


def test_recovery_gives_up_after_its_budget_without_progress_but_progress_starts_it_again():
    t, beats = FakeTime(), Beats()
    failing = [(RuntimeError("boom"), False)] * 50
    with pytest.raises(StreamRecoveryError, match=r"kept failing for 6\ds .*recovery\.restart_give_up_s=60.*boom"):
        keep_running(
            FakeQueries(failing),
            probe=_probe([]),
            heartbeat=beats,
            policy=Backoff(1, 8, 60),
            clock=t.clock,
            sleep=t.sleep,
            wall=_wall,
        )
    assert beats.states[-1]["state"] == "gave_up"
    # The same failures with a completed micro-batch between them: each is a new outage.
    t = FakeTime()
    progressing = [(RuntimeError("boom"), True)] * 30 + [(None, True)]
    assert (
        keep_running(
            FakeQueries(progressing),
            probe=_probe([]),
            heartbeat=None,
            policy=Backoff(1, 8, 60),
            clock=t.clock,
            sleep=t.sleep,
            wall=_wall,
        )
        == 30
    )
    assert set(t.sleeps) == {1.0}


# ------------------------------------------------------------------ one stream per checkpoint


def _holder_pid(checkpoint: str) -> int:
    holder = CheckpointLock(checkpoint).holder()
    assert holder is not None, f"nobody holds {checkpoint}"
    return holder["pid"]


def test_a_second_lock_on_a_checkpoint_is_refused_naming_the_holder(tmp_path):
    first = CheckpointLock(str(tmp_path / "ckpt")).acquire()
    try:
        with pytest.raises(StreamLockedError) as refused:
            CheckpointLock(str(tmp_path / "ckpt")).acquire()
        message = str(refused.value)
        assert f"(pid {os.getpid()}" in message and f"kill {os.getpid()}" in message
        assert "--checkpoint-dir" in message and str(tmp_path / "ckpt") in message
        assert _holder_pid(f"file://{tmp_path / 'ckpt'}") == os.getpid()
        CheckpointLock(str(tmp_path / "other")).acquire().release()  # another checkpoint is free
    finally:
        first.release()
    assert CheckpointLock(str(tmp_path / "ckpt")).holder() is None
    with CheckpointLock(str(tmp_path / "ckpt")):
        pass  # released by its holder: free again


def test_a_lock_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    ckpt = tmp_path / "ckpt"
    code = (
        "import sys, time; from spark_jobs.checkpoint_lock import CheckpointLock; "
        f"CheckpointLock({str(ckpt)!r}).acquire(); print('locked', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert _holder_pid(str(ckpt)) == holder.pid
        with pytest.raises(StreamLockedError, match=f"pid {holder.pid}"):
            CheckpointLock(str(ckpt)).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (ckpt / LOCK_FILE).exists()  # the file stays; the lock went with the process
    assert CheckpointLock(str(ckpt)).holder() is None
    CheckpointLock(str(ckpt)).acquire().release()


def test_a_checkpoint_on_an_object_store_is_not_locked():
    lock = CheckpointLock("s3a://bucket/checkpoints/transactions")
    assert lock.path is None and lock.holder() is None
    lock.acquire().release()


def test_txmon_stream_on_a_held_checkpoint_exits_2_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TXMON_STATE_DIR", str(tmp_path / "state"))
    with CheckpointLock(str(tmp_path / "ckpt")):
        result = CliRunner().invoke(app, ["stream", "--checkpoint-dir", str(tmp_path / "ckpt")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("txmon: another stream is already running on checkpoint")
    assert f"pid {os.getpid()}" in lines[0]


# ------------------------------------------------------------------ the supervisor's judgement


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("TXMON_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TXMON_AIRFLOW__STREAM_STALL_AFTER_S", "60")
    return load_settings()


@pytest.fixture
def sleeper(settings):
    """A real detached process owned by the 'stream' pid file."""
    proc = stream_process(settings)
    pid = proc.start_with_env(
        [sys.executable, "-c", "import time; time.sleep(120)"], cwd=PROJECT_ROOT, env=dict(os.environ)
    )
    assert proc.pid() == pid
    yield proc
    proc.stop(timeout=5)


def test_a_stream_waiting_out_an_outage_is_not_restarted_unless_its_heartbeat_stops(settings, sleeper):
    now = datetime.now(UTC) + timedelta(seconds=600)
    stale = now - timedelta(seconds=300)
    beat = {
        "pid": sleeper.pid(),
        "written_at": (now - timedelta(seconds=5)).isoformat(),
        "queries": {
            "ingest": {
                "status": "terminated",
                "last_progress_at": stale.isoformat(),
                "end_offsets": {"transactions": {"0": 10}},
            }
        },
        "recovery": {
            "state": "waiting",
            "attempt": 7,
            "since": stale.isoformat(),
            "last_error": "cassandra 127.0.0.1:9042 down (CQL not answering: NoHostAvailable)",
        },
    }
    write_json_atomic(heartbeat_path(settings.state_path), beat)
    health = check(settings, now=now, end_offsets=lambda t: pytest.fail("a waiting stream needs no Kafka lag"))
    assert (health.state, health.needs_restart) == ("waiting", False)
    assert "attempt 7" in health.reason and "cassandra" in health.reason
    # Waiting, but the heartbeat stopped: the process is stuck, not waiting.
    write_json_atomic(heartbeat_path(settings.state_path), {**beat, "written_at": stale.isoformat()})
    assert check(settings, now=now).state == "stalled"
    # Back to running: the lag check applies again.
    write_json_atomic(
        heartbeat_path(settings.state_path), {**beat, "recovery": {**beat["recovery"], "state": "running"}}
    )
    assert check(settings, now=now, end_offsets=lambda t: {0: 50}).state == "stalled"
    assert json.loads(heartbeat_path(settings.state_path).read_text())["recovery"]["state"] == "running"
