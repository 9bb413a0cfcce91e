"""`txmon airflow ...`: the project's local Airflow. Registered in infra/cli.py."""

from __future__ import annotations

from typing import Annotated

import typer

from txmon.infra.errors import AirflowApiError
from txmon.infra.settings import load_settings

airflow_app = typer.Typer(
    help="Local Airflow (AIRFLOW_HOME=<state_dir>/airflow, DAGs from dags/): start, check, stop, trigger.",
    no_args_is_help=True,
)


@airflow_app.command("up")
def up() -> None:
    """Start Airflow (scheduler, DAG processor, triggerer, API server) in the background
    (SQLite DB, project DAGs, connections from config) and wait until it is healthy;
    print the UI address and login."""
    # lazy: psutil + alerting.config (150 ms to import); `txmon --help` loads this module without it
    from txmon.infra import airflow

    settings = load_settings()
    st, login, waited = airflow.up(settings, log=typer.echo)
    rss = f", {st.rss_mb:.0f} MiB resident" if st.rss_mb else ""
    typer.echo(f"airflow: {st.detail} after {waited:.1f}s (pid {st.pid}{rss})")
    typer.echo(login.line())


@airflow_app.command("status")
def status() -> None:
    """Pid, health and login; the DAGs with their paused state. Exit 1 if unhealthy."""
    # lazy: psutil + alerting.config (150 ms to import); `txmon --help` loads this module without it
    from txmon.infra import airflow

    settings = load_settings()
    st = airflow.status(settings)
    typer.echo(f"airflow    pid={st.pid or '-'} url={st.url} {st.detail}")
    if st.pid is None or not st.healthy:
        raise typer.Exit(1)
    typer.echo(airflow.login(settings).line())
    for dag in airflow.list_dags(settings):
        typer.echo(
            f"  {dag['dag_id']:<20} {'paused' if dag.get('is_paused') else 'active':<7} "
            f"schedule={dag.get('timetable_summary') or '-'}"
        )


@airflow_app.command("down")
def down() -> None:
    """Stop Airflow (scheduler, API server, DAG processor, triggerer and running tasks)."""
    # lazy: psutil + alerting.config (150 ms to import); `txmon --help` loads this module without it
    from txmon.infra import airflow

    airflow.down(load_settings(), log=typer.echo)


@airflow_app.command("trigger")
def trigger(
    dag_id: Annotated[str, typer.Argument(help="ingestion | stream_supervisor | model_retraining | alert_dispatch")],
    conf: Annotated[
        str | None, typer.Option(help='run parameters as a JSON object, e.g. \'{"file": "drop.csv"}\'')
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="dag run id (default: Airflow's manual__<time>)")] = None,
    logical_date: Annotated[
        str | None,
        typer.Option(
            help="ISO time, e.g. 2026-11-23T02:00:00Z: the run gets the data interval of the schedule there "
            "(default: none; the tasks use the time of the trigger)"
        ),
    ] = None,
) -> None:
    """Trigger a DAG run through the REST API; print the run id and where to watch it."""
    # lazy: psutil + alerting.config (150 ms to import); `txmon --help` loads this module without it
    from txmon.infra import airflow

    settings = load_settings()
    created = airflow.trigger_dag(
        settings,
        dag_id,
        airflow.parse_conf(conf),
        run_id=run_id,
        logical_date=_logical_date(logical_date),
        log=typer.echo,
    )
    typer.echo(f"triggered {dag_id} run {created}; watch it at {settings.airflow.url}/dags/{dag_id}")


def _logical_date(text: str | None):
    """``--logical-date`` as an aware datetime (a time without zone is UTC)."""
    # lazy: jinja2 (719 ms to import); `txmon --help` loads this module without it
    from txmon.infra.orchestration import utc

    try:
        return utc(text)
    except ValueError as exc:
        raise AirflowApiError(f"--logical-date: {exc}") from None


@airflow_app.command("unpause")
def unpause(dag_id: Annotated[str, typer.Argument(help="DAG to unpause (new DAGs start paused)")]) -> None:
    """Let the scheduler run a DAG on its schedule (and run queued manual runs)."""
    # lazy: psutil + alerting.config (150 ms to import); `txmon --help` loads this module without it
    from txmon.infra import airflow

    airflow.set_paused(load_settings(), dag_id, False)
    typer.echo(f"{dag_id}: unpaused")


@airflow_app.command("pause")
def pause(dag_id: Annotated[str, typer.Argument(help="DAG to pause")]) -> None:
    """Stop scheduling a DAG (running tasks finish)."""
    # lazy: psutil + alerting.config (150 ms to import); `txmon --help` loads this module without it
    from txmon.infra import airflow

    airflow.set_paused(load_settings(), dag_id, True)
    typer.echo(f"{dag_id}: paused")
