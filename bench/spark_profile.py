"""Where a micro-batch's time goes, by Spark job: a profile from the driver's own REST API.

Structured Streaming's ``durationMs`` puts all of a foreachBatch sink under ``addBatch``.
Inside it the stream runs several Spark jobs (write transactions, the two feature folds,
scoring, the scored/alerts writes, the alerts topic, dead letters); the Spark UI's REST
API (``/api/v1/applications/<id>/jobs``) has each job's call site and wall time, so the
sum per call site says which step to attack first. Jobs the pipeline labels (each
Cassandra write sets a job description, ``txmon: write <table>``) are grouped by label.
"""
from __future__ import annotations

import json
import urllib.request
from datetime import datetime


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def _ts(text: str) -> float:
    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def last_job_id(spark) -> int:
    """The highest job id so far (-1 if none or the UI is off): profile jobs after it."""
    jobs = _jobs(spark)
    return max((j["jobId"] for j in jobs), default=-1)


def _jobs(spark) -> list[dict]:
    sc = spark.sparkContext
    if not sc.uiWebUrl:
        return []
    try:
        return _get(f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/jobs?status=succeeded")
    except OSError:
        return []


def job_profile(spark, after_job_id: int = -1) -> list[dict]:
    """Per call site: jobs, total seconds, share of the total; largest first."""
    by_site: dict[str, list[float]] = {}
    for job in _jobs(spark):
        if job["jobId"] <= after_job_id or "completionTime" not in job:
            continue
        seconds = _ts(job["completionTime"]) - _ts(job["submissionTime"])
        site = job.get("name", "?").split(" at ")
        name = f"{site[0]} at {site[1].rsplit('/', 1)[-1]}" if len(site) == 2 else job.get("name", "?")
        if job.get("description"):  # set by the pipeline's writers (cassandra_sink.write_dataframe)
            name = job["description"].splitlines()[0]
        by_site.setdefault(name, []).append(seconds)
    total = sum(sum(v) for v in by_site.values()) or 1.0
    rows = [{"job": name, "jobs": len(v), "seconds": sum(v), "share": sum(v) / total} for name, v in by_site.items()]
    return sorted(rows, key=lambda r: -r["seconds"])


def format_profile(rows: list[dict]) -> str:
    lines = [f"{'Spark job (call site)':<60}{'jobs':>6}{'seconds':>10}{'share':>8}"]
    lines += [f"{r['job'][:58]:<60}{r['jobs']:>6}{r['seconds']:>10.1f}{r['share']:>8.1%}" for r in rows]
    return "\n".join(lines)
