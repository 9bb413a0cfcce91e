"""The console when Cassandra cannot answer, and the console's inputs that must be ASCII.

Cassandra down or too slow is the driver's own exceptions (NoHostAvailable from connecting
or from a request, OperationTimedOut, the coordinator's timeouts), raised wherever the
route is: connecting (``Backend.stores``), reading the session of the cookie, the page's
reads, a form's writes. Each must be a 503 the user can retry: the error page for a
browser's page or form, the service's error shape for the queue's polling and any other
client. The stores here are stand-ins that raise those real exception classes; the
console against a real Cassandra is tests/integration/test_console_browser.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.cluster import NoHostAvailable
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_api import MemoryProducer, MemoryStore, memory_services
from txmon.infra.settings import load_settings
from txmon.webapp.api.config import ApiSettings
from txmon.webapp.app import create_app
from txmon.webapp.console import insights, queries
from txmon.webapp.console.store import Session, User
from txmon.webapp.console.web import ACCOUNT_NUMBER, COOKIE, LOGIN_COOKIE, UNAVAILABLE, Backend

CSRF = "csrf-token-of-the-session"
ALERT = uuid.UUID("00000000-0000-4000-8000-000000000001")
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}  # a browser's
FRAGMENT = {"X-Console-Fragment": "1", "Accept": "*/*"}  # static/console.js's polling

DRIVER_ERRORS: list[Callable[[], Exception]] = [
    lambda: NoHostAvailable("Unable to connect to any servers", {"127.0.0.1:19042": ConnectionRefusedError(111, "x")}),
    lambda: OperationTimedOut(errors={}, last_host="127.0.0.1:19042"),
    lambda: ReadTimeout("Operation timed out - received only 0 responses."),
    lambda: WriteTimeout("Operation timed out - received only 0 responses.", write_type=0),  # SIMPLE
    lambda: Unavailable("Cannot achieve consistency level ONE"),
]
ERROR_IDS = ["NoHostAvailable", "OperationTimedOut", "ReadTimeout", "WriteTimeout", "Unavailable"]

# (method, path, form) of every console route a session cookie reaches
ROUTES: list[tuple[str, str, dict[str, str] | None]] = [
    ("GET", "/console/", None),
    ("GET", "/console/?status=all&severity=HIGH", None),
    ("GET", "/console/queue/rows", None),
    ("GET", f"/console/cases/{ALERT}", None),
    ("GET", "/console/dashboard", None),
    ("GET", "/console/insights", None),
    ("GET", f"/console/insights?alert={ALERT}", None),
    ("GET", "/console/insights?segment=all", None),
    ("GET", "/console/login", None),
    ("POST", "/console/logout", {"csrf_token": CSRF}),
    ("POST", f"/console/cases/{ALERT}/assign", {"csrf_token": CSRF}),
    ("POST", f"/console/cases/{ALERT}/comment", {"csrf_token": CSRF, "text": "called the customer"}),
    ("POST", f"/console/cases/{ALERT}/disposition", {"csrf_token": CSRF, "disposition": "confirmed_fraud"}),
    ("POST", "/console/bulk-close", {"csrf_token": CSRF, "alert_id": str(ALERT)}),
    ("POST", "/console/insights", {"csrf_token": CSRF, "account": "123456789012"}),
]


class Down:
    """A store, or the driver's session, of a Cassandra that cannot answer: every method
    raises the driver's exception, and any attribute is another such object."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Down(self._error)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error()


class Desk:
    """The console's store, connected, with one live session; every other
    read fails as ``fail`` says (None: answers nothing). A supervisor: every action reaches the store."""

    def __init__(self, fail: Callable[[], Exception] | None = None) -> None:
        self.fail = fail

    def session_for(self, token: str, now: datetime) -> Session | None:
        return Session("ana", "supervisor", CSRF, now + timedelta(hours=1)) if token == "live" else None

    def user(self, username: str) -> User | None:
        return User("ana", "supervisor", "$argon2id$unused", False) if username == "ana" else None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or self.fail is None:
            raise AttributeError(name)
        return Down(self.fail)


class Rows(list):
    def one(self) -> Any:
        return self[0] if self else None


class EmptySession:
    """The driver's session of an empty keyspace: statements prepare, reads find nothing."""

    def prepare(self, cql: str) -> str:
        return cql

    def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Rows:
        return Rows()


class EmptyAlerts:
    session = EmptySession()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """The whole application (API and console), its API on in-memory stand-ins; the
    console's Backend is replaced per test (stores)."""

    tmp = tmp_path_factory.mktemp("console-down")
    api = ApiSettings(rate_per_s=1e9, burst=10**9)
    services = memory_services(MemoryStore(), MemoryProducer(), api, tmp, max_age=None)
    return TestClient(create_app(load_settings(), services=services), follow_redirects=False)


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Any]], None]:
    """``stores(make)``: the console's Backend.stores() returns (or raises from) ``make()``."""

    def use(make: Callable[[], Any]) -> None:
        monkeypatch.setattr(Backend, "stores", lambda self: make())

    return use


def _raise(error: Callable[[], Exception]) -> Callable[[], Any]:
    def make() -> Any:
        raise error()

    return make


def request(
    client: TestClient, method: str, path: str, form: dict[str, str] | None, headers: dict[str, str]
) -> Response:
    """``method path`` with the live session's cookie (and ``form`` as a browser posts it)."""
    client.cookies.clear()
    return client.request(method, path, data=form, headers={**headers, "Cookie": f"{COOKIE}=live"})


def unavailable(answer: Response, html: bool) -> None:
    """A 503 the user can retry: the error page, or the service's error shape."""
    assert answer.status_code == 503, (answer.status_code, answer.text[:2000])
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["cache-control"] == "no-store"
    if html:
        assert answer.headers["content-type"].startswith("text/html")
        assert 'id="refused"' in answer.text and "cannot be reached just now" in answer.text
        assert "Traceback" not in answer.text and "127.0.0.1" not in answer.text
        assert 'name="csrf_token"' not in answer.text  # no session shown: it could not be read
    else:
        body = answer.json()
        assert body["error"] == "cassandra_unavailable" and body["retry"] is True
        assert re.fullmatch(r"Cassandra unavailable \(\w+\); retry shortly", body["detail"]), body


@pytest.mark.parametrize("error", DRIVER_ERRORS, ids=ERROR_IDS)
@pytest.mark.parametrize(("method", "path", "form"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_cassandra_down_at_connect_is_a_503_on_every_route(app, stores, error, method, path, form):
    # Backend.stores() connects on first use: with Cassandra down, every request carrying a
    # session cookie answered 500 (NoHostAvailable out of the route).
    stores(_raise(error))
    unavailable(request(app, method, path, form, HTML), html=True)
    unavailable(request(app, method, path, form, FRAGMENT), html=False)
    unavailable(request(app, method, path, form, {"Accept": "application/json"}), html=False)


@pytest.mark.parametrize("error", DRIVER_ERRORS, ids=ERROR_IDS)
@pytest.mark.parametrize(("method", "path", "form"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_cassandra_lost_after_connecting_is_a_503_on_every_route(app, stores, error, method, path, form):
    # Connected once, then gone: the session's own read fails.
    stores(lambda: (Down(error), Down(error)))
    unavailable(request(app, method, path, form, HTML), html=True)
    unavailable(request(app, method, path, form, FRAGMENT), html=False)


@pytest.mark.parametrize("error", DRIVER_ERRORS, ids=ERROR_IDS)
@pytest.mark.parametrize(("method", "path", "form"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_cassandra_failing_a_page_read_or_a_write_is_a_503(app, stores, error, method, path, form):
    # The session is read; the page's reads or the form's writes then fail.
    stores(lambda: (Down(error), Desk(fail=error)))
    answer = request(app, method, path, form, HTML)
    if answer.status_code == 303:  # the login page with a live session redirects before any read
        assert (method, path) == ("GET", "/console/login") and answer.headers["location"] == "/console/"
        return
    unavailable(answer, html=True)


def test_the_login_form_with_cassandra_down_is_a_503_and_sets_no_cookie(app, stores):
    stores(_raise(DRIVER_ERRORS[0]))
    app.cookies.clear()
    form = {"csrf_token": "nonce", "username": "ana", "password": "correct horse battery"}
    answer = app.post("/console/login", data=form, headers={**HTML, "Cookie": f"{LOGIN_COOKIE}=nonce"})
    unavailable(answer, html=True)
    assert COOKIE not in answer.cookies
    # Without a cookie no route needs Cassandra: the login page is still served.
    app.cookies.clear()
    assert app.get("/console/login", headers=HTML).status_code == 200


def test_errors_other_than_cassandras_are_not_taken_for_an_outage(app, stores):
    # Only the driver's unavailability is a 503; a bug stays a 500, not "retry shortly".
    stores(_raise(lambda: KeyError("bug")))
    with pytest.raises(KeyError):
        request(app, "GET", "/console/", None, HTML)
    assert KeyError not in UNAVAILABLE


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    error=st.sampled_from(DRIVER_ERRORS),
    accept=st.sampled_from(["", "*/*", "text/html", "application/json", "text/html;q=0.1, */*", "text/*"]),
    fragment=st.booleans(),
    where=st.sampled_from(["connect", "session", "page"]),
)
def test_any_console_request_during_an_outage_is_a_503(app, stores, route, error, accept, fragment, where):
    method, path, form = route
    stores(
        {
            "connect": _raise(error),
            "session": lambda: (Down(error), Down(error)),
            "page": lambda: (Down(error), Desk(fail=error)),
        }[where]
    )
    headers = {"Accept": accept, **({"X-Console-Fragment": "1"} if fragment else {})}
    answer = request(app, method, path, form, headers)
    if answer.status_code == 303:
        assert (where, method, path) == ("page", "GET", "/console/login")
        return
    unavailable(answer, html="text/html" in accept and not fragment)


# ------------------------------------------------------------------ ASCII-only inputs

DIGITS = st.characters(categories=["Nd"])  # decimal digits of every script: Arabic-Indic, Devanagari, fullwidth ...


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=DIGITS, min_size=6, max_size=18))
def test_an_account_number_is_ascii_digits_only(text: str):
    assert bool(ACCOUNT_NUMBER.fullmatch(text)) == text.isascii()


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=DIGITS, min_size=4, max_size=4))
def test_a_merchant_category_segment_is_ascii_digits_only(code: str):
    assert bool(insights.SEGMENT.fullmatch(f"mcc:{code}")) == code.isascii()


OTHER_DIGITS = [
    "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662",  # Arabic-Indic 123456789012
    "\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e\u096f\u0966",  # Devanagari 1234567890
    "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # fullwidth 12345678
    "12345\uff167890",  # one fullwidth 6 among ASCII digits
]


@pytest.mark.parametrize("account", OTHER_DIGITS)
def test_the_account_lookup_refuses_other_scripts_digits(app, stores, account):
    # \d{6,18} took Arabic-Indic and other digits, and the lookup sent them to Cassandra.
    stores(lambda: (EmptyAlerts(), Desk()))
    answer = request(app, "POST", "/console/insights", {"csrf_token": CSRF, "account": account}, HTML)
    assert answer.status_code == 200 and "an account number is 6 to 18 digits" in answer.text


def test_a_segment_with_other_scripts_digits_is_no_such_segment(app, stores):
    stores(lambda: (EmptyAlerts(), Desk()))
    answer = request(app, "GET", "/console/insights?segment=mcc:%D9%A5%D9%A4%D9%A1%D9%A1", None, HTML)  # mcc:٥٤١١
    assert answer.status_code == 200 and "no such segment" in answer.text


@pytest.mark.parametrize(("page", "read"), [("3", 3), ("\u0663", 1), ("+3", 1), (" 3", 1), ("3_0", 1), ("9" * 5000, 1)])
def test_the_queue_page_number_is_ascii_digits(page: str, read: int):
    assert queries.QueueFilter.parse({"page": page}, datetime(2026, 12, 6, tzinfo=UTC).date()).page == read
