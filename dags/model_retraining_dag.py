"""
### model_retraining: challenger vs champion, promote or keep, tell the fraud desk

Daily at 02:00 UTC, and whenever the drift monitor triggers it through the REST API
(`infra.airflow.on_drift_event`: conf `{"reason": "drift", "drift_event": {...}}`).

1. `extract`: transactions and labels of the window from Cassandra
   (`spark_jobs.retraining.extract`). The window is `[end - window_days, end)` with `end` the
   end of the data interval (a manual run without one: when it was triggered), or the
   `start` / `end` params. The window names the run's directory
   `<state_dir>/retraining/<start>_<end>/`: re-running a window reuses it, every stage is
   idempotent.
2. `build_features` (`spark_jobs.retraining.build_features`).
3. `train_challenger`: `txmon spark-submit spark_jobs/retrain_job.py --run-id ... --stage train`;
   registers the challenger in the model registry (not promoted).
4. `evaluate` the challenger against the champion on the same hold-out.
5. `decide` -> `promote` (the challenger becomes champion) or `keep`.
6. `notify_fraud_desk`: email to the `airflow.fraud_desk_group` recipients with both
   models' metrics and the decision (sent once per run, through the delivery log).

**Trigger by hand**: `txmon airflow trigger model_retraining --conf '{"start": "2026-10-01", "end": "2026-11-01"}'`
or `--conf '{"window_days": 60}'`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TriggerRule, task
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from txmon.alerting.notify import notify_group, retraining_email
from txmon.infra.orchestration import default_args, retraining_window
from txmon.infra.settings import load_settings

# spark_jobs.retraining is imported inside the tasks (each says what it costs): the DAG
# processor re-parses this file every 30 s, and the module brings pandas and pyarrow.

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TXMON = Path(sys.executable).with_name("txmon")

with DAG(
    dag_id="model_retraining",
    description="Retrain a challenger, evaluate it against the champion, promote or keep, email the fraud desk",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args=default_args(execution_timeout=timedelta(hours=1)),
    params={
        "start": Param(
            None,
            type=["null", "string"],
            title="Start",
            description="window start, ISO date/time (default: end - window_days)",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            title="End",
            description="window end, ISO date/time (default: end of the data interval)",
        ),
        "window_days": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=3650,
            description="days of history (default: retraining.window_days)",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            description="why this run: schedule | drift | manual (default: how the run was started)",
        ),
        "drift_event": Param(
            None, type=["null", "object"], description="the drift alarm (models.drift.DriftEvent) when reason is drift"
        ),
    },
    tags=["txmon", "models"],
) as dag:

    @task
    def extract(params=None, **context) -> dict:
        """Fix the window and run id, then extract the window's history from Cassandra."""
        # lazy: pandas (3.3 s to import); the DAG processor parses this file every 30 s
        from txmon.spark_jobs import retraining

        settings = load_settings()
        run_id, start, end = retraining_window(params, context, settings.retraining.window_days)
        counts = retraining.extract(settings, run_id, start, end)
        started_by = "schedule" if getattr(context.get("dag_run"), "run_type", None) == "scheduled" else "manual"
        return {
            "run_id": run_id,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "reason": params.get("reason") or started_by,
            "drift_event": params.get("drift_event"),
            "extracted": counts,
        }

    @task
    def build_features(plan: dict) -> dict:
        # lazy: pandas (3.3 s to import); the DAG processor parses this file every 30 s
        from txmon.spark_jobs import retraining

        return retraining.build_features(load_settings(), plan["run_id"])

    train_challenger = BashOperator(
        task_id="train_challenger",
        doc_md="Trains the challenger with Spark and registers it (not promoted).",
        # spark-submit finds SPARK_HOME with the first python3 on PATH: the venv's.
        bash_command=(
            f'PATH="{TXMON.parent}:$PATH" {TXMON} spark-submit spark_jobs/retrain_job.py '
            "--run-id {{ ti.xcom_pull(task_ids='extract')['run_id'] }} --stage train"
        ),
        cwd=str(PROJECT_ROOT),
        append_env=True,
        execution_timeout=timedelta(hours=3),
    )

    @task
    def evaluate(plan: dict) -> dict:
        """Challenger against champion on the same hold-out; says whether to promote."""
        # lazy: pandas (3.3 s to import); the DAG processor parses this file every 30 s
        from txmon.spark_jobs import retraining

        return retraining.evaluate(load_settings(), plan["run_id"])

    @task.branch
    def decide(result: dict) -> str:
        return "promote" if result.get("promote") else "keep"

    @task
    def promote(plan: dict) -> str | None:
        # lazy: pandas (3.3 s to import); the DAG processor parses this file every 30 s
        from txmon.spark_jobs import retraining

        return retraining.promote(load_settings(), plan["run_id"])

    keep = EmptyOperator(task_id="keep", doc_md="The champion stays; the challenger stays registered.")

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def notify_fraud_desk(plan: dict, result: dict, ti=None) -> list[str]:
        """Email the decision and both models' metrics to the fraud desk (once per run)."""
        # lazy: pandas (3.3 s to import); the DAG processor parses this file every 30 s
        from txmon.spark_jobs import retraining

        settings = load_settings()
        promoted = ti.xcom_pull(task_ids="promote")
        subject, text = retraining_email(plan, result, promoted, retraining.comparison_markdown(result))
        outcomes = notify_group(
            settings,
            settings.airflow.fraud_desk_group,
            subject,
            text,
            key=f"model_retraining:{plan['run_id']}:{ti.run_id}",
            kind="retraining",
        )
        if any(o.status == "failed" for o in outcomes):
            raise RuntimeError(f"retraining email not delivered: {[o.response for o in outcomes]}")
        return [o.status for o in outcomes]

    plan = extract()
    features = build_features(plan)
    result = evaluate(plan)
    branch = decide(result)
    promoted = promote(plan)
    plan >> features >> train_challenger >> result
    branch >> [promoted, keep]
    [promoted, keep] >> notify_fraud_desk(plan, result)
