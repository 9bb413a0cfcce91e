"""The DAG files: they import cleanly and cheaply, and each has the task graph, retries,
timeouts, failure callback, docs and parameters operators rely on.

In-process Airflow uses the test AIRFLOW_HOME set in tests/conftest.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from txmon.infra.orchestration import notify_operator

ROOT = Path(__file__).resolve().parents[2]
DAG_IDS = {"ingestion", "stream_supervisor", "model_retraining", "alert_dispatch", "spending_insights"}
HEAVY = ("pyspark", "pandas", "numpy", "sklearn", "cassandra", "kafka", "river", "matplotlib", "pyarrow")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))


def _graph(dag) -> dict[str, set[str]]:
    return {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == DAG_IDS
    assert {Path(s.file).name for s in dagbag.dagbag_stats} == {f"{d}_dag.py" for d in DAG_IDS}
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).name == f"{dag_id}_dag.py"


def _project_packages() -> set[str]:
    """Top-level importable names of the project: its package folders (and the ``txmon``
    namespace, whether or not it exists yet)."""
    return {p.parent.name for p in ROOT.glob("*/__init__.py")} | {"txmon"}


def test_no_dag_file_can_shadow_a_package():
    """A real Airflow puts dags/ first on sys.path of every task process, so a DAG file
    named like a package (dags/ingestion.py) hides it: ``import ingestion.landing`` then
    fails in the task although every in-process test passes."""
    modules = {p.stem for p in (ROOT / "dags").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert modules, "no DAG files found"
    assert {"ingestion", "infra", "models", "alerting"} <= _project_packages()
    assert modules & _project_packages() == set()
    # Nor anything else a task may import: every name must be free outside dags/.
    code = (
        "import importlib.util, json, sys; names = json.loads(sys.argv[1]); "
        "print(json.dumps(sorted(n for n in names if importlib.util.find_spec(n) is not None)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(sorted(modules))], capture_output=True, text=True, check=True, cwd="/"
    )
    assert json.loads(out.stdout) == []


def test_parsing_the_dags_imports_no_heavy_package():
    """What the scheduler pays on every parse (every 30 s): no Spark, pandas, drivers or
    model code at DAG top level, only what txmon.infra.orchestration already loads; the
    tasks import the rest when they run. Checked by what a parse imports, not by its time."""
    code = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag({str(ROOT / "dags")!r})
print(json.dumps({{"errors": bag.import_errors, "new": sorted(set(sys.modules) - before)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert [m for m in report["new"] if m.split(".")[0] in HEAVY] == []
    txmon = [m for m in report["new"] if m.startswith("txmon.")]
    assert "txmon.infra.orchestration" in txmon  # the check sees txmon's own imports
    # The tasks' own modules: Spark jobs, model code beyond the risk vocabulary, file landing.
    heavy_txmon = ("txmon.spark_jobs", "txmon.ingestion.landing", "txmon.models.bundle", "txmon.models.training")
    assert [m for m in txmon if m.startswith(heavy_txmon)] == []


def test_ingestion_graph_and_params(dagbag):
    dag = dagbag.dags["ingestion"]
    assert _graph(dag) == {"wait_for_files": {"replay_files"}, "replay_files": set()}
    sensor = dag.get_task("wait_for_files")
    assert sensor.mode == "reschedule" and sensor.soft_fail and sensor.timeout == 600
    assert {"file", "mapping", "topic"} <= set(dag.params)


def test_stream_supervisor_graph(dagbag):
    dag = dagbag.dags["stream_supervisor"]
    assert _graph(dag) == {
        "check_stream": {"restart_stream", "stream_healthy"},
        "restart_stream": set(),
        "stream_healthy": set(),
    }
    assert dag.timetable.expression == "*/5 * * * *"


def test_model_retraining_graph_branches_and_joins(dagbag):
    dag = dagbag.dags["model_retraining"]
    graph = _graph(dag)
    # The chain, then the branch and the join (data dependencies add a few direct edges).
    assert {
        "extract",
        "build_features",
        "train_challenger",
        "evaluate",
        "decide",
        "promote",
        "keep",
        "notify_fraud_desk",
    } == set(graph)
    for up, down in [
        ("extract", "build_features"),
        ("build_features", "train_challenger"),
        ("train_challenger", "evaluate"),
        ("evaluate", "decide"),
        ("decide", "promote"),
        ("decide", "keep"),
        ("promote", "notify_fraud_desk"),
        ("keep", "notify_fraud_desk"),
    ]:
        assert down in graph[up], f"{up} -> {down} missing"
    assert graph["notify_fraud_desk"] == set()
    assert dag.get_task("notify_fraud_desk").trigger_rule == "none_failed_min_one_success"
    train = dag.get_task("train_challenger")
    assert "spark-submit spark_jobs/retrain_job.py" in train.bash_command
    assert "--run-id {{ ti.xcom_pull(task_ids='extract')['run_id'] }} --stage train" in train.bash_command
    assert {"start", "end", "window_days", "reason", "drift_event"} <= set(dag.params)
    assert dag.timetable.expression == "0 2 * * *"


def test_alert_dispatch_graph(dagbag):
    dag = dagbag.dags["alert_dispatch"]
    assert _graph(dag) == {"retry_failed": set(), "digest_due": {"send_digest"}, "send_digest": set()}
    assert {"retry_date", "retry_days", "digest_date"} <= set(dag.params)


def test_spending_insights_runs_the_spark_job_up_to_the_interval_end(dagbag):
    dag = dagbag.dags["spending_insights"]
    assert _graph(dag) == {"compute": set()}
    command = dag.get_task("compute").bash_command
    assert "spark-submit spark_jobs/spending_insights.py" in command
    assert "--until {{ (dag_run.data_interval_end or dag_run.run_after).isoformat() }}" in command
    assert dag.timetable.expression == "30 1 * * *"


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_every_task_retries_with_backoff_times_out_and_emails_on_failure(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.doc_md and dag.doc_md.strip().startswith(f"### {dag_id}")
    assert dag.catchup is False and dag.max_active_runs == 1
    for t in dag.tasks:
        assert t.retries >= 1, t.task_id
        assert t.retry_exponential_backoff, t.task_id
        assert t.execution_timeout is not None and t.execution_timeout <= timedelta(hours=3), t.task_id
        callbacks = t.on_failure_callback if isinstance(t.on_failure_callback, list) else [t.on_failure_callback]
        assert notify_operator in callbacks, t.task_id
