"""
### spending_insights: spending per account and per segment of the book

Daily at 01:30 UTC (07:00 IST, after the IST day has closed). One task,
`compute`: `txmon spark-submit spark_jobs/spending_insights.py --until <end of the data
interval>` reads every transaction before that time from Cassandra and rewrites
`account_spending` (per payer account, IST month and year, totals overall and by
channel, merchant category (mcc) and payee) and `segment_spending` (the whole book, each
channel, each merchant category and each spending band of payers, per IST day, month and
year: totals, distinct accounts, by channel, category and band, the largest payees). The
fraud desk's console shows
them on its insights page. Keyed by the interval's end, so a rerun of a run writes the
same rows.

**Trigger by hand**: `txmon airflow trigger spending_insights` (until the trigger time),
or with `--logical-date` for a past interval.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from txmon.infra.orchestration import default_args

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TXMON = Path(sys.executable).with_name("txmon")

with DAG(
    dag_id="spending_insights",
    description="Spending per account and per segment (Spark batch) for the console's insights",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("30 1 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(execution_timeout=timedelta(hours=2)),
    tags=["txmon", "insights"],
) as dag:
    BashOperator(
        task_id="compute",
        doc_md="Runs spark_jobs/spending_insights.py up to the end of the data interval (or the trigger time).",
        # spark-submit finds SPARK_HOME with the first python3 on PATH: the venv's. A run
        # triggered by hand has no data interval (Airflow 3): it counts up to when it was asked for.
        bash_command=(
            f'PATH="{TXMON.parent}:$PATH" {TXMON} spark-submit spark_jobs/spending_insights.py '
            "--until {{ (dag_run.data_interval_end or dag_run.run_after).isoformat() }}"
        ),
        cwd=str(PROJECT_ROOT),
        append_env=True,
    )
