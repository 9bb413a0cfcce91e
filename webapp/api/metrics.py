"""Prometheus metrics of the API (``GET /metrics``): requests by route and status,
latency by route, decisions.

With several workers (``txmon api --workers N``) a scrape reaches one of them, so each
worker's own counts would be a fraction of the truth that changes from scrape to scrape.
``txmon api`` therefore runs prometheus_client's multiprocess mode: it points
``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before the workers start, each worker
writes its counts to its own memory-mapped file there, and whichever worker is scraped
adds up every worker's files (a restarted worker's old file keeps counting, so totals never
go back). Without that variable (an app built in a test, or another ASGI server started
without it) each worker reports its own counts (docs/api.md)."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this process writes its metrics there, else None.

    prometheus_client picks its value store once, when first imported: a variable set
    after that would leave this process counting in memory while the scrape reads files."""

    path = os.environ.get(MULTIPROCESS_ENV)
    if not path or not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return path


class ApiMetrics:
    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "txmon_api_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "txmon_api_request_seconds",
            "Request latency (server side)",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter("txmon_api_decisions_total", "Scoring decisions", ["decision"], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        return render_directory(self.multiprocess_dir), CONTENT_TYPE_LATEST


def render_directory(path: str) -> bytes:
    """Every worker's metrics in ``path`` added up, as Prometheus text."""

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return generate_latest(registry)
