"""
### stream_supervisor: keep the streaming job alive and progressing

Every 5 minutes `check_stream` judges the Spark streaming job
(`spark_jobs/transactions_stream.py`) from its pid file and the heartbeat its
`StreamingQueryListener` writes to `<state_dir>/stream/heartbeat.json`
(`spark_jobs/supervisor.py`):

* **dead**: no process of ours runs it;
* **stalled**: no heartbeat for `airflow.stream_stall_after_s` (default 300 s), or a
  query has not progressed for that long while Kafka holds unread records;
* **starting** (within that grace period after a start) or **running**: nothing to do.

Dead or stalled -> `restart_stream` stops what is left of it and starts
`txmon spark-submit spark_jobs/transactions_stream.py` detached (log:
`<state_dir>/logs/stream.out`), and appends the restart with its reason and this DAG
run to `<state_dir>/stream/restarts.jsonl`.

**Trigger by hand** to check now: `txmon airflow trigger stream_supervisor`; `topic`
chooses the source topic (default `kafka.topics.transactions`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, task
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from txmon.infra.orchestration import default_args
from txmon.infra.settings import load_settings

# spark_jobs.supervisor is imported inside the tasks (each says what it costs): the DAG
# processor re-parses this file every 30 s, and the module brings pyspark, pandas, pyarrow
# and the Cassandra driver (spark_jobs.heartbeat and spark_jobs.transactions_stream).

with DAG(
    dag_id="stream_supervisor",
    description="Restart the Spark streaming job when it is dead or stalled; record each restart",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=15),
    default_args=default_args(retries=1, retry_delay=timedelta(seconds=20), execution_timeout=timedelta(minutes=5)),
    params={
        "topic": Param(
            None,
            type=["null", "string"],
            title="Topic",
            description="source topic of the stream (default: kafka.topics.transactions)",
        ),
    },
    tags=["txmon", "streaming"],
) as dag:

    @task.branch
    def check_stream(params=None) -> str:
        """Dead or stalled -> restart_stream; starting or running -> stream_healthy."""
        # lazy: pandas (4.3 s to import); the DAG processor parses this file every 30 s
        from txmon.spark_jobs.supervisor import check

        health = check(load_settings(), topic=params.get("topic"))
        logging.getLogger("txmon.airflow").info("stream %s: %s (pid %s)", health.state, health.reason, health.pid)
        return "restart_stream" if health.needs_restart else "stream_healthy"

    @task
    def restart_stream(params=None, run_id=None) -> dict:
        """Re-check (the job may have come back meanwhile), then restart and record it."""
        # lazy: pandas (4.3 s to import); the DAG processor parses this file every 30 s
        from txmon.spark_jobs.supervisor import supervise

        result = supervise(load_settings(), topic=params.get("topic"), triggered_by=f"stream_supervisor/{run_id}")
        restart = result["restart"]
        logging.getLogger("txmon.airflow").warning(
            "stream %s",
            f"restarted: {restart['reason']} (pid {restart['old_pid']} -> {restart['pid']}, log {restart['log']})"
            if restart
            else "came back by itself; not restarted",
        )
        return result

    check_stream() >> [restart_stream(), EmptyOperator(task_id="stream_healthy")]
