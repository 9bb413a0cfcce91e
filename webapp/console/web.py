"""The console's pages and form handlers: one FastAPI router under ``/console``.

Server-rendered Jinja2; a few lines of static JavaScript (static/console.js) poll the
queue for new alerts and keep the bulk-close ticks across refreshes. No page but the
login page answers without a session; every POST checks the session's CSRF token; the
login form, which has no session yet, checks a double-submit cookie instead.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.templating import Jinja2Templates

from txmon.alerting.contract import DAY_TZ
from txmon.alerting.store import AlertStore
from txmon.infra import fraud_label_days
from txmon.infra.cassandra_schema import connect
from txmon.models.risk import ALERT_DECISIONS, SEVERITIES
from txmon.webapp.console import auth, cases, dashboard, insights, queries
from txmon.webapp.console.store import ConsoleStore, Session
from txmon.webapp.reconnect import NotConnected, Reconnect, cassandra_unavailable

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PREFIX = "/console"
COOKIE = "txmon_console"
LOGIN_COOKIE = "txmon_console_login"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
UNAVAILABLE: tuple[type[Exception], ...] = (*cassandra_unavailable(), NotConnected)
"""The driver's errors for a Cassandra that cannot answer now (down, unreachable, too slow),
and Backend.stores()'s while it waits to connect again: a 503 the user can retry, as the
scoring API answers them (webapp/api/store.py)."""
ACCOUNT_NUMBER = re.compile(r"[0-9]{6,18}")
"""An account number as the lookup form takes it: ASCII digits (``\\d`` would take any
script's digits, which name no account and would be sent to Cassandra as typed)."""


@dataclass(frozen=True)
class ConsoleConfig:
    """Console options from the environment (read when the app is built)."""

    session_minutes: int = 480
    secure_cookie: bool = False  # True behind TLS; the default serves loopback over plain HTTP

    @classmethod
    def from_env(cls) -> ConsoleConfig:
        return cls(
            int(os.environ.get("TXMON_CONSOLE_SESSION_MINUTES", "480")),
            os.environ.get("TXMON_CONSOLE_SECURE_COOKIE", "0").lower() in ("1", "true", "yes"),
        )


class Backend:
    """Cassandra stores and the label sink, connected on first use and shared by requests.

    While Cassandra cannot be reached, connecting is tried by one request at a time and,
    after a failure, not again for a back-off of ``first_s`` growing to ``max_s``
    (webapp/reconnect.py): meanwhile :meth:`stores` raises NotConnected at once, a 503
    whose Retry-After is the wait left, instead of every request queueing behind a connect
    that can take the driver's whole connect timeout.

    ``connect``: () -> (cluster, (alert store, console store)), by default the configured
    Cassandra's; ``clock``: the back-off's (seconds, monotonic)."""

    def __init__(
        self,
        settings: Any,
        labels_topic: str | None = None,
        stream_topic: str | None = None,
        *,
        connect: Callable[[], tuple[Any, tuple[Any, Any]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        first_s: float = 1.0,
        max_s: float = 15.0,
    ) -> None:
        self.settings = settings
        self.stream_topic = stream_topic or settings.kafka.topics.transactions
        self._connection = Reconnect(
            connect or self._connect, first_s=first_s, max_s=max_s, clock=clock, name="Cassandra (console)"
        )
        self.sink: Any = cases.KafkaLabelSink(settings, labels_topic)

    def _connect(self) -> tuple[Any, tuple[Any, Any]]:
        cluster, session = connect(self.settings, self.settings.cassandra.keyspace)
        try:
            return cluster, (AlertStore(session), ConsoleStore(session))
        except Exception:  # preparing the statements failed: no half-made connection left open
            cluster.shutdown()
            raise

    def stores(self) -> tuple[Any, Any]:
        """(AlertStore, ConsoleStore); NotConnected while Cassandra cannot be reached."""
        return self._connection.get()[1]

    def close(self) -> None:
        self.sink.close()
        connected = self._connection.forget()
        if connected is not None:
            connected[0].shutdown()


def _money(paise: int | None) -> str:
    return "" if paise is None else f"₹{paise / 100:,.2f}"


def _ist(t: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if t is None:
        return ""
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return t.astimezone(DAY_TZ).strftime(fmt)


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters["money"] = _money
    t.env.filters["ist"] = _ist
    return t


def console_router(
    settings: Any,
    config: ConsoleConfig | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    backend: Backend | None = None,
) -> APIRouter:
    """The console's routes, bound to one configuration and one Cassandra connection."""
    config = config or ConsoleConfig.from_env()
    backend = backend or Backend(settings)
    templates = _templates()
    ttl = timedelta(minutes=config.session_minutes)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        response = templates.TemplateResponse(request, name, {"prefix": PREFIX, **context}, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def unavailable(request: Request, exc: Exception) -> Response:
        """503 for a Cassandra that cannot answer: the error page for a browser's page or
        form, the service's error shape ({"error", "detail"}) for the queue's polling and
        any other client. A write that timed out may or may not have been applied (as
        Cassandra's WriteTimeout says), so the page does not claim that nothing changed."""
        # Not connected: the class of the connect's own failure, and the back-off's wait left.
        cause, retry_after = (
            (exc.cause, exc.retry_after_header) if isinstance(exc, NotConnected) else (type(exc).__name__, "1")
        )
        log.warning("console %s %s: Cassandra unavailable (%s)", request.method, request.url.path, cause)
        detail = f"Cassandra unavailable ({cause}); retry shortly"
        headers = {**SECURITY_HEADERS, "Retry-After": retry_after}
        if "text/html" in request.headers.get("accept", "") and not request.headers.get("X-Console-Fragment"):
            message = (
                "The alert store (Cassandra) cannot be reached just now; try again shortly. If you were "
                "saving a change, reload the case to see whether it was kept before making it again."
            )
            response = render(request, "error.html", status=503, user=None, message=message)
            response.headers.update(headers)
            return response
        return JSONResponse(
            {"error": "cassandra_unavailable", "detail": detail, "retry": True}, status_code=503, headers=headers
        )

    class ConsoleRoute(APIRoute):
        """A console route whose Cassandra errors are a 503 (:func:`unavailable`), wherever
        in the route they are raised: connecting (Backend.stores), reading the session,
        the page's own reads and writes."""

        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except UNAVAILABLE as exc:
                    return unavailable(request, exc)

            return guarded

    router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)
    router.backend = backend  # type: ignore[attr-defined]

    def session_of(request: Request) -> Session | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        store = backend.stores()[1]
        s = store.session_for(token, clock())
        if s is not None:
            # A disabled or demoted user loses the session's rights at once, not at expiry.
            user = store.user(s.username)
            if user is None or user.disabled or user.role != s.role:
                return None
        return s

    def need(request: Request) -> Session:
        s = session_of(request)
        if s is None:
            if request.headers.get("X-Console-Fragment"):
                raise HTTPException(401, "log in again")
            raise HTTPException(303, headers={"Location": f"{PREFIX}/login"})
        return s

    async def form_of(request: Request, s: Session) -> Any:
        form = await request.form()
        if not auth.csrf_ok(s.csrf_token, _text(form.get("csrf_token"))):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")
        return form

    def refused(request: Request, s: Session, message: str, status: int = 403) -> HTMLResponse:
        return render(request, "error.html", status=status, user=s, message=message)

    # ------------------------------------------------------------- login
    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, error: str = "") -> Response:
        if session_of(request) is not None:
            return RedirectResponse(f"{PREFIX}/", 303)
        nonce = secrets.token_urlsafe(32)
        response = render(request, "login.html", csrf_token=nonce, error=error, user=None)
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=config.secure_cookie,
            path=f"{PREFIX}/login",
            max_age=1800,
        )
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        if not auth.csrf_ok(request.cookies.get(LOGIN_COOKIE), _text(form.get("csrf_token"))):
            raise HTTPException(403, "CSRF token missing or wrong: reload the login page and try again")
        username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
        _, store = backend.stores()
        role = auth.check_login(store, username, password) if username and password else None
        if role is None:
            return RedirectResponse(f"{PREFIX}/login?error=1", 303)
        new = auth.open_session(store, username, role, clock(), ttl)
        response = RedirectResponse(f"{PREFIX}/", 303)
        response.set_cookie(
            COOKIE,
            new.token,
            httponly=True,
            samesite="lax",
            secure=config.secure_cookie,
            path=PREFIX,
            max_age=int(ttl.total_seconds()),
        )
        response.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        s = need(request)
        await form_of(request, s)
        backend.stores()[1].drop_session(request.cookies[COOKIE])
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # ------------------------------------------------------------- queue
    def queue_context(request: Request) -> dict[str, Any]:
        f = queries.QueueFilter.parse(dict(request.query_params), queries.today_ist(clock()))
        alerts, store = backend.stores()
        return {
            "f": f,
            "q": queries.queue(alerts, store, f),
            "statuses": queries.STATUSES,
            "severities": SEVERITIES,
            "decisions": ALERT_DECISIONS,
        }

    @router.get("/", response_class=HTMLResponse)
    def queue_page(request: Request) -> Response:
        s = need(request)
        return render(request, "queue.html", user=s, can=_can(s), **queue_context(request))

    @router.get("/queue/rows", response_class=HTMLResponse)
    def queue_rows(request: Request) -> Response:
        s = need(request)
        return render(request, "_queue_rows.html", user=s, can=_can(s), **queue_context(request))

    # -------------------------------------------------------------- case
    @router.get("/cases/{alert_id}", response_class=HTMLResponse)
    def case_page(request: Request, alert_id: uuid.UUID, before: uuid.UUID | None = None) -> Response:
        s = need(request)
        alerts, store = backend.stores()
        users_read = queries.READS.submit(store.users)  # read while the case's own reads are out
        view = queries.case_view(alerts, store, alert_id, actions_before=before)
        if view is None:
            return refused(request, s, "no such alert", 404)
        if auth.allowed(s.role, "work") and view.state.opened_at is None:
            store.mark_opened(alert_id, clock())  # time to disposition counts from the first look
        workers = [u.username for u in users_read.result() if not u.disabled and auth.allowed(u.role, "work")]
        return render(
            request,
            "case.html",
            user=s,
            can=_can(s),
            v=view,
            workers=workers,
            dispositions=list(cases.DISPOSITIONS),
            show=lambda v, k: queries.present(v, k, auth.allowed(s.role, "see_clear")),
        )

    async def act(request: Request, alert_id: uuid.UUID, do: Callable[[Any, Any, Session, Any], Any]) -> Response:
        s = need(request)
        form = await form_of(request, s)
        alerts, store = backend.stores()
        try:
            do(alerts, store, s, form)
        except cases.ActionRefused as exc:
            return refused(request, s, str(exc))
        return RedirectResponse(f"{PREFIX}/cases/{alert_id}", 303)

    @router.post("/cases/{alert_id}/assign")
    async def assign(request: Request, alert_id: uuid.UUID) -> Response:
        return await act(
            request,
            alert_id,
            lambda alerts, store, s, form: cases.assign(
                store, alert_id, s.username, s.role, str(form.get("assignee") or s.username), clock()
            ),
        )

    @router.post("/cases/{alert_id}/comment")
    async def comment(request: Request, alert_id: uuid.UUID) -> Response:
        return await act(
            request,
            alert_id,
            lambda alerts, store, s, form: cases.comment(
                store, alert_id, s.username, s.role, str(form.get("text", "")), clock()
            ),
        )

    @router.post("/cases/{alert_id}/disposition")
    async def disposition(request: Request, alert_id: uuid.UUID) -> Response:
        def do(alerts, store, s, form):
            alert = alerts.load_alert(alert_id)
            if alert is None:
                raise cases.ActionRefused("no such alert")
            cases.dispose(
                store,
                backend.sink,
                alert_id,
                alert.txn_id,
                s.username,
                s.role,
                str(form.get("disposition", "")),
                clock(),
            )

        return await act(request, alert_id, do)

    @router.post("/bulk-close")
    async def bulk_close(request: Request) -> Response:
        s = need(request)
        form = await form_of(request, s)
        try:
            ids = [uuid.UUID(str(v)) for v in form.getlist("alert_id")]
        except ValueError:
            return refused(request, s, "a selected alert id is not valid", 400)
        try:
            cases.bulk_close(backend.stores()[1], ids, s.username, s.role, clock())
        except cases.ActionRefused as exc:
            return refused(request, s, str(exc))
        back = str(form.get("back", ""))
        return RedirectResponse(f"{PREFIX}/?{back}" if back else f"{PREFIX}/", 303)

    # --------------------------------------------------- dashboard, insights
    @router.get("/dashboard", response_class=HTMLResponse)
    def dashboard_page(request: Request, hours: int = 24) -> Response:
        s = need(request)
        alerts, store = backend.stores()
        hours = min(max(hours, 1), 24 * 31)
        d = dashboard.build(alerts, store, settings, backend.stream_topic, hours, clock())
        return render(
            request,
            "dashboard.html",
            user=s,
            can=_can(s),
            d=d,
            workload_actions=dashboard.WORKLOAD_ACTIONS,
            dead_letters_read=dashboard.DEAD_LETTERS_READ,
            unscored_checks=fraud_label_days.UNSCORED_CHECKS,
            stream_states=dashboard.STREAM_STATES,
        )

    def insights_response(
        request: Request, s: Session, account: str | None, error: str = "", segment: str | None = None
    ) -> Response:
        clear = auth.allowed(s.role, "see_clear")
        alerts, _ = backend.stores()
        session = alerts.session

        def show_payee(k: str) -> str:
            return queries.present(k, "vpa" if "@" in k else "account", clear)

        data, shown = None, ""
        if segment:
            data = insights.build_segment(session, segment, clock(), show_payee)
            shown = insights.segment_label(segment)
        elif account:
            data = insights.build(session, account, clock(), show_payee)
            shown = queries.present(account, "account", clear)
        return render(
            request,
            "insights.html",
            user=s,
            can=_can(s),
            i=data,
            error=error,
            shown_account=shown,
            segments=insights.segments(session),
            segment=segment or "",
            spend_bands=insights.SPEND_BANDS,
        )

    @router.get("/insights", response_class=HTMLResponse)
    def insights_page(request: Request, alert: uuid.UUID | None = None, segment: str = "") -> Response:
        # By alert id, so no account number travels in a URL (logs, history, referrers);
        # a segment names no one and may.
        from txmon.webapp.console import insights

        s = need(request)
        if segment:
            if not insights.SEGMENT.fullmatch(segment):
                return insights_response(request, s, None, "no such segment")
            return insights_response(request, s, None, segment=segment)
        account = None
        if alert is not None:
            alerts, _ = backend.stores()
            account = insights.account_of_alert(alerts.session, alerts, alert)
            if account is None:
                return insights_response(request, s, None, "no transaction found for that alert")
        return insights_response(request, s, account)

    @router.post("/insights", response_class=HTMLResponse)
    async def insights_lookup(request: Request) -> Response:
        s = need(request)
        form = await form_of(request, s)
        if not auth.allowed(s.role, "see_clear"):
            return refused(request, s, "the viewer role may not look accounts up by number")
        account = str(form.get("account", "")).strip()
        if not ACCOUNT_NUMBER.fullmatch(account):
            return insights_response(request, s, None, "an account number is 6 to 18 digits")
        return insights_response(request, s, account)

    # ------------------------------------------------------------ static
    @router.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404)
        return FileResponse(HERE / "static" / name, media_type=STATIC_FILES[name])

    return router


def _can(s: Session) -> dict[str, bool]:
    return {p: auth.allowed(s.role, p) for p in ("work", "see_clear", "assign_others", "bulk_close")}


def _text(value: object) -> str | None:
    """A form field's text, or None if it is missing or an uploaded file (a token is never one)."""
    return value if isinstance(value, str) else None
