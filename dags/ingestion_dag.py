"""
### ingestion: historical batch drops -> Kafka

Every 15 minutes (and on demand) the DAG looks for files in the **landing folder**
`<state_dir>/landing` (`.csv` / `.parquet`) and replays each into the `transactions`
topic with txmon's replay mode (`ingestion/replay.py`): rows are mapped, validated
against the event contract, sorted by event time and sent.

* A file directly in `landing/` uses the mapping `airflow.landing_mapping`
  (config/txmon.yaml); a file in `landing/<name>/` uses `config/replay/<name>.yaml`.
* **Bad rows are never dropped silently**: each goes to
  `landing/rejects/<file>.rejects.csv` with its row number, reason and raw values, and
  the task log lists the count per reason with a (masked) example.
* A file fully delivered to Kafka moves to `landing/done/<day>/`; if Kafka did not
  acknowledge every event, the task fails and retries with the file still in place.
  Replayed txn ids come from file name + row, so a replay twice is idempotent downstream.

**Trigger by hand** with `file` (a file in the landing folder or an absolute path) and
optionally `mapping` (a name such as `paysim`, or a path):
`txmon airflow trigger ingestion --conf '{"file": "june.csv", "mapping": "card_transactions"}'`.
Without `file`, the sensor waits up to 10 minutes for a drop and skips the run if none comes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param, PokeReturnValue, task
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from txmon.infra.orchestration import default_args, interval_end
from txmon.infra.settings import load_settings

# ingestion.landing is imported inside the tasks (each says what it costs): the DAG
# processor re-parses this file every 30 s, and the module brings pandas and pyarrow.

with DAG(
    dag_id="ingestion",
    description="Replay files dropped in the landing folder into Kafka (bad rows to a rejects file)",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("*/15 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(execution_timeout=timedelta(hours=2)),
    params={
        "file": Param(
            None,
            type=["null", "string"],
            title="File",
            description="a file in the landing folder, or an absolute path; empty: whatever has landed",
        ),
        "mapping": Param(
            None,
            type=["null", "string"],
            title="Mapping",
            description="replay mapping name (config/replay/<name>.yaml) or path; empty: by folder",
        ),
        "topic": Param(
            None, type=["null", "string"], title="Topic", description="Kafka topic (default: kafka.topics.transactions)"
        ),
    },
    tags=["txmon", "ingestion"],
) as dag:

    @task.sensor(
        poke_interval=30, timeout=600, mode="reschedule", soft_fail=True, execution_timeout=timedelta(minutes=11)
    )
    def wait_for_files(params=None):
        """Done as soon as a file is in the landing folder (or `file` was given); the run is
        skipped when nothing lands within 10 minutes."""

        # lazy: pandas + faker (3.5 s to import); the DAG processor parses this file every 30 s
        from txmon.ingestion.landing import find_landed, resolve_mapping

        settings = load_settings()
        if params.get("file"):
            mapping = resolve_mapping(settings, params.get("mapping"))
            return PokeReturnValue(True, [{"path": params["file"], "mapping": str(mapping)}])
        found = [f.as_dict() for f in find_landed(settings)]
        if params.get("mapping"):
            chosen = str(resolve_mapping(settings, params["mapping"]))
            found = [{**f, "mapping": chosen} for f in found]
        return PokeReturnValue(bool(found), found or None)

    @task
    def replay_files(files: list[dict], params=None, data_interval_end=None, dag_run=None) -> list[dict]:
        """Replay each file into Kafka, report its rejects, move it to done/."""
        # lazy: pandas + faker (3.5 s to import); the DAG processor parses this file every 30 s
        from txmon.ingestion.landing import ingest_file

        settings = load_settings()
        day = interval_end({"data_interval_end": data_interval_end, "dag_run": dag_run}).date()
        return [ingest_file(settings, f["path"], f["mapping"], day=day, topic=params.get("topic")) for f in files]

    replay_files(wait_for_files())
