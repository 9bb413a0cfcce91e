"""Where a running stream's micro-batches spend their time, stage by stage, from Spark's REST API.

    .venv/bin/python -m txmon.bench.stage_timeline [--jobs 12] [--ui http://127.0.0.1:4040]

Run it while a stream runs (e.g. during ``bench.stream_at_rate``): for the last ``--jobs``
finished Spark jobs it prints each job's duration and the gap since the job before (the
driver-only time between them: the plan, the drift monitor, Spark's offset and commit
logs), and for each of its stages the start, duration and every task as
``duration (run ms / JVM CPU ms, scheduler delay, records)``. A task's JVM CPU leaves out
its Python worker, so a Python step shows as run time without CPU. With adaptive query
execution each shuffle stage of a micro-batch is a job of its own. (This is how the
landing, payee and payer/outputs stages in docs/performance.md were measured.)
"""

from __future__ import annotations

import argparse
import sys
import urllib.error

from txmon.bench.spark_profile import rest_get, rest_seconds


def _ms(start: float, end: float) -> str:
    return f"{(end - start) * 1000:.0f} ms"


def _task(task: dict) -> str:
    m = task.get("taskMetrics", {})
    records = m.get("inputMetrics", {}).get("recordsRead", 0) or m.get("shuffleReadMetrics", {}).get("recordsRead", 0)
    return (
        f"{task['duration']}({m.get('executorRunTime', 0)}r/{m.get('executorCpuTime', 0) // 1_000_000}c,"
        f"sd{task.get('schedulerDelay', 0)},rec{records})"
    )


def timeline(jobs: list[dict], stages: dict[int, dict], tasks: dict[int, list[dict]]) -> list[str]:
    """Lines for ``jobs`` (Spark REST job objects) in job order. ``stages``: completed stage
    objects by stage id; ``tasks``: their task lists by stage id."""
    lines, previous_end = [], None
    for job in sorted(jobs, key=lambda j: j["jobId"]):
        start, end = rest_seconds(job["submissionTime"]), rest_seconds(job["completionTime"])
        gap = "" if previous_end is None else f", {_ms(previous_end, start)} after the job before"
        name = job.get("description") or job.get("name", "")
        lines.append(f"job {job['jobId']} {name.splitlines()[0][:48]!r}: {_ms(start, end)}{gap}")
        previous_end = end
        for stage_id in sorted(job.get("stageIds", [])):
            stage = stages.get(stage_id)
            if stage is None:  # skipped (its shuffle output reused) or still running
                continue
            s_start, s_end = rest_seconds(stage["submissionTime"]), rest_seconds(stage["completionTime"])
            spans = " ".join(_task(t) for t in sorted(tasks.get(stage_id, []), key=lambda t: t["taskId"]))
            lines.append(
                f"  stage {stage_id}: +{_ms(start, s_start)}, {_ms(s_start, s_end)}, {stage['numTasks']} tasks: {spans}"
            )
    return lines


def fetch(ui: str, last: int) -> tuple[list[dict], dict[int, dict], dict[int, list[dict]]]:
    def get(path: str):
        return rest_get(f"{ui}/api/v1/applications{path}")

    app = get("")[0]["id"]
    jobs = [j for j in get(f"/{app}/jobs") if j["status"] == "SUCCEEDED"][:last]  # newest first
    wanted = {s for j in jobs for s in j.get("stageIds", [])}
    stages = {s["stageId"]: s for s in get(f"/{app}/stages?status=complete") if s["stageId"] in wanted}
    tasks = {sid: get(f"/{app}/stages/{sid}/{s['attemptId']}/taskList?length=200") for sid, s in stages.items()}
    return jobs, stages, tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12, help="how many of the last finished jobs [12]")
    parser.add_argument("--ui", default="http://127.0.0.1:4040", help="the Spark UI of the running stream")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        jobs, stages, tasks = fetch(args.ui.rstrip("/"), args.jobs)
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"no Spark UI at {args.ui} ({exc}); start a stream first (e.g. python -m txmon.bench.stream_at_rate) "
            "or pass --ui with its address (spark.ui.port)",
            file=sys.stderr,
        )
        return 2
    print("\n".join(timeline(jobs, stages, tasks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
