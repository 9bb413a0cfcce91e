"""The web application against HTTP input nobody here wrote: arbitrary JSON (any nesting,
huge numbers, NaN and Infinity literals, lone surrogates, wrong types, extra and repeated
keys), bodies that are not JSON or not UTF-8, wrong content types, bodies over the limit,
odd paths, query strings and headers, sent to every route of the scoring API and to the
console's pages and forms.

What must hold whatever arrives: no 500 and no traceback; a refusal is a 4xx in the
service's own error shape (``error`` and ``detail``); a request without credentials is
refused before its body is read; valid requests still succeed. Cassandra and Kafka are the
in-memory stand-ins of tests/unit/test_api.py; the console has no such stand-in, so its
routes are driven only as far as they go without a session (the login form, and every
other route's refusal), and its query-string filter is checked on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, quote_from_bytes

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_api import MemoryProducer, MemoryStore, cheap_hasher, event, memory_services
from txmon.infra.settings import load_settings
from txmon.webapp.api import keys as api_keys
from txmon.webapp.api.config import ApiSettings
from txmon.webapp.api.keys import create_key
from txmon.webapp.app import create_app
from txmon.webapp.console import auth as console_auth
from txmon.webapp.console import queries
from txmon.webapp.console.web import COOKIE, LOGIN_COOKIE

LIMIT = 256 * 1024  # the default body limit: deep nesting fits inside it
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


@dataclass
class Service:
    client: TestClient
    key: str  # scopes score, read, label
    store: MemoryStore
    producer: MemoryProducer

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One application for the module (hundreds of requests): in-memory Cassandra and Kafka,
    a rate and burst no test reaches, cheap argon2 (as tests/unit/test_api.py)."""

    tmp = tmp_path_factory.mktemp("hostile")
    store, producer = MemoryStore(), MemoryProducer()
    api = ApiSettings(rate_per_s=1e9, burst=10**9, max_body_bytes=LIMIT, batch_max=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api_keys, "_hasher", cheap_hasher)
        services = memory_services(store, producer, api, tmp)
        key = create_key(store, "fuzz", ["score", "read", "label"])[0]
        yield Service(TestClient(create_app(load_settings(), services=services)), key, store, producer)


def judged(response: Response) -> Response:
    """The answer any input must get: below 500, and a refusal in the service's error shape."""
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("detail"), str) and body["detail"], body
        response.content.decode("utf-8")  # the answer itself is UTF-8
    return response


# ------------------------------------------------------------------ strategies

ANY_TEXT = st.text(alphabet=st.characters(codec=None), max_size=40)  # lone surrogates, NUL, RTL marks
ODD_TEXT = st.sampled_from(["", "\x00", "\u202egnp.exe", "\ud800", "\udfff", "é" * 3, "x" * 5000, "💳", "\ufeff"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**20, max_value=10**60)
    | st.floats()  # NaN and +-Infinity, sent as the literals NaN / Infinity
    | ANY_TEXT
    | ODD_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT | ODD_TEXT, inner, max_size=4),
    max_leaves=12,
)
EVENT_FIELDS = [*event(), "payer.account_number", "payer.ifsc", "payee.vpa", "payee.account_number", "geo", "extra"]


def dumps(value: Any) -> bytes:
    """JSON as a lax client writes it: NaN/Infinity literals, surrogates as \\u escapes."""
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def mutated_events(draw: st.DrawFn) -> dict:
    """A valid event with some fields replaced by anything, removed, or added."""
    body = event(draw(st.from_regex(r"\Afz-[0-9a-z]{8}\Z")))
    for path in draw(st.lists(st.sampled_from(EVENT_FIELDS), min_size=1, max_size=4)):
        target, _, leaf = path.rpartition(".")
        holder = body.get(target) if target else body
        if not isinstance(holder, dict):
            continue
        if draw(st.booleans()):
            holder.pop(leaf, None)
        else:
            holder[leaf] = draw(JSON)
    return body


@st.composite
def repeated_keys(draw: st.DrawFn) -> bytes:
    """An object with a key given twice (JSON parsers keep the last one)."""
    good = event(draw(st.from_regex(r"\Afz-[0-9a-z]{8}\Z")))
    pairs = [(k, dumps(v)) for k, v in good.items()]
    name = draw(st.sampled_from(list(good)))
    pairs.insert(draw(st.integers(0, len(pairs))), (name, dumps(draw(JSON))))
    return b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in pairs) + b"}"


DEEP = [
    b"[" * 100_000,
    b"{" * 5_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'{"transactions":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    b'{"transactions":[' + b"[" * 3_000 + b"]" * 3_000 + b"]}",
    b'{"txn_id":"fz-00000001","is_fraud":true,"scenario":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
]
BODIES = st.one_of(
    mutated_events().map(dumps),
    JSON.map(dumps),
    repeated_keys(),
    st.binary(max_size=200),  # not JSON, not UTF-8
    st.sampled_from([b"", b"null", b"NaN", b"-Infinity", b"1e999999", b"9" * 5000, b"\xff\xfe{}", b'"\\ud800"']),
    st.sampled_from(DEEP),
    st.builds(lambda items: dumps({"transactions": items}), st.lists(mutated_events() | JSON, max_size=6)),
    st.builds(
        dumps,
        st.dictionaries(st.sampled_from(["label_id", "txn_id", "is_fraud", "scenario", "label_time", "x"]), JSON),
    ),
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "ä/ö",
        "",
    ]
)
POSTS = ["/v1/score", "/v1/score?ingest=true", "/v1/score?ingest=false", "/v1/score/batch", "/v1/labels"]


def _headers(auth: dict[str, str], content_type: str | None) -> list[tuple[bytes, bytes]]:
    out = [(k.lower().encode(), v.encode()) for k, v in auth.items()]
    if content_type is not None:
        out.append((b"content-type", content_type.encode()))
    return out


# ------------------------------------------------------------------ bodies


@FUZZ
@given(path=st.sampled_from(POSTS), body=BODIES, content_type=CONTENT_TYPES)
def test_any_body_to_any_post_route_is_answered_not_crashed(service: Service, path: str, body: bytes, content_type):
    judged(service.client.post(path, content=body, headers=_headers(service.auth, content_type)))


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("body", DEEP, ids=lambda b: f"{b[:20]!r}x{len(b)}")
def test_json_nested_past_the_parsers_limit_is_a_422(service: Service, path: str, body: bytes):
    # json.loads raises RecursionError (no ValueError) a few thousand levels down: the
    # batch and label routes answered 500 to b"[" * 5000.
    answer = judged(service.client.post(path, content=body, headers=service.auth))
    assert answer.status_code == 422


@FUZZ
@given(changes=mutated_events())
def test_a_mutated_event_is_scored_or_refused_naming_the_problem(service: Service, changes: dict):
    answer = judged(service.client.post("/v1/score", content=dumps(changes), headers=service.auth))
    if answer.status_code == 422:
        assert answer.json()["error"] == "invalid_event" and answer.json()["reason"]
    else:
        assert answer.status_code == 200 and 0 <= answer.json()["risk_score"] <= 100


@FUZZ
@given(label=st.dictionaries(st.sampled_from(["label_id", "txn_id", "is_fraud", "scenario", "label_time"]), JSON))
def test_any_label_is_published_or_refused_and_the_answer_is_utf8(service: Service, label: dict):
    answer = judged(service.client.post("/v1/labels", content=dumps(label), headers=service.auth))
    assert answer.status_code in (200, 202, 409, 422)


@pytest.mark.parametrize(
    "label_id",
    ["\ud800", "ab\udfffcd", "a\u202eb", "nul\x00id", "tab\tid", "\ufeffbom"],
)
def test_a_label_id_with_unprintable_text_is_a_422_naming_it(service: Service, label_id: str):
    # A lone surrogate (\ud800 as a JSON escape) was published, then the answer echoing it
    # could not be encoded: 500 with the label already on the topic.
    published = len(service.producer.labels)
    body = {"label_id": label_id, "txn_id": "fz-label-0001", "is_fraud": True}
    answer = judged(service.client.post("/v1/labels", content=dumps(body), headers=service.auth))
    assert answer.status_code == 422 and answer.json()["field"] == "label_id"
    assert len(service.producer.labels) == published
    body["label_id"] = "chargeback-\u0915-1"  # printable text in any script is a label id (first time 202)
    answer = judged(service.client.post("/v1/labels", content=dumps(body), headers=service.auth))
    assert answer.status_code in (200, 202) and answer.json()["label_id"] == body["label_id"]


def test_a_body_over_the_limit_is_413_whether_announced_or_streamed(service: Service):
    big = b"[" + b"1," * LIMIT + b"1]"
    for path in POSTS:
        answer = judged(service.client.post(path, content=big, headers=service.auth))
        assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"
        chunks = iter([big[:1000], big[1000:]])  # no Content-Length: counted while read
        answer = judged(service.client.post(path, content=chunks, headers=service.auth))
        assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"


# ------------------------------------------------------------------ credentials


class _Unread:
    """A request body that fails the test if the application reads it."""

    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("the body was read before the credentials were checked")
        yield b""  # pragma: no cover - makes this a generator


AUTH_VALUES = st.one_of(
    st.binary(max_size=80).filter(lambda b: not any(c in b for c in b"\r\n\x00")),
    st.sampled_from([b"Bearer", b"Bearer ", b"bearer  ", b"Basic dXNlcjpwYXNz", b"Bearer txk_", b"Bearer \xff\xfe"]),
    st.from_regex(rb"\ABearer txk_[0-9a-f]{12}_[A-Za-z0-9_-]{32,64}\Z"),  # well formed, unknown
)
AUTH_HEADERS = st.lists(st.tuples(st.sampled_from([b"authorization", b"x-api-key"]), AUTH_VALUES), max_size=3)
ROUTES = [("POST", p) for p in POSTS] + [
    ("GET", "/v1/transactions/fz-00000001"),
    ("GET", "/v1/accounts/123456789012/windows"),
    ("GET", "/v1/accounts/123456789012/summary"),
    ("GET", "/v1/alerts"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


@FUZZ
@given(route=st.sampled_from(ROUTES), headers=AUTH_HEADERS)
def test_without_a_valid_key_every_route_is_refused_before_the_body_is_read(
    service: Service, route: tuple[str, str], headers: list[tuple[bytes, bytes]]
):
    method, path = route
    answer = judged(service.client.request(method, path, content=_Unread(), headers=headers))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_two_authorization_headers_use_the_first(service: Service):
    good, bad = service.auth["Authorization"].encode(), b"Bearer txk_nonsense"
    first_good = service.client.post(
        "/v1/score", json=event(), headers=[(b"authorization", good), (b"authorization", bad)]
    )
    first_bad = service.client.post(
        "/v1/score", json=event(), headers=[(b"authorization", bad), (b"authorization", good)]
    )
    assert (judged(first_good).status_code, judged(first_bad).status_code) == (200, 401)


# ------------------------------------------------------------------ paths and query strings

SEGMENTS = st.one_of(
    st.binary(min_size=1, max_size=60).map(lambda b: quote_from_bytes(b, safe="")),
    st.sampled_from(["..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "%00", "%ff%fe", "%ED%A0%80", "a" * 8000, "%", "%zz"]),
)
QUERIES = st.one_of(
    st.binary(max_size=80).map(lambda b: quote_from_bytes(b, safe="=&")),
    st.lists(
        st.tuples(
            st.sampled_from(
                ["since", "kind", "limit", "day", "decision", "severity", "min_risk", "page", "ingest", "x"]
            ),
            st.one_of(
                ANY_TEXT,
                st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01", "1e9"]),
                st.integers().map(str),
                st.datetimes(min_value=datetime(1, 1, 1), timezones=st.sampled_from([None, UTC])).map(
                    datetime.isoformat
                ),
            ),
        ),
        max_size=4,
    ).map(lambda pairs: "&".join(f"{quote(k)}={quote(v, errors='surrogatepass')}" for k, v in pairs)),
)
GETS = [
    "/v1/transactions/{}",
    "/v1/accounts/{}/windows",
    "/v1/accounts/{}/summary",
    "/v1/alerts",
    "/console/",
    "/console/queue/rows",
    "/console/cases/{}",
    "/console/dashboard",
    "/console/insights",
    "/console/login",
    "/console/static/{}",
    "/{}",
]


@FUZZ
@given(template=st.sampled_from(GETS), segment=SEGMENTS, query=QUERIES)
def test_odd_paths_and_query_strings_are_answered_not_crashed(service: Service, template: str, segment, query):
    answer = judged(
        service.client.get(f"{template.format(segment)}?{query}", headers=service.auth, follow_redirects=False)
    )
    if template.startswith("/console/") and template not in ("/console/login", "/console/static/{}"):
        assert answer.status_code != 200  # no other page without a session


@pytest.mark.parametrize(
    "since",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00", "1969-12-31T23:59:59Z"],
)
def test_a_since_outside_what_the_windows_can_hold_is_a_422_naming_it(service: Service, since: str):
    # The first two overflowed converting to UTC (500); year 1 overflowed in the store,
    # which reads slide_1h from an hour before `since`.
    answer = judged(service.client.get(f"/v1/accounts/123456789012/windows?since={quote(since)}", headers=service.auth))
    assert answer.status_code == 422 and answer.json()["field"] == "since"
    fine = service.client.get("/v1/accounts/123456789012/windows?since=1970-01-01T00:00:00Z", headers=service.auth)
    assert judged(fine).status_code == 200


def test_framework_refusals_are_in_the_service_error_shape(service: Service):
    assert judged(service.client.get("/v1/score", headers=service.auth)).json()["error"] == "method_not_allowed"
    assert judged(service.client.get("/nowhere")).json()["error"] == "not_found"
    assert judged(service.client.get("/console/static/..%2Fweb.py")).json()["error"] == "not_found"


# ------------------------------------------------------------------ valid input still works


@FUZZ
@given(
    txn_id=st.from_regex(r"\A[0-9A-Za-z][0-9A-Za-z_-]{7,63}\Z"),
    amount=st.integers(1, 10**11),
    minutes_ago=st.integers(0, 60 * 24 * 29),
    payer=st.from_regex(r"\A[0-9]{9,18}\Z"),
    extra=st.fixed_dictionaries({}, optional={"mcc": st.sampled_from(["5411", "6011"]), "ip": st.just("10.2.3.4")}),
)
def test_valid_events_are_still_scored(service: Service, txn_id, amount, minutes_ago, payer, extra):
    when = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    body = event(txn_id, amount_paise=amount, event_time=when, payer={"account_number": payer}, **extra)
    answer = judged(service.client.post("/v1/score", json=body, headers=service.auth))
    assert answer.status_code == 200, answer.text
    assert answer.json()["txn_id"] == txn_id and 0 <= answer.json()["risk_score"] <= 100
    batch = judged(service.client.post("/v1/score/batch", json={"transactions": [body]}, headers=service.auth))
    assert batch.status_code == 200 and batch.json()["results"][0]["txn_id"] == txn_id


# ------------------------------------------------------------------ the console without a session

FORM_FIELDS = st.dictionaries(
    st.sampled_from(
        ["csrf_token", "username", "password", "alert_id", "text", "assignee", "disposition", "account", "back", "x"]
    ),
    ANY_TEXT | ODD_TEXT,
    max_size=5,
)
CONSOLE_POSTS = [
    "/console/login",
    "/console/logout",
    "/console/bulk-close",
    "/console/insights",
    "/console/cases/{}/assign",
    "/console/cases/{}/comment",
    "/console/cases/{}/disposition",
]


def _form(fields: dict[str, str], raw: bool) -> bytes:
    if raw:  # as a browser encodes it, lone surrogates too
        return "&".join(f"{quote(k)}={quote(v, errors='surrogatepass')}" for k, v in fields.items()).encode()
    return b"&".join(k.encode() + b"=" + v.encode("utf-8", "surrogatepass") for k, v in fields.items())


@FUZZ
@given(
    template=st.sampled_from(CONSOLE_POSTS),
    alert=st.one_of(st.uuids().map(str), SEGMENTS),
    fields=FORM_FIELDS,
    raw=st.booleans(),
    body=st.none() | st.binary(max_size=200) | st.sampled_from(DEEP[:2]),
    content_type=CONTENT_TYPES,
    login_cookie=st.none()
    | st.text(alphabet=st.characters(codec="latin-1", exclude_characters=';," \\'), min_size=1, max_size=40),
)
def test_console_forms_without_a_session_are_refused_not_crashed(
    service: Service, template, alert, fields, raw, body, content_type, login_cookie
):
    content = _form(fields, raw) if body is None else body
    if login_cookie is not None and login_cookie == fields.get("csrf_token"):
        fields["csrf_token"] += "-not-it"  # a matching token reaches Cassandra, which this test has not
        content = _form(fields, raw) if body is None else body
    headers = [] if content_type is None else [(b"content-type", content_type.encode())]
    if login_cookie is not None:
        headers.append((b"cookie", f"{LOGIN_COOKIE}={login_cookie}".encode("latin-1")))
    answer = judged(
        service.client.post(template.format(alert), content=content, headers=headers, follow_redirects=False)
    )
    if template != "/console/login":  # a session is checked before the form is read
        assert answer.status_code in (303, 404, 422), answer.text
        assert answer.status_code != 303 or answer.headers["location"] == "/console/login"


@pytest.mark.parametrize("token", ["é", "\ud800", "токен", "a\x00"])
def test_a_non_ascii_csrf_token_is_a_403_not_a_crash(service: Service, token: str):
    # hmac.compare_digest refuses str holding non-ASCII: the login form answered 500.
    form = f"csrf_token={quote(token, errors='surrogatepass')}&username=u&password=p".encode()
    answer = service.client.post(
        "/console/login",
        content=form,
        headers={"content-type": "application/x-www-form-urlencoded", "cookie": f"{LOGIN_COOKIE}=abc"},
    )
    assert judged(answer).status_code == 403
    assert not console_auth.csrf_ok("é", "e") and console_auth.csrf_ok("é\ud800", "é\ud800")


def test_a_fragment_request_without_a_session_is_401_in_the_error_shape(service: Service):
    answer = judged(service.client.get("/console/queue/rows", headers={"X-Console-Fragment": "1"}))
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
    assert COOKIE not in answer.cookies


# ------------------------------------------------------------------ the queue's filter


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(
        st.sampled_from(["status", "severity", "decision", "rule", "channel", "from", "to", "page", "x"]),
        st.text(max_size=40)  # what Starlette decodes a query string to: no lone surrogates
        | ODD_TEXT.filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t))
        | st.dates().map(date.isoformat)
        | st.integers().map(str)
        | st.sampled_from(["0001-01-01", "0001-01-03", "9999-12-31", "1969-12-31"]),
    ),
    today=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
)
def test_the_queue_filter_reads_any_query_string(params: dict[str, str], today: date):
    # to=0001-01-01 overflowed date.min reaching a week back from it: the queue page's 500.
    f = queries.QueueFilter.parse(params, today)
    assert f.day_from is not None and f.day_to is not None
    assert queries.KNOWN_DAYS[0] - timedelta(days=queries.MAX_DAYS) <= f.day_from <= f.day_to
    assert 1 <= len(f.days()) <= queries.MAX_DAYS and f.page >= 1
    assert queries.QueueFilter.parse(dict(parse_qsl(f.query())), today) == f
