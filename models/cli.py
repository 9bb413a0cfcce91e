"""`txmon train`, `txmon evaluate`, `txmon models ...` commands. Registered in infra/cli.py.

Thin shells over models.training / models.evaluation / models.registry; heavy imports
happen inside the commands so `txmon --help` stays fast. Problems the user can fix
are TxmonError subclasses: one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, get_args

import typer
from pydantic import TypeAdapter, ValidationError

from txmon.infra.settings import DEFAULT_RULES, load_settings
from txmon.models.config import MODELS_DIR_ENV
from txmon.models.config import models_dir as default_dir
from txmon.models.errors import RegistryError, TrainingDataError

# Each command imports what it runs when it runs: `txmon --help` and every other command
# stay free of pandas, Spark and scikit-learn (the slowest imports in the project).
models_app = typer.Typer(help="Model registry: list versions, promote, roll back.", no_args_is_help=True)

_SOURCE = "Data source"
_REGISTRY = "Registry"

ModelsDir = Annotated[
    Path | None,
    typer.Option(
        "--models-dir",
        envvar=MODELS_DIR_ENV,
        rich_help_panel=_REGISTRY,
        help="model registry directory (default: <state_dir>/models)",
    ),
]
Simulate = Annotated[
    int | None,
    typer.Option(
        "--simulate",
        min=100,
        metavar="N",
        rich_help_panel=_SOURCE,
        help="simulate N labelled transactions (default mix, 0.2 tx/s of simulated time, so 200k span ~11.6 "
        "days) (default: 200000 when --replay is not given)",
    ),
]
Seed = Annotated[int, typer.Option(help="simulator seed (train: also seeds the models)", rich_help_panel=_SOURCE)]
Replay = Annotated[
    Path | None,
    typer.Option(
        "--replay",
        metavar="FILE",
        rich_help_panel=_SOURCE,
        help="labelled history: a CSV/Parquet file read with --mapping (which needs a `label:` section)",
    ),
]
Mapping = Annotated[
    Path | None,
    typer.Option(
        "--mapping", metavar="YAML", rich_help_panel=_SOURCE, help="replay mapping for --replay (config/replay/*.yaml)"
    ),
]
RejectsOut = Annotated[
    Path | None,
    typer.Option(
        "--rejects-out",
        metavar="PATH",
        rich_help_panel=_SOURCE,
        help="with --replay: CSV of the rows left out (row number, reason, every problem, label, raw row) "
        "(default: <state_dir>/rejects/<file>.<mapping>.rejects.csv)",
    ),
]


def _registry(models_dir: Path | None):
    # lazy: pandas (3.4 s to import); `txmon --help` loads this module without it
    from txmon.models.registry import Registry

    return Registry(models_dir or default_dir())


def _history(
    simulate: int | None, seed: int, replay: Path | None, mapping: Path | None, rejects_out: Path | None = None
):
    # lazy: pandas + faker (3.7 s to import); `txmon --help` loads this module without it
    from txmon.models import sources

    if replay is not None and simulate is not None:
        raise TrainingDataError("choose one source: --simulate N or --replay FILE --mapping YAML")
    if replay is None and rejects_out is not None:
        raise TrainingDataError("--rejects-out goes with --replay FILE")
    if replay is not None:
        if mapping is None:
            raise TrainingDataError("--replay needs --mapping YAML (e.g. config/replay/card_transactions.yaml)")
        if rejects_out is None:
            rejects_out = load_settings().state_path / "rejects" / f"{replay.name}.{mapping.stem}.rejects.csv"
        history = sources.from_file(replay, mapping, rejects_path=rejects_out)
    else:
        if mapping is not None:
            raise TrainingDataError("--mapping goes with --replay FILE")
        history = sources.simulated(simulate or sources.DEFAULT_SIMULATED_EVENTS, seed)
    typer.echo(f"data: {history.source}: {history.size:,} transactions, {history.frauds:,} fraud")
    if replay is not None:
        typer.echo(history.rejects_line())
    return history


def _policy():
    # lazy: ingestion.events + yaml (183 ms to import); `txmon --help` loads this module without it
    from txmon.models.rules import stream_policy

    return stream_policy()


RulesFile = Annotated[
    Path | None,
    typer.Option("--rules", metavar="YAML", help="rules and risk policy (default: config/rules.yaml, as the stream)"),
]


def _stream_rules(path: Path | None):
    """The rules file compiled for pandas frames (txmon.models.rule_engine), as the
    stream would read it; and where it came from."""
    # lazy: numpy, yaml and ingestion.events (~0.5 s to import); `txmon --help` loads this module without them
    from txmon.models.rules import load_rules, rules_source
    from txmon.spark_jobs.rules import python_rules

    path = (path or DEFAULT_RULES).resolve()
    return python_rules(load_rules(path)), rules_source(path)


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"  {name:<{width}}  {value}")


def train(
    simulate: Simulate = None,
    seed: Seed = 42,
    replay: Replay = None,
    mapping: Mapping = None,
    rejects_out: RejectsOut = None,
    promote: Annotated[
        bool | None,
        typer.Option(
            "--promote/--no-promote",
            rich_help_panel=_REGISTRY,
            help="make the new version live (default: only if there is no champion yet)",
        ),
    ] = None,
    models_dir: ModelsDir = None,
    rules: RulesFile = None,
) -> None:
    """Train the fraud models on labelled history, time-split, and register a new version.

    Trains on the earliest 70% of the history (by event time) and reports metrics on
    the latest 30%, scored as the stream scores them: its rules and risk policy
    (config/rules.yaml) with the model. The blend of the model is chosen on that risk too.
    """
    # lazy: pandas (3.4 s to import); `txmon --help` loads this module without it
    from txmon.models.evaluation import metrics_table
    from txmon.models.training import TrainingConfig, train_frame

    compiled, rules_source = _stream_rules(rules)
    history = _history(simulate, seed, replay, mapping, rejects_out)
    result = train_frame(
        history.features(),
        TrainingConfig(seed=seed),
        data_source=history.source,
        policy=compiled.ruleset.policy,
        rules=compiled,
    )
    meta = result.metadata
    typer.echo(
        f"train:    {meta.rows.train:,} rows, {meta.frauds.train:,} fraud, "
        f"{meta.train_window.start:%Y-%m-%d %H:%M} .. {meta.train_window.end:%Y-%m-%d %H:%M} UTC"
    )
    typer.echo(
        f"hold-out: {meta.rows.holdout:,} rows, {meta.frauds.holdout:,} fraud, "
        f"{meta.holdout_window.start:%Y-%m-%d %H:%M} .. {meta.holdout_window.end:%Y-%m-%d %H:%M} UTC"
    )
    typer.echo(f"calibration: {meta.calibration}")
    for note in meta.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"hold-out metrics (rules {compiled.label} and model, as the stream scores; from {rules_source}):")
    _print_table(metrics_table(result.evaluation))
    registry = _registry(models_dir)
    version = registry.register(result.bundle, meta)
    live = registry.champion()
    if promote or (promote is None and live is None):
        registry.promote(version)
        typer.echo(f"registered {version} in {registry.root} and promoted it (champion)")
    else:
        typer.echo(
            f"registered {version} in {registry.root}; champion stays {live} "
            f"(`txmon models promote {version}` to make it live)"
        )


def evaluate(
    simulate: Simulate = None,
    seed: Seed = 42,
    replay: Replay = None,
    mapping: Mapping = None,
    version: Annotated[str | None, typer.Option(help="model version (default: the champion)")] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(help="where report.md, pr_curve.png, metrics.json go (default: <state_dir>/reports/<version>)"),
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="accounts per day for daily precision@k")] = 100,
    models_dir: ModelsDir = None,
    online: Annotated[
        bool, typer.Option(help="evaluate the decisions the stream took (scored_transactions in Cassandra) instead")
    ] = False,
    labels_file: Annotated[
        Path | None,
        typer.Option(help="with --online: ground truth from this file (.jsonl/.csv) instead of the labels table"),
    ] = None,
    rules: RulesFile = None,
) -> None:
    """Score labelled history with a registered model and report how well it catches fraud.

    --online instead joins what the running stream decided (rules + model, as deployed)
    with the labels received so far, or with --labels-file.

    On the very data the model was trained on, only its hold-out window is scored (the
    earlier part still builds the behavioural profiles). The risk is the stream's: its
    rules and risk policy (config/rules.yaml) with the model, as `txmon train` measures it.
    """
    # lazy: pandas (3.4 s to import); `txmon --help` loads this module without it
    import pandas as pd

    from txmon.models.evaluation import evaluate_featured, metrics_table, write_report

    if online:
        # lazy: pandas (3.4 s to import); `txmon --help` loads this module without it
        from txmon.models.evaluation import evaluate_frame
        from txmon.models.online import online_frame

        settings = load_settings()
        frame = online_frame(settings, labels_file)
        # The decisions are the stream's own; the policy is the one its report records and
        # judges them by: the rules file the stream was given (--rules), else the default.
        if rules is None:
            policy, policy_source = _policy()
        else:
            compiled, policy_source = _stream_rules(rules)
            policy = compiled.ruleset.policy
        metrics = evaluate_frame(frame, k=k, policy=policy)
        versions = ", ".join(sorted(set(frame["model_version"].dropna()))) or "none"
        for note in metrics.notes:
            typer.echo(f"note: {note}")
        typer.echo(
            f"stream decisions on {metrics.rows:,} transactions (models: {versions}; rules and thresholds as "
            f"deployed; policy from {policy_source}):"
        )
        _print_table(metrics_table(metrics))
        out = report_dir or settings.state_path / "reports" / "online"
        report = write_report(metrics, out, title="Online: stream decisions joined with labels")
        typer.echo(f"report: {report} (+ pr_curve.png, metrics.json)")
        return
    registry = _registry(models_dir)
    version = version or registry.require_champion()
    bundle, meta = registry.load(version), registry.metadata(version)
    history = _history(simulate, seed, replay, mapping)
    since = None
    if history.source == meta.data_source:
        since = pd.Timestamp(meta.holdout_window.start)
        typer.echo(
            f"{version} was trained on this data: scoring only its hold-out window "
            f"(from {since:%Y-%m-%d %H:%M} UTC); earlier transactions warm up the profiles"
        )
    compiled, rules_source = _stream_rules(rules)
    metrics = evaluate_featured(history.features(), bundle, compiled.ruleset.policy, compiled.scores, k=k, since=since)
    for note in metrics.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{version} on {metrics.rows:,} transactions (rules {compiled.label} and model, from {rules_source}):")
    _print_table(metrics_table(metrics))
    out = report_dir or load_settings().state_path / "reports" / version
    report = write_report(metrics, out, title=f"Model {version}: {history.source}")
    typer.echo(f"report: {report} (+ pr_curve.png, metrics.json)")


def retrain(
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="names the run (same id = same run, stages already done are skipped) (default: manual-<UTC time>)",
        ),
    ] = None,
    start: Annotated[
        datetime | None, typer.Option(help="window start, UTC (default: end - retraining.window_days)")
    ] = None,
    end: Annotated[datetime | None, typer.Option(help="window end, UTC (default: now)")] = None,
    stage: Annotated[
        str, typer.Option(help="one stage: extract, build_features, train, evaluate, promote; or all")
    ] = "all",
) -> None:
    """Train a challenger on recent history in Cassandra; promote it only if it beats the champion.

    The streaming job picks a promoted model up between micro-batches. Runs the same
    stages as `txmon spark-submit spark_jobs/retrain_job.py` and the model_retraining DAG.
    """

    # lazy: pandas (3.6 s to import); `txmon --help` loads this module without it
    from txmon.spark_jobs.retrain_job import STAGES, run

    if stage not in STAGES:
        raise typer.BadParameter(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}", param_hint="--stage")
    utc = [None if t is None else (t.replace(tzinfo=UTC) if t.tzinfo is None else t) for t in (start, end)]
    run_id = run_id or f"manual-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    result = run(argparse.Namespace(run_id=run_id, stage=stage, start=utc[0], end=utc[1]))
    if stage == "all":
        # lazy: pandas (3.6 s to import); `txmon --help` loads this module without it
        from txmon.spark_jobs.retraining import comparison_markdown

        assert isinstance(result, dict)  # the whole run returns its summary
        typer.echo(comparison_markdown(result))
        typer.echo(f"live: {result['promoted'] or 'unchanged (challenger kept out)'}; run {run_id}")
    else:
        typer.echo(json.dumps(result, default=str, indent=2))


# What `txmon models list` shows of the comparison spark_jobs/retraining.evaluate records.
_VERDICT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "promote": bool,
    "reason": str,
    "champion_version": (str, type(None)),
}


@models_app.command("list")
def list_versions(models_dir: ModelsDir = None) -> None:
    """Registered versions with their hold-out metrics; `*` marks the live champion."""

    registry = _registry(models_dir)
    versions = registry.versions()
    if not versions:
        raise RegistryError(f"no models registered in {registry.root}: run `txmon train` first")
    live = registry.champion()
    header = (
        f"  {'version':<8} {'created (UTC)':<17} {'train rows':>10} {'hold-out':>9} {'frauds':>7} "
        f"{'AP':>7} {'ROC-AUC':>7} {'p@100':>7}  data"
    )
    typer.echo(header)
    for m in versions:

        def fmt(name: str, metrics: dict[str, float | None] = m.metrics) -> str:
            value = metrics.get(name)
            return "n/a" if value is None else f"{value:.4f}"

        mark = "*" if m.version == live else " "
        typer.echo(
            f"{mark} {m.version:<8} {m.created_at:%Y-%m-%d %H:%M} {m.rows.train:>10,} {m.rows.holdout:>9,} "
            f"{m.frauds.holdout:>7,} {fmt('model_average_precision'):>7} {fmt('model_roc_auc'):>7} "
            f"{fmt('model_daily_precision_at_100'):>7}  {m.data_source}"
        )
        try:
            verdict = registry.annotation(m.version, "retraining", _VERDICT_FIELDS)
        except RegistryError as exc:
            # The verdict is a note on the version, not the version: the listing goes on with
            # the other versions and says which file to delete instead of failing on it.
            typer.echo(f"  {'':<8} retraining annotation damaged: {exc}")
            continue
        if verdict is not None:
            typer.echo(
                f"  {'':<8} challenger vs {verdict.get('champion_version') or 'no champion'}: "
                f"{'promoted' if verdict['promote'] else 'kept out'} ({verdict['reason']})"
            )
    typer.echo(f"champion: {live}" if live else "champion: none (`txmon models promote VERSION`)")


@models_app.command("promote")
def promote_version(
    version: Annotated[str, typer.Argument(help="version id, e.g. v0003 (see `txmon models list`)")],
    models_dir: ModelsDir = None,
) -> None:
    """Make VERSION the live champion (the previous one stays in the history for rollback)."""
    registry = _registry(models_dir)
    before = registry.champion()
    registry.promote(version)
    typer.echo(f"champion: {version}" + (f" (was {before})" if before and before != version else ""))


@models_app.command("rollback")
def rollback(models_dir: ModelsDir = None) -> None:
    """Return to the previous champion."""
    registry = _registry(models_dir)
    before = registry.champion()
    now_live = registry.rollback()
    typer.echo(f"champion: {now_live} (rolled back from {before})")


def _when(text: str | None, tz: str, flag: str):
    """A --train-start/... value: a date or ISO date-time; naive ones are in ``tz``."""
    # lazy: pandas (2.5 s to import); `txmon --help` loads this module without it
    import pandas as pd

    if text is None:
        return None
    try:
        moment = pd.Timestamp(text)
    except ValueError:
        raise TrainingDataError(
            f"{flag} {text!r} is not a date or date-time; write e.g. 2024-06-01 or 2024-06-01T12:00+05:30"
        ) from None
    return (moment.tz_localize(tz) if moment.tzinfo is None else moment).to_pydatetime()


def backtest(
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="FILE", help="labelled CSV or Parquet history, read with --mapping (or use --simulate N)"
        ),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            metavar="YAML",
            rich_help_panel=_SOURCE,
            help="replay mapping for FILE, with a `label:` section (config/replay/*.yaml)",
        ),
    ] = None,
    simulate: Annotated[
        int | None,
        typer.Option(
            "--simulate",
            min=1000,
            metavar="N",
            rich_help_panel=_SOURCE,
            help="backtest on N simulated labelled transactions instead of a file (0.2 tx/s of simulated time)",
        ),
    ] = None,
    train_start: Annotated[
        str | None,
        typer.Option(
            "--train-start",
            metavar="DATE",
            rich_help_panel="Windows",
            help="training window start; earlier rows only build profiles (default: a quarter into the data)",
        ),
    ] = None,
    train_end: Annotated[
        str | None,
        typer.Option(
            "--train-end",
            metavar="DATE",
            rich_help_panel="Windows",
            help="training window end (exclusive) (default: test-start)",
        ),
    ] = None,
    fit_at: Annotated[
        str,
        typer.Option(
            "--fit-at",
            metavar="WHEN",
            rich_help_panel="Windows",
            help="when the model is fitted, so which training labels it knows: test-start (as a deployed model; "
            "a gap between --train-end and --test-start is where the training labels arrive) or train-end",
        ),
    ] = "test-start",
    test_start: Annotated[
        str | None,
        typer.Option(
            "--test-start",
            metavar="DATE",
            rich_help_panel="Windows",
            help="test window start (default: the last third of the data's days)",
        ),
    ] = None,
    test_end: Annotated[
        str | None,
        typer.Option(
            "--test-end",
            metavar="DATE",
            rich_help_panel="Windows",
            help="test window end, exclusive (default: the day after the last transaction)",
        ),
    ] = None,
    label_delay: Annotated[
        str | None,
        typer.Option(
            "--label-delay",
            metavar="DURATION",
            rich_help_panel="Windows",
            help="labels are known this long after their transaction, ISO-8601 (P7D, PT12H) (default: the mapping's "
            "label.delay, or the simulator's label times)",
        ),
    ] = None,
    rolling: Annotated[
        int,
        typer.Option(
            min=1,
            rich_help_panel="Windows",
            help="N consecutive windows, each moved on by the test length; the report gives mean ± std",
        ),
    ] = 1,
    tz: Annotated[
        str,
        typer.Option(rich_help_panel="Windows", help="time zone of dates without an offset, and of the daily metrics"),
    ] = "Asia/Kolkata",
    scores_out: Annotated[
        Path | None,
        typer.Option(
            "--scores-out",
            metavar="CSV",
            rich_help_panel="Output",
            help="per test transaction: the file's txn id and row, risk, model probability, decision, top reasons "
            "(default: <report-dir>/scores.csv)",
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report-dir",
            metavar="DIR",
            rich_help_panel="Output",
            help="report.md, backtest.json and charts (default: <state_dir>/reports/backtest)",
        ),
    ] = None,
    rejects_out: Annotated[
        Path | None,
        typer.Option(
            "--rejects-out",
            metavar="CSV",
            rich_help_panel="Output",
            help="rows of FILE left out: row number, reason, every problem, label, raw row "
            "(default: <report-dir>/rejects.csv)",
        ),
    ] = None,
    k: Annotated[int, typer.Option(min=1, rich_help_panel="Output", help="accounts per day for precision@k")] = 100,
    alert_rate: Annotated[
        float,
        typer.Option(
            min=0.0001,
            max=1.0,
            rich_help_panel="Output",
            help="share of transactions flagged for 'recall at a fixed alert rate'",
        ),
    ] = 0.01,
    seed: Annotated[int, typer.Option(help="seeds the simulator and every model")] = 42,
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules", metavar="YAML", help="rules and risk policy (default: config/rules.yaml, as the stream)"
        ),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option("--baselines/--no-baselines", help="fit the logistic regression and random forest references"),
    ] = True,
    tune: Annotated[
        bool, typer.Option("--tune/--no-tune", help="search the boosting grid on the training window's latest slice")
    ] = True,
    chunk_rows: Annotated[int, typer.Option(min=1000, help="rows mapped and folded at a time (memory)")] = 100_000,
    features_cache: Annotated[
        Path | None,
        typer.Option(
            "--features-cache",
            metavar="DIR",
            help="save the featured rows (from the first training window on) in DIR and reuse them on a later run "
            "of the same source whose windows they cover (file size and modification time, mapping content, label "
            "delay, feature code; any difference computes them afresh)",
        ),
    ] = None,
) -> None:
    """Backtest txmon on labelled history: train on one window, score a later one as the stream would.

    Features are computed as of each transaction from the source's first row (rows before
    --train-start only build profiles); a label counts only once it is known
    (--label-delay after its transaction), in the features and in training. The model is
    trained with `txmon train`'s code on the training rows whose labels are known when it
    is fitted (--fit-at, default the test's start); the test window is scored with the stream's rules, models, risk and
    decision. A logistic regression and a random forest on the same features and rows are
    the references every report compares with. See docs/detection.md, "Backtesting".
    """

    # lazy: pandas (4.8 s to import); `txmon --help` loads this module without it
    import pandas as pd

    from txmon.ingestion.replay import MAX_LABEL_DELAY, known_zone
    from txmon.models.rules import load_rules
    from txmon.models.training import TrainingConfig
    from txmon.spark_jobs import backtest as bt

    if (file is None) == (simulate is None):
        raise TrainingDataError("give one source: FILE --mapping YAML, or --simulate N")
    if file is not None and mapping is None:
        raise TrainingDataError(
            "FILE needs --mapping YAML with a `label:` section (e.g. config/replay/card_transactions.yaml)"
        )
    if simulate is not None and (mapping is not None or rejects_out is not None):
        raise TrainingDataError("--mapping and --rejects-out go with FILE, not --simulate")
    if fit_at not in get_args(bt.FitAt):
        raise TrainingDataError(f"--fit-at {fit_at!r}: write one of {', '.join(get_args(bt.FitAt))}")
    try:
        known_zone(tz)
    except ValueError as exc:
        raise TrainingDataError(f"--tz: {exc}") from None
    delay = None
    if label_delay is not None:
        try:
            delay = TypeAdapter(timedelta).validate_python(label_delay)
        except ValidationError:
            raise TrainingDataError(
                f"--label-delay {label_delay!r} is not a duration; write e.g. P7D or PT12H"
            ) from None
        if not timedelta(0) <= delay <= MAX_LABEL_DELAY:
            raise TrainingDataError(f"--label-delay {label_delay!r}: give a duration from 0 to P3650D, e.g. P7D")
    windows = {
        flag: _when(value, tz, flag)
        for flag, value in (
            ("--train-start", train_start),
            ("--train-end", train_end),
            ("--test-start", test_start),
            ("--test-end", test_end),
        )
    }
    report_dir = report_dir or load_settings().state_path / "reports" / "backtest"
    ruleset = load_rules(rules or DEFAULT_RULES)
    window = None
    if any(v is not None for v in windows.values()):
        missing = [flag for flag, v in windows.items() if v is None and flag != "--train-end"]
        if missing:
            raise TrainingDataError(f"give {', '.join(missing)} too (or no window dates for the default split)")
        try:
            window = bt.BacktestWindow(
                train_start=windows["--train-start"],
                train_end=windows["--train-end"] or windows["--test-start"],
                test_start=windows["--test-start"],
                test_end=windows["--test-end"],
            )
        except ValidationError as exc:
            raise TrainingDataError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    if file is not None:
        rejects_out = rejects_out or report_dir / "rejects.csv"
    cache = None
    if features_cache is not None:
        identity = (
            bt.file_identity(file, mapping, delay)
            if file is not None and mapping is not None
            else bt.simulated_identity(simulate or 0, seed, delay)
        )
        cache = bt.FeatureCache(features_cache, identity, rejects_out)
    dated = window is not None
    if window is None and cache is not None and (span := cache.span()) is not None:
        window = bt.default_window(pd.Series(span), tz)  # the data's days, as the entry recorded them
    cached = None
    if cache is not None and window is not None:
        cached = cache.load(window.train_start, window.shifted(rolling - 1).test_end, typer.echo)
    featured = cached[1] if cached is not None else None
    if cached is not None:
        source, featured = cached
        typer.echo(
            f"data: {source.name}: {source.rows_read:,} rows, {len(featured):,} transactions featured, "
            f"{int(featured['is_fraud'].sum()):,} fraud"
        )
    elif file is not None:
        assert mapping is not None  # FILE goes with --mapping, checked above
        source = bt.read_file(file, mapping, label_delay=delay, chunk_rows=chunk_rows, rejects_path=rejects_out)
        typer.echo(
            f"data: {source.name}: {source.rows_read:,} rows, {len(source.transactions):,} transactions, "
            f"{int(source.transactions['is_fraud'].sum()):,} fraud"
        )
    else:
        assert simulate is not None  # one source, checked above
        source = bt.simulated(simulate, seed, label_delay=delay, chunk_rows=chunk_rows)
        typer.echo(
            f"data: {source.name}: {len(source.transactions):,} transactions, "
            f"{int(source.transactions['is_fraud'].sum()):,} fraud"
        )
    if file is not None:
        typer.echo(
            f"{len(source.rejects):,} rows rejected ({source.rejected_fraud:,} of them labelled fraud); "
            f"details in {rejects_out}"
        )
        if source.duplicates:
            typer.echo(
                f"{source.duplicates:,} rows repeat an earlier row's txn_id and content: left out, as the stream "
                "drops a repeated transaction"
            )
    if window is None:
        window = bt.default_window(source.transactions["event_time"], tz)
    if not dated:
        typer.echo(f"windows: none given, so the default split of the data's days: {window.describe()}")
    config = bt.BacktestConfig(
        window=window,
        label_delay=delay,
        rolling=rolling,
        k=k,
        alert_rate=alert_rate,
        tz=tz,
        training=TrainingConfig(seed=seed, tune=tune),
        baselines=baselines,
        chunk_rows=chunk_rows,
        fit_at=fit_at,
    )
    result = bt.run(source, config, ruleset, log=typer.echo, cache=cache, featured=featured)
    command = "txmon " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    written = bt.write_outputs(
        result, scores_out=scores_out or report_dir / "scores.csv", report_dir=report_dir, command=command
    )
    for protocol, title in bt.PROTOCOLS.items():
        typer.echo(f"{title}:")
        head = ("scorer", "ROC-AUC", "AP", f"card p@{k}", f"recall@{alert_rate:.2%}")
        rows = [head, *bt.headline_rows(result, protocol)]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for row in rows:
            typer.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        sentence = bt.verdict_sentence(result.verdict(protocol))
        if sentence:
            typer.echo(sentence)
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"scores: {written['scores']}")
    typer.echo(
        f"report: {written['report']} (+ backtest.json, pr_curve.png, score_distribution.png, daily_precision.png)"
    )
