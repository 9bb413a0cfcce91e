"""Local Airflow set-up, the stream supervisor's judgement, the landing folder and the
operator's failure email: real processes, files and a real SMTP server, no Airflow
server (tests/integration/test_airflow.py starts one)."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pendulum
import psutil
import pytest
from typer.testing import CliRunner

from txmon.alerting.testing import SmtpSink
from txmon.infra import airflow
from txmon.infra.cli import app
from txmon.infra.orchestration import daily_due, failure_text, interval_end, notify_operator, retraining_window, utc
from txmon.infra.process import wait_until
from txmon.infra.settings import PROJECT_ROOT, load_settings
from txmon.ingestion.landing import LandingError, find_landed, resolve_mapping
from txmon.spark_jobs.heartbeat import heartbeat_path, write_json_atomic
from txmon.spark_jobs.supervisor import check, stream_process


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("TXMON_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TXMON_AIRFLOW__STREAM_STALL_AFTER_S", "60")
    return load_settings()


@pytest.fixture
def sleeper(settings):
    """A real detached process owned by the 'stream' pid file, with a child of its own."""
    proc = stream_process(settings)
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
    )
    pid = proc.start_with_env([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=dict(os.environ))
    assert proc.pid() == pid
    yield proc
    proc.stop(timeout=5)


# ------------------------------------------------------------------ airflow set-up


def test_airflow_env_points_at_the_project_and_keeps_secrets_in_the_environment(settings, monkeypatch):
    monkeypatch.setenv("TXMON_AIRFLOW__PORT", "28181")
    monkeypatch.setenv("TXMON_ALERTING__SMTP__USERNAME", "alerts")
    monkeypatch.setenv("TXMON_SMTP_PASSWORD", "smtp-s3cret")
    monkeypatch.setenv("TXMON_SMS_TOKEN", "sms-s3cret")
    s = load_settings()
    env = airflow.airflow_env(s, base={"PATH": "/usr/bin"})
    assert env["AIRFLOW_HOME"] == str(s.state_path / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__PORT"] == "28181"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:28181/execution/"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{s.state_path / 'airflow' / 'airflow.db'}"
    assert env["PATH"].startswith(str(Path(sys.executable).parent))
    kafka = json.loads(env["AIRFLOW_CONN_TXMON_KAFKA"])
    assert (kafka["host"], kafka["port"]) == (s.kafka.host, s.kafka.port)
    assert json.loads(env["AIRFLOW_CONN_TXMON_CASSANDRA"])["schema"] == s.cassandra.keyspace
    assert json.loads(env["AIRFLOW_CONN_TXMON_SMTP"])["password"] == "smtp-s3cret"
    assert json.loads(env["AIRFLOW_CONN_TXMON_SMS"])["password"] == "sms-s3cret"
    assert json.loads(env["AIRFLOW_CONN_TXMON_SPARK"])["host"] == s.spark.master
    # The operator's env file has the settings but never a secret.
    s.airflow_home.mkdir(parents=True)
    text = airflow.write_env_file(s, env).read_text()
    assert "AIRFLOW__CORE__DAGS_FOLDER" in text and "s3cret" not in text and "AIRFLOW_CONN" not in text


def test_login_reads_the_generated_password(settings):
    assert airflow.login(settings).password is None
    assert "not generated yet" in airflow.login(settings).line()
    settings.airflow_home.mkdir(parents=True)
    (settings.airflow_home / airflow.PASSWORD_FILE).write_text(json.dumps({"admin": "pw123"}))
    login = airflow.login(settings)
    assert (login.user, login.password) == ("admin", "pw123")
    assert "user: admin  password: pw123" in login.line()


def test_trigger_with_bad_conf_is_one_clear_line():
    result = CliRunner().invoke(app, ["airflow", "trigger", "ingestion", "--conf", "{nope"])
    assert result.exit_code != 0
    assert "--conf is not JSON" in str(result.exception)


def test_status_of_an_airflow_that_is_not_running_exits_1(settings):
    result = CliRunner().invoke(app, ["airflow", "status"])
    assert result.exit_code == 1 and "not running" in result.output


def test_detached_command_stop_takes_the_whole_process_group(sleeper):
    leader = psutil.Process(sleeper.pid())
    wait_until(lambda: bool(leader.children()), 10, interval=0.05)
    (child,) = leader.children()
    assert sleeper.stop(timeout=3)
    assert not leader.is_running() or leader.status() == psutil.STATUS_ZOMBIE
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert sleeper.pid() is None


def test_a_pid_file_naming_someone_elses_process_is_not_ours(settings):
    proc = stream_process(settings)
    proc.pid_file.parent.mkdir(parents=True)
    proc.pid_file.write_text(str(os.getpid()))  # alive, but not started by txmon for this state dir
    assert proc.pid() is None


# ------------------------------------------------------------------ stream supervisor


def _beat(settings, written_at: datetime, last_progress_at: datetime, offsets: dict | None) -> None:
    write_json_atomic(
        heartbeat_path(settings.state_path),
        {
            "pid": 1,
            "written_at": written_at.isoformat(),
            "queries": {
                "ingest": {
                    "id": "q",
                    "status": "progress",
                    "batch_id": 7,
                    "input_rows": 10,
                    "last_progress_at": last_progress_at.isoformat(),
                    "end_offsets": offsets,
                }
            },
        },
    )


def test_no_process_is_dead(settings):
    health = check(settings, end_offsets=lambda t: pytest.fail("Kafka not needed"))
    assert (health.state, health.needs_restart) == ("dead", True)


def test_a_fresh_start_without_heartbeat_is_starting_then_stalled(settings, sleeper):
    now = datetime.now(UTC)
    assert check(settings, now=now).state == "starting"
    stalled = check(settings, now=now + timedelta(seconds=120))
    assert stalled.state == "stalled" and "no heartbeat" in stalled.reason


def test_an_old_heartbeat_is_stalled(settings, sleeper):
    now = datetime.now(UTC) + timedelta(seconds=600)
    _beat(settings, now - timedelta(seconds=61), now - timedelta(seconds=61), None)
    health = check(settings, now=now)
    assert health.state == "stalled" and "no heartbeat for 61s" in health.reason


def test_no_progress_while_kafka_has_lag_is_stalled_but_idle_is_fine(settings, sleeper):
    now = datetime.now(UTC) + timedelta(seconds=600)
    topic = settings.kafka.topics.transactions
    _beat(settings, now - timedelta(seconds=5), now - timedelta(seconds=300), {topic: {"0": 100, "1": 50}})
    lagging = check(settings, now=now, end_offsets=lambda t: {0: 130, 1: 50})
    assert lagging.state == "stalled" and "30 unread records" in lagging.reason and lagging.lag == 30
    idle = check(settings, now=now, end_offsets=lambda t: {0: 100, 1: 50})
    assert idle.state == "running" and not idle.needs_restart
    _beat(settings, now - timedelta(seconds=5), now - timedelta(seconds=5), {topic: {"0": 100, "1": 50}})
    assert (
        check(settings, now=now, end_offsets=lambda t: pytest.fail("fresh progress needs no Kafka")).state == "running"
    )


# ------------------------------------------------------------------ landing folder, windows, callbacks


def test_landing_files_get_their_mapping_by_folder(settings):
    landing = settings.landing_path
    (landing / "paysim").mkdir(parents=True)
    (landing / "done").mkdir()
    (landing / "a.csv").write_text("x\n")
    (landing / "paysim" / "b.csv").write_text("x\n")
    (landing / "done" / "old.csv").write_text("x\n")
    (landing / "notes.txt").write_text("x\n")
    found = {f.path.name: f.mapping.name for f in find_landed(settings)}
    assert found == {"a.csv": "card_transactions.yaml", "b.csv": "paysim.yaml"}
    assert resolve_mapping(settings, "paysim") == PROJECT_ROOT / "config" / "replay" / "paysim.yaml"
    with pytest.raises(
        LandingError, match=r"use one of config/replay/\*\.yaml \(card_simulated, card_transactions, paysim\)"
    ):
        resolve_mapping(settings, "nope")


def test_retraining_window_is_the_data_interval_and_names_the_run():
    end = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    run_id, start, stop = retraining_window({}, {"data_interval_end": end}, 30)
    assert (run_id, start, stop) == ("20261024T020000Z_20261123T020000Z", end - timedelta(days=30), end)
    again = retraining_window({"window_days": None}, {"data_interval_end": end}, 30)
    assert again[0] == run_id  # a re-run of the interval is the same retraining
    with pytest.raises(ValueError, match="window is empty"):
        retraining_window({"start": "2026-12-01"}, {"data_interval_end": end}, 30)
    with pytest.raises(ValueError, match="not an ISO date"):
        retraining_window({"end": "yesterday"}, {}, 30)


# How Airflow's task runner hands a run's times to a task: pendulum DateTimes (scheduled
# runs and runs triggered with a logical date), or, for a run triggered without a logical
# date, no data interval at all and the DagRun's run_after.
AIRFLOW_END = pendulum.datetime(2026, 11, 23, 2, 0, tz="UTC")


def _manual_run(run_after: datetime):
    """The Task SDK's own DagRun of a run triggered by hand without a logical date."""
    from airflow.sdk.api.datamodels._generated import DagRun

    return DagRun(
        dag_id="model_retraining",
        run_id="manual__x",
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        run_after=run_after,
        start_date=None,
        end_date=None,
        run_type="manual",
        state="running",
        consumed_asset_events=[],
        partition_key=None,
    )


def test_utc_returns_plain_aware_datetimes_whatever_airflow_or_the_user_gives():
    ist = timezone(timedelta(hours=5, minutes=30))
    cases = {
        AIRFLOW_END: datetime(2026, 11, 23, 2, 0),
        pendulum.datetime(2026, 11, 23, 7, 30, tz="Asia/Kolkata"): datetime(2026, 11, 23, 2, 0),
        datetime(2026, 11, 23, 2, 0): datetime(2026, 11, 23, 2, 0),  # naive: taken as UTC
        datetime(2026, 11, 23, 7, 30, tzinfo=ist): datetime(2026, 11, 23, 2, 0),
        date(2026, 11, 23): datetime(2026, 11, 23),
        "2026-11-23": datetime(2026, 11, 23),
        "2026-11-23T02:00:00Z": datetime(2026, 11, 23, 2, 0),
        " 2026-11-23T07:30:00+05:30 ": datetime(2026, 11, 23, 2, 0),
        "2026-11-23T02:00:00": datetime(2026, 11, 23, 2, 0),
    }
    for given, expected in cases.items():
        got = utc(given)
        assert type(got) is datetime, (given, type(got))
        assert got == expected.replace(tzinfo=UTC) and got.tzinfo is UTC, given
        # The arithmetic a window needs keeps the zone (pendulum's drops this one).
        assert (got - timedelta(days=1)).tzinfo is UTC, given
    assert utc(None) is None and utc("") is None
    with pytest.raises(TypeError, match="expected a datetime"):
        utc(1764900000)


def test_retraining_window_of_a_scheduled_run_from_airflow_pendulum_interval():
    run_id, start, end = retraining_window({}, {"data_interval_end": AIRFLOW_END}, 30)
    assert run_id == "20261024T020000Z_20261123T020000Z"
    assert (start, end) == (datetime(2026, 10, 24, 2, tzinfo=UTC), datetime(2026, 11, 23, 2, tzinfo=UTC))
    assert type(start) is datetime and type(end) is datetime


def test_retraining_window_of_a_naive_interval_end_takes_it_as_utc():
    run_id, _start, end = retraining_window({}, {"data_interval_end": datetime(2026, 11, 23, 2, 0)}, 30)
    assert run_id == "20261024T020000Z_20261123T020000Z" and end.tzinfo is UTC


def test_retraining_window_of_a_manual_run_without_data_interval_ends_when_it_was_triggered():
    run_after = pendulum.datetime(2026, 12, 5, 21, 5, 29, 308316, tz="UTC")
    context = {"dag_run": _manual_run(run_after)}  # no logical date: no data_interval_* keys at all
    run_id, start, end = retraining_window({}, context, 14)
    assert end == datetime(2026, 12, 5, 21, 5, tzinfo=UTC)  # floored: a retry agrees
    assert start == end - timedelta(days=14)
    assert run_id == "20261121T210500Z_20261205T210500Z"
    # A run triggered from another zone names the same instant.
    ist = _manual_run(datetime(2026, 12, 6, 2, 35, 29, tzinfo=timezone(timedelta(hours=5, minutes=30))))
    assert retraining_window({}, {"dag_run": ist}, 14)[0] == run_id


def test_retraining_window_params_as_text_win_over_the_interval():
    context = {"data_interval_end": AIRFLOW_END}
    # Both ends given: the data interval plays no part.
    assert (
        retraining_window({"start": "2026-10-01", "end": "2026-11-01T05:30:00+05:30"}, context, 30)[0]
        == "20261001T000000Z_20261101T000000Z"
    )
    # Only a start (naive text) against Airflow's aware interval end.
    run_id, start, end = retraining_window({"start": "2026-11-20T00:00:00"}, context, 30)
    assert run_id == "20261120T000000Z_20261123T020000Z" and start.tzinfo is end.tzinfo is UTC
    # Only an end: window_days back from it, the param (number or text) before the setting.
    assert retraining_window({"end": "2026-11-10"}, context, 30)[0] == "20261011T000000Z_20261110T000000Z"
    for days in (7, 7.0, "7"):
        assert retraining_window({"window_days": days}, context, 30)[0] == "20261116T020000Z_20261123T020000Z"
    assert (
        retraining_window({"window_days": None, "start": None, "end": ""}, context, 30)[0]
        == "20261024T020000Z_20261123T020000Z"
    )
    with pytest.raises(ValueError, match="window_days must be a number of days"):
        retraining_window({"window_days": "a month"}, context, 30)


def test_the_digest_is_due_once_a_day_with_airflow_pendulum_intervals():
    ist = timezone(timedelta(hours=5, minutes=30))
    start, end = pendulum.datetime(2026, 11, 22, 18, 55, tz="UTC"), pendulum.datetime(2026, 11, 22, 19, 0, tz="UTC")
    begin, finish, later = utc(start), utc(end), utc(end.add(minutes=5))
    assert begin and finish and later
    assert daily_due(begin, finish, 0, 30, ist)  # 00:30 IST = 19:00 UTC
    assert not daily_due(finish, later, 0, 30, ist)
    assert interval_end({"data_interval_end": end}) == datetime(2026, 11, 22, 19, 0, tzinfo=UTC)


def _context(error: Exception):
    ti = SimpleNamespace(dag_id="ingestion", task_id="replay_files", run_id="scheduled__2026-11-23", try_number=3)
    return {"task_instance": ti, "exception": error}


def test_failure_callback_emails_the_operator_with_masked_details(monkeypatch):
    with SmtpSink() as sink:
        monkeypatch.setenv("TXMON_ALERTING__SMTP__PORT", str(sink.port))
        monkeypatch.setenv("TXMON_ALERTING__SMTP__SECURITY", "none")
        monkeypatch.delenv("TXMON_ALERTING_CONFIG", raising=False)
        notify_operator(_context(RuntimeError("account 123456789012 refused")))
        (mail,) = sink.wait_for(1, timeout_s=10)
    assert mail.rcpt_tos == ["airflow-ops@bank.example"]
    assert mail.message["Subject"] == "[txmon] Airflow task failed: ingestion.replay_files"
    text = mail.text()
    assert "Try:       3" in text and "RuntimeError" in text
    assert "123456789012" not in text and "XXXXXXXX9012" in text


def test_failure_callback_never_raises_when_mail_is_down(monkeypatch, caplog):
    from txmon.alerting.testing import free_port

    monkeypatch.setenv("TXMON_ALERTING__SMTP__PORT", str(free_port()))  # nothing listens
    monkeypatch.setenv("TXMON_ALERTING__SMTP__SECURITY", "none")
    monkeypatch.setenv("TXMON_ALERTING__SMTP__TIMEOUT_S", "2")
    notify_operator(_context(RuntimeError("boom")))
    assert "could not email the operator" in caplog.text
    subject, body = failure_text(_context(RuntimeError("boom")))
    assert subject.endswith("ingestion.replay_files") and "clear the task" in body
