"""The API's metrics with several workers: each worker process writes its counts to the
shared directory, and a scrape of any one of them reports the sum of all (as
``txmon api --workers N`` sets it up)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from txmon.webapp.api.metrics import MULTIPROCESS_ENV, ApiMetrics, multiprocess_dir, render_directory

WORKER = textwrap.dedent(
    """
    import sys
    from txmon.webapp.api.metrics import ApiMetrics
    m = ApiMetrics()
    assert m.multiprocess_dir is not None, "a worker started with the variable writes to the directory"
    for _ in range(int(sys.argv[1])):
        m.requests.labels("/v1/score", "POST", "200").inc()
        m.latency.labels("/v1/score").observe(0.004)
        m.decisions.labels(sys.argv[2]).inc()
    sys.stdout.write(m.render()[0].decode())
    """
)


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def _worker(path, count: int, decision: str) -> str:
    env = {**os.environ, MULTIPROCESS_ENV: str(path)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(count), decision],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_scrape_of_any_worker_counts_every_workers_requests(tmp_path):
    first = _samples(_worker(tmp_path, 3, "APPROVE"))
    second = _samples(_worker(tmp_path, 5, "BLOCK"))  # this worker's scrape sees the first's counts too
    request = ("txmon_api_requests_total", ("method", "POST"), ("route", "/v1/score"), ("status", "200"))
    assert first[request] == 3
    assert second[request] == 8
    assert second[("txmon_api_decisions_total", ("decision", "APPROVE"))] == 3
    assert second[("txmon_api_decisions_total", ("decision", "BLOCK"))] == 5
    assert second[("txmon_api_request_seconds_count", ("route", "/v1/score"))] == 8
    assert second[("txmon_api_request_seconds_bucket", ("le", "0.005"), ("route", "/v1/score"))] == 8
    assert second[("txmon_api_request_seconds_bucket", ("le", "0.0025"), ("route", "/v1/score"))] == 0
    # After both workers have gone (a restart), their counts stay in the total.
    assert _samples(render_directory(str(tmp_path)).decode())[request] == 8


def test_without_the_directory_a_worker_reports_its_own_counts(monkeypatch, tmp_path):
    metrics = ApiMetrics()
    metrics.requests.labels("/healthz", "GET", "200").inc(2)
    samples = _samples(metrics.render()[0].decode())
    assert samples[("txmon_api_requests_total", ("method", "GET"), ("route", "/healthz"), ("status", "200"))] == 2


def test_a_directory_named_after_prometheus_client_was_imported_is_not_half_used(monkeypatch, tmp_path):
    """This process imported prometheus_client without the variable, so it counts in memory:
    scraping the directory would then miss its own requests."""
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path))
    assert multiprocess_dir() is None
    metrics = ApiMetrics()
    metrics.decisions.labels("REVIEW").inc()
    assert _samples(metrics.render()[0].decode())[("txmon_api_decisions_total", ("decision", "REVIEW"))] == 1
