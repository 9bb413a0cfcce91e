"""``txmon api --workers 2``: whichever worker a Prometheus scrape reaches, /metrics counts
the requests both workers served (webapp/api/metrics.py), and the shared metrics
directory is removed when the server stops."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_api import _bearer, _event, _interrupt

REQUESTS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scored(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "txmon_api_requests_total" and s.labels.get("route") == "/v1/score" and s.labels["status"] == "200"
    )


def _scored_in(path) -> float:
    """Scored requests one worker wrote to its own file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    return sum(
        s.value
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True)
        for s in metric.samples
        if s.name == "txmon_api_requests_total" and s.labels.get("route") == "/v1/score" and s.labels["status"] == "200"
    )


def test_every_scrape_counts_both_workers_requests(services, tmp_path):
    from txmon.infra.cassandra_schema import apply_schema
    from txmon.webapp.api.keys import create_key
    from txmon.webapp.api.store import ApiStore

    apply_schema(services)
    store = ApiStore(services, timeout_s=10)
    try:
        key, _ = create_key(store, "workers", ["score"])
    finally:
        store.close()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "api.log", "w")  # noqa: SIM115 - the child writes to it until it stops
    child = subprocess.Popen(
        [sys.executable, "-m", "txmon.infra.cli", "api", "--port", str(port), "--workers", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        # TMPDIR: the metrics directory the server makes lands where this test can see it.
        env={**os.environ, "TXMON_API__REGISTRY_ROOT": str(tmp_path / "no-models"), "TMPDIR": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and child.poll() is None:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)

        def score(i: int) -> int:  # a new connection each, 8 at a time: both workers accept some
            content = json.dumps(_event(f"api-workers-{i}"))
            return httpx.post(f"{base}/v1/score", headers=_bearer(key), timeout=60, content=content).status_code

        # /healthz answered by one worker says nothing of the other, which may still be loading
        # (or the kernel may hand one worker every connection of a round on a loaded machine):
        # rounds of REQUESTS until each worker's own file counts some, every one of them counted.
        sent, served = 0, []
        deadline = time.monotonic() + 180
        with ThreadPoolExecutor(8) as pool:
            while True:
                statuses = list(pool.map(score, range(sent, sent + REQUESTS)))
                assert statuses == [200] * REQUESTS, (tmp_path / "api.log").read_text()[-2000:]
                sent += REQUESTS
                [metrics_dir] = tmp_path.glob("txmon-api-metrics-*")
                served = [_scored_in(f) for f in metrics_dir.glob("counter_*.db")]  # one file per worker process
                if (len(served) == 2 and all(n > 0 for n in served)) or time.monotonic() > deadline:
                    break
        assert len(served) == 2 and all(n > 0 for n in served) and sum(served) == sent, (served, sent)
        for _ in range(8):  # a new connection each, so scrapes reach both workers too
            scrape = httpx.get(f"{base}/metrics", headers=_bearer(key), timeout=30)
            assert scrape.status_code == 200
            assert _scored(scrape.text) == sent
    finally:
        _interrupt(child, log)
    assert not list(tmp_path.glob("txmon-api-metrics-*")), "the metrics directory is removed at shutdown"
