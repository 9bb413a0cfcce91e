"""The console while Cassandra cannot be reached: connecting is tried by one request at a
time, and after a failure not again until a short back-off (growing, capped) has passed;
meanwhile every request is a 503 at once, its Retry-After the wait left. Once Cassandra
answers, the same console serves again (no restart).

A connect to a host that drops packets waits for the driver's whole connect timeout: the
console used to try again on every request, holding a lock, so every request queued
behind attempts it could not help. Here the clock is injected and the connect function
fails, hangs (on an event) or succeeds as each test says; threads are ordered with events
and barriers, never with sleeps. The shared helper is webapp/reconnect.py, also the scoring
API's (webapp/api/store.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cassandra.cluster import NoHostAvailable
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from tests.unit.test_console_unavailable import CSRF, FRAGMENT, HTML, Desk, EmptyAlerts
from txmon.infra.settings import load_settings
from txmon.webapp.console.web import COOKIE, Backend, ConsoleConfig, console_router
from txmon.webapp.reconnect import NotConnected, Reconnect

FIRST_S, MAX_S = 1.0, 15.0
GROWTH = [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]  # doubling from FIRST_S, capped at MAX_S
SAFETY_S = 30  # only so that a broken build fails instead of hanging; no assertion reads it


class Clock:
    """The back-off's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Cluster:
    def __init__(self) -> None:
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True


def unreachable() -> NoHostAvailable:
    """What the driver raises after its connect timeout against a host that drops packets."""
    return NoHostAvailable("Unable to connect to any servers", {"10.255.255.1:9042": OSError(110, "timed out")})


class Connect:
    """The console's connect function: fails while ``up`` is False, else connects. With
    ``hold``, each call first signals ``entered`` and waits for ``release`` (a connect
    that takes the driver's whole timeout)."""

    def __init__(self, hold: bool = False) -> None:
        self.up = False
        self.calls = 0
        self.hold = hold
        self.entered = threading.Event()
        self.release = threading.Event()
        self.clusters: list[Cluster] = []

    def __call__(self) -> tuple[Any, tuple[Any, Any]]:
        self.calls += 1
        if self.hold:
            self.entered.set()
            assert self.release.wait(SAFETY_S)
        if not self.up:
            raise unreachable()
        cluster = Cluster()
        self.clusters.append(cluster)
        return cluster, (EmptyAlerts(), Desk())


@pytest.fixture
def clock() -> Clock:
    return Clock()


def console(connect: Callable[[], tuple[Any, tuple[Any, Any]]], clock: Clock) -> tuple[TestClient, Backend]:
    backend = Backend(load_settings(), connect=connect, clock=clock, first_s=FIRST_S, max_s=MAX_S)
    app = FastAPI()
    app.include_router(console_router(load_settings(), ConsoleConfig(), backend=backend))
    return TestClient(app, follow_redirects=False), backend


@pytest.fixture
def connect() -> Connect:
    return Connect()


@pytest.fixture
def client(connect: Connect, clock: Clock) -> Iterator[TestClient]:
    c, backend = console(connect, clock)
    yield c
    backend.close()


def get(client: TestClient, headers: dict[str, str] = FRAGMENT) -> Response:
    """The login page with a live session: it reads the session (so it needs Cassandra) and,
    once connected, redirects to the queue."""
    return client.get("/console/login", headers={**headers, "Cookie": f"{COOKIE}=live"})


def refused(answer: Response, retry_after: int, cause: str = "NoHostAvailable") -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:500])
    assert answer.headers["retry-after"] == str(retry_after)
    body = answer.json()
    assert body["error"] == "cassandra_unavailable" and body["retry"] is True
    assert body["detail"] == f"Cassandra unavailable ({cause}); retry shortly"


def served(answer: Response) -> None:
    assert answer.status_code == 303 and answer.headers["location"] == "/console/", answer.text[:500]


# ------------------------------------------------------------------ through the console


def test_requests_during_the_back_off_do_not_connect(client, connect, clock):
    refused(get(client), 1)  # the first request tries, and fails
    assert connect.calls == 1
    for _ in range(6):
        clock.advance(0.125)
        refused(get(client), 1)
    assert connect.calls == 1  # the back-off has not passed: nobody tried again
    clock.advance(0.25)  # now exactly due
    refused(get(client), 2)  # one more attempt, failed: the next wait doubles
    assert connect.calls == 2


def test_retry_after_is_the_wait_left(client, connect, clock):
    for wait in GROWTH[:3]:  # 1, 2 and 4 s
        refused(get(client), int(wait))
        clock.advance(wait)
    refused(get(client), 8)  # the fourth failure: 8 s
    assert connect.calls == 4
    clock.advance(2.5)
    refused(get(client), 6)  # 5.5 s left, rounded up to whole seconds
    clock.advance(5.25)
    refused(get(client), 1)  # 0.25 s left
    assert connect.calls == 4
    # The error page for a browser carries the same wait.
    page = get(client, HTML)
    assert page.status_code == 503 and page.headers["retry-after"] == "1"
    assert "cannot be reached just now" in page.text


def test_the_interval_grows_and_is_capped(client, connect, clock):
    waits = []
    for _ in GROWTH:
        answer = get(client)
        waits.append(int(answer.headers["retry-after"]))
        refused(answer, waits[-1])
        clock.advance(waits[-1])  # each attempt exactly when due
    assert waits == [int(w) for w in GROWTH]
    assert connect.calls == len(GROWTH)


def test_the_console_recovers_when_cassandra_answers_again_without_a_restart(client, connect, clock):
    for wait in GROWTH[:4]:
        refused(get(client), int(wait))
        clock.advance(wait)
    connect.up = True
    served(get(client))  # the same console, now connected
    assert connect.calls == 5
    for _ in range(3):
        served(get(client))
    assert connect.calls == 5  # kept: no connect per request


def test_a_success_resets_the_back_off(connect, clock):
    client, backend = console(connect, clock)
    for wait in GROWTH[:3]:  # 1, 2, 4 s
        refused(get(client), int(wait))
        clock.advance(wait)
    connect.up = True
    served(get(client))
    backend.close()  # the connection dropped: the next request connects at once
    assert connect.clusters[-1].shut_down
    connect.up = False
    refused(get(client), 1)  # the first failure since the success: 1 s again, not 8
    assert connect.calls == 5


def test_concurrent_requests_during_a_slow_connect_get_503_without_waiting_for_it(clock):
    connect = Connect(hold=True)
    client, backend = console(connect, clock)
    slow: list[Response] = []
    first = threading.Thread(target=lambda: slow.append(get(client)))
    first.start()
    assert connect.entered.wait(SAFETY_S)  # the first request is inside the connect, which hangs
    others = 6
    start = threading.Barrier(others)
    answers: list[Response] = []
    lock = threading.Lock()

    def request() -> None:
        start.wait(SAFETY_S)
        answer = get(client)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=request) for _ in range(others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SAFETY_S)
    # Every one answered while the connect was still hanging (release is not set yet).
    assert not connect.release.is_set() and first.is_alive()
    assert len(answers) == others
    for answer in answers:
        refused(answer, 1, cause="connecting")
    assert connect.calls == 1  # only the first request tried
    connect.up = True
    connect.release.set()
    first.join(SAFETY_S)
    served(slow[0])
    served(get(client))
    assert connect.calls == 1
    backend.close()


def test_a_request_during_a_slow_reconnect_after_a_failure_is_not_held_either(clock):
    connect = Connect(hold=True)
    client, backend = console(connect, clock)
    connect.release.set()
    refused(get(client), 1)  # failed once
    clock.advance(1.0)
    connect.release.clear()
    connect.entered.clear()
    slow: list[Response] = []
    first = threading.Thread(target=lambda: slow.append(get(client)))
    first.start()
    assert connect.entered.wait(SAFETY_S)
    refused(get(client), 2, cause="connecting")  # the wait a failure of the attempt in flight would start
    assert first.is_alive() and connect.calls == 2
    connect.release.set()
    first.join(SAFETY_S)
    refused(slow[0], 2)
    backend.close()


def test_a_failed_connect_with_a_non_driver_error_is_still_a_503(clock):
    # Any failure to connect (bad credentials, no keyspace) is "not connected": the console
    # keeps answering quickly and tries again, as the scoring API does.
    def broken() -> tuple[Any, tuple[Any, Any]]:
        raise RuntimeError("keyspace txmon does not exist")

    client, backend = console(broken, clock)
    refused(get(client), 1, cause="RuntimeError")
    backend.close()


def test_the_logout_and_login_forms_answer_503_during_the_back_off(client, connect, clock):
    refused(get(client), 1)
    clock.advance(0.5)
    out = client.post("/console/logout", data={"csrf_token": CSRF}, headers={**FRAGMENT, "Cookie": f"{COOKIE}=live"})
    refused(out, 1)
    assert connect.calls == 1


# ------------------------------------------------------------------ the helper itself


def failing_reconnect(clock: Clock, calls: list[int], **kwargs: Any) -> Reconnect[str]:
    def connect() -> str:
        calls.append(1)
        raise unreachable()

    return Reconnect(connect, first_s=FIRST_S, max_s=MAX_S, clock=clock, **kwargs)


def test_the_helper_grows_caps_and_resets(clock):
    calls: list[int] = []
    reconnect = failing_reconnect(clock, calls)
    intervals = []
    for _ in GROWTH:
        with pytest.raises(NotConnected) as failed:
            reconnect.get()
        assert failed.value.cause == "NoHostAvailable" and failed.value.retry_after == reconnect.interval
        intervals.append(reconnect.interval)
        with pytest.raises(NotConnected) as waiting:  # at once again: no connect
            reconnect.get()
        assert waiting.value.retry_after == reconnect.interval
        clock.advance(reconnect.interval)
    assert intervals == GROWTH and len(calls) == len(GROWTH)
    reconnect.forget()  # as after a success: the schedule starts over
    assert reconnect.interval == 0
    with pytest.raises(NotConnected):
        reconnect.get()
    assert reconnect.interval == FIRST_S


def test_the_helper_keeps_a_value_and_connects_once(clock):
    made: list[str] = []

    def connect() -> str:
        made.append("session")
        return f"session {len(made)}"

    reconnect = Reconnect(connect, clock=clock)
    assert [reconnect.get() for _ in range(3)] == ["session 1"] * 3
    assert reconnect.value == "session 1" and reconnect.forget() == "session 1"
    assert reconnect.get() == "session 2"


def test_the_helper_lets_interrupts_through(clock):
    def interrupted() -> str:
        raise KeyboardInterrupt

    reconnect = Reconnect(interrupted, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        reconnect.get()


@pytest.mark.parametrize(("first_s", "max_s", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_the_helper_refuses_a_schedule_that_is_no_back_off(first_s, max_s, factor):
    with pytest.raises(ValueError, match="back-off needs"):
        Reconnect(lambda: "x", first_s=first_s, max_s=max_s, factor=factor)


def test_wait_first_holds_callers_for_the_first_connect_only(clock):
    # The scoring API's burst of requests at start-up is served once the first connect is
    # up; after a failure, a caller during a reconnect is refused at once.
    entered, release, fail = threading.Event(), threading.Event(), threading.Event()

    def connect() -> str:
        entered.set()
        assert release.wait(SAFETY_S)
        if fail.is_set():
            raise unreachable()
        return "session"

    reconnect = Reconnect(connect, first_s=FIRST_S, max_s=MAX_S, clock=clock, wait_first=True)
    got: list[str] = []
    first = threading.Thread(target=lambda: got.append(reconnect.get()))
    first.start()
    assert entered.wait(SAFETY_S)
    second = threading.Thread(target=lambda: got.append(reconnect.get()))
    second.start()
    # Released only once the second caller waits on the helper's condition (CPython keeps
    # its waiters in ``_waiters``), so that it is the wait, not a late arrival, that is tested.
    while not reconnect._cond._waiters and second.is_alive():  # type: ignore[attr-defined]
        second.join(0.001)
    assert second.is_alive() and not got
    release.set()
    first.join(SAFETY_S)
    second.join(SAFETY_S)
    assert got == ["session", "session"]

    # Lost and failed once: the next reconnect in flight refuses other callers at once.
    reconnect.forget()
    fail.set()
    with pytest.raises(NotConnected):
        reconnect.get()
    clock.advance(FIRST_S)
    release.clear()
    entered.clear()
    fail.clear()
    third = threading.Thread(target=lambda: got.append(reconnect.get()))
    third.start()
    assert entered.wait(SAFETY_S)
    with pytest.raises(NotConnected) as refused_at_once:
        reconnect.get()
    assert refused_at_once.value.cause == "connecting" and third.is_alive()
    release.set()
    third.join(SAFETY_S)
    assert got[-1] == "session"


def test_a_start_up_burst_outlasts_a_slow_failed_first_connect(clock):
    # The scoring API's first requests wait for the first connect; if it fails slowly (a
    # loaded machine, the driver's timeout), one of them tries again and the others keep
    # waiting for that attempt, as requests queued for the first connect always did.
    entered, release = threading.Event(), threading.Event()
    attempts: list[int] = []

    def connect() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            entered.set()
            assert release.wait(SAFETY_S)
            clock.advance(10.0)
            raise unreachable()
        return "session"

    reconnect = Reconnect(connect, first_s=FIRST_S, max_s=MAX_S, clock=clock, wait_first=True)
    got: list[str] = []
    first = threading.Thread(target=lambda: got.append("refused") if _refused(reconnect) else None)
    first.start()
    assert entered.wait(SAFETY_S)
    waiters = [threading.Thread(target=lambda: got.append(reconnect.get())) for _ in range(3)]
    for w in waiters:
        w.start()
    while len(reconnect._cond._waiters) < 3 and all(w.is_alive() for w in waiters):  # type: ignore[attr-defined]
        waiters[0].join(0.001)
    release.set()
    for t in (first, *waiters):
        t.join(SAFETY_S)
    assert sorted(got) == ["refused", "session", "session", "session"] and len(attempts) == 2


def _refused(reconnect: Reconnect[str]) -> bool:
    try:
        reconnect.get()
    except NotConnected:
        return True
    return False
