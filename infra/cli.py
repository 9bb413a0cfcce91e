"""The ``txmon`` command line. Each subcommand is a thin shell over package code.

User mistakes (bad config, a taken port, missing Java or jars) surface as TxmonError
and are printed as one line with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from txmon.alerting.cli import alerts_app
from txmon.infra import credentials
from txmon.infra.airflow_cli import airflow_app
from txmon.infra.errors import TxmonError
from txmon.infra.settings import load_settings
from txmon.models import cli as models_cli
from txmon.webapp.cli import api_app
from txmon.webapp.console.cli import console_app

# Each command imports what it runs when it runs: `txmon --help` and every other command
# stay free of pandas, Spark and scikit-learn (the slowest imports in the project).
app = typer.Typer(
    help="txmon: real-time transaction monitoring for banks and UPI switches.\n\n"
    "Configuration: config/txmon.yaml, overridden by TXMON_<SECTION>__<KEY> environment "
    "variables (e.g. TXMON_KAFKA__PORT=19092); TXMON_CONFIG names another YAML file.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
infra_app = typer.Typer(help="Local Kafka and Cassandra: fetch jars, start, check, stop.", no_args_is_help=True)
app.add_typer(infra_app, name="infra")
cluster_app = typer.Typer(
    help="A local Spark standalone cluster (master + workers) to submit jobs to.", no_args_is_help=True
)
app.add_typer(cluster_app, name="spark-cluster")


def _register_subapps() -> None:
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(api_app, name="api")
    app.add_typer(console_app, name="console")
    app.add_typer(airflow_app, name="airflow")
    app.add_typer(models_cli.models_app, name="models")
    for name in ("train", "evaluate", "backtest", "retrain"):  # top-level commands defined in models/cli.py
        if hasattr(models_cli, name):
            app.command(name)(getattr(models_cli, name))


_register_subapps()


@infra_app.command("fetch")
def infra_fetch(force: Annotated[bool, typer.Option(help="re-run Maven even if jars are current")] = False) -> None:
    """Fetch the JVM artifacts (Kafka, Cassandra, Spark's Kafka connector) from Maven Central.

    A second run does nothing while infra/maven/*.xml is unchanged (no network needed).
    """
    # lazy: infra.jars (12 ms to import); `txmon --help` loads this module without it
    from txmon.infra import jars

    settings = load_settings()
    changed = jars.fetch(settings, force=force)
    typer.echo(f"jars {'fetched into' if changed else 'already current in'} {settings.jars_path}")


@infra_app.command("up")
def infra_up() -> None:
    """Start Kafka (KRaft) and Cassandra, wait until they answer, create topics and tables.

    Safe to run again: running services are kept, missing topics/tables are added.
    """
    # lazy: yaml + psutil (278 ms to import); `txmon --help` loads this module without it
    from txmon.infra import stack

    for r in stack.up(load_settings(), log=typer.echo):
        rss = f", {r.rss_mb:.0f} MiB resident" if r.rss_mb else ""
        typer.echo(f"{r.name}: {'started' if r.started else 'running'}{rss}")


def _print_statuses(statuses, name_width: int) -> None:
    """One line per service (pid, port, memory, health); exit 1 if any is unhealthy."""
    for s in statuses:
        rss = f"{s.rss_mb:7.0f} MiB" if s.rss_mb else "      -    "
        typer.echo(
            f"{s.name:<{name_width}} pid={s.pid or '-'!s:<8} port={s.port:<6} rss={rss}  "
            f"{'healthy' if s.healthy else 'UNHEALTHY: ' + s.detail}"
        )
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@infra_app.command("status")
def infra_status() -> None:
    """Show each service's pid, port and health; exit 1 if any is unhealthy."""
    # lazy: yaml + psutil (278 ms to import); `txmon --help` loads this module without it
    from txmon.infra import stack

    _print_statuses(stack.status(load_settings()), name_width=10)


@infra_app.command("down")
def infra_down(purge: Annotated[bool, typer.Option(help="also delete the services' data and logs")] = False) -> None:
    """Stop Kafka and Cassandra, and the web application if `txmon demo` started it, cleanly
    (SIGTERM, then SIGKILL after a grace period)."""
    # lazy: yaml + psutil (278 ms to import); `txmon --help` loads this module without it
    from txmon.infra import stack

    stack.down(load_settings(), purge=purge, log=typer.echo)


@infra_app.command("credentials")
def infra_credentials() -> None:
    """Print the Kafka and Cassandra users and passwords as shell exports (passwords are
    shown here and nowhere else).

    Values set in the environment win over <state_dir>/secrets.env, which `txmon infra up`
    generates on its first run (mode 0600). `eval "$(txmon infra credentials)"` gives a
    shell what txmon's processes use; see docs/security.md.
    """

    settings = load_settings()
    credentials.load(settings)
    missing = [name for name in credentials.VARIABLES if not os.environ.get(name)]
    if missing:
        raise TxmonError(
            f"no credentials yet ({', '.join(missing)} unset and not in "
            f"{credentials.secrets_path(settings)}): run `txmon infra up` first"
        )
    for name in credentials.VARIABLES:
        typer.echo(f"export {name}={shlex.quote(os.environ[name])}")


@cluster_app.command("up")
def spark_cluster_up() -> None:
    """Start a Spark master and spark.cluster.workers workers; wait until every worker is ALIVE.

    Then: txmon spark-submit --master spark://127.0.0.1:<master_port> spark_jobs/transactions_stream.py
    """
    # lazy: psutil (86 ms to import); `txmon --help` loads this module without it
    from txmon.infra import spark_cluster

    spark_cluster.up(load_settings(), log=typer.echo)


@cluster_app.command("status")
def spark_cluster_status() -> None:
    """Each daemon's pid, port and health; exit 1 if any is unhealthy."""
    # lazy: psutil (86 ms to import); `txmon --help` loads this module without it
    from txmon.infra import spark_cluster

    _print_statuses(spark_cluster.status(load_settings()), name_width=15)


@cluster_app.command("down")
def spark_cluster_down(purge: Annotated[bool, typer.Option(help="also delete work dirs and logs")] = False) -> None:
    """Stop the workers (and their executors), then the master."""
    # lazy: psutil (86 ms to import); `txmon --help` loads this module without it
    from txmon.infra import spark_cluster

    spark_cluster.down(load_settings(), purge=purge, log=typer.echo)


@app.command("smoke")
def smoke(
    count: Annotated[int, typer.Option(min=1, help="records to produce")] = 1000,
    topic: Annotated[str, typer.Option(help="Kafka topic to use")] = "smoke",
) -> None:
    """Produce COUNT records to Kafka, stream them through Spark into Cassandra, print what landed."""
    # lazy: psutil (143 ms to import); `txmon --help` loads this module without it
    from txmon.infra.smoke_run import run_smoke

    result = run_smoke(load_settings(), count=count, topic=topic, log=typer.echo)
    if result.landed != count:
        raise TxmonError(f"smoke pipeline landed {result.landed} of {count} records; see the Spark output above")


EndsAt = Annotated[
    str | None,
    typer.Option(
        help="ISO time, e.g. 2026-12-06T17:00:00Z (no zone: UTC): simulated traffic ends before it "
        "(default: now). Live traffic follows the wall clock, so a seed alone draws other events each "
        "run; the same seed and --ends-at in the past draw the same events",
    ),
]


def _ends_at(text: str | None) -> datetime | None:
    """``--ends-at`` as an aware UTC datetime, None when not given."""
    # lazy: jinja2 (719 ms to import); `txmon --help` loads this module without it
    from txmon.infra.orchestration import utc

    try:
        return utc(text)
    except ValueError as exc:
        raise TxmonError(f"--ends-at: {exc}") from None


@app.command("simulate")
def simulate(
    rate: Annotated[float, typer.Option(min=1, help="target events per second")] = 1000.0,
    count: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    duration: Annotated[float | None, typer.Option(min=1, help="stop after this many seconds")] = None,
    seed: Annotated[int, typer.Option(help="simulator seed (same seed and --ends-at -> same traffic)")] = 42,
    fraud_rate: Annotated[float, typer.Option(min=0, max=0.5, help="share of fraudulent events")] = 0.01,
    customers: Annotated[int, typer.Option(min=20, help="simulated account holders")] = 10_000,
    label_delay: Annotated[
        float, typer.Option(min=0, help="seconds of event time before a fraud label is released")
    ] = 60.0,
    labels_file: Annotated[Path | None, typer.Option(help="write every ground-truth label here (.jsonl/.csv)")] = None,
    topic: Annotated[str | None, typer.Option(help="Kafka topic (default: kafka.topics.transactions)")] = None,
    ends_at: EndsAt = None,
    drift_after_events: Annotated[
        int | None, typer.Option(rich_help_panel="Drift", help="change the regime after about this many events")
    ] = None,
    drift_fraud_rate: Annotated[
        float | None, typer.Option(rich_help_panel="Drift", help="fraud rate after the change")
    ] = None,
    drift_scenario: Annotated[
        str | None,
        typer.Option(rich_help_panel="Drift", help="a new fraud pattern after the change, e.g. qr_code_swap"),
    ] = None,
    drift_scenario_share: Annotated[
        float, typer.Option(rich_help_panel="Drift", help="share of attacks after the change that use the new pattern")
    ] = 0.5,
    drift_spending_multiplier: Annotated[
        float | None,
        typer.Option(rich_help_panel="Drift", help="benign shift: scale legitimate ticket sizes (festival season)"),
    ] = None,
) -> None:
    """Stream simulated UPI and banking transactions (with labelled fraud) into Kafka.

    Needs --count or --duration. Labels never travel in the events: fraud labels go to
    the labels topic after --label-delay, and all labels to --labels-file.
    """
    # lazy: faker (1.4 s to import); `txmon --help` loads this module without it
    from txmon.ingestion.simulate import SimulateOptions, run_simulation

    if count is None and duration is None:
        raise TxmonError("say how much to send: --count N or --duration SECONDS")
    summary = run_simulation(
        load_settings(),
        SimulateOptions(
            seed=seed,
            rate=rate,
            count=count,
            duration=duration,
            fraud_rate=fraud_rate,
            n_customers=customers,
            label_delay_seconds=label_delay,
            labels_file=labels_file,
            topic=topic,
            live_until=_ends_at(ends_at),
            drift_after_events=drift_after_events,
            drift_fraud_rate=drift_fraud_rate,
            drift_scenario=drift_scenario,
            drift_scenario_share=drift_scenario_share,
            drift_spending_multiplier=drift_spending_multiplier,
        ),
    )
    typer.echo(summary.line())
    if summary.failed:
        raise typer.Exit(1)


@app.command("replay")
def replay(
    file: Annotated[Path, typer.Argument(help="historical transactions, .csv or .parquet")],
    mapping: Annotated[
        Path,
        typer.Option(
            help="YAML mapping from the file's columns to the event contract (examples: config/replay/*.yaml)"
        ),
    ],
    speedup: Annotated[
        float | None, typer.Option(min=0.001, help="replay k seconds of event time per wall second")
    ] = None,
    rate: Annotated[float | None, typer.Option(min=1, help="events per second instead of event-time pacing")] = None,
    shift_to_now: Annotated[
        bool, typer.Option(help="shift event times so the last event is now (replay as live)")
    ] = False,
    rejects: Annotated[Path | None, typer.Option(help="CSV of rows that could not be mapped, with the reason")] = None,
    labels: Annotated[Path | None, typer.Option(help="write ground-truth labels (if the mapping has `label`)")] = None,
    dry_run: Annotated[bool, typer.Option(help="validate and report only; send nothing")] = False,
    topic: Annotated[str | None, typer.Option(help="Kafka topic (default: kafka.topics.transactions)")] = None,
) -> None:
    """Replay a historical CSV/Parquet file into Kafka in event-time order.

    Rows that cannot be mapped or break the event contract are not sent; each is listed
    with its row number and reason in --rejects (default: <file>.rejects.csv).
    """

    # lazy: pandas + faker (3.7 s to import); `txmon --help` loads this module without it
    from txmon.ingestion.producer import TransactionProducer
    from txmon.ingestion.replay import replay_file

    if speedup is not None and rate is not None:
        raise TxmonError("choose one of --speedup (event-time pacing) and --rate (events per second)")
    if not file.is_file():
        raise TxmonError(f"{file} not found: pass an existing .csv or .parquet file")
    if not mapping.is_file():
        raise TxmonError(f"mapping {mapping} not found: see config/replay/*.yaml for examples")
    settings = load_settings()
    rejects = rejects or file.with_suffix(".rejects.csv")
    producer = None if dry_run else TransactionProducer(settings, topic=topic)
    try:
        summary = replay_file(
            file,
            mapping,
            producer=producer,
            speedup=speedup,
            rate=rate,
            shift_to=datetime.now(UTC) if shift_to_now else None,
            rejects_path=rejects,
            labels_path=labels,
            progress=True,
        )
    finally:
        if producer is not None:
            producer.close()
    typer.echo(summary.line())
    if summary.rejected:
        typer.echo(f"rejected rows and reasons: {rejects}")


@app.command("stream", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def stream(
    ctx: typer.Context,
    supervise: Annotated[
        bool,
        typer.Option(
            "--supervise",
            help="run the stream as a child process and restart it when it dies or stalls, with "
            "backoff (no Airflow needed); restarts go to <state_dir>/stream/restarts.jsonl, "
            "the stream's output to <state_dir>/logs/stream.out. Settings: recovery.supervise_*",
        ),
    ] = False,
) -> None:
    """Run the transactions stream (Kafka -> validate -> Cassandra + dead-letter, detection, account windows).

    Options are those of spark_jobs/transactions_stream.py (see `txmon stream --help-job`):
    --topic, --dlq-topic, --checkpoint-dir, --trigger-seconds, --available-now.
    Kafka or Cassandra outages are waited out with backoff (settings: recovery.*); one
    stream per checkpoint (a second one is refused).
    """
    args = ["--help" if a == "--help-job" else a for a in ctx.args]
    if supervise:
        # lazy: pandas (4.7 s to import); `txmon --help` loads this module without it
        from txmon.spark_jobs.supervisor import run_supervised

        run_supervised(load_settings(), args)
        return
    # lazy: pandas (4.7 s to import); `txmon --help` loads this module without it
    from txmon.spark_jobs.transactions_stream import main as stream_main

    raise typer.Exit(stream_main(args))


@app.command("demo")
def demo(
    seconds: Annotated[float, typer.Option(min=5, help="how long to produce traffic")] = 60,
    rate: Annotated[float, typer.Option(min=1, help="events per second to produce")] = 1000,
    seed: Annotated[int | None, typer.Option(help="simulator seed (default: a new one each run)")] = None,
    ends_at: EndsAt = None,
) -> None:
    """The main job on the local default: services up, stream running, simulated traffic
    for SECONDS, then a summary read back from Cassandra. Services are left running, with
    the scoring API and console beside them (URLs, an API key and a login at the end)."""
    # lazy: pandas (6.6 s to import); `txmon --help` loads this module without it
    from txmon.infra.demo import run_demo

    settings = load_settings()
    result = run_demo(settings, seconds=seconds, rate=rate, seed=seed, ends_at=_ends_at(ends_at), log=typer.echo)
    if not result.ok:
        raise typer.Exit(1)


@app.command("bench")
def bench(
    quick: Annotated[bool, typer.Option(help="short steps, small baselines: a check in a few minutes")] = False,
    out: Annotated[Path | None, typer.Option(help="results directory (default: bench/results/<UTC time>)")] = None,
) -> None:
    """End-to-end benchmark: same-run baselines, highest sustained tx/s, latency, memory.

    Starts its own Kafka and Cassandra (state dir .txmon-bench, ports 29092/29042 unless
    TXMON_* say otherwise), prints a table, writes JSON, markdown and a latency histogram.
    """
    # A subprocess, not an import: the benchmark sits above the product, which never imports it.
    argv = (["--quick"] if quick else []) + (["--out", str(out)] if out else [])
    raise typer.Exit(subprocess.call([sys.executable, "-m", "txmon.bench.pipeline_bench", *argv]))


@app.command("spark-submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def spark_submit(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job file, e.g. spark_jobs/smoke.py")],
    master: Annotated[str | None, typer.Option(help="Spark master (default: spark.master from config)")] = None,
    print_only: Annotated[bool, typer.Option("--print", help="print the command instead of running it")] = False,
) -> None:
    """Run a job with spark-submit and txmon's wiring (connector jars, interpreter, confs).

    Arguments after the job are passed to it: txmon spark-submit spark_jobs/smoke.py --topic smoke
    """
    # lazy: infra.jars (14 ms to import); `txmon --help` loads this module without it
    from txmon.spark_jobs.session import spark_submit_argv, spark_submit_env

    argv = spark_submit_argv(load_settings(), job, list(ctx.args), master=master)
    if print_only:
        typer.echo(" ".join(argv))
        return
    raise typer.Exit(subprocess.call(argv, env=spark_submit_env()))


def main() -> None:
    try:
        app()
    except TxmonError as exc:
        typer.secho(f"txmon: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
