"""Retraining: a challenger from recent history in Cassandra, promoted only if better.

Five stages, each a function of ``(settings, run_id)`` working in the run's directory
``<state_dir>/retraining/<run_id>/`` and each idempotent (a stage whose output exists
returns it without redoing the work), so the Airflow DAG can retry any task and a
re-run of the same data interval changes nothing:

1. :func:`extract` — transactions with event_time in [start - warm-up, end) and the
   labels known by ``end``, read from Cassandra by token range with Spark
   (spark_jobs/history.py) -> ``history/`` Parquet.
2. :func:`build_features` — the shared feature definitions over that history in batch;
   the warm-up rows only warm the per-account profiles up and are dropped -> ``features/``.
3. :func:`train_challenger` — :func:`models.training.train_frame` on the window (time
   split: the latest ``holdout_fraction`` is held out) with the stream's rules file, as
   ``txmon train`` -> a registered version, NOT live.
4. :func:`evaluate` — champion and challenger scored on the same held-out recent period,
   rules included as the stream scores, and measured with the backtest's metrics
   (models/evaluation.evaluate_frame: average precision, ROC-AUC, the literature's card
   precision@k, recall at a fixed alert rate, daily precision@k, recall per scenario); the
   decision:
   promote only if the challenger beats the champion on ``retraining.metric`` by
   ``retraining.margin`` -> ``comparison.json`` + ``comparison.md``, and the comparison is
   recorded on the challenger's registry entry whatever the outcome.
5. :func:`promote` — makes the challenger live if the decision says so and the champion
   is still the one it was compared with (a hand promotion in between wins).

The streaming job picks a new champion up between micro-batches (hot swap).

    txmon retrain                                  # the last retraining.window_days, all stages
    txmon spark-submit spark_jobs/retrain_job.py --run-id R --start ... --end ... --stage extract
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from txmon.infra.settings import DEFAULT_RULES, Settings
from txmon.models.config import models_dir
from txmon.models.dataset import time_split
from txmon.models.errors import ModelError, TrainingDataError
from txmon.models.evaluation import evaluate_frame
from txmon.models.registry import Registry
from txmon.models.risk import RiskPolicy
from txmon.models.rule_engine import CompiledRules
from txmon.models.rules import load_rules
from txmon.models.scoring import RuleScores, rule_scores_for, score_frame
from txmon.models.training import TrainingConfig, train_frame
from txmon.spark_jobs.cassandra_sink import CassandraTarget
from txmon.spark_jobs.history import labelled_features, read_history
from txmon.spark_jobs.rules import python_rules
from txmon.spark_jobs.session import build_session

log = logging.getLogger(__name__)

__all__ = [
    "Comparison",
    "build_features",
    "compare",
    "evaluate",
    "extract",
    "promote",
    "retrain",
    "run_dir",
    "train_challenger",
]

_RUN_ID = re.compile(r"^[A-Za-z0-9_.:+-]{1,120}$")


class RetrainingError(ModelError):
    """A retraining stage cannot run (missing earlier stage, bad run id or window)."""


def run_dir(settings: Settings, run_id: str) -> Path:
    if not _RUN_ID.match(run_id) or run_id.startswith("."):
        raise RetrainingError(
            f"run id {run_id!r} must be 1-120 letters, digits or '_.:+-' (Airflow's run ids and ISO dates qualify)"
        )
    return settings.state_path / "retraining" / run_id.replace(":", "_")


def _registry(settings: Settings):
    return Registry(models_dir())


def _read_json(path: Path, stage: str, **fields: type | tuple[type, ...]) -> dict:
    """The output file of ``stage``, a JSON object holding ``fields`` (name: the type(s) its
    value must have, for the caller to read it); else the stage must be done again."""
    _need(path, stage)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
        problem = f"unreadable: {exc}"
    else:
        if not isinstance(data, dict):
            problem = f"a JSON {type(data).__name__}, not an object"
        elif wrong := [name for name, kind in fields.items() if not isinstance(data.get(name), kind)]:
            problem = f"{', '.join(wrong)} missing or of the wrong type"
        else:
            return data
    raise RetrainingError(f"{path} is damaged ({problem}): delete it and run the {stage!r} stage of this run again")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def _need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise RetrainingError(f"{path} is missing: run the {stage!r} stage of this run first")
    return path


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---------------------------------------------------------------------- stages


def extract(settings: Settings, run_id: str, start: datetime, end: datetime, spark=None) -> dict:
    """Stage 1: history for [start, end) (plus the warm-up before it) from Cassandra."""
    start, end = _utc(start), _utc(end)
    if start >= end:
        raise RetrainingError(f"the window is empty: start {start.isoformat()} is not before end {end.isoformat()}")
    out = run_dir(settings, run_id)
    done = out / "extract.json"
    if done.is_file():
        return _read_json(done, "extract")

    spark = spark or _session(settings)
    since = start - timedelta(hours=settings.retraining.warmup_hours)
    transactions, labels = read_history(spark, CassandraTarget.from_settings(settings), since, end)
    history = out / "history"
    transactions.write.mode("overwrite").parquet(str(history / "transactions"))
    labels.write.mode("overwrite").parquet(str(history / "labels"))
    tx = spark.read.parquet(str(history / "transactions"))
    lb = spark.read.parquet(str(history / "labels"))
    summary = {
        "run_id": run_id,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "since": since.isoformat(),
        "transactions": tx.count(),
        "labels": lb.count(),
        "frauds": lb.where("is_fraud").count(),
    }
    _write_json(done, summary)
    log.info("extract %s: %s", run_id, summary)
    return summary


def build_features(settings: Settings, run_id: str, spark=None) -> dict:
    """Stage 2: features over the extracted history; the warm-up rows are dropped."""
    out = run_dir(settings, run_id)
    done = out / "features.json"
    if done.is_file():
        return _read_json(done, "build_features")
    extracted = _read_json(out / "extract.json", "extract", start=str)
    # pyspark only in the Spark stages: the retraining DAG runs the others without it.
    from pyspark.sql import functions as F

    spark = spark or _session(settings)
    history = out / "history"
    featured = labelled_features(
        spark.read.parquet(str(history / "transactions")),
        spark.read.parquet(str(history / "labels")),
        settings.spark.shuffle_partitions,
    )
    window = featured.where(F.col("event_time") >= F.lit(datetime.fromisoformat(extracted["start"])))
    window.write.mode("overwrite").parquet(str(out / "features"))
    written = spark.read.parquet(str(out / "features"))
    summary = {"rows": written.count(), "frauds": written.where("is_fraud").count()}
    _write_json(done, summary)
    return summary


def _features(settings: Settings, run_id: str) -> pd.DataFrame:
    path = _need(run_dir(settings, run_id) / "features", "build_features")
    frame = pd.read_parquet(path)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame.sort_values(["event_time", "txn_id"], kind="mergesort").reset_index(drop=True)


def train_challenger(settings: Settings, run_id: str) -> str:
    """Stage 3: train on the window, register the challenger (not live); its version."""
    out = run_dir(settings, run_id)
    done = out / "challenger.json"
    registry = _registry(settings)
    if done.is_file():
        version = _read_json(done, "train_challenger", version=str)["version"]
        if version not in {m.version for m in registry.versions()}:
            raise RetrainingError(
                f"run {run_id} registered challenger {version}, which is not in the registry at "
                f"{registry.root} (another registry, or deleted); start a new run id or delete {out}"
            )
        return version

    frame = _features(settings, run_id)
    frauds = int(frame["is_fraud"].sum())
    if frauds < settings.retraining.min_frauds:
        raise TrainingDataError(
            f"run {run_id}: the window has {frauds} confirmed frauds, fewer than retraining.min_frauds="
            f"{settings.retraining.min_frauds}; wait for more labels or widen retraining.window_days"
        )
    extracted = _read_json(out / "extract.json", "extract", start=str, end=str)
    config = TrainingConfig(holdout_fraction=settings.retraining.holdout_fraction)
    rules = _rules()
    result = train_frame(
        frame,
        config,
        data_source=(
            f"cassandra {settings.cassandra.keyspace} {extracted['start']}..{extracted['end']} (retrain run {run_id})"
        ),
        policy=rules.ruleset.policy,
        rules=rules,
    )
    version = registry.register(result.bundle, result.metadata)
    _write_json(done, {"version": version, "run_id": run_id})
    log.info("run %s: challenger %s registered", run_id, version)
    return version


def _rules() -> CompiledRules:
    """The stream's rules file (its rules and risk policy), compiled for pandas frames:
    the challenger is chosen and measured on the risk the stream will serve with it."""
    return python_rules(load_rules(DEFAULT_RULES))


def compare(
    holdout: pd.DataFrame,
    champion,
    challenger,
    *,
    metric: str,
    margin: float,
    k: int = 100,
    policy=None,
    rules: RuleScores = None,
) -> dict:
    """Score both bundles on the same labelled hold-out; the promotion decision.

    ``champion`` may be None (nothing live yet): the challenger is promoted if it is
    a usable model at all (its metric is defined). ``rules``: the hold-out's rule scores
    (:data:`models.scoring.RuleScores`, computed once for both; None: rule score 0).
    """
    policy = policy or RiskPolicy()
    rule_score = rule_scores_for(holdout, rules)

    def metrics(bundle) -> dict:
        return evaluate_frame(score_frame(holdout, bundle, policy, rule_score), k, policy).summary()

    chall = metrics(challenger)
    champ = metrics(champion) if champion is not None else None
    c_value = chall.get(metric)
    if c_value is None:
        promote, why = False, f"the challenger's {metric} is undefined on the hold-out (no fraud in it?)"
    elif champ is None:
        promote, why = True, "no champion is live"
    elif champ.get(metric) is None:
        promote, why = True, f"the champion's {metric} is undefined on the hold-out"
    else:
        gain = c_value - champ[metric]
        promote = gain >= margin
        why = (
            f"challenger {metric} {c_value:.4f} vs champion {champ[metric]:.4f}: "
            f"{'+' if gain >= 0 else ''}{gain:.4f} {'>=' if promote else '<'} margin {margin}"
        )
    return {
        "metric": metric,
        "margin": margin,
        "promote": promote,
        "reason": why,
        "holdout_rows": len(holdout),
        "holdout_frauds": int(holdout["is_fraud"].sum()),
        "holdout_start": holdout["event_time"].min().isoformat(),
        "holdout_end": holdout["event_time"].max().isoformat(),
        "champion": champ,
        "challenger": chall,
    }


Comparison = dict
"""What :func:`compare` and :func:`evaluate` return (see comparison.json)."""


# What evaluate's callers read of its result: the decision, and what comparison_markdown tabulates.
_COMPARISON_FIELDS: dict[str, type | tuple[type, ...]] = {
    "promote": bool,
    "reason": str,
    "champion": (dict, type(None)),
    "challenger": dict,
    "holdout_rows": int,
    "holdout_frauds": int,
}


def evaluate(settings: Settings, run_id: str) -> dict:
    """Stage 4: champion vs challenger on the challenger's hold-out; the decision."""
    out = run_dir(settings, run_id)
    done = out / "comparison.json"
    if done.is_file():
        return _read_json(done, "evaluate", **_COMPARISON_FIELDS)
    challenger = _read_json(out / "challenger.json", "train_challenger", version=str)["version"]
    registry = _registry(settings)
    champion = registry.champion()
    if champion == challenger:
        champion = None
    _, holdout = time_split(_features(settings, run_id), settings.retraining.holdout_fraction)
    rules = _rules()
    result = compare(
        holdout,
        registry.load(champion) if champion else None,
        registry.load(challenger),
        metric=settings.retraining.metric,
        margin=settings.retraining.margin,
        policy=rules.ruleset.policy,
        rules=rules.scores,
    )
    result.update(
        rules_version=rules.label,
        run_id=run_id,
        champion_version=champion,
        challenger_version=challenger,
        evaluated_at=datetime.now(UTC).isoformat(),
    )
    registry.annotate(challenger, "retraining", result)
    _write_json(done, result)
    (out / "comparison.md").write_text(comparison_markdown(result), encoding="utf-8")
    log.info("run %s: %s -> %s", run_id, result["reason"], "promote" if result["promote"] else "keep")
    return result


def promote(settings: Settings, run_id: str) -> str | None:
    """Stage 5: make the challenger live if the comparison says so; the new champion or None."""
    out = run_dir(settings, run_id)
    result = _read_json(
        out / "comparison.json",
        "evaluate",
        promote=bool,
        champion_version=(str, type(None)),
        challenger_version=str,
    )
    registry = _registry(settings)
    challenger = result["challenger_version"]
    live = registry.champion()
    if live == challenger:
        return challenger  # promoted by an earlier attempt of this run
    if not result["promote"]:
        return None
    if live != result["champion_version"]:
        log.warning(
            "run %s: champion changed from %s to %s since the comparison; not promoting %s (re-run the evaluate stage)",
            run_id,
            result["champion_version"],
            live,
            challenger,
        )
        return None
    registry.promote(challenger)
    return challenger


def retrain(settings: Settings, run_id: str, start: datetime, end: datetime, spark=None) -> dict:
    """All stages; the comparison plus what became live."""
    extract(settings, run_id, start, end, spark)
    build_features(settings, run_id, spark)
    train_challenger(settings, run_id)
    result = dict(evaluate(settings, run_id))
    result["promoted"] = promote(settings, run_id)
    return result


def default_window(settings: Settings, end: datetime | None = None) -> tuple[datetime, datetime]:
    end = _utc(end or datetime.now(UTC))
    return end - timedelta(days=settings.retraining.window_days), end


def _session(settings: Settings):
    return build_session(settings, "txmon-retrain")


def comparison_markdown(result: dict) -> str:
    """The comparison as a markdown table (for comparison.md and the fraud-desk email)."""
    champ, chall = result.get("champion") or {}, result["challenger"]
    names = [
        "model_average_precision",
        "model_roc_auc",
        "model_card_precision_at_100",
        "model_fixed_rate_recall",
        "model_daily_precision_at_100",
        "average_precision",
        "card_precision_at_100",
        "recall",
        "alert_rate",
        *sorted(k for k in chall if k.startswith("recall_")),
    ]

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"# Retraining run {result.get('run_id', '')}",
        "",
        f"Decision: **{'promote' if result['promote'] else 'keep the champion'}** — {result['reason']}",
        "",
        f"Hold-out: {result['holdout_rows']:,} transactions, {result['holdout_frauds']:,} frauds, "
        f"{result['holdout_start']} .. {result['holdout_end']}; risk with rules "
        f"{result.get('rules_version') or '(none: rule score 0)'}",
        "",
        f"| metric | champion {result.get('champion_version') or '(none)'} | "
        f"challenger {result.get('challenger_version', '')} |",
        "|---|---:|---:|",
    ]
    lines += [f"| {n} | {fmt(champ.get(n))} | {fmt(chall.get(n))} |" for n in names]
    return "\n".join(lines) + "\n"
