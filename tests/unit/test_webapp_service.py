"""The web application as a background service (infra/services/webapp.py): a real
`txmon api` process on loopback, tracked by pid file, found again by a second start,
shown by `infra status` and stopped by `infra down`. /healthz needs neither Kafka nor
Cassandra, so this runs without them (the test's state dir has none running)."""

from __future__ import annotations

import socket

import psutil
import pytest

from txmon.infra import stack
from txmon.infra.errors import PortInUseError
from txmon.infra.services.webapp import READY_TIMEOUT_S, WebAppService, webapp_service
from txmon.infra.settings import load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    # The child reads its settings from this environment: no models to load, and a state
    # dir of the test's own so the pid file and record are the test's.
    monkeypatch.setenv("TXMON_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TXMON_API__REGISTRY_ROOT", str(tmp_path / "no-models"))
    return load_settings()


def test_started_once_reused_by_a_second_start_listed_and_stopped_by_down(settings):
    port = _free_port()
    web = webapp_service(settings, port)
    assert web.start() is True
    try:
        web.wait_ready(READY_TIMEOUT_S)
        pid = web.process.pid()
        assert pid is not None and web.probe() is None
        child = psutil.Process(pid)
        assert "--host" in child.cmdline() and child.cmdline()[child.cmdline().index("--host") + 1] == "127.0.0.1"
        assert all(c.laddr.ip == "127.0.0.1" for c in child.net_connections(kind="tcp") if c.status == "LISTEN")

        # A second run (another port configured meanwhile) finds the running one and keeps it.
        again = webapp_service(settings, _free_port())
        assert again.port == port and again.process.pid() == pid
        assert again.start() is False and web.process.pid() == pid

        listed = {s.name: s for s in stack.status(settings)}
        assert listed["webapp"].healthy and listed["webapp"].pid == pid and listed["webapp"].port == port

        lines: list[str] = []
        stack.down(settings, log=lines.append)
        assert lines[0] == "webapp: stopped", lines
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert WebAppService.recorded(settings) is None
        assert "webapp" not in {s.name for s in stack.status(settings)}
    finally:
        web.stop()


def test_status_reports_a_recorded_instance_that_died(settings):
    web = WebAppService(settings, _free_port())
    web.prepare()  # the record a start leaves, with no process behind it
    listed = {s.name: s for s in stack.status(settings)}
    assert listed["webapp"].pid is None and not listed["webapp"].healthy
    assert web.stop() is False and WebAppService.recorded(settings) is None


def test_a_taken_port_is_refused_before_anything_starts(settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        web = WebAppService(settings, taken.getsockname()[1])
        with pytest.raises(PortInUseError, match="TXMON_API__PORT"):
            web.start()
    assert web.process.pid() is None and WebAppService.recorded(settings) is None


def test_a_damaged_record_is_ignored(settings):
    record = settings.state_path / "run" / "webapp.json"
    record.parent.mkdir(parents=True)
    record.write_text("{not json")
    assert WebAppService.recorded(settings) is None
    assert webapp_service(settings, 8399).port == 8399
