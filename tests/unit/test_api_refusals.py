"""The scoring API's refusals of input that is well-formed HTTP and JSON but not what the
route takes: ``/v1/alerts`` page tokens the service did not issue for that query, batch
items that are not JSON objects, and numbers too long to convert.

A page token is the driver's paging state under a MAC: only a state this service issued,
for the same day and filters, is handed to the store (Cassandra). The store here pages
through a list and records every paging state it is given, so a test sees what would
have reached Cassandra; tests/integration/test_api.py pages through the real one.
"""

from __future__ import annotations

import json
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections import namedtuple
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

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
from txmon.webapp.api.services import ApiServices, paging_key
from txmon.webapp.app import create_app

DAY = date(2026, 1, 5)
OTHER_DAY = date(2026, 1, 6)
SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
AlertRow = namedtuple(
    "AlertRow",
    "alert_id event_time created_at payer_account_masked decision severity risk_score amount_paise reason_codes",
)


def _alert(n: int) -> AlertRow:
    at = datetime(2026, 1, 5, 4, 0) + timedelta(seconds=n)  # naive UTC, as the driver returns
    decision, severity = ("BLOCK", "CRITICAL") if n % 2 else ("REVIEW", "MEDIUM")
    return AlertRow(f"a-{n:04d}", at, at, "XXXXXXXX0001", decision, severity, 50 + n, 100_000 + n, ["AMOUNT_SPIKE"])


class PagingStore(MemoryStore):
    """MemoryStore whose alerts page as Cassandra pages them: an opaque state per page
    (here the offset, in bytes no client could guess from the token), one partition per
    day. ``given`` records every paging state the route handed over."""

    def __init__(self, alerts: dict[date, list[AlertRow]]) -> None:
        super().__init__()
        self.alerts = alerts
        self.issued: set[bytes] = set()
        self.given: list[bytes] = []

    def alerts_page(self, day, limit, paging_state):
        self._up()
        start = 0
        if paging_state is not None:
            self.given.append(paging_state)
            assert paging_state in self.issued, "a paging state this store never issued reached it"
            start = int(paging_state.split(b":")[2])
        rows = self.alerts.get(day, [])
        end = start + limit
        state = None
        if end < len(rows):
            state = f"state:{day.isoformat()}:{end}".encode()
            self.issued.add(state)
        return rows[start:end], state


@dataclass
class Api:
    client: TestClient
    key: str
    store: PagingStore
    services: ApiServices

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **params: Any) -> Response:
        query = {k: v.isoformat() if isinstance(v, date) else v for k, v in params.items() if v is not None}
        return self.client.get(path, params=query, headers=self.auth)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:

    tmp = tmp_path_factory.mktemp("refusals")
    store = PagingStore({DAY: [_alert(n) for n in range(7)], OTHER_DAY: [_alert(n) for n in range(100, 105)]})
    settings_ = ApiSettings(rate_per_s=1e9, burst=10**9, batch_max=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api_keys, "_hasher", cheap_hasher)
        services = memory_services(
            store, MemoryProducer(), settings_, tmp, page_key=b"this service's page key, 32 bytes+"
        )
        key = create_key(store, "refusals", ["score", "read", "label"])[0]
        yield Api(TestClient(create_app(load_settings(), services=services)), key, store, services)


def refused_page(answer: Response) -> None:
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert (body["error"], body["field"]) == ("invalid_page", "page"), body
    assert "next_page of a previous answer to the same query" in body["detail"]


def pages(api: Api, day: date | None, limit: int, **filters: Any) -> tuple[list[str], list[str]]:
    """(alert ids of every page, the page tokens followed)."""
    ids: list[str] = []
    tokens: list[str] = []
    page: str | None = None
    while True:
        answer = api.get("/v1/alerts", day=day, limit=limit, page=page, **filters)
        assert answer.status_code == 200, answer.text
        ids += [a["alert_id"] for a in answer.json()["alerts"]]
        page = answer.json()["next_page"]
        if page is None:
            return ids, tokens
        tokens.append(page)


def a_token(api: Api, day: date = DAY, **filters: Any) -> str:
    token = api.get("/v1/alerts", day=day, limit=2, **filters).json()["next_page"]
    assert isinstance(token, str)
    return token


# ------------------------------------------------------------------ page tokens


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 50])
def test_following_next_page_reads_every_alert_once(api: Api, limit: int):
    ids, tokens = pages(api, DAY, limit)
    assert ids == [f"a-{n:04d}" for n in range(7)]
    assert len(tokens) == (7 - 1) // limit
    filtered, _ = pages(api, DAY, limit, decision="BLOCK", min_risk=52)
    assert filtered == [f"a-{n:04d}" for n in (3, 5)]


def test_a_token_keeps_its_day_when_the_request_names_none(api: Api):
    # The day travels in the token: a client that names no day (today, IST) keeps paging
    # through the day it started on, past midnight.
    token = a_token(api, OTHER_DAY)
    answer = api.get("/v1/alerts", limit=10, page=token)
    assert answer.status_code == 200 and answer.json()["day"] == OTHER_DAY.isoformat()
    assert [a["alert_id"] for a in answer.json()["alerts"]] == [f"a-{n:04d}" for n in range(102, 105)]


def test_a_token_limit_may_change_from_page_to_page(api: Api):
    answer = api.get("/v1/alerts", day=DAY, limit=5, page=a_token(api))
    assert answer.status_code == 200 and len(answer.json()["alerts"]) == 5


@pytest.mark.parametrize(
    "changed",
    [
        {"day": OTHER_DAY},
        {"decision": "BLOCK"},
        {"severity": "HIGH"},
        {"min_risk": 1},
        {"decision": "REVIEW", "severity": "MEDIUM", "min_risk": 10},
    ],
    ids=",".join,
)
def test_a_token_of_another_query_is_refused(api: Api, changed: dict):
    token = a_token(api)  # day DAY, no filters
    before = len(api.store.given)
    refused_page(api.get("/v1/alerts", **{"day": DAY, "limit": 2, "page": token, **changed}))
    assert len(api.store.given) == before  # refused before the store saw it
    # and the other way round: a filtered query's token is not the unfiltered one's
    filtered = a_token(api, **{k: v for k, v in changed.items() if k != "day"} or {"min_risk": 1})
    refused_page(api.get("/v1/alerts", day=DAY, limit=2, page=filtered))


def test_a_raw_paging_state_as_earlier_versions_issued_is_refused(api: Api):
    # Any base64 was handed to Cassandra as the driver's paging state.
    token = a_token(api)
    state = urlsafe_b64decode(token + "=" * (-len(token) % 4))[-len(b"state:2026-01-05:2") :]
    assert state in api.store.issued
    refused_page(api.get("/v1/alerts", day=DAY, limit=2, page=urlsafe_b64encode(state).decode()))


def test_a_token_signed_with_another_key_is_refused(api: Api, monkeypatch):
    from txmon.webapp.api import routes

    query = routes._alerts_query(None, None, 0)
    other = routes._page_token(b"another service's key, 32 bytes+", DAY, query, b"state:2026-01-05:2")
    mine = routes._page_token(api.services.paging_key(), DAY, query, b"state:2026-01-05:2")
    assert api.get("/v1/alerts", day=DAY, limit=2, page=mine).status_code == 200
    refused_page(api.get("/v1/alerts", day=DAY, limit=2, page=other))
    # The key a deployment signs with is derived from its PII token key: another key, another MAC.
    monkeypatch.setenv("TXMON_PII_TOKEN_KEY", "a" * 40)
    first = paging_key(load_settings())
    monkeypatch.setenv("TXMON_PII_TOKEN_KEY", "b" * 40)
    assert paging_key(load_settings()) != first and len(first) == 32
    assert first != b"a" * 40  # derived, not the PII key itself


def _flip(token: str, at: int, to: str) -> str:
    at %= len(token)
    return token[:at] + to + token[at + 1 :]


TOKEN_TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=120)


@SOME
@given(
    edit=st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 200), st.sampled_from("AQgw-_09zZ")),
        st.tuples(st.just("cut"), st.integers(1, 60), st.none()),
        st.tuples(st.just("append"), st.none(), TOKEN_TEXT.filter(bool)),
        st.tuples(st.just("replace"), st.none(), TOKEN_TEXT.filter(bool)),
        st.tuples(st.just("bytes"), st.none(), st.binary(min_size=1, max_size=90)),
        st.tuples(st.just("odd"), st.none(), st.sampled_from(["=", "====", "AA==", "%00", "é", "A" * 5000, " "])),
    )
)
def test_a_tampered_or_made_up_token_is_refused_before_the_store(api: Api, edit):
    kind, at, value = edit
    token = a_token(api)
    page = {
        "flip": lambda: _flip(token, at, value),
        "cut": lambda: token[:-at],
        "append": lambda: token + value,
        "replace": lambda: value,
        "bytes": lambda: urlsafe_b64encode(value).decode(),
        "odd": lambda: value,
    }[kind]()
    if page == token or not page:
        return  # the flip put back the same character; an empty page is no page
    before = len(api.store.given)
    refused_page(api.get("/v1/alerts", day=DAY, limit=2, page=page))
    assert len(api.store.given) == before


# ------------------------------------------------------------------ batch items

NOT_OBJECTS = st.one_of(
    st.just(""),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)


def test_an_event_sent_as_a_json_string_is_refused_naming_its_index(api: Api):
    good = event("batch-str-0001")
    answer = api.client.post(
        "/v1/score/batch", json={"transactions": [good, json.dumps(event("batch-str-0002"))]}, headers=api.auth
    )
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert (body["error"], body["field"], body["index"]) == ("invalid_body", "transactions", 1)
    assert body["detail"] == "transactions[1] is a string: each transaction must be a JSON object (an event)"


@SOME
@given(
    items=st.lists(st.one_of(NOT_OBJECTS.map(lambda v: ("bad", v)), st.just(("good", None))), min_size=1, max_size=5)
)
def test_a_batch_item_that_is_not_an_object_is_refused_naming_the_first(api: Api, items):
    body = [event(f"batch-any-{i:04d}") if kind == "good" else value for i, (kind, value) in enumerate(items)]
    answer = api.client.post("/v1/score/batch", json={"transactions": body}, headers=api.auth)
    bad = [i for i, (kind, _) in enumerate(items) if kind == "bad"]
    if not bad:
        assert answer.status_code == 200 and len(answer.json()["results"]) == len(items)
        return
    assert answer.status_code == 422, answer.text
    out = answer.json()
    assert (out["error"], out["field"], out["index"]) == ("invalid_body", "transactions", bad[0])
    assert out["detail"].startswith(f"transactions[{bad[0]}] is ")


# ------------------------------------------------------------------ numbers out of range

DIGITS = st.integers(4301, 20_000)  # past sys.get_int_max_str_digits()'s default (4,300)


@SOME
@given(digits=DIGITS, sign=st.sampled_from(["", "-"]), where=st.sampled_from(["top", "event", "list"]))
def test_an_integer_too_long_to_convert_is_a_422_saying_so(api: Api, digits: int, sign: str, where: str):
    number = sign + "9" * digits
    batch = {
        "top": '{"transactions": [], "n": %s}',
        "event": '{"transactions": [{"amount_paise": %s}]}',
        "list": '{"transactions": [%s]}',
    }[where] % number
    label = {
        "top": '{"txn_id": "t-00000001", "is_fraud": true, "n": %s}',
        "event": '{"txn_id": "t-00000001", "is_fraud": %s}',
        "list": '{"txn_id": "t-00000001", "is_fraud": true, "x": [%s]}',
    }[where] % number
    for path, content, error in (("/v1/score/batch", batch, "invalid_body"), ("/v1/labels", label, "invalid_label")):
        answer = api.client.post(path, content=content, headers={**api.auth, "Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert (body["error"], body["field"]) == (error, None), body
        assert body["detail"] == "a number is out of range: integers have at most 4,300 digits"


@SOME
@given(digits=DIGITS)
def test_one_event_holding_an_integer_too_long_to_convert_is_a_422_saying_so(api: Api, digits: int):
    content = '{"amount_paise": %s}' % ("9" * digits)
    answer = api.client.post("/v1/score", content=content, headers={**api.auth, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].endswith("a number is out of range: integers have at most 4,300 digits")


def test_long_numbers_within_range_and_bodies_that_are_not_json_keep_their_answers(api: Api):
    post = api.client.post
    fine = post("/v1/score/batch", content='{"transactions": [%s]}' % ("9" * 4300), headers=api.auth)
    assert fine.status_code == 422 and fine.json()["index"] == 0  # converted: then refused as no object
    for path, detail in (
        ("/v1/score/batch", 'send {"transactions": [event, ...]}'),
        ("/v1/labels", "send one JSON object"),
    ):
        for content in ("{", "[1, 2", '{"a": 1}x', "\xff"):
            answer = post(path, content=content.encode("latin-1"), headers=api.auth)
            assert answer.status_code == 422 and answer.json()["detail"] == detail, (path, content, answer.text)
