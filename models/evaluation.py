"""How well risk scores catch fraud: frame-based metrics, the offline path, the report.

Every metric takes a plain pandas frame with ``txn_id, payer_account, event_time,
risk_score (0-100), decision, is_fraud, scenario`` (and optionally
``fraud_probability``, ``anomaly``), so the offline path here and the online path
(stream output joined with labels) share them.

- ROC-AUC and average precision (area under the precision-recall curve) per score.
- Daily precision@k (txmon's own): for each calendar day (IST by default) accounts are
  ranked by their highest score that day; precision is the share of the top k that had
  at least one fraud that day; the mean over days is reported. Ties at the cut are
  shared fairly (the expected precision under a random order of the tied accounts), so
  the integer risk score is not flattered or punished by an arbitrary tie-break.
- Card precision@k (the literature's, as the Fraud Detection Handbook defines "card
  precision top-k"): the same daily ranking of accounts, but accounts already detected
  (a fraudulent account in an earlier day's top k) are removed before ranking, the
  denominator is always k, and ties are broken by the order (score descending, account
  ascending) rather than shared. It is what a fraud team's investigators see: k cards a
  day, never the same compromised card twice.
- Recall at a fixed alert rate: the share of frauds among the top ``alert_rate`` of
  transactions by score (ties shared), so scores on different scales compare.
- Recall per fraud scenario at the policy's thresholds: a transaction is flagged when
  its decision is not APPROVE. Alert rate: the share of transactions flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from txmon.models.bundle import ModelBundle
from txmon.models.errors import TrainingDataError
from txmon.models.risk import RiskPolicy
from txmon.models.scoring import RuleScores, score_frame

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_ALERT_RATE",
    "DEFAULT_K",
    "DEFAULT_TZ",
    "CardPrecisionDay",
    "DailyPrecision",
    "EvaluationMetrics",
    "PrCurve",
    "RankingMetrics",
    "ScenarioRecall",
    "card_precision_at_k",
    "daily_precision_at_k",
    "evaluate_featured",
    "evaluate_frame",
    "metrics_table",
    "precision_at_k",
    "ranking",
    "ranking_metrics",
    "recall_at_alert_rate",
    "recall_by_scenario",
    "score_featured",
    "write_report",
]

DEFAULT_K = 100
DEFAULT_TZ = "Asia/Kolkata"
DEFAULT_ALERT_RATE = 0.01
"""Share of transactions flagged for :func:`recall_at_alert_rate` (1 %: a fraud desk's budget)."""
FLAG_DECISIONS_EXCLUDE = "APPROVE"
_CURVE_POINTS = 400


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RankingMetrics(_Frozen):
    """How well one score ranks fraud above genuine traffic. None: undefined (one class only)."""

    roc_auc: float | None
    average_precision: float | None
    daily_precision_at_k: float | None
    card_precision_at_k: float | None = None
    """The literature's card precision@k (:func:`card_precision_at_k`), mean over days."""
    recall_at_alert_rate: float | None = None
    """Recall when the top ``EvaluationMetrics.fixed_alert_rate`` of transactions are flagged."""


class DailyPrecision(_Frozen):
    day: str
    accounts: int
    fraud_accounts: int
    precision: float


class CardPrecisionDay(_Frozen):
    day: str
    accounts: int
    """Accounts active that day, before the already-detected ones are removed."""
    candidates: int
    """Accounts ranked that day (active, not detected on an earlier day)."""
    fraud_accounts: int
    """Candidates with at least one fraud that day."""
    detected: int
    """Fraudulent accounts among the day's top k."""
    precision: float


class ScenarioRecall(_Frozen):
    scenario: str
    frauds: int
    flagged: int
    recall: float


class PrCurve(_Frozen):
    precision: tuple[float, ...]
    recall: tuple[float, ...]


class EvaluationMetrics(_Frozen):
    rows: int
    frauds: int
    fraud_rate: float
    k: int
    tz: str
    """Time zone whose calendar days the daily metrics use."""
    alert_rate: float
    block_rate: float
    recall: float | None
    """Share of fraudulent transactions flagged (decision != APPROVE)."""
    risk: RankingMetrics
    """Ranking by the combined risk score."""
    model: RankingMetrics | None
    """Ranking by the raw model probability (None: no fraud_probability column)."""
    anomaly: RankingMetrics | None
    daily: tuple[DailyPrecision, ...]
    """Per-day precision@k of the risk score."""
    card_daily: tuple[CardPrecisionDay, ...] = ()
    """Per-day card precision@k (literature) of the risk score."""
    fixed_alert_rate: float = DEFAULT_ALERT_RATE
    daily_precision_ceiling: float | None
    """The best daily precision@k any score could reach (mean over days of
    min(accounts with fraud, k) / k): days with fewer than k fraudulent accounts cap it."""
    by_scenario: tuple[ScenarioRecall, ...]
    policy: dict[str, float]
    curves: dict[str, PrCurve]
    notes: tuple[str, ...]

    def summary(self) -> dict[str, float | None]:
        """Flat name -> value, for metadata.json and tables."""
        out: dict[str, float | None] = {
            "rows": float(self.rows),
            "frauds": float(self.frauds),
            "fraud_rate": self.fraud_rate,
            "average_precision": self.risk.average_precision,
            "roc_auc": self.risk.roc_auc,
            f"daily_precision_at_{self.k}": self.risk.daily_precision_at_k,
            f"daily_precision_at_{self.k}_ceiling": self.daily_precision_ceiling,
            f"card_precision_at_{self.k}": self.risk.card_precision_at_k,
            "fixed_rate_recall": self.risk.recall_at_alert_rate,
            "fixed_alert_rate": self.fixed_alert_rate,
            "alert_rate": self.alert_rate,
            "block_rate": self.block_rate,
            "recall": self.recall,
        }
        for name, ranking in (("model", self.model), ("anomaly", self.anomaly)):
            if ranking is not None:
                out[f"{name}_average_precision"] = ranking.average_precision
                out[f"{name}_roc_auc"] = ranking.roc_auc
                out[f"{name}_daily_precision_at_{self.k}"] = ranking.daily_precision_at_k
                out[f"{name}_card_precision_at_{self.k}"] = ranking.card_precision_at_k
                out[f"{name}_fixed_rate_recall"] = ranking.recall_at_alert_rate
        for s in self.by_scenario:
            out[f"recall_{s.scenario}"] = s.recall
        return out


# ------------------------------------------------------------------ metric functions


def ranking_metrics(is_fraud: Sequence[bool], score: Sequence[float]) -> tuple[float | None, float | None]:
    """(ROC-AUC, average precision); both None when only one class is present.

    >>> ranking_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    (0.75, 0.8333333333333333)
    >>> ranking_metrics([0, 0], [0.1, 0.2])
    (None, None)
    """
    # scikit-learn and matplotlib (slow to import) only for the metrics and charts that need them.
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(is_fraud, dtype=bool)
    if y.all() or not y.any():
        return None, None
    s = np.asarray(score, dtype=np.float64)
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def precision_at_k(score: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray, k: int) -> float:
    """Share of positives among the k highest scores (all of them when fewer than k).

    Ties straddling the cut count by their share: the expected precision when the tied
    items are taken in random order.

    >>> precision_at_k([9, 8, 7, 1], [1, 0, 1, 0], k=2)
    0.5
    >>> precision_at_k([5, 5, 5, 5], [1, 0, 0, 0], k=2)  # 2 of 4 tied: expect 0.5 positives
    0.25
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = np.asarray(score, dtype=np.float64)
    p = np.asarray(positive, dtype=bool)
    if len(s) == 0:
        raise ValueError("precision@k of nothing")
    take = min(k, len(s))
    cut = np.sort(s)[::-1][take - 1]
    above, tied = s > cut, s == cut
    expected = p[above].sum() + (take - above.sum()) * p[tied].sum() / tied.sum()
    return float(expected / take)


def daily_precision_at_k(
    frame: pd.DataFrame, k: int = DEFAULT_K, score: str = "risk_score", tz: str = DEFAULT_TZ
) -> list[DailyPrecision]:
    """Per calendar day in ``tz``: rank payer accounts by their highest ``score`` that day,
    take the top k, report the share that had at least one fraud that day."""
    if frame.empty:
        return []
    day = pd.to_datetime(frame["event_time"], utc=True).dt.tz_convert(tz).dt.strftime("%Y-%m-%d")
    accounts = (
        pd.DataFrame(
            {
                "day": day.to_numpy(),
                "account": frame["payer_account"].to_numpy(),
                "score": frame[score].to_numpy(dtype=np.float64),
                "fraud": frame["is_fraud"].to_numpy(dtype=bool),
            }
        )
        .groupby(["day", "account"], sort=True)
        .agg(score=("score", "max"), fraud=("fraud", "any"))
    )
    out = []
    for name, group in accounts.groupby(level="day", sort=True):
        out.append(
            DailyPrecision(
                day=str(name),
                accounts=len(group),
                fraud_accounts=int(group["fraud"].sum()),
                precision=precision_at_k(group["score"], group["fraud"], k),
            )
        )
    return out


def _days(frame: pd.DataFrame, tz: str) -> np.ndarray:
    return pd.to_datetime(frame["event_time"], utc=True).dt.tz_convert(tz).dt.strftime("%Y-%m-%d").to_numpy()


def card_precision_at_k(
    frame: pd.DataFrame, k: int = DEFAULT_K, score: str = "risk_score", tz: str = DEFAULT_TZ
) -> list[CardPrecisionDay]:
    """The literature's card precision@k, per calendar day in ``tz`` (days in order).

    Each day, every account not yet detected is ranked by its highest ``score`` that day
    (ties: account id ascending, so the result is reproducible); the top k are "checked";
    precision is the number of them with a fraud that day divided by k (not by the
    number of accounts: a quiet day counts against the score as it does against an
    investigator's time). Fraudulent accounts in a day's top k are detected and removed
    from every later day. Mean of the days' precisions = the reported figure.

    >>> t = pd.to_datetime(["2025-01-06T04:00Z"] * 3 + ["2025-01-07T04:00Z"] * 3, utc=True)
    >>> f = pd.DataFrame({"event_time": t, "payer_account": list("ABCABC"),
    ...                   "risk_score": [90, 80, 10, 95, 85, 50], "is_fraud": [1, 0, 1, 1, 0, 1]})
    >>> [(d.day, d.candidates, d.detected, d.precision) for d in card_precision_at_k(f, k=2, tz="UTC")]
    [('2025-01-06', 3, 1, 0.5), ('2025-01-07', 2, 1, 0.5)]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if frame.empty:
        return []
    accounts = (
        pd.DataFrame(
            {
                "day": _days(frame, tz),
                "account": frame["payer_account"].astype(str).to_numpy(),
                "score": frame[score].to_numpy(dtype=np.float64),
                "fraud": frame["is_fraud"].to_numpy(dtype=bool),
            }
        )
        .groupby(["day", "account"], sort=True)
        .agg(score=("score", "max"), fraud=("fraud", "any"))
        .reset_index()
    )
    detected: set[str] = set()
    out = []
    for day, group in accounts.groupby("day", sort=True):
        candidates = group[~group["account"].isin(detected)]
        top = candidates.sort_values(["score", "account"], ascending=[False, True], kind="mergesort").head(k)
        found = top.loc[top["fraud"], "account"].tolist()
        out.append(
            CardPrecisionDay(
                day=str(day),
                accounts=len(group),
                candidates=len(candidates),
                fraud_accounts=int(candidates["fraud"].sum()),
                detected=len(found),
                precision=len(found) / k,
            )
        )
        detected.update(found)
    return out


def recall_at_alert_rate(
    is_fraud: Sequence[bool], score: Sequence[float], alert_rate: float = DEFAULT_ALERT_RATE
) -> float | None:
    """Share of frauds among the top ``alert_rate`` of transactions by ``score`` (at least
    one transaction; ties at the cut shared as in :func:`precision_at_k`). None without fraud.

    >>> recall_at_alert_rate([1, 0, 1, 0], [0.9, 0.8, 0.1, 0.2], 0.25)
    0.5
    """
    if not 0 < alert_rate <= 1:
        raise ValueError(f"alert_rate must be in (0, 1], got {alert_rate}")
    y = np.asarray(is_fraud, dtype=bool)
    if not y.any():
        return None
    flagged = max(1, round(alert_rate * len(y)))
    return float(precision_at_k(score, y, flagged) * flagged / y.sum())


def recall_by_scenario(frame: pd.DataFrame) -> list[ScenarioRecall]:
    """Per fraud scenario (sorted by name): frauds, flagged (decision != APPROVE), recall.
    Frauds without a scenario count as ``unknown``."""
    fraud = frame[frame["is_fraud"].astype(bool)]
    if fraud.empty:
        return []
    flagged = fraud["decision"].astype(str) != FLAG_DECISIONS_EXCLUDE
    scenario = fraud["scenario"].astype("object").where(fraud["scenario"].notna(), "unknown").astype(str)
    table = pd.DataFrame({"scenario": scenario.to_numpy(), "flagged": flagged.to_numpy()}).groupby("scenario")
    return [
        ScenarioRecall(
            scenario=str(name), frauds=len(g), flagged=int(g["flagged"].sum()), recall=float(g["flagged"].mean())
        )
        for name, g in table
    ]


def _curve(is_fraud: np.ndarray, score: np.ndarray) -> PrCurve | None:
    # lazy: sklearn (3.8 s to import); txmon.models.training imports this module without it
    from sklearn.metrics import precision_recall_curve

    if is_fraud.all() or not is_fraud.any():
        return None
    precision, recall, _ = precision_recall_curve(is_fraud, score)
    _, by_recall = np.unique(np.round(recall * _CURVE_POINTS), return_index=True)  # even in recall
    keep = np.union1d(by_recall, np.linspace(0, len(precision) - 1, min(len(precision), _CURVE_POINTS)).astype(int))
    return PrCurve(
        precision=tuple(np.round(precision[keep], 5).tolist()), recall=tuple(np.round(recall[keep], 5).tolist())
    )


def ranking(
    frame: pd.DataFrame, column: str, k: int = DEFAULT_K, tz: str = DEFAULT_TZ, alert_rate: float = DEFAULT_ALERT_RATE
) -> RankingMetrics:
    """Every ranking metric of one score column of a labelled frame (any score: txmon's
    risk or probability, or a baseline's), so all scores are measured the same way."""
    auc, ap = ranking_metrics(frame["is_fraud"], frame[column])
    daily = daily_precision_at_k(frame, k, column, tz)
    card = card_precision_at_k(frame, k, column, tz)
    return RankingMetrics(
        roc_auc=auc,
        average_precision=ap,
        daily_precision_at_k=float(np.mean([d.precision for d in daily])) if daily else None,
        card_precision_at_k=float(np.mean([d.precision for d in card])) if card else None,
        recall_at_alert_rate=recall_at_alert_rate(frame["is_fraud"], frame[column], alert_rate),
    )


_ranking = ranking


def _ceiling(daily: Sequence[DailyPrecision], k: int) -> float | None:
    if not daily:
        return None
    return float(np.mean([min(d.fraud_accounts, k, d.accounts) / min(k, d.accounts) for d in daily]))


def evaluate_frame(
    frame: pd.DataFrame,
    k: int = DEFAULT_K,
    policy: RiskPolicy | None = None,
    tz: str = DEFAULT_TZ,
    alert_rate: float = DEFAULT_ALERT_RATE,
) -> EvaluationMetrics:
    """Every metric of one scored, labelled frame (see the module docstring)."""
    required = ["txn_id", "payer_account", "event_time", "risk_score", "decision", "is_fraud", "scenario"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise KeyError(f"evaluation frame lacks columns {missing}")
    if frame.empty:
        raise TrainingDataError("nothing to evaluate: no scored transactions in the evaluation window")
    y = frame["is_fraud"].to_numpy(dtype=bool)
    flagged = frame["decision"].astype(str).to_numpy() != FLAG_DECISIONS_EXCLUDE
    notes = []
    if not y.any():
        notes.append(
            "the evaluation window has no fraud: ROC-AUC, average precision and recall are "
            "undefined; evaluate on a longer or more recent labelled history"
        )
    elif y.all():
        notes.append("every evaluated transaction is fraud: ranking metrics are undefined")
    # Rankings use the risk before rounding when the frame has it (models.risk.risk_values):
    # whole points tie transactions the model tells apart.
    risk = "risk_exact" if "risk_exact" in frame.columns else "risk_score"
    curves = {}
    for name, column in (("risk score", risk), ("model probability", "fraud_probability"), ("anomaly", "anomaly")):
        if column in frame.columns:
            curve = _curve(y, frame[column].to_numpy(dtype=np.float64))
            if curve is not None:
                curves[name] = curve
    daily = tuple(daily_precision_at_k(frame, k, risk, tz))
    return EvaluationMetrics(
        rows=len(frame),
        frauds=int(y.sum()),
        fraud_rate=float(y.mean()),
        k=k,
        tz=tz,
        alert_rate=float(flagged.mean()),
        block_rate=float((frame["decision"].astype(str) == "BLOCK").mean()),
        recall=float(flagged[y].mean()) if y.any() else None,
        risk=ranking(frame, risk, k, tz, alert_rate),
        model=ranking(frame, "fraud_probability", k, tz, alert_rate) if "fraud_probability" in frame.columns else None,
        anomaly=ranking(frame, "anomaly", k, tz, alert_rate) if "anomaly" in frame.columns else None,
        daily=daily,
        daily_precision_ceiling=_ceiling(daily, k),
        card_daily=tuple(card_precision_at_k(frame, k, risk, tz)),
        fixed_alert_rate=alert_rate,
        by_scenario=tuple(recall_by_scenario(frame)),
        policy=(policy or RiskPolicy()).model_dump(),
        curves=curves,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------ offline path


def score_featured(
    features: pd.DataFrame,
    bundle: ModelBundle,
    policy: RiskPolicy,
    rules_score: RuleScores = None,
    *,
    since: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """A labelled feature frame (:func:`models.dataset.labelled_features`, or
    :meth:`models.sources.LabelledHistory.features` of a file read in chunks) scored under
    ``policy``; rows before ``since`` dropped after featuring, so earlier rows still warmed
    up the behavioural profiles, exactly as the stream's state would have. ``rules_score``:
    see :data:`models.scoring.RuleScores` (default: 0)."""
    if since is not None:
        features = features[features["event_time"] >= pd.Timestamp(since)].reset_index(drop=True)
    return score_frame(features, bundle, policy, rules_score)


def evaluate_featured(
    features: pd.DataFrame,
    bundle: ModelBundle,
    policy: RiskPolicy,
    rules_score: RuleScores = None,
    *,
    k: int = DEFAULT_K,
    since: pd.Timestamp | None = None,
    tz: str = DEFAULT_TZ,
) -> EvaluationMetrics:
    """Score a labelled feature frame (:func:`score_featured`) and measure it against its
    labels (transactions at or after ``since`` only)."""
    return evaluate_frame(score_featured(features, bundle, policy, rules_score, since=since), k, policy, tz)


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}%" if pct else f"{value:.4f}"


def metrics_table(metrics: EvaluationMetrics) -> list[tuple[str, str]]:
    """(name, formatted value) rows: what the CLI prints and the report starts with."""
    rows = [("transactions", f"{metrics.rows:,}"), ("frauds", f"{metrics.frauds:,} ({_fmt(metrics.fraud_rate, True)})")]
    for label, rank in (
        ("risk score", metrics.risk),
        ("model probability", metrics.model),
        ("anomaly", metrics.anomaly),
    ):
        if rank is None:
            continue
        rows += [
            (f"{label}: average precision", _fmt(rank.average_precision)),
            (f"{label}: ROC-AUC", _fmt(rank.roc_auc)),
            (f"{label}: daily precision@{metrics.k}", _fmt(rank.daily_precision_at_k)),
            (f"{label}: card precision@{metrics.k} (literature)", _fmt(rank.card_precision_at_k)),
            (
                f"{label}: recall at {_fmt(metrics.fixed_alert_rate, True)} alerts",
                _fmt(rank.recall_at_alert_rate, True),
            ),
        ]
    rows += [(f"daily precision@{metrics.k} ceiling (accounts with fraud / k)", _fmt(metrics.daily_precision_ceiling))]
    rows += [
        ("alert rate (REVIEW or BLOCK)", _fmt(metrics.alert_rate, True)),
        ("block rate", _fmt(metrics.block_rate, True)),
        ("recall (all frauds)", _fmt(metrics.recall, True)),
    ]
    rows += [(f"recall: {s.scenario}", f"{_fmt(s.recall, True)} ({s.flagged}/{s.frauds})") for s in metrics.by_scenario]
    return rows


def write_report(metrics: EvaluationMetrics, path_dir: str | Path, title: str = "Model evaluation") -> Path:
    """Write ``report.md``, ``pr_curve.png`` and ``metrics.json`` into ``path_dir``; return report.md."""
    # lazy: matplotlib (1.3 s to import); txmon.models.training imports this module without it
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib (3.6 s to import); txmon.models.training imports this module without it
    import matplotlib.pyplot as plt

    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(metrics.model_dump_json(indent=2), encoding="utf-8")

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for name, curve in metrics.curves.items():
        ax.plot(curve.recall, curve.precision, label=name, drawstyle="steps-post")
    ax.axhline(metrics.fraud_rate, color="grey", linestyle=":", label=f"base rate {metrics.fraud_rate:.2%}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall")
    ax.legend(loc="lower left")
    if not metrics.curves:
        ax.text(0.5, 0.5, "undefined: no fraud (or only fraud)\nin the evaluation window", ha="center")
    fig.tight_layout()
    fig.savefig(out / "pr_curve.png")
    plt.close(fig)

    lines = [f"# {title}", ""]
    lines += [f"> {note}" for note in metrics.notes] + ([""] if metrics.notes else [])
    lines += ["| metric | value |", "| --- | --- |"] + [f"| {n} | {v} |" for n, v in metrics_table(metrics)]
    lines += [
        "",
        f"Policy: {', '.join(f'{k}={v}' for k, v in metrics.policy.items())}. Flagged = decision REVIEW or BLOCK.",
        "",
    ]
    if metrics.daily:
        lines += [
            f"## Daily precision@{metrics.k} (risk score, {metrics.tz} days)",
            "",
            "| day | accounts | accounts with fraud | precision |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {d.day} | {d.accounts:,} | {d.fraud_accounts:,} | {d.precision:.4f} |" for d in metrics.daily]
        lines.append("")
    if metrics.by_scenario:
        lines += ["## Recall per scenario", "", "| scenario | frauds | flagged | recall |", "| --- | --- | --- | --- |"]
        lines += [f"| {s.scenario} | {s.frauds} | {s.flagged} | {s.recall:.2%} |" for s in metrics.by_scenario]
        lines.append("")
    lines += ["![precision-recall curve](pr_curve.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
