"""Test-wide setup: an isolated state directory and ports, so tests never touch
(or collide with) a developer's own `txmon infra up` stack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Set before any settings are loaded; TXMON_* already in the environment win.
_TEST_ENV = {
    "TXMON_STATE_DIR": str(ROOT / ".txmon-test"),
    "TXMON_KAFKA__PORT": "19092",
    "TXMON_KAFKA__CONTROLLER_PORT": "19093",
    "TXMON_CASSANDRA__PORT": "19042",
    "TXMON_CASSANDRA__STORAGE_PORT": "17000",
    "TXMON_CASSANDRA__KEYSPACE": "txmon_test",
    # Drift detections are recorded, not sent to an Airflow a developer may be running.
    "TXMON_DRIFT__NOTIFY": "none",
    # Below Linux's ephemeral range (32768-60999): a client socket cannot be holding them.
    "TXMON_SPARK__CLUSTER__MASTER_PORT": "17077",
    "TXMON_SPARK__CLUSTER__MASTER_WEBUI_PORT": "18080",
    "TXMON_SPARK__CLUSTER__WORKER_WEBUI_PORT": "18081",
}
for _key, _value in _TEST_ENV.items():
    os.environ.setdefault(_key, _value)

# In-process Airflow (DagBag, dag.test()) gets its own home and DB, always: never a
# developer's AIRFLOW_HOME, nor the one `txmon airflow up` uses. Set before any test
# module imports airflow (its configuration is read at import).
_AIRFLOW_HOME = ROOT / ".txmon-test" / "airflow-pytest"
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
)
_AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is an integration test."""
    for item in items:
        if "tests/integration/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
