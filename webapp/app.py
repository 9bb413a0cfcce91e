"""The ASGI application: the scoring API and the fraud-desk console in one FastAPI app."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def create_app(settings: Any) -> FastAPI:
    """The web application for one configuration (``txmon console`` / ``txmon serve``)."""
    from txmon.webapp.console.web import console_router

    app = FastAPI(title="txmon", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(console_router(settings))
    return app
