"""Prometheus metrics of the API (``GET /metrics``): requests by route and status,
latency by route, decisions. In a multi-worker server each worker counts its own
requests; a scrape reaches one worker (docs/api.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    def __init__(self) -> None:
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
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
