"""bench/stage_timeline.py: a stream's Spark jobs, stages and tasks as a timeline."""

from __future__ import annotations

from txmon.bench.stage_timeline import main, timeline


def _job(job_id, start, end, stage_ids, description="ingest_q\nid = 1"):
    return {
        "jobId": job_id,
        "submissionTime": f"2026-11-24T12:00:{start}GMT",
        "completionTime": f"2026-11-24T12:00:{end}GMT",
        "stageIds": stage_ids,
        "description": description,
    }


def _stage(stage_id, start, end, tasks):
    return {
        "stageId": stage_id,
        "submissionTime": f"2026-11-24T12:00:{start}GMT",
        "completionTime": f"2026-11-24T12:00:{end}GMT",
        "numTasks": tasks,
        "attemptId": 0,
    }


def test_jobs_in_order_with_the_driver_gap_between_them_and_every_task():
    jobs = [_job(8, "01.400", "02.000", [11]), _job(7, "00.000", "01.000", [9, 10])]  # REST lists newest first
    stages = {10: _stage(10, "00.100", "00.900", 2), 11: _stage(11, "01.450", "02.000", 1)}  # stage 9 was skipped
    tasks = {
        10: [
            {
                "taskId": 2,
                "duration": 700,
                "schedulerDelay": 5,
                "taskMetrics": {
                    "executorRunTime": 650,
                    "executorCpuTime": 40_000_000,
                    "shuffleReadMetrics": {"recordsRead": 600},
                },
            },
            {
                "taskId": 1,
                "duration": 300,
                "schedulerDelay": 3,
                "taskMetrics": {
                    "executorRunTime": 280,
                    "executorCpuTime": 12_000_000,
                    "inputMetrics": {"recordsRead": 250},
                },
            },
        ],
        11: [{"taskId": 3, "duration": 500, "taskMetrics": {}}],
    }
    assert timeline(jobs, stages, tasks) == [
        "job 7 'ingest_q': 1000 ms",
        "  stage 10: +100 ms, 800 ms, 2 tasks: 300(280r/12c,sd3,rec250) 700(650r/40c,sd5,rec600)",
        "job 8 'ingest_q': 600 ms, 400 ms after the job before",
        "  stage 11: +50 ms, 550 ms, 1 tasks: 500(0r/0c,sd0,rec0)",
    ]


def test_without_a_running_stream_it_says_what_to_do(capsys):
    assert main(["--ui", "http://127.0.0.1:9"]) == 2
    assert "start a stream first" in capsys.readouterr().err
