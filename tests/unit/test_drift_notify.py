"""Who hears of a drift event: Airflow's retraining DAG when there is an Airflow to tell,
nobody (the event is only recorded) when there is not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from txmon.infra import airflow
from txmon.infra.settings import load_settings
from txmon.models.drift import DriftEvent, Signal
from txmon.spark_jobs import drift_stream
from txmon.spark_jobs.drift_stream import NotNotified, default_notifier

EVENT = DriftEvent(
    detected_at=datetime(2026, 1, 5, tzinfo=UTC),
    signal=Signal.RECALL_AMONG_FRAUDS,
    n_seen=300,
    mean_before=0.9,
    variance_before=0.09,
    width_before=250,
    mean_after=0.4,
    variance_after=0.24,
    width_after=40,
)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("TXMON_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TXMON_DRIFT__NOTIFY", "airflow")  # the tests' default is none
    monkeypatch.delenv("TXMON_AIRFLOW_PASSWORD", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", raising=False)
    return load_settings()


def _recording(calls: list, run_id: str):
    """An on_drift_event stand-in that records the event and answers ``run_id``."""

    def trigger(settings, event):
        calls.append(event)
        return run_id

    return trigger


def _notifier(settings):
    notify = default_notifier(settings)
    assert notify is not None, "drift.notify is airflow in these tests"
    return notify


def test_without_a_running_airflow_the_event_is_recorded_without_an_error(settings, monkeypatch):
    calls: list = []
    monkeypatch.setattr(airflow, "on_drift_event", _recording(calls, "run"))
    monkeypatch.setattr(drift_stream, "on_drift_event", _recording(calls, "run"), raising=False)
    assert not airflow.reachable(settings)
    with pytest.raises(NotNotified, match="txmon airflow up"):
        _notifier(settings)(EVENT)
    assert calls == []


def test_with_an_airflow_to_tell_the_retraining_dag_is_triggered(settings, monkeypatch):
    calls: list = []
    monkeypatch.setattr(airflow, "on_drift_event", _recording(calls, "drift__run"))
    monkeypatch.setattr(drift_stream, "on_drift_event", _recording(calls, "drift__run"), raising=False)
    monkeypatch.setenv("TXMON_AIRFLOW_PASSWORD", "elsewhere")
    assert _notifier(settings)(EVENT) == "airflow run drift__run"
    assert calls == [EVENT]


def test_notify_none_means_no_notifier(settings, monkeypatch):
    monkeypatch.setenv("TXMON_DRIFT__NOTIFY", "none")
    assert default_notifier(load_settings()) is None
