"""The console while the real Cassandra does not answer, and after it answers again.

Cassandra is frozen (SIGSTOP) under a console that has not connected yet: the kernel still
accepts connections to its port, but nothing answers, as with a host that drops packets,
so the driver's connect waits for its whole connect timeout. The request that connects
waits; the others answer 503 at once instead of queueing behind it; after its failure the
console answers 503 without connecting until the back-off has passed; once Cassandra is
thawed (SIGCONT) the same console serves again. A frozen node comes back in a moment,
where a killed one would take a restart (tests/integration/test_api.py kills it for the
scoring API's outage).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from txmon.infra.process import wait_until
from txmon.webapp.console.web import COOKIE, Backend, ConsoleConfig, console_router


def test_the_console_answers_503_at_once_while_cassandra_is_frozen_and_recovers(services):
    from txmon.infra.services.cassandra import CassandraService

    pid = CassandraService(services).process.pid()
    assert pid is not None, "Cassandra is not running"
    calls: list[int] = []
    entered = threading.Event()
    holder: list[Backend] = []

    def connect() -> tuple[Any, tuple[Any, Any]]:
        calls.append(1)
        entered.set()
        return holder[0]._connect()  # the console's own connect to the real node

    backend = Backend(services, connect=connect, max_s=2.0)
    holder.append(backend)
    app = FastAPI()
    app.include_router(console_router(services, ConsoleConfig(), backend=backend))
    client = TestClient(app, follow_redirects=False)
    headers = {"Accept": "application/json", "Cookie": f"{COOKIE}=no-such-session"}

    def login_page() -> Response:
        # Reads the cookie's session (none): 200 needs Cassandra, 503 when it cannot answer.
        return client.get("/console/login", headers=headers)

    os.kill(pid, signal.SIGSTOP)
    try:
        slow: list[Response] = []
        first = threading.Thread(target=lambda: slow.append(login_page()))
        first.start()
        assert entered.wait(30)
        quick = login_page()
        # Answered while the first request still waits for the driver's connect timeout.
        assert first.is_alive(), "the connect ended before the second request was answered"
        assert quick.status_code == 503, quick.text
        assert quick.json()["detail"] == "Cassandra unavailable (connecting); retry shortly"
        assert quick.headers["retry-after"] == "1"
        first.join(60)
        assert not first.is_alive()
        assert slow[0].status_code == 503, slow[0].text
        assert slow[0].json()["error"] == "cassandra_unavailable" and slow[0].headers["retry-after"] == "1"
        during = login_page()  # within the back-off: refused without a connect
        assert during.status_code == 503 and len(calls) == 1, (during.text, calls)
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        # The same console, no restart: back once the back-off lets a request connect.
        assert wait_until(lambda: login_page().status_code == 200, timeout=120, interval=0.5)
        assert login_page().status_code == 200
        attempts = len(calls)
        assert login_page().status_code == 200 and len(calls) == attempts  # connected: kept
    finally:
        backend.close()
