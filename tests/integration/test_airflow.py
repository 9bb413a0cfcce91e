"""Every DAG as an operator runs it: the project's own Airflow, started by the code of
``txmon airflow up`` (scheduler, DAG processor, API server and triggerer in their own
processes under one parent, each task in a fresh task-runner process with
``dags/`` first on its import path), every DAG triggered through the REST API with and
without params, each run awaited to ``success`` against the real Kafka, Cassandra and
Spark of the test session.

``dag.test()`` is no substitute: it runs the tasks in the test's own process, where
txmon's packages are already imported and a DAG file that shadows one goes unnoticed.

The server listens on TXMON_AIRFLOW__PORT (default here 28080) with a fresh
AIRFLOW_HOME=<test state dir>/airflow and is stopped at the end of the module. Its tasks
inherit the environment of its start, so everything they need (the local mail and SMS
stand-ins, an own keyspace, a model registry) is set before it starts.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import urllib.parse
import uuid
import zlib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from txmon.infra.kafka_client import client_config
from txmon.infra.process import wait_until
from txmon.infra.readback import kafka_end_offsets

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ingestion" / "samples" / "card_transactions_sample.csv"
SMS_TOKEN_ENV = "TXMON_TEST_SMS_TOKEN"
KEYSPACE = "txmon_airflow_test"
DAG_IDS = ("alert_dispatch", "ingestion", "model_retraining", "spending_insights", "stream_supervisor")


# ------------------------------------------------------------------ the server


@pytest.fixture(scope="module")
def providers():
    """The local mail server, SMS gateway and webhook the tasks deliver to (module-wide:
    Airflow's tasks learn their ports when Airflow starts)."""
    from txmon.alerting.testing import SmsGatewayStub, SmtpSink, WebhookSink

    with SmtpSink() as smtp, SmsGatewayStub(token="gw-token") as gateway, WebhookSink() as webhook:
        yield SimpleNamespace(smtp=smtp, gateway=gateway, webhook=webhook)


@pytest.fixture(scope="module")
def airflow_server(services, providers, tmp_path_factory):
    """`txmon airflow up` on the test ports with a fresh AIRFLOW_HOME; stopped at the end."""
    from tests.integration.history import keyspace_settings
    from txmon.alerting.testing import provider_env
    from txmon.infra import airflow
    from txmon.infra.settings import load_settings

    env = provider_env(
        providers.smtp,
        providers.gateway,
        SMS_TOKEN_ENV,
        TXMON_WEBHOOK_FRAUD_DESK=providers.webhook.url,
        TXMON_ALERTING__RETRY__INITIAL_S="0.05",
        TXMON_ALERTING__RETRY__MAX_S="0.1",
        TXMON_ALERTING__RETRY__ATTEMPTS="2",
        TXMON_CASSANDRA__KEYSPACE=KEYSPACE,  # retraining reads all history of its window: only ours
        TXMON_MODELS_DIR=str(tmp_path_factory.mktemp("models")),
        # Only the runs the tests trigger: a cron run would start at a moment set by the
        # wall clock and, with max_active_runs=1, hold a triggered run back.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
    )
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    patch.delenv("TXMON_ALERTING_CONFIG", raising=False)
    for key, default in (("TXMON_AIRFLOW__PORT", "28080"), ("TXMON_AIRFLOW__READY_TIMEOUT_S", "480")):
        patch.setenv(key, os.environ.get(key, default))
    settings = load_settings()
    assert settings.cassandra.keyspace == KEYSPACE
    keyspace_settings(settings, KEYSPACE, ("transactions", "labels", "alert_delivery_failures"))
    # A fresh home: no runs, paused states or stale environment of an earlier session.
    airflow.down(settings, log=print)
    shutil.rmtree(settings.airflow_home, ignore_errors=True)
    try:
        airflow.up(settings, log=print)
        client = airflow.AirflowClient(settings)
        # The DAG processor registers the DAGs shortly after start-up.
        assert wait_until(
            lambda: {d["dag_id"] for d in airflow.list_dags(settings, client)} >= set(DAG_IDS), 180, interval=3
        ), airflow.list_dags(settings, client)
        assert client.get("/api/v2/importErrors")["import_errors"] == []
        yield SimpleNamespace(settings=settings, client=client, **vars(providers))
    finally:
        airflow.down(settings, log=print)
        patch.undo()


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _task_states(client, dag_id: str, run_id: str) -> dict[str, str]:
    tis = client.get(f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in tis}


def _task_log_errors(settings, dag_id: str, run_id: str) -> str:
    """The error lines of the run's task logs, for the assertion message of a failed run."""
    root = settings.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    lines = []
    for path in sorted(root.glob("task_id=*/attempt=*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") != "error" or record.get("logger") == "task.stderr":
                continue
            text = record.get("event", "")
            for error in record.get("error_detail") or []:
                frame = (error.get("frames") or [{}])[-1]
                text += (
                    f": {error.get('exc_type')}: {error.get('exc_value')} "
                    f"(at {frame.get('filename')}:{frame.get('lineno')})"
                )
            lines.append(f"{path.relative_to(root)}: {text[:600]}")
    return "\n".join(lines) or f"no error lines under {root}"


def _xcom(client, dag_id: str, run_id: str, task_id: str):
    entry = client.get(
        f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/return_value"
    )
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value


def run_dag(
    server, dag_id: str, conf: dict | None, timeout_s: float, logical_date: datetime | None = None
) -> tuple[dict, dict[str, str]]:
    """Trigger ``dag_id`` through the REST API (as `txmon airflow trigger` does), wait
    until the run has finished, and return (the run, task states); the run must succeed.

    Without ``logical_date`` the run has no data interval, as when an operator triggers
    it; with one it gets the interval of the schedule there, as a scheduled run does."""
    from txmon.infra import airflow

    settings, client = server.settings, server.client
    airflow.set_paused(settings, dag_id, False, client)
    run_id = airflow.trigger_dag(
        settings, dag_id, conf, run_id=f"test__{uuid.uuid4().hex[:12]}", logical_date=logical_date, client=client
    )
    path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}"
    wait_until(lambda: client.get(path)["state"] in ("success", "failed"), timeout_s, interval=3)
    run = client.get(path)
    states = _task_states(client, dag_id, run_id)
    assert run["state"] == "success", (
        f"{dag_id} run {run_id} with conf {conf}: {run['state']}, tasks {states}\n"
        + _task_log_errors(settings, dag_id, run_id)
    )
    assert run["conf"] == (conf or {}) and run["run_type"] == "manual"
    return run, states


def _time(run: dict, key: str) -> datetime | None:
    return datetime.fromisoformat(run[key].replace("Z", "+00:00")) if run.get(key) else None


def _run_after(run: dict) -> datetime:
    t = _time(run, "run_after")
    assert t is not None, run
    return t


def test_every_dag_is_registered_from_a_file_that_shadows_no_package(airflow_server):
    for dag_id in DAG_IDS:
        dag = airflow_server.client.get(f"/api/v2/dags/{dag_id}")
        assert Path(dag["fileloc"]).name == f"{dag_id}_dag.py"


# ------------------------------------------------------------------ ingestion


def _records_since(settings, topic: str, since: dict[int, int], expected: int, timeout_s: float = 30) -> list[dict]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
        **client_config(settings),
    )
    partitions = [TopicPartition(topic, p) for p in sorted(since)]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, since[tp.partition])
    records: list[dict] = []
    try:

        def enough() -> bool:
            records.extend(json.loads(m.value) for m in consumer)
            return len(records) >= expected

        wait_until(enough, timeout_s, interval=0)
    finally:
        consumer.close()
    return records


def _sample() -> tuple[list[str], list[list[str]]]:
    """The sample's header and its first 40 rows."""
    with SAMPLE.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:41]


def _drop(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        csv.writer(out).writerows([header, *rows])
    return path


def test_ingestion_without_params_replays_what_has_landed_into_the_transactions_topic(airflow_server):
    settings = airflow_server.settings
    landing = settings.landing_path
    shutil.rmtree(landing, ignore_errors=True)
    header, good = _sample()
    dropped = _drop(landing / f"drop_{uuid.uuid4().hex[:8]}.csv", header, good)
    topic = settings.kafka.topics.transactions
    before = kafka_end_offsets(settings.kafka.bootstrap, topic)

    run, states = run_dag(airflow_server, "ingestion", None, timeout_s=300)

    assert states == {"wait_for_files": "success", "replay_files": "success"}
    valid = [r for r in good if float(r[header.index("amt")]) > 0]  # the sample holds one refund-like row
    events = _records_since(settings, topic, before, len(valid))
    assert sorted(e["txn_id"] for e in events) == sorted(r[header.index("trans_num")] for r in valid)
    after = kafka_end_offsets(settings.kafka.bootstrap, topic)
    assert sum(after.values()) - sum(before.values()) == len(valid)
    # A manual run without a logical date files the drop under the day it was triggered.
    assert not dropped.exists()
    assert (landing / "done" / _run_after(run).date().isoformat() / dropped.name).is_file()


def test_ingestion_with_params_replays_the_named_file_to_the_named_topic_and_reports_bad_rows(airflow_server, topic):
    settings = airflow_server.settings
    landing = settings.landing_path
    header, good = _sample()
    amt, when, num = header.index("amt"), header.index("trans_date_trans_time"), header.index("trans_num")
    bad_amount = list(good[0])
    bad_amount[amt], bad_amount[num] = "twelve", "bad-amt"
    bad_time = list(good[1])
    bad_time[when], bad_time[num] = "yesterday", "bad-time"
    shutil.rmtree(landing, ignore_errors=True)
    dropped = _drop(landing / f"{topic}.csv", header, [*good, bad_amount, bad_time])

    run, states = run_dag(
        airflow_server,
        "ingestion",
        {"file": dropped.name, "mapping": "card_transactions", "topic": topic},
        timeout_s=300,
    )

    assert states == {"wait_for_files": "success", "replay_files": "success"}
    negative = [n for n, r in enumerate(good, start=1) if float(r[amt]) <= 0]
    valid = [r for r in good if float(r[amt]) > 0]
    assert len(negative) == 1 and len(valid) == 39
    assert sum(kafka_end_offsets(settings.kafka.bootstrap, topic).values()) == len(valid)
    events = _records_since(settings, topic, dict.fromkeys(range(settings.kafka.partitions), 0), len(valid))
    assert sorted(e["txn_id"] for e in events) == sorted(r[num] for r in valid)
    # The bad rows are reported, row by row with the reason, in the rejects file...
    with (landing / "rejects" / f"{dropped.name}.rejects.csv").open(newline="") as fh:
        rejects = list(csv.DictReader(fh))
    assert [(r["row_number"], r["reason"]) for r in rejects] == [
        (str(negative[0]), "non_positive_amount"),
        ("41", "unparsable_value"),
        ("42", "unparsable_value"),
    ]
    assert "twelve" in rejects[1]["raw"] and "yesterday" in rejects[2]["raw"]
    # ... and the file is done: moved out of the landing folder, so no run replays it again.
    assert not dropped.exists()
    assert (landing / "done" / _run_after(run).date().isoformat() / dropped.name).is_file()
    assert _xcom(airflow_server.client, "ingestion", run["dag_run_id"], "replay_files")[0]["rejected"] == 3


# ------------------------------------------------------------------ alert dispatch


def test_alert_dispatch_retries_todays_failures_by_default_a_given_day_on_request_and_sends_each_digest_once(
    airflow_server, topic, unique_name
):
    from txmon.alerting.config import load_alerting_config
    from txmon.alerting.contract import DAY_TZ, alert_day
    from txmon.alerting.publish import publish_alerts
    from txmon.alerting.runtime import dispatch
    from txmon.alerting.store import AlertStore
    from txmon.alerting.testing import make_alert
    from txmon.infra.cassandra_schema import connect

    settings, smtp = airflow_server.settings, airflow_server.smtp
    # A past day of this test's own, after the DAG's start date (Airflow gives a run of a
    # logical date before it no tasks at all), and now (the default days of a run are
    # today's and yesterday's, in IST).
    day = date(2026, 1, 2) + timedelta(days=zlib.crc32(topic.encode()) % 300)
    far = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=6)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    base = zlib.crc32(topic.encode()) % 10**6
    alerts = [
        make_alert(
            i,
            txn_id=f"{topic}-{i:03d}".replace("_", "-"),
            payer_account=f"7{base:06d}{i:05d}",
            decision="REVIEW",
            severity="LOW",
            event_time=moment + timedelta(seconds=i),
            created_at=moment + timedelta(seconds=i + 1),
        )
        for i, moment in enumerate([far, far, far, now, now])
    ]
    far_ids = {str(a.alert_id) for a in alerts[:3]}
    today_ids = {str(a.alert_id) for a in alerts[3:]}
    today = {alert_day(a) for a in alerts[3:]}  # one IST day, or two across midnight
    smtp.stop()  # the mail server is down while the alerts are dispatched: every delivery fails
    publish_alerts(settings, alerts, topic)
    stats = dispatch(settings, load_alerting_config(), topic=topic, group_id=unique_name("g"), max_messages=5)
    assert stats.outcomes == {"failed": 5}
    smtp.start()
    cluster, session = connect(settings, KEYSPACE)
    try:
        store = AlertStore(session)

        def failed(days) -> set[str]:
            return {str(f.delivery_id) for d in days for f in store.failures(d)}

        assert failed([day]) == far_ids and failed(today) >= today_ids

        # Without params: the failures of the run's IST day (and the day before) are
        # re-sent; no digest, since a run triggered by hand has no data interval.
        run, states = run_dag(airflow_server, "alert_dispatch", None, timeout_s=300)
        assert states == {"retry_failed": "success", "digest_due": "success", "send_digest": "skipped"}
        retried = _xcom(airflow_server.client, "alert_dispatch", run["dag_run_id"], "retry_failed")
        run_day = _run_after(run).astimezone(DAY_TZ).date()
        assert retried["days"] == [run_day.isoformat(), (run_day - timedelta(days=1)).isoformat()]
        assert not failed(today) & today_ids
        assert failed([day]) == far_ids  # another day's failures wait for a run of their day
        mails = smtp.wait_for(2, timeout_s=30)
        assert {m.alert_id for m in mails} >= today_ids

        # With params: that day's failures, and its digest.
        run, states = run_dag(
            airflow_server,
            "alert_dispatch",
            {"retry_date": day.isoformat(), "retry_days": 1, "digest_date": day.isoformat()},
            timeout_s=300,
        )
        assert states == {"retry_failed": "success", "digest_due": "success", "send_digest": "success"}
        assert failed([day]) == set()
        mails = smtp.wait_for(len(mails) + 4, timeout_s=30)
        assert {m.alert_id for m in mails} >= far_ids

        # With a logical date, the run has its schedule's data interval there, as a
        # scheduled run has: the one ending at 00:30 IST sends the digest of the IST day
        # that just ended, the day above, whose digest went out already: so not again.
        due = datetime.combine(day, time(19, 0), UTC)  # 00:30 IST the day after
        run, states = run_dag(
            airflow_server, "alert_dispatch", None, timeout_s=300, logical_date=due + timedelta(minutes=2)
        )
        assert (_time(run, "data_interval_start"), _time(run, "data_interval_end")) == (due - timedelta(minutes=5), due)
        assert states == {"retry_failed": "success", "digest_due": "success", "send_digest": "success"}
        digest = _xcom(airflow_server.client, "alert_dispatch", run["dag_run_id"], "send_digest")
        assert (digest["day"], digest["alerts"]) == (day.isoformat(), 3)
        retried = _xcom(airflow_server.client, "alert_dispatch", run["dag_run_id"], "retry_failed")
        assert retried["days"] == [(day + timedelta(days=1)).isoformat(), day.isoformat()]
    finally:
        cluster.shutdown()
    subjects = [str(m.message["Subject"]) for m in smtp.messages()]
    digests = [s for s in subjects if s.startswith(f"[txmon] Daily fraud digest {day}:")]
    assert len(digests) == 1 and digests[0].startswith(f"[txmon] Daily fraud digest {day}: 3 alerts"), subjects


# ------------------------------------------------------------------ stream supervisor


def test_stream_supervisor_restarts_a_dead_stream_then_finds_it_healthy(airflow_server):
    from txmon.spark_jobs.heartbeat import heartbeat_path, read_heartbeat
    from txmon.spark_jobs.supervisor import restarts, stream_process

    settings = airflow_server.settings
    proc = stream_process(settings)
    proc.stop(timeout=30)
    heartbeat_path(settings.state_path).unlink(missing_ok=True)
    before = len(restarts(settings))
    try:
        # Without params: the stream of the transactions topic is dead -> restarted.
        run, states = run_dag(airflow_server, "stream_supervisor", None, timeout_s=300)
        assert states == {"check_stream": "success", "restart_stream": "success", "stream_healthy": "skipped"}
        record = restarts(settings)[before]
        assert record["reason"] == "dead: no streaming job running" and record["old_pid"] is None
        assert record["triggered_by"] == f"stream_supervisor/{run['dag_run_id']}" and proc.pid() == record["pid"]

        # The restarted job is the real one: its listener writes the heartbeat.
        def beating() -> bool:
            beat = read_heartbeat(heartbeat_path(settings.state_path))
            return bool(beat and any(q.get("status") in ("progress", "idle") for q in beat["queries"].values()))

        assert wait_until(beating, 420, interval=3, abort=lambda: proc.pid() is None), proc.log_tail(40)

        # With params (the same topic, named): running, so nothing to do.
        run, states = run_dag(
            airflow_server, "stream_supervisor", {"topic": settings.kafka.topics.transactions}, timeout_s=300
        )
        assert states == {"check_stream": "success", "restart_stream": "skipped", "stream_healthy": "success"}
        assert len(restarts(settings)) == before + 1
    finally:
        proc.stop(timeout=60)


# ------------------------------------------------------------------ the REST API and the command line


def test_a_drift_event_triggers_model_retraining_through_the_rest_api(airflow_server):
    from typer.testing import CliRunner

    from txmon.infra import airflow
    from txmon.infra.cli import app
    from txmon.models.drift import DriftEvent

    settings, client = airflow_server.settings, airflow_server.client
    # Paused, the run waits: this test looks at the trigger, the retraining test below runs one.
    airflow.set_paused(settings, "model_retraining", True, client)
    event = DriftEvent(
        detected_at=datetime.now(UTC).replace(microsecond=0),
        signal="anomaly_score",
        n_seen=5000,
        mean_before=0.21,
        variance_before=0.01,
        width_before=4000,
        mean_after=0.37,
        variance_after=0.02,
        width_after=900,
        model_version="v3",
    )

    run_id = airflow.on_drift_event(settings, event)
    try:
        assert airflow.on_drift_event(settings, event) == run_id  # the same alarm: the same run

        runs = [r for r in airflow.dag_runs(settings, "model_retraining") if r["dag_run_id"] == run_id]
        assert len(runs) == 1
        assert runs[0]["conf"] == {"reason": "drift", "drift_event": event.model_dump(mode="json")}
        assert runs[0]["run_type"] == "manual" and runs[0]["state"] == "queued"
    finally:
        client.delete(f"/api/v2/dags/model_retraining/dagRuns/{_q(run_id)}")

    result = CliRunner().invoke(app, ["airflow", "status"])
    assert result.exit_code == 0, result.output
    for dag_id in DAG_IDS:
        assert dag_id in result.output
    assert f"user: {settings.airflow.admin_user}  password: " in result.output

    result = CliRunner().invoke(app, ["airflow", "trigger", "no_such_dag"])
    assert result.exit_code != 0 and "is not known to Airflow" in str(result.exception)


# ------------------------------------------------------------------ spending insights


def test_spending_insights_writes_each_accounts_months_years_and_categories(airflow_server):
    """The DAG's Spark job over transactions in Cassandra: IST months (a payment at 23:00 UTC
    on 31 October is a November one in India), years, and totals per channel and payee;
    and the segments of the book: a merchant category's days, months and accounts, equal
    to a direct count of the keyspace's transactions (earlier runs' rows included)."""
    from txmon.infra.cassandra_schema import connect

    account = f"9{uuid.uuid4().int % 10**11:011d}"
    mcc = f"{6000 + uuid.uuid4().int % 4000}"  # never the 5411 of the first two rows
    rows = [  # (txn_id, event_time UTC, channel, payee_vpa, amount_paise)
        (f"TXNSPEND{account}A", datetime(2026, 10, 31, 23, 0, tzinfo=UTC), "UPI", "shop@ybl", 10_000),
        (f"TXNSPEND{account}B", datetime(2026, 11, 2, 9, 0, tzinfo=UTC), "UPI", "shop@ybl", 30_000),
        (f"TXNSPEND{account}C", datetime(2026, 10, 5, 9, 0, tzinfo=UTC), "IMPS", "rent@okaxis", 200_000),
    ]
    cluster, session = connect(airflow_server.settings, KEYSPACE)
    try:
        insert = session.prepare(
            "INSERT INTO transactions (txn_id, event_time, channel, payer_account, payee_vpa, "
            "amount_paise, mcc) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        for i, (txn_id, at, channel, payee, amount) in enumerate(rows):
            session.execute(insert, (txn_id, at, channel, account, payee, amount, "5411" if i < 2 else mcc))
        run_dag(airflow_server, "spending_insights", None, 1800)
        got = {
            (r.period_kind, r.period, r.dimension, r.key): (r.txn_count, r.total_paise, r.max_paise)
            for r in session.execute("SELECT * FROM account_spending WHERE payer_account = %s", (account,))
        }
        segment = {
            (r.period_kind, r.period, r.dimension, r.key): (r.txn_count, r.total_paise, r.accounts, r.label)
            for kind in ("day", "month", "year")
            for r in session.execute(
                "SELECT * FROM segment_spending WHERE segment = %s AND period_kind = %s", (f"mcc:{mcc}", kind)
            )
        }
        # The category's October 2026 from the transactions themselves (a random category,
        # but an earlier run may have drawn the same one: count what is there).
        october = [
            (r.payer_account, r.amount_paise, r.channel)
            for r in session.execute("SELECT payer_account, amount_paise, channel, mcc, event_time FROM transactions")
            if r.mcc == mcc
            and r.event_time is not None
            and datetime(2026, 9, 30, 18, 30) <= r.event_time < datetime(2026, 10, 31, 18, 30)
        ]
    finally:
        cluster.shutdown()
    assert segment[("month", "2026-10", "all", "")][:3] == (
        len(october),
        sum(a for _, a, _ in october),
        len({p for p, _, _ in october}),
    )
    assert ("month", "2026-10", "mcc", mcc) not in segment  # a category's own dimension would repeat the whole
    assert segment[("month", "2026-10", "channel", "IMPS")][0] == sum(c == "IMPS" for _, _, c in october)
    assert segment[("day", "2026-10-05", "all", "")][0] >= 1
    payees = sorted((k, v) for k, v in segment.items() if k[:3] == ("month", "2026-10", "payee"))
    assert 1 <= len(payees) <= 20 and payees[0][0][3] == "01"  # ranked, the largest first
    assert [v[1] for _, v in payees] == sorted((v[1] for _, v in payees), reverse=True)
    assert got[("month", "2026-10", "all", "")] == (1, 200_000, 200_000)
    assert got[("month", "2026-11", "all", "")] == (2, 40_000, 30_000)
    assert got[("year", "2026", "all", "")] == (3, 240_000, 200_000)
    assert got[("year", "2026", "channel", "UPI")] == (2, 40_000, 30_000)
    assert got[("year", "2026", "payee", "rent@okaxis")] == (1, 200_000, 200_000)
    assert got[("year", "2026", "mcc", "5411")] == (2, 40_000, 30_000)
    assert got[("year", "2026", "mcc", mcc)] == (1, 200_000, 200_000)


# ------------------------------------------------------------------ model retraining


def test_model_retraining_by_interval_and_by_default_trains_evaluates_decides_and_tells_the_fraud_desk(airflow_server):
    from tests.integration.history import history_into_cassandra, keyspace_settings
    from txmon.ingestion.simulate import SimulateOptions, simulator_for
    from txmon.models.config import models_dir
    from txmon.models.registry import Registry
    from txmon.models.training import TrainingConfig, train
    from txmon.spark_jobs.retraining import run_dir

    settings, client, smtp = airflow_server.settings, airflow_server.client, airflow_server.smtp
    # Nothing but this test's history (the stream of the test above wrote what it scored).
    keyspace_settings(settings, KEYSPACE, ("transactions", "labels"))
    # A window names its run directory, and an interval's window repeats across sessions:
    # a kept one would resume a run whose challenger is in an earlier session's registry.
    shutil.rmtree(run_dir(settings, "any").parent, ignore_errors=True)

    def options(seed, count, live):
        return SimulateOptions(
            seed=seed, count=count, rate=None, fraud_rate=0.05, n_customers=1_000, live=live, progress=False
        )

    # The live champion: a deliberately small model (few trees, little history).
    old = list(simulator_for(options(31, 6_000, False)).generate(6_000))
    weak = train(
        [i.event for i in old], [i.label for i in old], TrainingConfig(seed=1, max_iter=3), data_source="small history"
    )
    registry = Registry(models_dir())  # the registry of Airflow's tasks (TXMON_MODELS_DIR)
    champion = registry.promote(registry.register(weak.bundle, weak.metadata))
    # Recent history (ending before now), so the default window of a run holds it too.
    items = list(simulator_for(options(32, 10_000, True)).generate(10_000))
    history_into_cassandra(settings, KEYSPACE, items)
    last = max(i.event.event_time for i in items)
    mails_before = len(smtp.messages())

    def check(run: dict, states: dict[str, str], champion_before: str) -> str:
        assert {k: v for k, v in states.items() if k not in ("promote", "keep")} == {
            "extract": "success",
            "build_features": "success",
            "train_challenger": "success",
            "evaluate": "success",
            "decide": "success",
            "notify_fraud_desk": "success",
        }
        challenger = registry.versions()[-1].version
        assert challenger is not None
        verdict = registry.annotation(challenger, "retraining")
        assert verdict is not None, f"no retraining verdict on {challenger}"
        assert verdict["champion_version"] == champion_before and verdict["challenger_version"] == challenger
        assert verdict["holdout_rows"] > 0 and verdict["challenger"]["model_average_precision"] is not None
        # The branch followed the decision, and the registry shows it.
        if verdict["promote"]:
            assert (states["promote"], states["keep"]) == ("success", "skipped") and registry.champion() == challenger
        else:
            assert (states["promote"], states["keep"]) == ("skipped", "success")
            assert registry.champion() == champion_before
        print("model_retraining:", verdict["reason"])
        return challenger

    # With params and a logical date: window_days back from the end of the data interval
    # the schedule has there (the 02:00 UTC before the last transaction), as in a
    # scheduled run, where Airflow hands the task pendulum times.
    run, states = run_dag(
        airflow_server, "model_retraining", {"window_days": 30, "reason": "drift"}, timeout_s=2400, logical_date=last
    )
    plan = _xcom(client, "model_retraining", run["dag_run_id"], "extract")
    interval_end = _time(run, "data_interval_end")
    two_am = last.astimezone(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    assert interval_end == (two_am if two_am <= last else two_am - timedelta(days=1))
    assert datetime.fromisoformat(plan["end"]) == interval_end
    assert datetime.fromisoformat(plan["start"]) == interval_end - timedelta(days=30)
    assert plan["reason"] == "drift"
    assert plan["extracted"]["transactions"] == sum(i.event.event_time < interval_end for i in items) > 0
    first = check(run, states, champion)
    assert [m.version for m in registry.versions()] == [champion, first]

    # Without params: retraining.window_days back from when the run was triggered.
    champion_now = registry.champion()
    assert champion_now is not None
    run, states = run_dag(airflow_server, "model_retraining", None, timeout_s=2400)
    plan = _xcom(client, "model_retraining", run["dag_run_id"], "extract")
    window_end = _run_after(run).astimezone(UTC).replace(second=0, microsecond=0)
    assert datetime.fromisoformat(plan["end"]) == window_end
    assert datetime.fromisoformat(plan["start"]) == window_end - timedelta(days=settings.retraining.window_days)
    assert plan["reason"] == "manual"  # started by hand, though no conf says so
    assert plan["extracted"]["transactions"] == len(items)
    second = check(run, states, champion_now)
    assert [m.version for m in registry.versions()] == [champion, first, second]

    mails = smtp.wait_for(mails_before + 2, timeout_s=30)[mails_before:]
    bodies = ["\n".join(str(m.message) for m in mails if v in str(m.message)) for v in (first, second)]
    assert all(b and ("promote" in b.lower() or "keep" in b.lower()) for b in bodies), bodies


def test_no_airflow_process_listens_beyond_loopback(airflow_server):
    """Found by process: the components' parent, the scheduler, DAG processor, triggerer
    and API server, and whatever they started. The scheduler's and triggerer's task-log
    servers (which bind every interface) are not started; the API server listens on
    ``airflow.host`` and is the only listener."""
    import psutil

    from tests.integration.listeners import exposed, listeners
    from txmon.infra import airflow

    settings = airflow_server.settings
    leader = psutil.Process(airflow.airflow_process(settings).pid())
    components = leader.children()
    assert len(components) == 4, [c.cmdline() for c in components]
    pids = {leader.pid, *(p.pid for p in leader.children(recursive=True))}
    found = listeners(pids)
    assert {(address, port) for _, address, port in found} == {(settings.airflow.host, settings.airflow.port)}, found
    assert exposed(pids) == []
