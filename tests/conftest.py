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
    "TXMON_SPARK__CLUSTER__MASTER_PORT": "37077",
    "TXMON_SPARK__CLUSTER__MASTER_WEBUI_PORT": "38080",
    "TXMON_SPARK__CLUSTER__WORKER_WEBUI_PORT": "38081",
}
for _key, _value in _TEST_ENV.items():
    os.environ.setdefault(_key, _value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is an integration test."""
    for item in items:
        if "tests/integration/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
