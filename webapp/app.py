"""The ASGI application: ``create_app(settings)`` -> FastAPI, served by ``txmon api``.

Stateless by design: everything a worker keeps (the Cassandra session, the Kafka
producer, the loaded rules and champion, verified keys, rate buckets, metrics) can be
rebuilt from Cassandra, Kafka and the files, so any number of workers or hosts can serve
behind a load balancer. Run it with ``txmon api`` (uvicorn), or any ASGI server with
``uvicorn --factory txmon.webapp.app:app_from_env``.
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from txmon.infra.settings import Settings, load_settings
from txmon.webapp.api.config import ApiSettings, load_api_settings
from txmon.webapp.api.routes import _EVENT_SCHEMA, ApiError, ScoreFastPath
from txmon.webapp.api.routes import router as api_router
from txmon.webapp.api.services import ApiServices, KafkaUnavailable
from txmon.webapp.api.store import StoreUnavailable

log = logging.getLogger(__name__)


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over ``limit`` bytes, by Content-Length before
    reading, or while reading a chunked body (then the app sees a cut body and is not run)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    return await self._refuse(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = JSONResponse(
            {"error": "body_too_large", "detail": f"request bodies are limited to {self.limit:,} bytes"},
            status_code=413,
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class Measure:
    """Pure ASGI middleware: each request counted by route, method and status, and its
    latency observed by route (``GET /metrics``). Not ``@app.middleware("http")``: that
    runs every request through an extra task and memory streams, which cost a fast
    route about as much as the route itself."""

    def __init__(self, app, metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        path = getattr(scope.get("route"), "path", "unmatched")  # the router set it on this scope
        self.metrics.requests.labels(path, scope["method"], str(status)).inc()
        self.metrics.latency.labels(path).observe(time.perf_counter() - start)


def create_app(
    settings: Settings | None = None, api_settings: ApiSettings | None = None, services: ApiServices | None = None
) -> FastAPI:
    """The application. ``services``: ready-made (unit tests); by default built from the settings."""
    settings = settings or load_settings()
    api_settings = api_settings or (services.api if services is not None else load_api_settings())
    services = services or ApiServices.build(settings, api_settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:  # rules and champion loaded before the first request, not during it
            services.scorer.ready()
        except Exception as exc:  # noqa: BLE001 - /readyz reports it; scoring raises it per request
            log.error("rules or model not loaded at start: %s", exc)
        # What is loaded by now (modules, rules, champion: ~200k objects) lives as long as the
        # worker. Kept out of the cyclic collector, whose full passes over it took ~100 ms each
        # and stalled every request in flight: the scoring API's p99 at a steady rate.
        gc.collect()
        gc.freeze()
        yield
        services.close()

    app = FastAPI(
        title="txmon",
        version="1",
        lifespan=lifespan,
        description="Real-time transaction scoring and the fraud-desk console. Every route but "
        "/healthz needs an API key (`Authorization: Bearer <key>` or `X-API-Key`); "
        "see docs/api.md.",
    )
    app.state.api = services
    app.state.settings = settings

    # Innermost: the hot route's own path, inside the body limit and the metrics (routes.py).
    app.add_middleware(ScoreFastPath, application=app)
    app.add_middleware(Measure, metrics=services.metrics)
    app.add_middleware(BodyLimit, limit=api_settings.max_body_bytes)  # outermost: a 413 is not counted

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # The framework's own refusals (no such route, a method the route lacks, a form
        # without its multipart boundary) and the console's (CSRF, log in again) answer in
        # the shape every other error has, a code in `error` included, not Starlette's bare
        # {"detail": ...}. ApiError, a subclass, keeps its own handler above.
        if exc.status_code < 200 or exc.status_code in (204, 205, 304):  # no body allowed
            return Response(status_code=exc.status_code, headers=exc.headers)
        try:
            error = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            error = f"http_{exc.status_code}"
        return JSONResponse({"error": error, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def unavailable(error: str):
        async def handler(request: Request, exc: Exception):
            return JSONResponse(
                {"error": error, "detail": str(exc), "retry": True}, status_code=503, headers={"Retry-After": "1"}
            )

        return handler

    app.add_exception_handler(StoreUnavailable, unavailable("cassandra_unavailable"))
    app.add_exception_handler(KafkaUnavailable, unavailable("kafka_unavailable"))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(
            {
                "error": "invalid_request",
                "field": where,
                "detail": first.get("msg", "invalid"),
                "problems": [
                    {"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]} for e in exc.errors()
                ],
            },
            status_code=422,
        )

    @app.get("/healthz", tags=["operations"], summary="The process is up (no key needed)")
    async def healthz() -> dict:  # async: no thread for a constant answer
        return {"status": "ok"}

    app.include_router(api_router)
    # lazy: jinja2 + cassandra (662 ms to import); the web app's workers load this module without it
    from txmon.webapp.console.web import console_router

    app.include_router(console_router(settings))

    def openapi():
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(_EVENT_SCHEMA.pop("$defs", {}))
            components["TransactionEvent"] = _EVENT_SCHEMA
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def single_threaded_models() -> None:
    """Keep scikit-learn's OpenMP pool to one thread in this process. A request scores one
    row: threads only add synchronisation, and on a busy machine the pool's barriers made
    one row's score 14x slower (52 vs 3.8 ms, load average ~25 on 2 cores). Parallelism
    comes from requests (threads, workers), not from inside one prediction.

    threadpoolctl limits only the libraries already loaded: scikit-learn's OpenMP runtime
    and scipy's BLAS are loaded here first, or the limit would reach numpy's BLAS alone and
    every prediction would still start a team of OpenMP threads (1.8 vs 0.3 ms per
    gradient-boosting call on one row, measured in a worker)."""
    import sklearn.ensemble  # noqa: F401 - loads libgomp and scipy's BLAS, which the limit must see
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def app_from_env() -> FastAPI:
    """Factory for ASGI servers (each worker builds its own app from the environment)."""
    single_threaded_models()
    return create_app()
