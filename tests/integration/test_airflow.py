"""The DAGs against the real Kafka, Cassandra and Spark of the test session (``dag.test()``
in this process, with the test AIRFLOW_HOME of tests/conftest.py), and the project's
own Airflow server (``txmon airflow up`` code path) receiving a drift event.

The Airflow server listens on TXMON_AIRFLOW__PORT (default here 28080) with
AIRFLOW_HOME=<test state dir>/airflow; it is stopped at the end of the module.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
import zlib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from infra.readback import kafka_end_offsets

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ingestion" / "samples" / "card_transactions_sample.csv"
SMS_TOKEN_ENV = "TXMON_TEST_SMS_TOKEN"


@pytest.fixture(scope="module")
def airflow_db():
    """The in-process Airflow's metadata DB (created or migrated once)."""
    from airflow.utils import db

    db.initdb()


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _read_topic(settings, topic: str, expected: int, timeout_s: float = 30) -> list[dict]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer:
                records.append(json.loads(message.value))
    finally:
        consumer.close()
    return records


# ------------------------------------------------------------------ ingestion


def test_ingestion_replays_a_landed_file_into_kafka_and_reports_its_bad_rows(services, topic, airflow_db):
    settings = services
    landing = settings.landing_path
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    with SAMPLE.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, good = rows[0], rows[1:41]
    amt, when = header.index("amt"), header.index("trans_date_trans_time")
    bad_amount = list(good[0]); bad_amount[amt] = "twelve"; bad_amount[header.index("trans_num")] = "bad-amt"
    bad_time = list(good[1]); bad_time[when] = "yesterday"; bad_time[header.index("trans_num")] = "bad-time"
    dropped = landing / f"{topic}.csv"
    with dropped.open("w", newline="") as out:
        csv.writer(out).writerows([header, *good, bad_amount, bad_time])

    run = _dag("ingestion").test(logical_date=datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc),
                                 run_conf={"topic": topic})

    assert str(run.state) == "success", _states(run)
    assert _states(run) == {"wait_for_files": "success", "replay_files": "success"}
    # The valid rows are events in Kafka, by their own txn ids; the bad ones are not...
    # (The sample itself carries a refund-like negative amount, which the contract refuses.)
    negative = [n for n, r in enumerate(good, start=1) if float(r[amt]) <= 0]
    valid = [r for r in good if float(r[amt]) > 0]
    assert len(negative) == 1 and len(valid) == 39
    assert sum(kafka_end_offsets(settings.kafka.bootstrap, topic).values()) == len(valid)
    events = _read_topic(settings, topic, len(valid))
    assert sorted(e["txn_id"] for e in events) == sorted(r[header.index("trans_num")] for r in valid)
    # ... and are reported, row by row with the reason, in the rejects file.
    with (landing / "rejects" / f"{dropped.name}.rejects.csv").open(newline="") as fh:
        rejects = list(csv.DictReader(fh))
    assert [(r["row_number"], r["reason"]) for r in rejects] == [
        (str(negative[0]), "non_positive_amount"), ("41", "unparsable_value"), ("42", "unparsable_value")]
    assert "twelve" in rejects[1]["raw"] and "yesterday" in rejects[2]["raw"]
    # The file is done: moved out of the landing folder, so the next run does not replay it.
    assert not dropped.exists()
    assert (landing / "done" / "2026-11-23" / dropped.name).is_file()


# ------------------------------------------------------------------ alert dispatch


@pytest.fixture()
def alerting_env(monkeypatch):
    from alerting.testing import SmsGatewayStub, SmtpSink, WebhookSink, provider_env

    with SmtpSink() as smtp, SmsGatewayStub(token="gw-token") as gateway, WebhookSink() as webhook:
        env = provider_env(smtp, gateway, SMS_TOKEN_ENV, TXMON_WEBHOOK_FRAUD_DESK=webhook.url,
                           TXMON_ALERTING__RETRY__INITIAL_S="0.05", TXMON_ALERTING__RETRY__MAX_S="0.1",
                           TXMON_ALERTING__RETRY__ATTEMPTS="2")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("TXMON_ALERTING_CONFIG", raising=False)
        yield smtp


def test_alert_dispatch_resends_failed_deliveries_and_sends_the_digest(
        services, topic, unique_name, cassandra_session, alerting_env, airflow_db):
    from alerting.config import load_alerting_config
    from alerting.publish import publish_alerts
    from alerting.runtime import dispatch
    from alerting.store import AlertStore
    from alerting.testing import make_alert

    smtp = alerting_env
    day = date(2100, 1, 1) + timedelta(days=zlib.crc32(topic.encode()) % 2_000_000)
    base = zlib.crc32(topic.encode()) % 10**6
    moment = datetime.combine(day, datetime.min.time(), timezone.utc) + timedelta(hours=6)
    alerts = [make_alert(i, txn_id=f"{topic}-{i:03d}".replace("_", "-"), payer_account=f"7{base:06d}{i:05d}",
                         decision="REVIEW", severity="LOW", event_time=moment + timedelta(seconds=i),
                         created_at=moment + timedelta(seconds=i + 1)) for i in range(3)]
    smtp.stop()  # the mail server is down while the alerts are dispatched: deliveries fail
    publish_alerts(services, alerts, topic)
    stats = dispatch(services, load_alerting_config(), topic=topic, group_id=unique_name("g"), max_messages=3)
    assert stats.outcomes == {"failed": 3}
    store = AlertStore(cassandra_session)
    assert len(store.failures(day)) == 3
    smtp.start()

    run = _dag("alert_dispatch").test(
        logical_date=datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc),
        run_conf={"retry_date": day.isoformat(), "retry_days": 1, "digest_date": day.isoformat()})

    assert str(run.state) == "success", _states(run)
    assert _states(run) == {"retry_failed": "success", "digest_due": "success", "send_digest": "success"}
    assert store.failures(day) == []
    mails = smtp.wait_for(4, timeout_s=30)
    subjects = sorted(str(m.message["Subject"]) for m in mails)
    assert sum(m.alert_id in {str(a.alert_id) for a in alerts} for m in mails) == 3
    assert any(s.startswith(f"[txmon] Daily fraud digest {day}: 3 alerts") for s in subjects), subjects


# ------------------------------------------------------------------ stream supervisor


def test_stream_supervisor_starts_a_dead_stream_which_then_beats(services, airflow_db):
    from spark_jobs.heartbeat import heartbeat_path, read_heartbeat
    from spark_jobs.supervisor import restarts, stream_process

    settings = services
    proc = stream_process(settings)
    proc.stop(timeout=30)
    heartbeat_path(settings.state_path).unlink(missing_ok=True)
    before = len(restarts(settings))
    dag = _dag("stream_supervisor")
    try:
        run = dag.test(logical_date=datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc))
        assert str(run.state) == "success", _states(run)
        assert _states(run) == {"check_stream": "success", "restart_stream": "success", "stream_healthy": "skipped"}
        record = restarts(settings)[before]
        assert record["reason"] == "dead: no streaming job running" and record["old_pid"] is None
        assert record["triggered_by"].startswith("stream_supervisor/") and proc.pid() == record["pid"]

        # The restarted job is the real one: its listener writes the heartbeat.
        deadline = time.monotonic() + 420
        beat = None
        while time.monotonic() < deadline and proc.pid() is not None:
            beat = read_heartbeat(heartbeat_path(settings.state_path))
            if beat and any(q.get("status") in ("progress", "idle") for q in beat["queries"].values()):
                break
            time.sleep(3)
        assert proc.pid() is not None, proc.log_tail(40)
        assert beat and beat["queries"], proc.log_tail(40)

        again = dag.test(logical_date=datetime(2026, 11, 23, 3, 5, tzinfo=timezone.utc))
        assert _states(again) == {"check_stream": "success", "restart_stream": "skipped", "stream_healthy": "success"}
        assert len(restarts(settings)) == before + 1
    finally:
        proc.stop(timeout=60)


# ------------------------------------------------------------------ the Airflow server


@pytest.fixture(scope="module")
def airflow_server():
    """`txmon airflow up` on the test ports; stopped (not purged) at the end."""
    from infra import airflow
    from infra.settings import load_settings

    os.environ.setdefault("TXMON_AIRFLOW__PORT", "28080")
    os.environ.setdefault("TXMON_AIRFLOW__READY_TIMEOUT_S", "480")
    settings = load_settings()
    started = time.monotonic()
    status, login, _ = airflow.up(settings, log=print)
    print(f"airflow up in {time.monotonic() - started:.1f}s")
    yield settings
    airflow.down(settings, log=print)


def test_a_drift_event_triggers_model_retraining_through_the_rest_api(airflow_server):
    from typer.testing import CliRunner

    from infra import airflow
    from infra.cli import app
    from models.drift import DriftEvent

    settings = airflow_server
    deadline = time.monotonic() + 180  # the DAG processor registers the DAGs after start-up
    while time.monotonic() < deadline:
        if {d["dag_id"] for d in airflow.list_dags(settings)} >= {"model_retraining", "ingestion"}:
            break
        time.sleep(3)
    event = DriftEvent(detected_at=datetime.now(timezone.utc).replace(microsecond=0), signal="anomaly_score",
                       n_seen=5000, mean_before=0.21, variance_before=0.01, width_before=4000,
                       mean_after=0.37, variance_after=0.02, width_after=900, model_version="v3")

    run_id = airflow.on_drift_event(settings, event)
    assert airflow.on_drift_event(settings, event) == run_id  # the same alarm: the same run

    runs = [r for r in airflow.dag_runs(settings, "model_retraining") if r["dag_run_id"] == run_id]
    assert len(runs) == 1
    assert runs[0]["conf"] == {"reason": "drift", "drift_event": event.model_dump(mode="json")}
    assert runs[0]["run_type"] == "manual"

    result = CliRunner().invoke(app, ["airflow", "status"])
    assert result.exit_code == 0, result.output
    for dag_id in ("ingestion", "stream_supervisor", "model_retraining", "alert_dispatch"):
        assert dag_id in result.output
    assert f"user: {settings.airflow.admin_user}  password: " in result.output

    result = CliRunner().invoke(app, ["airflow", "trigger", "no_such_dag"])
    assert result.exit_code != 0 and "is not known to Airflow" in str(result.exception)


# ------------------------------------------------------------------ model retraining


def test_model_retraining_trains_evaluates_decides_and_tells_the_fraud_desk(
        services, airflow_db, alerting_env, monkeypatch, tmp_path):
    from ingestion.simulate import SimulateOptions, simulator_for
    from infra.orchestration import retraining_window
    from models.registry import Registry
    from models.retraining import run_dir
    from models.training import TrainingConfig, train
    from tests.integration.history import history_into_cassandra, keyspace_settings

    keyspace = "txmon_dag_retrain_test"
    settings = keyspace_settings(services, keyspace, ("transactions", "labels", "alert_deliveries"))
    monkeypatch.setenv("TXMON_CASSANDRA__KEYSPACE", keyspace)  # for the tasks and the spark-submit they run
    monkeypatch.setenv("TXMON_MODELS_DIR", str(tmp_path / "models"))

    def options(seed, count):
        return SimulateOptions(seed=seed, count=count, rate=None, fraud_rate=0.05, n_customers=1_000, live=False,
                               progress=False)

    # The live champion: a deliberately small model (few trees, little history).
    old = list(simulator_for(options(31, 6_000)).generate(6_000))
    weak = train([i.event for i in old], [i.label for i in old], TrainingConfig(seed=1, max_iter=3),
                 data_source="small history")
    registry = Registry(tmp_path / "models")
    champion = registry.promote(registry.register(weak.bundle, weak.metadata))
    items = list(simulator_for(options(32, 10_000)).generate(10_000))
    history_into_cassandra(settings, keyspace, items)
    start = min(i.event.event_time for i in items)
    end = max(i.event.event_time for i in items) + timedelta(seconds=1)
    # The simulator's seeds are fixed, so this window (and the run id it names) repeats across
    # pytest runs; a kept state dir would otherwise resume a stale run whose registry is gone.
    run_id, _, _ = retraining_window({"start": start.isoformat(), "end": end.isoformat()}, {}, 1)
    shutil.rmtree(run_dir(settings, run_id), ignore_errors=True)

    run = _dag("model_retraining").test(
        logical_date=datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc),
        run_conf={"start": start.isoformat(), "end": end.isoformat(), "reason": "manual"})

    states = _states(run)
    assert str(run.state) == "success", states
    assert {k: v for k, v in states.items() if k not in ("promote", "keep")} == {
        "extract": "success", "build_features": "success", "train_challenger": "success", "evaluate": "success",
        "decide": "success", "notify_fraud_desk": "success"}
    versions = [m.version for m in registry.versions()]
    assert len(versions) == 2 and versions[0] == champion
    challenger = versions[1]
    verdict = registry.annotation(challenger, "retraining")
    assert verdict["champion_version"] == champion and verdict["challenger_version"] == challenger
    assert verdict["holdout_rows"] > 0 and verdict["challenger"]["model_average_precision"] is not None
    # The branch followed the decision, and the registry shows it.
    if verdict["promote"]:
        assert (states["promote"], states["keep"]) == ("success", "skipped") and registry.champion() == challenger
    else:
        assert (states["promote"], states["keep"]) == ("skipped", "success") and registry.champion() == champion
    print("model_retraining:", verdict["reason"])
    mails = alerting_env.wait_for(1, timeout_s=30)
    body = "\n".join(str(m.message) for m in mails)
    assert challenger in body and ("promote" in body.lower() or "keep" in body.lower())
