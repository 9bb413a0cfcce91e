"""Backtesting: how a fraud team judges txmon on its own labelled history.

``txmon backtest`` is the one place txmon's detection numbers come from. Given a
labelled file (or the simulator) and a train/test split in time, it:

1. reads the source in chunks (:func:`read_file`, models/sources.py's, which ``txmon train``
   reads files with too; :func:`simulated`): each chunk is mapped and validated by the
   replay mapping's own code (ingestion/replay.py) and kept as typed columns; no Python
   object per row outlives its chunk. Rejected rows keep their row number, reason and
   label (:class:`ingestion.replay.RejectedRow`).
2. computes the stream's features (models/features.add_features, one in-memory profile
   store) over the whole file in event-time order, chunk by chunk, so every row's features
   are as of that row, from the file's first row: rows before the training window only
   build profiles. A label is known ``label_delay`` after its transaction, for the
   label-based features as for training.
3. trains with :func:`models.training.fit` on the training window, on the rows whose label
   is known at the window's end (the rest of the window is dropped, not counted genuine:
   see docs/detection.md, "Backtesting");
4. scores the test window as the stream does: the rules (spark_jobs/rules.apply_rules, the
   same compiled Spark SQL, in a local SparkSession), both models, risk and decision
   (models/scoring.score_frame), reasons (spark_jobs/detection's);
5. measures txmon's risk score and model probability, and a logistic regression and a
   random forest fitted on the same rows and features, with the same metrics
   (models/evaluation.ranking), per window; ``rolling`` windows slide by the test length.

:func:`run` returns a :class:`BacktestResult`; :func:`write_outputs` writes the scores,
the report (markdown, JSON, charts) and the rejects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import pyarrow
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from txmon.ingestion import events, replay, simulator
from txmon.ingestion.simulator import Simulator, SimulatorConfig
from txmon.models import dataset, features
from txmon.models.bundle import ModelBundle, feature_matrix
from txmon.models.dataset import compact_text, concat_compact, feature_ordered, features_in_chunks
from txmon.models.errors import TrainingDataError
from txmon.models.evaluation import (
    DEFAULT_ALERT_RATE,
    DEFAULT_K,
    DEFAULT_TZ,
    EvaluationMetrics,
    card_precision_at_k,
    evaluate_frame,
    ranking,
)
from txmon.models.features import FEATURES
from txmon.models.risk import RiskPolicy, risk_values
from txmon.models.scoring import score_frame
from txmon.models.sources import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_SIMULATED_TPS,
    LabelledSource,
    _event_frame,
    first_of_each_txn,
    read_file,
)
from txmon.models.training import FitResult, TrainingConfig, fit
from txmon.spark_jobs.detection import alert_reasons, with_feature_fields
from txmon.spark_jobs.rules import apply_rules, check_conditions
from txmon.spark_jobs.validation import typed_schema

__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "BacktestWindow",
    "FeatureCache",
    "LabelledSource",
    "WindowResult",
    "default_window",
    "featured_rows",
    "file_identity",
    "read_file",
    "rule_hits",
    "run",
    "score_window",
    "simulated",
    "simulated_identity",
    "write_outputs",
]

SCORERS = (
    "txmon risk",
    "txmon model",
    "txmon risk without anomaly",
    "txmon risk with anomaly",
    "logistic regression",
    "random forest",
)
"""What every report compares, in this order; the first is txmon's verdict line."""
# txmon's risk is ranked before rounding (models.risk.risk_values); scores.csv keeps both.
_COLUMN = {
    "txmon risk": "risk_exact",
    "txmon model": "fraud_probability",
    "txmon risk without anomaly": "risk_without_anomaly",
    "txmon risk with anomaly": "risk_with_anomaly",
    "logistic regression": "lr_probability",
    "random forest": "rf_probability",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


FitAt = Literal["test-start", "train-end"]
"""When a backtest's model is fitted. ``test-start``: as late as the test allows, the moment
a deployed model would go live, so a gap between the training and the test window (the
literature's "delay period") is where the training rows' labels arrive; ``train-end``: at
the end of the training window. The two are the same when the test follows the training
window directly."""


class BacktestWindow(_Frozen):
    """[train_start, train_end) trains, [test_start, test_end) is scored; UTC instants."""

    train_start: AwareDatetime
    train_end: AwareDatetime
    test_start: AwareDatetime
    test_end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> BacktestWindow:
        if not self.train_start < self.train_end <= self.test_start < self.test_end:
            raise ValueError(
                "windows must satisfy train-start < train-end <= test-start < test-end (the test window "
                f"follows the training window); got {self.describe()}"
            )
        return self

    def shifted(self, steps: int) -> BacktestWindow:
        """This window moved forward by ``steps`` test lengths (prequential rolling)."""
        delta = (self.test_end - self.test_start) * steps
        return BacktestWindow(
            train_start=self.train_start + delta,
            train_end=self.train_end + delta,
            test_start=self.test_start + delta,
            test_end=self.test_end + delta,
        )

    def fitted_at(self, fit_at: FitAt) -> datetime:
        """When the model is fitted: the labels known then are the ones it learns from."""
        return self.test_start if fit_at == "test-start" else self.train_end

    def describe(self) -> str:
        def fmt(t: datetime) -> str:
            return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M")

        return (
            f"train {fmt(self.train_start)} .. {fmt(self.train_end)} UTC, "
            f"test {fmt(self.test_start)} .. {fmt(self.test_end)} UTC"
        )


class BacktestConfig(_Frozen):
    window: BacktestWindow
    label_delay: timedelta | None = Field(
        None, description="labels known this long after their transaction (None: the source's own)"
    )
    rolling: int = Field(1, ge=1, description="consecutive windows, each moved on by the test length")
    k: int = Field(DEFAULT_K, ge=1)
    alert_rate: float = Field(DEFAULT_ALERT_RATE, gt=0, le=1)
    tz: str = DEFAULT_TZ
    training: TrainingConfig = TrainingConfig()
    baselines: bool = True
    chunk_rows: int = Field(DEFAULT_CHUNK_ROWS, ge=100)
    fit_at: FitAt = Field("test-start", description="when the model is fitted: it learns the labels known then")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return replay.known_zone(value)


# ------------------------------------------------------------------------ sources


def simulated(
    n: int,
    seed: int = 42,
    *,
    mean_tps: float | None = None,
    label_delay: timedelta | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> LabelledSource:
    """The first ``n`` transactions of the default simulator mix (``models.sources``' rate),
    chunk by chunk; labels at the simulator's own label times unless ``label_delay``."""
    tps = mean_tps or DEFAULT_SIMULATED_TPS
    items: Iterator = iter(Simulator(SimulatorConfig(mean_tps=tps), seed).generate(n))
    parts, done = [], 0
    while True:
        chunk = list(islice(items, chunk_rows))
        if not chunk:
            break
        events = [i.event for i in chunk]
        times = [(i.event.event_time + label_delay) if label_delay is not None else i.label.label_time for i in chunk]
        parts.append(
            compact_text(
                _event_frame(
                    events,
                    list(range(done + 1, done + len(chunk) + 1)),
                    [(i.label.is_fraud, i.label.scenario) for i in chunk],
                    times,
                )
            )
        )
        done += len(chunk)
    return LabelledSource(
        feature_ordered(concat_compact(parts)), f"simulator n={n} seed={seed} mean_tps={tps}", rows_read=done
    )


def default_window(times: pd.Series, tz: str = DEFAULT_TZ) -> BacktestWindow:
    """A split of the source's span in whole days of ``tz``: the first quarter builds
    profiles only, the last third is the test, the training window between (for runs that
    give no dates, such as ``--simulate N``)."""
    local = pd.to_datetime(times, utc=True).dt.tz_convert(tz)
    first, last = local.min().normalize(), local.max().normalize() + pd.Timedelta(days=1)
    days = int((last - first) / pd.Timedelta(days=1))
    if days < 3:
        raise TrainingDataError(
            f"the data spans {days} day(s); give --train-start/--train-end/--test-start/"
            "--test-end explicitly (a default split needs 3 days or more)"
        )
    history = max(1, days // 4)
    test = max(1, days // 3)
    train_start = first + pd.Timedelta(days=history)
    test_start = last - pd.Timedelta(days=test)
    return BacktestWindow(
        train_start=train_start.to_pydatetime(),
        train_end=test_start.to_pydatetime(),
        test_start=test_start.to_pydatetime(),
        test_end=last.to_pydatetime(),
    )


# -------------------------------------------------------------------------- rules


def _rules_schema():
    """The Spark schema of the rows the stream's rules see: landed transactions
    (spark_jobs/validation.typed_schema), ``payee_key``, every feature with its stream type."""
    # Spark, scikit-learn and matplotlib are slow to import: each on first use (txmon backtest --help needs none).
    from pyspark.sql import types as T

    schema = T.StructType(
        [T.StructField("_pos", T.LongType()), *typed_schema().fields, T.StructField("payee_key", T.StringType())]
    )
    return with_feature_fields(schema, tuple(f for f in FEATURES if f != "amount_paise"))


def local_spark():
    """A small local SparkSession for the rules (the active one if there is one): the rules
    are Spark SQL, and evaluating them with Spark is what keeps them one definition."""
    # lazy: pyspark (748 ms to import), only for the rules' Spark pass
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("txmon-backtest")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.shuffle.partitions", "4")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def rule_hits(featured: pd.DataFrame, ruleset, spark) -> tuple[np.ndarray, list[list[str]]]:
    """(rule_score, rules_fired) of every row of ``featured``, in its order, computed by
    :func:`spark_jobs.rules.apply_rules` on a Spark frame with the stream's column types
    (missing values are nulls there, as in the stream)."""
    # lazy: pyspark (748 ms to import), only for the rules' Spark pass
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    if featured.empty:
        return np.zeros(0), []
    frame = featured.copy()
    frame["_pos"] = np.arange(len(frame), dtype=np.int64)
    schema = _rules_schema()
    for f in schema.fields:
        if f.name not in frame.columns:
            frame[f.name] = None
    arrow_schema = to_arrow_schema(schema, timezone="UTC")
    table = pa.Table.from_pandas(frame[arrow_schema.names], schema=arrow_schema, preserve_index=False)
    df = spark.createDataFrame(table)
    check_conditions(spark, ruleset, df.schema)
    out = apply_rules(df, ruleset).select("_pos", "rule_score", "rules_fired").toArrow().to_pandas()
    out = out.sort_values("_pos").reset_index(drop=True)
    fired = [list(f) if f is not None else [] for f in out["rules_fired"]]
    return out["rule_score"].to_numpy(dtype=np.float64), fired


# ------------------------------------------------------------------------ scoring


def _top_reasons(scored: pd.DataFrame, fired: list[list[str]], bundle: ModelBundle, ruleset, top: int = 3) -> list[str]:
    """ "CODE: description" of each row's strongest reasons (the stream's
    spark_jobs.detection.alert_reasons), for rows that were flagged or fired a rule."""
    rules = {r.id: r for r in ruleset.rules}
    decision = scored["decision"].astype(str).to_numpy()
    flagged = np.flatnonzero(decision != "APPROVE")
    explanations = dict(zip(flagged.tolist(), bundle.explain(scored.iloc[flagged], top_k=3))) if len(flagged) else {}
    out = [""] * len(scored)
    need = sorted(set(flagged.tolist()) | {i for i, f in enumerate(fired) if f})
    records = scored.iloc[need].to_dict("records") if need else []
    for i, row in zip(need, records):
        reasons = alert_reasons(
            row, fired[i], rules, explanations.get(i, []), decision[i], float(row["fraud_probability"])
        )
        out[i] = " | ".join(f"{r['code']}: {r['description']}" for r in reasons[:top])
    return out


def score_window(
    features: pd.DataFrame, bundle: ModelBundle, ruleset, spark, hits: tuple[np.ndarray, list[list[str]]] | None = None
) -> pd.DataFrame:
    """``features`` scored as the stream scores them: rules + models + risk + decision
    (:func:`models.scoring.score_frame` under the rules file's policy), with
    ``rules_fired``, ``top_reasons``, ``risk_without_anomaly`` (anomaly weight 0) and
    ``risk_with_anomaly`` (the policy's anomaly weight, whether or not the bundle keeps the
    Isolation Forest in its risk score)."""
    rule_score, fired = hits if hits is not None else rule_hits(features, ruleset, spark)
    policy: RiskPolicy = ruleset.policy
    scored = score_frame(features, bundle, policy, rule_score)
    scored["rules_fired"] = [";".join(f) for f in fired]
    parts = (scored["rule_score"], scored["fraud_probability"], scored["anomaly"])
    scored["risk_without_anomaly"] = risk_values(*parts, policy.model_copy(update={"anomaly_weight": 0.0}))
    scored["risk_with_anomaly"] = risk_values(*parts, policy)
    scored["top_reasons"] = _top_reasons(scored, fired, bundle, ruleset)
    return scored


# ---------------------------------------------------------------------- baselines


def _baseline_matrix(frame: pd.DataFrame) -> np.ndarray:
    x = feature_matrix(frame)
    x[~np.isfinite(x)] = np.nan  # imputed like any missing value
    return x


def fit_baselines(train: pd.DataFrame, seed: int) -> dict:
    """The textbook references, on the same rows and features as txmon's model: a
    logistic regression (median-imputed, standardised) and a random forest (median-imputed)."""
    # lazy: sklearn (4.5 s to import), only when the baselines are fitted
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _baseline_matrix(train), train["is_fraud"].to_numpy(dtype=bool)
    lr = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), LogisticRegression(max_iter=2000)
    ).fit(x, y)
    rf = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        RandomForestClassifier(n_estimators=100, min_samples_leaf=5, random_state=seed, n_jobs=1),
    ).fit(x, y)
    return {"lr_probability": lr, "rf_probability": rf}


# --------------------------------------------------------------------------- run


@dataclass
class WindowResult:
    index: int
    window: BacktestWindow
    scored: pd.DataFrame
    """The test window scored (features, labels, every scorer's column)."""
    evaluation: EvaluationMetrics
    rankings: dict
    """Scorer name -> models.evaluation.RankingMetrics."""
    scenario_recall: dict
    """Scorer name -> {scenario: recall at the fixed alert rate}."""
    fit: FitResult
    counts: dict
    rankings_unblocked: dict = field(default_factory=dict)
    """As ``rankings``, on the test rows whose account was not yet known fraudulent
    (:func:`known_fraud_accounts`): the literature's test protocol."""


PROTOCOLS = {
    "all": "every test row",
    "unblocked": "accounts already known fraudulent left out (the literature's test protocol)",
}
"""Test sets every metric is reported on, with their titles. ``unblocked``: the rows of
accounts with no fraud on record when their day began (:func:`known_fraud_accounts`), as the
literature measures card fraud."""


@dataclass
class BacktestResult:
    config: BacktestConfig
    source: str
    windows: list[WindowResult]
    rows: int
    rejected: int
    rejected_fraud: int
    notes: list[str] = field(default_factory=list)

    def summary(self, protocol: str = "all") -> dict:
        """Scorer -> metric -> {"mean", "std", "values"} over the windows (``protocol``: see
        :data:`PROTOCOLS`)."""
        out: dict = {}
        for name in SCORERS:
            per = [r[name] for r in (_rankings(w, protocol) for w in self.windows) if name in r]
            if not per:
                continue
            out[name] = {}
            for metric in (
                "roc_auc",
                "average_precision",
                "card_precision_at_k",
                "recall_at_alert_rate",
                "daily_precision_at_k",
            ):
                values = [getattr(r, metric) for r in per]
                known = [v for v in values if v is not None]
                out[name][metric] = {
                    "mean": float(np.mean(known)) if known else None,
                    "std": float(np.std(known)) if len(known) > 1 else (0.0 if known else None),
                    "values": values,
                }
        return out

    def verdict(self, protocol: str = "all") -> dict:
        """Whether txmon's risk score beat each baseline, per headline metric (mean over windows)."""
        summary = self.summary(protocol)
        txmon = summary.get("txmon risk", {})
        out = {}
        for base in ("logistic regression", "random forest"):
            if base not in summary:
                continue
            for metric in ("roc_auc", "average_precision", "card_precision_at_k"):
                a, b = txmon.get(metric, {}).get("mean"), summary[base][metric]["mean"]
                out[f"{base}: {metric}"] = None if a is None or b is None else bool(a > b)
        return out


def verdict_sentence(verdict: dict) -> str | None:
    """The report's and the CLI's one sentence on a :meth:`BacktestResult.verdict` (None
    without baselines). A comparison left undefined by a test without fraud is said to be
    undefined, not counted as lost."""
    if not verdict:
        return None
    known = {name: beat for name, beat in verdict.items() if beat is not None}
    if not known:
        return "no comparison with the baselines is defined: no fraud among these test rows"
    text = f"txmon's risk score beats the baselines on {sum(known.values())} of {len(known)} comparisons"
    if len(known) < len(verdict):
        text += f" ({len(verdict) - len(known)} more undefined: no fraud among these test rows)"
    lost = [name for name, beat in known.items() if not beat]
    return text + (f"; not on: {', '.join(lost)}" if lost else "")


def _rankings(window: WindowResult, protocol: str) -> dict:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}, got {protocol!r}")
    return window.rankings if protocol == "all" else window.rankings_unblocked


def known_fraud_accounts(test: pd.DataFrame, history: pd.DataFrame, since: datetime, tz: str) -> np.ndarray:
    """Per test row: whether its account already had a fraud on record when the row's day
    (in ``tz``) began, counting the frauds from ``since`` on whose label was known by then.

    The literature's card-fraud test protocol leaves these rows out: a card known to be
    compromised is blocked, so ranking its later payments measures nothing an investigator
    would see (and its fraud is already found). ``since`` is the training window's start
    there: a card's fraud long before it does not block it for ever."""
    fraud = history["is_fraud"].to_numpy(dtype=bool) & (history["event_time"] >= pd.Timestamp(since)).to_numpy()
    first_known = history.loc[fraud].groupby("payer_account")["label_time"].min()
    day_start = pd.to_datetime(test["event_time"], utc=True).dt.tz_convert(tz).dt.normalize()
    known_at = pd.to_datetime(test["payer_account"].map(first_known), utc=True)
    return (known_at.notna() & (known_at <= day_start)).to_numpy(dtype=bool)


def _scenario_recall(frame: pd.DataFrame, column: str, rate: float) -> dict:
    """Recall per fraud scenario when the top ``rate`` of transactions by ``column`` are flagged."""
    y = frame["is_fraud"].to_numpy(dtype=bool)
    if not y.any():
        return {}
    n = max(1, round(rate * len(frame)))
    score = frame[column].to_numpy(dtype=np.float64)
    # Expected flags per row with ties at the cut shared (as precision_at_k shares them).
    cut = np.sort(score)[::-1][n - 1]
    above, tied = score > cut, score == cut
    share = (n - above.sum()) / tied.sum()
    flag = np.where(above, 1.0, np.where(tied, share, 0.0))
    scenario = frame["scenario"].astype("object").where(frame["scenario"].notna(), "unknown").astype(str)
    out = {}
    for name in sorted(set(scenario[y])):
        rows = y & (scenario.to_numpy() == name)
        out[name] = float(flag[rows].sum() / rows.sum())
    return out


def _label_delay_s(source: LabelledSource, config: BacktestConfig) -> float:
    """How long labels take to arrive, for the features that wait for them: the configured
    delay, else the typical (median) gap between a transaction and its label."""
    if config.label_delay is not None:
        return config.label_delay.total_seconds()
    frame = source.transactions
    if frame.empty:
        return 0.0
    gap = pd.to_datetime(frame["label_time"], utc=True) - pd.to_datetime(frame["event_time"], utc=True)
    return max(0.0, float(gap.dt.total_seconds().median()))


def _window_rows(featured: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    t = featured["event_time"]
    return featured[(t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))].reset_index(drop=True)


# ------------------------------------------------------------------ features cache

_CACHE_FORMAT = 3
_CACHE_SLICE = 200_000  # rows converted to Arrow at a time when saving (memory)


def feature_code_digest() -> str:
    """A digest of the code that turns a source into featured rows: the feature, dataset,
    contract, mapping and simulator modules, the reading functions (models/sources.py's) and
    this module's featuring ones, and the pandas and pyarrow versions. Any change to them makes a saved cache stale."""

    digest = hashlib.sha256(f"format {_CACHE_FORMAT} pandas {pd.__version__} pyarrow {pyarrow.__version__}".encode())
    for module in (features, dataset, replay, events, simulator):
        digest.update(Path(str(module.__file__)).read_bytes())
    for part in (
        read_file,
        first_of_each_txn,
        simulated,
        _event_frame,
        featured_rows,
        _cut_after,
        _label_delay_s,
    ):
        digest.update(inspect.getsource(part).encode())
    return digest.hexdigest()


def file_identity(path: str | Path, mapping: str | Path, label_delay: timedelta | None) -> dict:
    """What a file's featured rows depend on: the file (resolved path, size, modification
    time), the mapping's content, the label delay and the feature code."""
    stat = Path(path).stat()
    return {
        "source": "file",
        "path": str(Path(path).resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "mapping_sha256": hashlib.sha256(Path(mapping).read_bytes()).hexdigest(),
        "label_delay_s": None if label_delay is None else label_delay.total_seconds(),
        "code": feature_code_digest(),
    }


def simulated_identity(n: int, seed: int, label_delay: timedelta | None, mean_tps: float | None = None) -> dict:
    """What :func:`simulated`'s featured rows depend on."""
    return {
        "source": "simulator",
        "n": n,
        "seed": seed,
        "mean_tps": mean_tps or DEFAULT_SIMULATED_TPS,
        "label_delay_s": None if label_delay is None else label_delay.total_seconds(),
        "code": feature_code_digest(),
    }


def _instant(text: str) -> str:
    """``text`` if it reads as a date-time with a time zone, as :meth:`FeatureCache.save`
    writes them: the entry's times are compared with the run's (aware) window bounds."""
    when = pd.Timestamp(text)  # a ValueError on anything else
    if pd.isna(when) or when.tzinfo is None:
        raise ValueError(f"{text!r} is not a date-time with a time zone")
    return text


_Instant = Annotated[str, AfterValidator(_instant)]


class _CacheMeta(_Frozen):
    """An entry's meta.json, as :meth:`FeatureCache.save` writes it."""

    identity: dict[str, Any]
    until: _Instant | None
    kept_from: _Instant
    rows_before: int = Field(ge=0)
    span: tuple[_Instant, _Instant] | None
    rows: int = Field(ge=0)
    dtypes: dict[str, str]
    name: str
    rows_read: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    rejects: list[replay.RejectedRow]


def _recorded_span(meta: _CacheMeta) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    if meta.span is None:
        return None
    first, last = meta.span
    return pd.Timestamp(first), pd.Timestamp(last)


def _unreadable(what: Path, exc: Exception) -> str:
    """The log line for a cache file that cannot be read: a miss, not the user's problem."""
    if isinstance(exc, ValidationError):
        problem = exc.errors()[0]
        reason = f"{'.'.join(map(str, problem['loc'])) or 'content'}: {problem['msg']}"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return f"features cache: {what} cannot be read ({reason}); computing afresh"


@dataclass
class FeatureCache:
    """A source's featured rows saved under ``directory`` (``txmon backtest --features-cache``),
    so a later run on the same source skips reading and featuring it.

    Entries are keyed by a digest of ``identity`` (:func:`file_identity`,
    :func:`simulated_identity`): the source, the mapping's content, the label delay and the
    feature code. A run whose identity differs in any part finds no entry and computes the
    rows afresh, as does a run whose entry cannot be read (it is then written anew). An
    entry holds the featured rows from the first training window's start to the end of the
    last test window it was made for (or to the source's end), and serves a run only if
    that covers the run's windows."""

    directory: Path
    identity: dict
    rejects_csv: Path | None = None
    """The run's rejects file: saved with the entry, written again from it on reuse."""

    @property
    def path(self) -> Path:
        key = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:32]
        return Path(self.directory) / key

    def _meta(self, log=print) -> _CacheMeta | None:
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            log(f"features cache: no entry for this source, label delay and feature code in {self.directory}")
            return None
        try:
            meta = _CacheMeta.model_validate_json(meta_path.read_bytes())
        # ValidationError: not JSON or not UTF-8, nested too deep, or not what save() writes
        except (OSError, ValidationError) as exc:
            log(_unreadable(meta_path, exc))
            return None
        if meta.identity != self.identity:
            log(f"features cache: {self.path} was made for another source or code; computing afresh")
            return None
        return meta

    def span(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The source's first and last event time, as the entry recorded them (for a run
        without window dates, whose split follows the data's days), or None (no entry)."""
        meta = self._meta(log=lambda _: None)
        return None if meta is None else _recorded_span(meta)

    def load(self, start: datetime, end: datetime | None, log=print) -> tuple[LabelledSource, pd.DataFrame] | None:
        """(the source as it was read, without its rows, and its featured rows) for a run
        whose first training window starts at ``start`` and whose last test window ends at
        ``end`` (None: at the source's end), or None (said in ``log``) when there is no
        entry for this identity or it does not cover the run's windows."""
        meta = self._meta(log)
        if meta is None:
            return None
        until, kept_from = meta.until, meta.kept_from
        if until is not None and (end is None or pd.Timestamp(until) < pd.Timestamp(end)):
            log(f"features cache: the entry holds rows before {until} only; computing afresh")
            return None
        if pd.Timestamp(kept_from) > pd.Timestamp(start):
            log(f"features cache: the entry holds rows from {kept_from} only; computing afresh")
            return None
        try:
            featured = pd.read_parquet(self.path / "featured.parquet")
        # Arrow's errors are the file's; the rest are pandas rebuilding the frame from the JSON
        # its footer holds: not UTF-8 or not JSON (ValueError), a key missing or an unknown time
        # zone (KeyError), an unknown dtype name (TypeError).
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            log(_unreadable(self.path / "featured.parquet", exc))
            return None
        dtypes = {c: str(t) for c, t in featured.dtypes.items()}
        if len(featured) != meta.rows or dtypes != meta.dtypes:
            log(f"features cache: {self.path} does not read back as it was written; computing afresh")
            return None
        if self.rejects_csv is not None and (self.path / "rejects.csv").exists():
            self.rejects_csv.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path / "rejects.csv", self.rejects_csv)
        log(f"features cache: reusing {len(featured):,} featured rows from {self.path}")
        source = LabelledSource(
            featured.iloc[:0], meta.name, list(meta.rejects), meta.rows_read, meta.duplicates, meta.rows_before
        )
        source.span = _recorded_span(meta)
        return source, featured

    def save(
        self, featured: pd.DataFrame, source: LabelledSource, kept_from: datetime, until: datetime | None, log=print
    ) -> None:
        """Save ``featured`` (the rows from ``kept_from``, before ``until``; None: to the
        source's end). A failure is reported in ``log`` and leaves no entry: the run goes on
        without it."""

        final = self.path
        staging = final.with_name(final.name + f".tmp{os.getpid()}")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            schema = pa.Schema.from_pandas(featured, preserve_index=False)
            with pq.ParquetWriter(staging / "featured.parquet", schema) as writer:
                for start in range(0, len(featured), _CACHE_SLICE):
                    part = featured.iloc[start : start + _CACHE_SLICE]
                    writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
            if self.rejects_csv is not None and self.rejects_csv.exists():
                shutil.copyfile(self.rejects_csv, staging / "rejects.csv")
            meta = {
                "identity": self.identity,
                "until": None if until is None else pd.Timestamp(until).isoformat(),
                "kept_from": pd.Timestamp(kept_from).isoformat(),
                "rows_before": source.rows_before,
                "span": None if source.span is None else [pd.Timestamp(t).isoformat() for t in source.span],
                "rows": len(featured),
                "dtypes": {c: str(t) for c, t in featured.dtypes.items()},
                "name": source.name,
                "rows_read": source.rows_read,
                "duplicates": source.duplicates,
                "rejects": [dataclasses.asdict(r) for r in source.rejects],
            }
            (staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            log(f"features cache: not saved ({type(exc).__name__}: {exc})")
            return
        log(f"features cache: {len(featured):,} featured rows saved in {final}")


def _cut_after(frame: pd.DataFrame, end: datetime) -> tuple[pd.DataFrame, bool]:
    """``frame`` without its rows at or after ``end``, and whether any were cut. A
    transaction's features depend only on the rows before it, so rows after the last test
    window change nothing that is trained or scored. Nothing is cut when nothing would be
    left (the empty test window is reported later)."""
    after = frame["event_time"] >= pd.Timestamp(end)
    if after.any() and not after.all():
        return frame[~after.to_numpy()].reset_index(drop=True), True
    return frame, False


def featured_rows(source: LabelledSource, config: BacktestConfig, log=print) -> tuple[pd.DataFrame, datetime | None]:
    """The source's transactions with every feature, as of each row, from the first
    training window's start to the end of the last test window; and that end (None when no
    row was left out at the end). Rows before the first training window are featured (they
    build the profiles) but not kept: ``source.rows_before`` counts them."""
    if config.label_delay is not None:  # one delay for every label, features and training alike
        source.transactions["label_time"] = source.transactions["event_time"] + pd.Timedelta(config.label_delay)
    end = config.window.shifted(config.rolling - 1).test_end
    source.transactions, cut = _cut_after(source.transactions, end)
    if cut:
        log(f"transactions from {end.astimezone(UTC):%Y-%m-%d %H:%M} UTC on are left out of the features")
    log(f"features: {len(source.transactions):,} transactions in event-time order ({config.chunk_rows:,} per chunk)")
    times = source.transactions["event_time"]
    source.span = (times.min(), times.max())
    keep_from = pd.Timestamp(config.window.train_start)
    source.rows_before = int((source.transactions["event_time"] < keep_from).sum())
    featured = features_in_chunks(source.transactions, config.chunk_rows, _label_delay_s(source, config), keep_from)
    source.transactions = featured.iloc[:0]  # the features frame holds every input column now
    return featured, (end if cut else None)


def run(
    source: LabelledSource,
    config: BacktestConfig,
    ruleset,
    *,
    spark=None,
    log=print,
    rule_scorer=None,
    cache: FeatureCache | None = None,
    featured: pd.DataFrame | None = None,
) -> BacktestResult:
    """Features over the whole source, then each window: fit, score, baselines, metrics.

    ``rule_scorer(features) -> (rule_score, rules_fired)`` replaces :func:`rule_hits` (and
    its SparkSession) in tests that check everything but the rules. ``featured``: the
    source's featured rows from :meth:`FeatureCache.load` (then not computed again);
    otherwise they are computed and, with a ``cache``, saved in it."""
    windows = [config.window.shifted(i) for i in range(config.rolling)]
    if featured is None:
        featured, until = featured_rows(source, config, log)
        if cache is not None:
            cache.save(featured, source, config.window.train_start, until, log)
    else:
        featured, _ = _cut_after(featured, windows[-1].test_end)
    tests = [_window_rows(featured, w.test_start, w.test_end) for w in windows]
    empty = [i for i, t in enumerate(tests) if t.empty]
    if empty:
        raise TrainingDataError(
            f"test window {empty[0] + 1} ({windows[empty[0]].describe()}) holds no transaction of "
            f"{source.name} (data from {featured['event_time'].min()} to {featured['event_time'].max()}); "
            "choose dates inside the data or fewer --rolling windows"
        )
    if rule_scorer is None:
        spark = spark or local_spark()

        def rule_scorer(frame):
            return rule_hits(frame, ruleset, spark)

    # Rules do not depend on the model: every test row of every window, in one Spark job.
    tested = pd.concat(tests, ignore_index=True)
    rule_score, fired = rule_scorer(tested)
    offsets = np.cumsum([0] + [len(t) for t in tests])
    results, notes = [], []
    for i, (window, test) in enumerate(zip(windows, tests)):
        train = _window_rows(featured, window.train_start, window.train_end)
        fitted_at = window.fitted_at(config.fit_at)
        known = train[train["label_time"] <= pd.Timestamp(fitted_at)]
        counts = {
            "train_rows": len(train),
            "train_rows_label_known": len(known),
            "train_frauds_known": int(known["is_fraud"].sum()),
            "train_frauds_unknown_yet": int(train["is_fraud"].sum() - known["is_fraud"].sum()),
            "history_rows": source.rows_before + int((featured["event_time"] < pd.Timestamp(window.train_start)).sum()),
            "test_rows": len(test),
            "test_frauds": int(test["is_fraud"].sum()),
        }
        if known.empty:
            raise TrainingDataError(
                f"window {i + 1}: no training transaction's label is known by {config.fit_at}, when the model "
                f"is fitted ({window.describe()}); start the training window earlier, or leave a gap of the label "
                "delay before the test window"
            )
        log(
            f"window {i + 1}/{len(windows)}: {window.describe()}: training on {len(known):,} rows with known "
            f"labels ({counts['train_frauds_known']:,} fraud; {len(train) - len(known):,} later rows wait for "
            f"their labels), testing on {len(test):,} ({counts['test_frauds']:,} fraud)"
        )
        training = config.training.model_copy(update={"k": config.k})
        # The blend is judged on the validation slice's risk with the rules' scores, as served.
        fitted = fit(known, training, ruleset.policy, rules=lambda frame: rule_scorer(frame)[0])
        a, b = offsets[i], offsets[i + 1]
        scored = score_window(test, fitted.bundle, ruleset, spark, (rule_score[a:b], fired[a:b]))
        if config.baselines:
            for column, model in fit_baselines(known, training.seed).items():
                scored[column] = model.predict_proba(_baseline_matrix(scored))[:, 1]
        evaluation = evaluate_frame(scored, config.k, ruleset.policy, config.tz, config.alert_rate)

        def rank(frame: pd.DataFrame) -> dict:
            return {
                name: ranking(frame, column, config.k, config.tz, config.alert_rate)
                for name, column in _COLUMN.items()
                if column in frame.columns
            }

        rankings = rank(scored)
        scenarios = {
            name: _scenario_recall(scored, column, config.alert_rate)
            for name, column in _COLUMN.items()
            if column in scored.columns
        }
        blocked = known_fraud_accounts(scored, featured, window.train_start, config.tz)
        scored["known_fraud_account"] = blocked
        counts["test_rows_known_fraud_account"] = int(blocked.sum())
        counts["test_frauds_known_fraud_account"] = int(scored.loc[blocked, "is_fraud"].sum())
        rankings_unblocked = rank(scored[~blocked])
        scored.insert(0, "window", i + 1)
        results.append(
            WindowResult(i + 1, window, scored, evaluation, rankings, scenarios, fitted, counts, rankings_unblocked)
        )
        notes += [f"window {i + 1}: {n}" for n in evaluation.notes]
    return BacktestResult(
        config,
        source.name,
        results,
        rows=source.rows_before + len(featured),
        rejected=len(source.rejects),
        rejected_fraud=source.rejected_fraud,
        notes=notes,
    )


# ----------------------------------------------------------------------- outputs

SCORE_COLUMNS = (
    "window",
    "txn_id",
    "row_number",
    "event_time",
    "payer_account",
    "is_fraud",
    "scenario",
    "risk_score",
    "risk_exact",
    "fraud_probability",
    "decision",
    "top_reasons",
    "rules_fired",
    "rule_score",
    "anomaly",
    "risk_without_anomaly",
    "risk_with_anomaly",
    "lr_probability",
    "rf_probability",
    "known_fraud_account",
)


def write_scores(result: BacktestResult, path: str | Path) -> Path:
    """One row per test-window transaction (the file's own txn id and row number)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = True
    for w in result.windows:
        columns = [c for c in SCORE_COLUMNS if c in w.scored.columns]
        out = w.scored[columns].copy()
        out["is_fraud"] = out["is_fraud"].astype(int)
        out.to_csv(path, mode="w" if first else "a", header=first, index=False)
        first = False
    return path


def _fmt(value, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}%" if pct else f"{value:.4f}"


def _mean_std(entry: dict, pct: bool = False) -> str:
    if entry["mean"] is None:
        return "n/a"
    if len(entry["values"]) > 1:
        return f"{_fmt(entry['mean'], pct)} ± {_fmt(entry['std'], pct)}"
    return _fmt(entry["mean"], pct)


def headline_rows(result: BacktestResult, protocol: str = "all") -> list[tuple[str, str, str, str, str]]:
    """(scorer, ROC-AUC, AP, card precision@k, recall at the alert rate): the report's table."""
    summary = result.summary(protocol)
    return [
        (
            name,
            _mean_std(m["roc_auc"]),
            _mean_std(m["average_precision"]),
            _mean_std(m["card_precision_at_k"]),
            _mean_std(m["recall_at_alert_rate"], pct=True),
        )
        for name, m in summary.items()
    ]


def _charts(result: BacktestResult, out: Path) -> list[str]:
    # lazy: matplotlib (1.3 s to import), only for the charts; Agg is set before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    # lazy: sklearn (3.8 s to import), only for the charts; Agg is set before pyplot loads
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    pooled = pd.concat([w.scored for w in result.windows], ignore_index=True)
    y = pooled["is_fraud"].to_numpy(dtype=bool)
    names = []
    fig, ax = plt.subplots(figsize=(6.5, 4.8), dpi=110)
    if y.any() and not y.all():
        for name, column in _COLUMN.items():
            if column in pooled.columns:
                p, r, _ = precision_recall_curve(y, pooled[column].to_numpy(dtype=np.float64))
                ax.plot(r, p, label=name, drawstyle="steps-post")
    ax.axhline(y.mean() if len(y) else 0, color="grey", linestyle=":", label=f"base rate {y.mean():.2%}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall, test window(s)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pr_curve.png")
    plt.close(fig)
    names.append("pr_curve.png")

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    bins = list(range(0, 102, 2))
    ax.hist(pooled.loc[~y, "risk_score"], bins=bins, density=True, alpha=0.6, label="genuine")
    if y.any():
        ax.hist(pooled.loc[y, "risk_score"], bins=bins, density=True, alpha=0.6, label="fraud")
    policy = result.windows[0].evaluation.policy
    for key in ("review_at", "block_at"):
        ax.axvline(policy[key], color="black", linestyle="--", linewidth=0.8)
    ax.set(xlabel="txmon risk score", ylabel="density (log)", yscale="log", title="Risk score by label")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "score_distribution.png")
    plt.close(fig)
    names.append("score_distribution.png")

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, column in _COLUMN.items():
        if column not in pooled.columns or name in ("txmon risk without anomaly", "txmon risk with anomaly"):
            continue
        days = [
            d for w in result.windows for d in card_precision_at_k(w.scored, result.config.k, column, result.config.tz)
        ]
        ax.plot([pd.Timestamp(d.day) for d in days], [d.precision for d in days], marker="o", label=name)
    ax.set(ylabel=f"card precision@{result.config.k}", ylim=(0, 1.02), title="Daily card precision@k (literature)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out / "daily_precision.png")
    plt.close(fig)
    names.append("daily_precision.png")
    return names


def report_json(result: BacktestResult, command: str | None = None) -> dict:
    def windows():
        for w in result.windows:
            yield {
                "window": w.index,
                **json.loads(w.window.model_dump_json()),
                "counts": w.counts,
                "rankings": {k: v.model_dump() for k, v in w.rankings.items()},
                "scenario_recall_at_alert_rate": w.scenario_recall,
                "txmon": w.evaluation.summary(),
                "training": {
                    "calibration": w.fit.calibration,
                    **{k: v for k, v in w.fit.info.items() if k != "explain_features"},
                },
            }

    return {
        "command": command,
        "source": result.source,
        "rows": result.rows,
        "rejected": result.rejected,
        "rejected_fraud": result.rejected_fraud,
        "config": json.loads(result.config.model_dump_json()),
        "summary": result.summary(),
        "txmon_beats": result.verdict(),
        "summary_unblocked": result.summary("unblocked"),
        "txmon_beats_unblocked": result.verdict("unblocked"),
        "notes": result.notes,
        "windows": list(windows()),
    }


def write_report(result: BacktestResult, out_dir: str | Path, command: str | None = None) -> Path:
    """report.md, backtest.json and the charts (pr_curve, score_distribution, daily_precision)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_json(result, command)
    (out / "backtest.json").write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    charts = _charts(result, out)
    cfg = result.config
    k = cfg.k
    lines = [f"# Backtest: {result.source}", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        f"{result.rows:,} transactions read through the stream's features; {result.rejected:,} source rows "
        f"rejected ({result.rejected_fraud:,} of them labelled fraud). Labels known "
        f"{'the source' + chr(39) + 's delay' if cfg.label_delay is None else cfg.label_delay} after their "
        f"transaction. {len(result.windows)} window(s)" + (" (mean ± std)" if len(result.windows) > 1 else "") + ".",
        "",
    ]
    header = [
        f"| scorer | ROC-AUC | average precision | card precision@{k} | recall at "
        f"{_fmt(cfg.alert_rate, True)} alerts |",
        "| --- | --- | --- | --- | --- |",
    ]

    def table(protocol: str) -> list[str]:
        out = header + [f"| {' | '.join(row)} |" for row in headline_rows(result, protocol)]
        sentence = verdict_sentence(result.verdict(protocol))
        if sentence:
            out += ["", f"**{sentence}.**"]
        return out

    lines += table("all")
    blocked = sum(w.counts["test_rows_known_fraud_account"] for w in result.windows)
    blocked_fraud = sum(w.counts["test_frauds_known_fraud_account"] for w in result.windows)
    tested = sum(w.counts["test_rows"] for w in result.windows)
    tested_fraud = sum(w.counts["test_frauds"] for w in result.windows)
    lines += [
        "",
        f"### {PROTOCOLS['unblocked'].capitalize()}",
        "",
        f"A test row whose account had a fraud since the training window's start, with its label known "
        f"when the row's day began, is left out here: that card would be blocked, and its fraud is already "
        f"found. {blocked:,} of {tested:,} test rows ({blocked_fraud:,} of {tested_fraud:,} frauds); the "
        "`known_fraud_account` column of scores.csv marks them.",
        "",
    ]
    lines += table("unblocked")
    lines += [
        "",
        f"Card precision@{k} is the literature's (per {cfg.tz} day, the {k} accounts with the highest "
        "score, accounts already detected on earlier test days removed, divided by k, mean over days); "
        "txmon's own daily precision@k (ties shared, detected accounts kept) is in backtest.json.",
        "",
    ]
    for w in result.windows:
        info = w.fit.info
        lines += [f"## Window {w.index}: {w.window.describe()}", ""]
        c = w.counts
        lines += [
            f"History before training: {c['history_rows']:,} rows (profiles only). Training: "
            f"{c['train_rows_label_known']:,} rows with known labels ({c['train_frauds_known']:,} fraud); "
            f"{c['train_rows'] - c['train_rows_label_known']:,} later rows dropped (label not yet known at "
            f"{result.config.fit_at}, when the model is fitted; "
            f"{c['train_frauds_unknown_yet']:,} of them fraud). Test: {c['test_rows']:,} rows, "
            f"{c['test_frauds']:,} fraud.",
            "",
        ]
        lines += [
            f"Model: {w.fit.calibration}; hyperparameters {info.get('hyperparameters')}, "
            f"{info.get('boosting_iterations')} iterations"
            + (
                f"; validation AP over 3 seeds {info['seed_ap_mean']:.4f} ± {info['seed_ap_std']:.4f} "
                f"(spread {info['seed_ap_spread']})"
                if "seed_ap_std" in info
                else ""
            )
            + ".",
            "",
        ]
        ev = w.evaluation
        lines += [
            f"Decisions (policy {', '.join(f'{k_}={v}' for k_, v in ev.policy.items())}): alert rate "
            f"{_fmt(ev.alert_rate, True)}, recall {_fmt(ev.recall, True)}.",
            "",
        ]
        scen = w.scenario_recall.get("txmon risk", {})
        if scen and (len(scen) > 1 or "unknown" not in scen):
            names = [n for n in SCORERS if n in w.scenario_recall]
            lines += [
                f"Recall per scenario at {_fmt(cfg.alert_rate, True)} alerts:",
                "",
                "| scenario | " + " | ".join(names) + " | decision recall (txmon) |",
                "| --- |" + " --- |" * (len(names) + 1),
            ]
            by_decision = {s.scenario: s.recall for s in ev.by_scenario}
            for s in sorted(scen):
                lines.append(
                    f"| {s} | "
                    + " | ".join(_fmt(w.scenario_recall[n].get(s), True) for n in names)
                    + f" | {_fmt(by_decision.get(s), True)} |"
                )
            lines.append("")
    if result.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    lines += [f"![{c}]({c})" for c in charts] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def write_outputs(
    result: BacktestResult, *, scores_out: Path | None, report_dir: Path | None, command: str | None = None
) -> dict:
    written = {}
    if scores_out is not None:
        written["scores"] = write_scores(result, scores_out)
    if report_dir is not None:
        written["report"] = write_report(result, report_dir, command)
    return written
