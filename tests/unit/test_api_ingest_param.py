"""``POST /v1/score``'s ``?ingest=`` is read by hand (webapp/api/routes._ingest) instead of
as a declared FastAPI query parameter: for any query string, it gives the value, or the
422's field and message, that FastAPI's own ``bool`` query parameter gives."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from txmon.webapp.api.routes import _ingest

reference_app = FastAPI()


@reference_app.post("/v1/score")
def declared(ingest: bool = Query(False)) -> dict:
    return {"ingest": ingest}


def _scope(query: str) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/score",
        "raw_path": b"/v1/score",
        "root_path": "",
        "query_string": query.encode(),
        "headers": [],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
    }


def _fastapi(query: str):
    """The reference app's answer to the very same query bytes (straight through ASGI: an
    HTTP client could re-encode the URL)."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(reference_app(_scope(query), receive, send))
    status = sent[0]["status"]
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    if status == 200:
        return ("value", body["ingest"])
    assert status == 422, body
    return ("invalid", [(tuple(e["loc"]), e["msg"]) for e in body["detail"]])


def _by_hand(query: str):
    scope = _scope(query)
    try:
        return ("value", _ingest(Request(scope)))
    except RequestValidationError as exc:
        return ("invalid", [(tuple(e["loc"]), e["msg"]) for e in exc.errors()])


VALUES = st.one_of(
    st.sampled_from(["true", "false", "True", "FALSE", "1", "0", "yes", "no", "on", "off", "t", "f", "y", "n", ""]),
    st.sampled_from(["2", "-1", "truE", " true", "true ", "null", "none", "1.0", "\u0661"]),
    st.text(max_size=6),
)
NAMES = st.sampled_from(["ingest", "Ingest", "INGEST", "ingest ", "x", ""])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=4))
def test_ingest_parses_as_a_declared_fastapi_bool(pairs):
    query = urlencode(pairs)
    assert _by_hand(query) == _fastapi(query), query


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ingestruefalsy01=&;%+ 2Ae", max_size=24))
def test_raw_query_strings_parse_as_fastapi_parses_them(query):
    assert _by_hand(query) == _fastapi(query), query


def test_no_query_string_is_no_ingest():
    assert _by_hand("") == ("value", False) == _fastapi("")
