"""The administrator login of ensure_roles, against a node that refuses logins at first."""

from __future__ import annotations

import pytest
from cassandra import AuthenticationFailed
from cassandra.cluster import NoHostAvailable

from txmon.infra import cassandra_schema
from txmon.infra.settings import load_settings

# Only passed through: the fake node below answers every connection.
SETTINGS = load_settings()


def _refused() -> NoHostAvailable:
    return NoHostAvailable("Unable to connect", {"127.0.0.1:9042": AuthenticationFailed("bad credentials")})


@pytest.fixture
def node(monkeypatch):
    """A node whose default superuser appears after ``superuser_after`` refused creations."""
    state = {"admin": False, "creations": 0, "superuser_after": 1, "connects": 0}

    def connect(settings, credential=None):
        state["connects"] += 1
        if not state["admin"]:
            raise _refused()
        return "cluster", "session"

    def create_admin(settings, admin):
        state["creations"] += 1
        if state["creations"] <= state["superuser_after"]:
            raise _refused()
        state["admin"] = True

    monkeypatch.setattr(cassandra_schema, "connect", connect)
    monkeypatch.setattr(cassandra_schema, "_create_admin", create_admin)
    monkeypatch.setattr(cassandra_schema.credentials, "cassandra", lambda admin=False: None)
    return state


def test_the_administrator_is_created_once_the_default_superuser_exists(node):
    assert cassandra_schema.admin_session(SETTINGS, timeout=10) == ("cluster", "session")
    assert node["creations"] == 2  # refused once (no superuser yet), then created


def test_an_existing_administrator_logs_in_without_being_created(node):
    node["admin"] = True
    assert cassandra_schema.admin_session(SETTINGS, timeout=10) == ("cluster", "session")
    assert node["creations"] == 0 and node["connects"] == 1


def test_refusals_past_the_timeout_raise_the_drivers_error(node):
    node["superuser_after"] = 10**6
    with pytest.raises(NoHostAvailable):
        cassandra_schema.admin_session(SETTINGS, timeout=0)


def test_a_node_that_is_down_is_not_retried(node, monkeypatch):
    def down(settings, credential=None):
        node["connects"] += 1
        raise NoHostAvailable("Unable to connect", {"127.0.0.1:9042": ConnectionRefusedError(111, "refused")})

    monkeypatch.setattr(cassandra_schema, "connect", down)
    with pytest.raises(NoHostAvailable):
        cassandra_schema.admin_session(SETTINGS, timeout=10)
    assert node["connects"] == 1
