"""The scoring API's HTTP routes (``/v1/...``, ``/readyz``, ``/metrics``).

Handlers are thin: parse and check the request, call the scorer or the store, shape the
answer. Blocking work (Cassandra, Kafka, key hashing, loading rules or a model) runs in the
server's thread pool. The hot path, ``POST /v1/score`` without ingest, does not: its key is
in the verified-key cache, its profile reads wait on the event loop (ApiStore.profiles_async)
and its scoring (about a millisecond of CPU, holding the GIL wherever it runs) runs on the
loop. A thread hop per step cost more than the step: each woken thread queued for the GIL
and a core behind the others (docs/api.md).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import re
import socket
import time
from base64 import urlsafe_b64decode, urlsafe_b64encode
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError

from txmon.infra.errors import EventValidationError
from txmon.infra.masking import mask_account, mask_vpa
from txmon.ingestion.events import (
    IST,
    NumberOutOfRange,
    TransactionEvent,
    check_event,
    describe_problems,
    is_unsafe_text,
    json_loads,
    to_json,
    validate_label,
)
from txmon.webapp.api.keys import Principal
from txmon.webapp.api.services import ApiServices

router = APIRouter()
_EVENT_SCHEMA = TransactionEvent.model_json_schema(ref_template="#/components/schemas/{model}")


class ApiError(HTTPException):
    """An error answer with a machine-readable ``error`` code and a ``detail`` that says what to do."""

    def __init__(self, status: int, error: str, detail: str, headers: dict | None = None, **extra: Any) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.body = {"error": error, "detail": detail, **extra}


def services(request: Request) -> ApiServices:
    return request.app.state.api


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def requires(scope: str | None):
    """Dependency: the caller's principal, holding ``scope`` (None: any valid key);
    401 without a valid key, 403 without the scope, 429 over the key's rate."""

    async def check(request: Request) -> Principal:
        api = services(request)
        key = _presented_key(request)
        if key is None:
            raise ApiError(
                401,
                "unauthenticated",
                "send an API key as `Authorization: Bearer <key>` or "
                "`X-API-Key: <key>` (create one with `txmon api keys create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # A cached key costs a hash and a lookup; a miss reads Cassandra and runs argon2.
        principal = api.verifier.cached(key) or await run_in_threadpool(api.verifier.verify, key)
        if principal is None:
            raise ApiError(
                401,
                "invalid_key",
                "the API key is unknown, wrong or revoked",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope is not None and not principal.can(scope):
            raise ApiError(
                403,
                "forbidden",
                f"this key lacks the `{scope}` scope; its scopes: {', '.join(sorted(principal.scopes))}",
            )
        if not api.buckets.allow(principal.key_id):
            wait = api.buckets.retry_after()
            raise ApiError(
                429,
                "rate_limited",
                f"over this key's rate of {api.api.rate_per_s:g} requests/s (per worker); slow down",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        request.state.principal = principal
        return principal

    return check


def _mask(value: str | None, principal: Principal, kind: Literal["account", "vpa"] = "account") -> str | None:
    if value is None or principal.can("clear"):
        return value
    return mask_account(value) if kind == "account" else mask_vpa(value)


# ------------------------------------------------------------------ scoring


def _event_or_422(api: ApiServices, raw: Any) -> TransactionEvent:
    event, problems = check_event(raw, now=datetime.now(UTC), max_age=api.max_age)
    if problems:
        first = problems[0]
        raise ApiError(
            422,
            "invalid_event",
            describe_problems(problems),
            field=first.where,
            reason=str(first.reason),
            problems=[{"field": p.where, "reason": str(p.reason), "message": p.message} for p in problems],
        )
    assert event is not None
    return event


def _score_one(api: ApiServices, event: TransactionEvent) -> dict:
    start = time.perf_counter()
    profiles = api.store.profiles(event.payer.account_number, event.payee.account_number or event.payee.vpa)
    return _answer(api, api.scorer.score(event, profiles), start)


async def _score_one_async(api: ApiServices, event: TransactionEvent) -> dict:
    """:func:`_score_one` on the event loop (see the module's docstring)."""
    start = time.perf_counter()
    payer, payee = event.payer.account_number, event.payee.account_number or event.payee.vpa
    read = getattr(api.store, "profiles_async", None)  # a unit test's stand-in store has profiles() only
    profiles = (
        await read(payer, payee) if read is not None else await run_in_threadpool(api.store.profiles, payer, payee)
    )
    current = api.scorer.current()
    if current is not None:
        verdict = api.scorer.score(event, profiles, current)
    else:  # the rules file or the champion changed: reloading takes up to seconds
        verdict = await run_in_threadpool(api.scorer.score, event, profiles)
    return _answer(api, verdict, start)


def _answer(api: ApiServices, verdict, start: float) -> dict:
    api.metrics.decisions.labels(verdict.decision).inc()
    out = verdict.as_dict()
    out["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
    return out


def _content_hash(event: TransactionEvent) -> str:
    return hashlib.sha256(to_json(event)).hexdigest()


def _score_and_ingest(api: ApiServices, event: TransactionEvent, principal: Principal) -> dict:
    """Score, keep the verdict as the decision of record (first one wins), publish the
    event once. A retry of the same event gets the recorded verdict back (and publishes
    again only if the first attempt was never acknowledged); the same txn_id with other
    content is a conflict (the stream would dead-letter it as conflicting_duplicate)."""
    digest = _content_hash(event)
    existing = api.store.decision(event.txn_id)
    if existing is None:
        result = _score_one(api, event)
        claimed, existing = api.store.claim_decision(event.txn_id, digest, json.dumps(result), principal.key_id)
        if claimed:
            api.publish(lambda p: p.send_event(event))
            api.store.decision_published(event.txn_id)
            return {**result, "ingested": True, "duplicate": False}
    if existing.content_hash != digest:
        raise ApiError(
            409,
            "conflicting_duplicate",
            f"txn_id {event.txn_id} was already scored and ingested with other content; "
            "send a new txn_id for a new payment",
        )
    recorded = json.loads(existing.verdict)
    if existing.published_at is None:
        api.publish(lambda p: p.send_event(event))  # the first attempt was never acknowledged
        api.store.decision_published(event.txn_id)
    return {**recorded, "ingested": True, "duplicate": True}


_BOOL = TypeAdapter(bool)


def _ingest(request: Request) -> bool:
    """``?ingest=``, validated as FastAPI validates a ``bool`` query parameter (the last
    value given; ``true/1/yes/on`` and their opposites; anything else a 422 naming
    ``ingest``). Read here rather than declared as a parameter: FastAPI's parameter
    machinery cost every scoring request ~3 % of a worker's CPU (py-spy), mostly for the
    request that has no query string at all."""
    if not request.scope.get("query_string"):
        return False
    value = request.query_params.get("ingest")
    if value is None:
        return False
    try:
        return _BOOL.validate_python(value)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("query", "ingest", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _json_body(raw: bytes) -> Any:
    """The request body's JSON value; ValueError for a body that is not JSON, its subclass
    NumberOutOfRange for JSON holding an integer too long to convert. JSON nested past the
    parser's recursion limit (a few thousand ``[`` fit well inside the body limit) raises
    RecursionError, which is no ValueError: callers that catch ValueError for "not JSON"
    would let it through as a 500."""
    try:
        return json_loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _json_kind(value: Any) -> str:
    """What JSON calls ``value``'s type, with its article.

    >>> _json_kind("x"), _json_kind([]), _json_kind(None), _json_kind(True), _json_kind(1.5)
    ('a string', 'an array', 'null', 'a boolean', 'a number')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


def _json_bytes(body: dict) -> bytes:
    """``body`` as the JSON bytes Starlette's JSONResponse would send."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _json(body: dict) -> Response:
    """:func:`_json_bytes` as a Response: FastAPI then does not first validate the dict
    against the route's return type and walk it through jsonable_encoder: for a verdict
    (every feature, the reasons) that cost about as much CPU as scoring the row's models."""
    return Response(_json_bytes(body), media_type="application/json")


@router.post(
    "/v1/score",
    tags=["scoring"],
    summary="Score one transaction",
    response_class=Response,
    responses={
        200: {
            "description": "risk 0-100, decision, reasons, model and rules versions, features, latency",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
    openapi_extra={
        "parameters": [
            {
                "name": "ingest",
                "in": "query",
                "required": False,
                "description": "also publish to the transactions topic (idempotent by txn_id)",
                "schema": {"type": "boolean", "default": False, "title": "Ingest"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TransactionEvent"}}},
        },
    },
)
async def score(request: Request, principal: Annotated[Principal, Depends(requires("score"))]) -> Response:
    """One transaction in the event contract -> risk 0-100, decision, reasons, versions, latency.
    Nothing is saved unless ``ingest=true``."""
    api = services(request)
    ingest = _ingest(request)
    raw = await request.body()
    event = _event_or_422(api, raw)
    if ingest:
        return _json(await run_in_threadpool(_score_and_ingest, api, event, principal))
    return _json(await _score_one_async(api, event))


class ScoreFastPath:
    """Pure ASGI middleware: ``POST /v1/score`` without a query string, served by the
    route's own functions (:func:`requires`, :func:`_event_or_422`,
    :func:`_score_one_async`, the exception handlers the application registered) without
    FastAPI's routing over every route, its dependency resolution, its request-response
    wrapper and Starlette's exception middleware: together about a tenth of a worker's CPU
    on every scored request (py-spy). Any other request, ``?ingest=`` included, goes to the
    application, which still routes and documents ``POST /v1/score`` as before.

    Installed innermost (inside the body limit and the metrics), so both see the request
    as they see the route's; ``scope["route"]`` is set as the router sets it, for the
    metrics' route label."""

    def __init__(self, app, application) -> None:
        self.app = app
        self.application = application  # the FastAPI app: its state, routes and exception handlers
        self._check = requires("score")
        self._route: Any = None

    def _score_route(self) -> Any:
        if self._route is None:
            self._route = next(
                r
                for r in self.application.router.routes
                if getattr(r, "path", None) == "/v1/score" and "POST" in getattr(r, "methods", ())
            )
        return self._route

    def _handler(self, exc: Exception):
        """The application's handler for ``exc``, looked up as Starlette's exception
        middleware looks it up (by class, nearest first); None: let it propagate (500)."""
        handlers = self.application.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers and cls is not Exception:
                return handlers[cls]
        return None

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != "/v1/score"
            or scope.get("query_string")
            or scope.get("root_path")
        ):
            return await self.app(scope, receive, send)
        scope["route"] = self._score_route()
        request = Request(scope, receive)
        try:
            await self._check(request)
            api = services(request)
            event = _event_or_422(api, await request.body())
            body = _json_bytes(await _score_one_async(api, event))
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        # The headers Starlette's Response would send for these bytes, in its order.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@router.post("/v1/score/batch", tags=["scoring"], summary="Score several transactions")
async def score_batch(request: Request, principal: Annotated[Principal, Depends(requires("score"))]) -> dict:
    """``{"transactions": [event, ...]}`` -> one result per event, in order: a verdict, or
    ``{"error": ..., "field": ...}`` for an event the contract refuses. Each is scored
    against the saved profiles alone (the batch's events are not folded into each other's
    features); nothing is saved."""
    api = services(request)
    try:
        body = _json_body(await request.body())
        items = body["transactions"]
        if not isinstance(items, list):
            raise TypeError
    except NumberOutOfRange as exc:
        raise ApiError(422, "invalid_body", str(exc), field=None) from None
    except (ValueError, KeyError, TypeError):
        raise ApiError(422, "invalid_body", 'send {"transactions": [event, ...]}', field="transactions") from None
    if not items or len(items) > api.api.batch_max:
        raise ApiError(
            422, "invalid_body", f"send 1 to {api.api.batch_max} transactions per batch", field="transactions"
        )
    # Each item is an event as a JSON object. The contract's check also reads JSON text, so
    # an item sent as a string holding an event would be parsed and scored: a client that
    # encoded its events twice would not find out.
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(
                422,
                "invalid_body",
                f"transactions[{i}] is {_json_kind(item)}: each transaction must be a JSON object (an event)",
                field="transactions",
                index=i,
            )

    def run() -> list[dict]:
        out = []
        for i, item in enumerate(items):
            try:
                out.append(_score_one(api, _event_or_422(api, item)))
            except ApiError as exc:
                if exc.status_code != 422:
                    raise
                out.append({"index": i, **exc.body})
        return out

    return {"results": await run_in_threadpool(run)}


# ------------------------------------------------------------------ read back


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@router.get("/v1/transactions/{txn_id}", tags=["read"], summary="A transaction and its verdicts")
def transaction(txn_id: str, request: Request, principal: Annotated[Principal, Depends(requires("read"))]) -> dict:
    """The landed transaction, the stream's scored row, and the API's recorded verdict if it
    was scored with ``ingest=true`` (``decision_of_record`` names the one that counts)."""
    api = services(request)
    landed, scored, decided = api.store.transaction(txn_id), api.store.scored(txn_id), api.store.decision(txn_id)
    if landed is None and scored is None and decided is None:
        raise ApiError(
            404,
            "not_found",
            f"no transaction {txn_id} has been landed, scored or ingested "
            "(the stream lands an ingested event within seconds)",
        )
    out: dict[str, Any] = {"txn_id": txn_id, "transaction": None, "stream": None, "api": None}
    if landed is not None:
        out["transaction"] = {
            "event_time": _iso(landed.event_time),
            "channel": landed.channel,
            "txn_type": landed.txn_type,
            "payer_account": _mask(landed.payer_account, principal),
            "payer_vpa": _mask(landed.payer_vpa, principal, "vpa"),
            "payee_account": _mask(landed.payee_account, principal),
            "payee_vpa": _mask(landed.payee_vpa, principal, "vpa"),
            "amount_paise": landed.amount_paise,
            "status": landed.status,
            "landed_at": _iso(landed.landed_at),
        }
    if scored is not None:
        out["stream"] = {
            "risk_score": scored.risk_score,
            "decision": scored.decision,
            "rule_score": scored.rule_score,
            "fraud_probability": scored.fraud_probability,
            "anomaly_score": scored.anomaly_score,
            "rules_fired": list(scored.rules_fired or []),
            "reasons": json.loads(scored.reasons or "[]"),
            "model_version": scored.model_version,
            "rules_version": scored.rules_version,
            "scored_at": _iso(scored.scored_at),
        }
    if decided is not None:
        verdict = json.loads(decided.verdict)
        verdict.pop("features", None)
        out["api"] = {**verdict, "decided_at": _iso(decided.decided_at)}
    out["decision_of_record"] = "api" if decided is not None else ("stream" if scored is not None else None)
    return out


WindowKind = Literal["tumble_1m", "tumble_5m", "slide_1h"]
_WINDOWS_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - naive UTC, as the store compares window starts


@router.get("/v1/accounts/{account}/windows", tags=["read"], summary="An account's windowed aggregates")
def account_windows(
    account: str,
    request: Request,
    principal: Annotated[Principal, Depends(requires("read"))],
    kind: WindowKind = "tumble_5m",
    since: Annotated[datetime | None, Query(description="ISO 8601; default: the last 24 h")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    api = services(request)
    since = since or datetime.now(UTC) - timedelta(hours=24)
    try:
        naive = since.astimezone(UTC).replace(tzinfo=None) if since.tzinfo else since
    except OverflowError:  # 0001-01-01T00:00+01:00, 9999-12-31T23:59-01:00: no such time in UTC
        naive = None
    # Before the epoch no window exists, and the store reads slide_1h from an hour before
    # ``since``: a time near datetime.min would overflow there instead of here.
    if naive is None or naive < _WINDOWS_EPOCH:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "since"),
                    "msg": "since must be a time from 1970-01-01T00:00:00Z to the year 9999",
                    "input": str(since),
                }
            ]
        )
    rows = api.store.account_windows(account, kind, naive)[:limit]
    return {
        "account": _mask(account, principal),
        "kind": kind,
        "since": _iso(naive),
        "windows": [
            {
                "start": _iso(w.window_start),
                "end": _iso(w.window_end),
                "txn_count": w.txn_count,
                "total_paise": w.total_paise,
                "max_paise": w.max_paise,
                "distinct_payees": w.distinct_payees,
            }
            for w in rows
        ],
    }


@router.get("/v1/accounts/{account}/summary", tags=["read"], summary="An account's latest windows")
def account_summary(account: str, request: Request, principal: Annotated[Principal, Depends(requires("read"))]) -> dict:
    """The newest window of each kind over the last 24 hours (None where the account had none)."""
    api = services(request)
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=24)
    latest = {}
    for kind in ("tumble_1m", "tumble_5m", "slide_1h"):
        rows = api.store.account_windows(account, kind, since)
        w = rows[0] if rows else None
        latest[kind] = (
            None
            if w is None
            else {
                "start": _iso(w.window_start),
                "end": _iso(w.window_end),
                "txn_count": w.txn_count,
                "total_paise": w.total_paise,
                "max_paise": w.max_paise,
                "distinct_payees": w.distinct_payees,
            }
        )
    return {"account": _mask(account, principal), "latest": latest}


# A page token: the driver's paging state, the day it pages through and a MAC over both and
# the query's filters. Cassandra is handed only a paging state this service issued for the
# same day and filters: a token altered, made up, or from another query is refused here as
# a 422 naming `page` (a paging state from elsewhere would reach Cassandra, which refuses
# it in its own words or, worse, pages through something else). The day travels inside, so
# a client that names no day keeps paging through the day it started on past midnight.
_PAGE_VERSION = b"\x01"
_PAGE_MAC_BYTES = 16
_PAGE_DAY_BYTES = 4  # date.toordinal(): at most 3,652,059
_PAGE_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,1024}")  # base64url, no padding; paging states are tens of bytes
_PAGE_REFUSED = (
    "page must be the next_page of a previous answer to the same query (the same day, decision, "
    "severity and min_risk); start again without page"
)


def _alerts_query(decision: str | None, severity: str | None, min_risk: int) -> bytes:
    """The filters a page token is bound to (``limit`` may change from page to page)."""
    return json.dumps([decision, severity, min_risk]).encode()


def _page_mac(key: bytes, day: bytes, query: bytes, state: bytes) -> bytes:
    message = _PAGE_VERSION + day + len(query).to_bytes(4, "big") + query + state
    return hmac.new(key, message, hashlib.sha256).digest()[:_PAGE_MAC_BYTES]


def _page_token(key: bytes, day: date, query: bytes, state: bytes) -> str:
    """``state``'s page token for one day's alerts under ``query``'s filters.

    >>> k, q = b"k" * 32, _alerts_query(None, None, 0)
    >>> token = _page_token(k, date(2026, 1, 5), q, b"state")
    >>> _open_page(k, token, None, q)
    (datetime.date(2026, 1, 5), b'state')
    """
    ordinal = day.toordinal().to_bytes(_PAGE_DAY_BYTES, "big")
    raw = _PAGE_VERSION + _page_mac(key, ordinal, query, state) + ordinal + state
    return urlsafe_b64encode(raw).rstrip(b"=").decode()


def _open_page(key: bytes, token: str, day: date | None, query: bytes) -> tuple[date, bytes]:
    """(the day, the driver's paging state) of a token :func:`_page_token` made for
    ``query``; a 422 naming ``page`` for any other text, or for a token of another day
    than ``day`` (None: the request named none)."""
    head = 1 + _PAGE_MAC_BYTES + _PAGE_DAY_BYTES
    try:
        if not _PAGE_TOKEN.fullmatch(token):
            raise ValueError
        raw = urlsafe_b64decode(token + "=" * (-len(token) % 4))
        # One spelling per token: base64 ignores the last character's unused bits.
        if urlsafe_b64encode(raw).rstrip(b"=") != token.encode() or len(raw) <= head or raw[:1] != _PAGE_VERSION:
            raise ValueError
        mac, ordinal, state = raw[1 : 1 + _PAGE_MAC_BYTES], raw[1 + _PAGE_MAC_BYTES : head], raw[head:]
        if not hmac.compare_digest(mac, _page_mac(key, ordinal, query, state)):
            raise ValueError
        issued = date.fromordinal(int.from_bytes(ordinal, "big"))
        if day is not None and day != issued:
            raise ValueError
    except ValueError:  # binascii.Error (padding) and date's range are ValueErrors
        raise ApiError(422, "invalid_page", _PAGE_REFUSED, field="page") from None
    return issued, state


@router.get("/v1/alerts", tags=["read"], summary="Alerts of one day, filtered, paged")
def alerts(
    request: Request,
    principal: Annotated[Principal, Depends(requires("read"))],
    day: Annotated[date | None, Query(description="IST day of the transactions; default today")] = None,
    decision: Literal["REVIEW", "BLOCK"] | None = None,
    severity: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] | None = None,
    min_risk: Annotated[int, Query(ge=0, le=100)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    page: Annotated[
        str | None, Query(description="`next_page` of the previous answer to the same day and filters")
    ] = None,
) -> dict:
    """One page of the day's alerts (account numbers are stored masked). Filters apply to
    each page, so a page can hold fewer than ``limit`` alerts; follow ``next_page`` until
    it is null."""
    api = services(request)
    query = _alerts_query(decision, severity, min_risk)
    state = None
    if page:
        day, state = _open_page(api.paging_key(), page, day, query)
    day = day or datetime.now(IST).date()
    rows, next_state = api.store.alerts_page(day, limit, state)
    items = [
        {
            "alert_id": str(r.alert_id),
            "event_time": _iso(r.event_time),
            "created_at": _iso(r.created_at),
            "payer_account_masked": r.payer_account_masked,
            "decision": r.decision,
            "severity": r.severity,
            "risk_score": r.risk_score,
            "amount_paise": r.amount_paise,
            "reason_codes": list(r.reason_codes or []),
        }
        for r in rows
        if (decision is None or r.decision == decision)
        and (severity is None or r.severity == severity)
        and (r.risk_score or 0) >= min_risk
    ]
    return {
        "day": day.isoformat(),
        "alerts": items,
        "next_page": _page_token(api.paging_key(), day, query, next_state) if next_state else None,
    }


# ------------------------------------------------------------------ labels


def _label(api: ApiServices, body: dict, principal: Principal) -> tuple[int, dict]:
    label_id = body.pop("label_id", None) or body.get("txn_id")
    # label_id is the one field the label contract does not judge (it is popped before
    # validate_label): held to the contract's printable-text rule here, or a lone surrogate
    # from a JSON escape could not be encoded into the answer, a Cassandra key or a log line.
    if not isinstance(label_id, str) or not 1 <= len(label_id) <= 128 or is_unsafe_text(label_id):
        raise ApiError(
            422,
            "invalid_label",
            "label_id must be text of 1 to 128 printable characters (default: txn_id)",
            field="label_id",
        )
    # A repeat is recognised by what the client sent: a label_time defaulted to now differs
    # on every attempt, so it is not part of the comparison.
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    body.setdefault("label_time", datetime.now(UTC).isoformat())
    try:
        label = validate_label(body)
    except EventValidationError as exc:
        where = exc.detail.split(":", 1)[0] if ":" in exc.detail else None
        raise ApiError(422, "invalid_label", str(exc), field=where, reason=exc.reason) from None
    payload = label.model_dump_json(exclude_none=True).encode()
    claimed, existing = api.store.claim_label(label_id, digest, label.txn_id, principal.key_id)
    if not claimed:
        if existing.content_hash != digest:
            raise ApiError(
                409,
                "conflicting_label",
                f"label {label_id} was already received with other content; send a new label_id for a new label",
            )
        if existing.state == "sent":
            return 200, {"label_id": label_id, "txn_id": label.txn_id, "published": True, "duplicate": True}
    # Claimed now, or claimed before but never acknowledged: (re)publish.
    api.publish(lambda p: p.send_label(label.txn_id.encode(), payload))
    api.store.label_sent(label_id)
    return (202 if claimed else 200), {
        "label_id": label_id,
        "txn_id": label.txn_id,
        "published": True,
        "duplicate": not claimed,
    }


@router.post("/v1/labels", tags=["labels"], summary="Confirmed fraud or legitimate, once per label id")
async def post_label(request: Request, principal: Annotated[Principal, Depends(requires("label"))]) -> Response:
    """``{"label_id"?, "txn_id", "is_fraud", "scenario"?, "label_time"?}`` -> the labels topic,
    exactly once per label id (default: the txn_id). 202 the first time, 200 for a repeat."""
    api = services(request)
    try:
        body = _json_body(await request.body())
        if not isinstance(body, dict):
            raise TypeError
    except NumberOutOfRange as exc:
        raise ApiError(422, "invalid_label", str(exc), field=None) from None
    except (ValueError, TypeError):
        raise ApiError(422, "invalid_label", "send one JSON object", field=None) from None
    status, out = await run_in_threadpool(_label, api, body, principal)
    return JSONResponse(out, status_code=status)


# ------------------------------------------------------------------ operations


def _kafka_reachable(api: ApiServices) -> str | None:
    k = api.settings.kafka
    try:
        with socket.create_connection((k.host, k.port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{k.bootstrap}: {exc}"


@router.get("/readyz", tags=["operations"], summary="Kafka, Cassandra and the model")
def readyz(request: Request, _: Annotated[Principal, Depends(requires(None))]) -> Response:
    api = services(request)
    checks: dict[str, Any] = {}
    try:
        checks["cassandra"] = {"ok": True, "version": api.store.ping()}
    except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
        checks["cassandra"] = {"ok": False, "detail": str(exc)}
    kafka_problem = _kafka_reachable(api)
    checks["kafka"] = {"ok": kafka_problem is None, **({"detail": kafka_problem} if kafka_problem else {})}
    try:
        model = api.scorer.ready()
        checks["model"] = {"ok": model["model_loaded"], **model}
    except Exception as exc:  # noqa: BLE001
        checks["model"] = {"ok": False, "detail": str(exc)}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics")
def metrics(request: Request, _: Annotated[Principal, Depends(requires(None))]) -> Response:
    body, content_type = services(request).metrics.render()
    return Response(body, media_type=content_type)
