"""Train a model bundle from labelled history, with an honest time-based hold-out.

1. Features for the whole history (:func:`models.dataset.labelled_features`).
2. Split by event time: the earliest ~70% trains, the latest ~30% is held out; never
   random, so the hold-out measures the model on days it has not seen.
3. Supervised: HistGradientBoostingClassifier with balanced class weights (fraud is
   ~1% of traffic). Weighting inflates probabilities, so they are mapped back to the
   real base rate: with enough frauds, a Platt sigmoid fitted on the latest slice of
   the training window (the model is fitted on the earlier part; time order again);
   otherwise the exact prior correction of the weights (``logit + log(n_fraud/n_legit)``).
   Both are monotone: they change the probability's scale, never the ranking, so
   average precision is what the boosting model earns. (Isotonic calibration lowered
   hold-out AP in our runs, by ties it creates; it is not used.)
4. Unsupervised: Isolation Forest on the training window's presumed-genuine rows, on
   log-transformed money/count features; its score is reported as the empirical CDF
   against those rows (0-1).
5. Explanations: features ranked by the mean probability drop when occluded (set to
   the training median) over training frauds; the top ones are what ``explain`` tries.
6. The hold-out is scored exactly as the stream will (:func:`models.scoring.score_frame`,
   rule score 0) and every metric of :mod:`models.evaluation` goes into the metadata.

Everything is seeded by ``TrainingConfig.seed``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models.bundle import ModelBundle, anomaly_pipeline, feature_matrix
from models.dataset import labelled_features, time_split
from models.errors import TrainingDataError
from models.drift import ScoreReference
from models.evaluation import EvaluationMetrics, evaluate_frame
from models.metadata import ModelMetadata, SplitCounts, TimeWindow, library_versions
from models.risk import RiskPolicy
from models.scoring import score_frame
from spark_jobs.features import FEATURES

if TYPE_CHECKING:
    from ingestion.events import TransactionEvent
    from ingestion.simulator import Label

__all__ = ["TrainingConfig", "TrainingResult", "train", "train_frame"]

_REFERENCE_QUANTILES = 1001
_IMPORTANCE_SAMPLE = 500


class TrainingConfig(BaseModel):
    """Knobs of one training run (recorded in the version's metadata)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 42
    holdout_fraction: float = Field(0.3, gt=0, lt=1, description="latest share of history held out")
    calibration_fraction: float = Field(0.2, gt=0, lt=1,
                                        description="latest share of the training window that fits the sigmoid")
    min_calibration_frauds: int = Field(20, ge=1, description="frauds needed on each side to fit a sigmoid")
    max_iter: int = Field(300, ge=1)
    learning_rate: float = Field(0.1, gt=0, le=1)
    max_leaf_nodes: int = Field(31, ge=2)
    min_samples_leaf: int = Field(20, ge=1)
    l2_regularization: float = Field(0.0, ge=0)
    iforest_estimators: int = Field(100, ge=1)
    explain_top_n: int = Field(12, ge=1, le=len(FEATURES))
    k: int = Field(100, ge=1, description="precision@k of the hold-out report")


@dataclass
class TrainingResult:
    bundle: ModelBundle
    metadata: ModelMetadata
    holdout: pd.DataFrame
    """The hold-out, scored (features, labels, fraud_probability, anomaly, risk_score, decision)."""
    evaluation: EvaluationMetrics


def _classifier(config: TrainingConfig, rows: int, frauds: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    early = rows >= 10_000 and frauds >= 50  # a stratified 10% validation set needs frauds in it
    return HistGradientBoostingClassifier(
        max_iter=config.max_iter, learning_rate=config.learning_rate, max_leaf_nodes=config.max_leaf_nodes,
        min_samples_leaf=config.min_samples_leaf, l2_regularization=config.l2_regularization,
        class_weight="balanced", early_stopping=early, validation_fraction=0.1 if early else None,
        n_iter_no_change=10, random_state=config.seed)


def _platt(logit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) maximising the likelihood of y under expit(a * logit + b)."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e6, max_iter=1000).fit(logit.reshape(-1, 1), y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def _fit_supervised(train: pd.DataFrame, config: TrainingConfig) -> tuple[object, tuple[float, float], dict]:
    x, y = feature_matrix(train), train["is_fraud"].to_numpy(dtype=bool)
    times = train["event_time"]
    cut = times.iloc[min(len(train) - 1, int(len(train) * (1 - config.calibration_fraction)))]
    fit_part = (times < cut).to_numpy()
    need = config.min_calibration_frauds
    if y[fit_part].sum() >= need and y[~fit_part].sum() >= need:
        model = _classifier(config, int(fit_part.sum()), int(y[fit_part].sum())).fit(x[fit_part], y[fit_part])
        platt = _platt(model.decision_function(x[~fit_part]), y[~fit_part])
        info = {"calibration": "platt sigmoid on the latest training slice",
                "fit_rows": int(fit_part.sum()), "calibration_rows": int((~fit_part).sum())}
    else:
        model = _classifier(config, len(y), int(y.sum())).fit(x, y)
        platt = (1.0, float(np.log(y.sum() / (len(y) - y.sum()))))
        info = {"calibration": f"prior correction (fewer than {need} frauds to fit a sigmoid out of time)",
                "fit_rows": len(y), "calibration_rows": 0}
    info["boosting_iterations"] = int(model.n_iter_)
    return model, platt, info


def _explain_order(bundle: ModelBundle, train: pd.DataFrame, config: TrainingConfig) -> tuple[str, ...]:
    """Features by mean probability drop under occlusion over (a sample of) training frauds."""
    fraud = train[train["is_fraud"].astype(bool)]
    if len(fraud) > _IMPORTANCE_SAMPLE:
        fraud = fraud.sample(_IMPORTANCE_SAMPLE, random_state=config.seed)
    x = feature_matrix(fraud)
    n, d = x.shape
    occluded = np.broadcast_to(x, (d, n, d)).copy()
    occluded[np.arange(d), :, np.arange(d)] = bundle.medians[:, None]
    drops = bundle.probability(x)[None, :] - bundle.probability(occluded.reshape(-1, d)).reshape(d, n)
    order = np.argsort(-drops.mean(axis=1), kind="stable")
    return tuple(FEATURES[i] for i in order[: config.explain_top_n])


def _window(frame: pd.DataFrame) -> TimeWindow:
    return TimeWindow(start=frame["event_time"].min().to_pydatetime(warn=False), end=frame["event_time"].max().to_pydatetime(warn=False))


def train_frame(frame: pd.DataFrame, config: TrainingConfig = TrainingConfig(), *, data_source: str,
                policy: RiskPolicy | None = None) -> TrainingResult:
    """Train on a labelled feature frame (see :func:`models.dataset.labelled_features`)."""
    policy = policy or RiskPolicy()
    train_set, holdout = time_split(frame, config.holdout_fraction)
    y = train_set["is_fraud"].to_numpy(dtype=bool)
    if not y.any():
        raise TrainingDataError(
            f"the training window ({len(train_set)} earliest transactions, up to {train_set['event_time'].max()}) "
            "has no confirmed fraud, so the supervised model has nothing to learn from; "
            "use a longer labelled history")
    if y.all():
        raise TrainingDataError("every transaction in the training window is fraud; check the label mapping")

    classifier, platt, info = _fit_supervised(train_set, config)
    x = feature_matrix(train_set)
    genuine = x[~y]
    anomaly_model = anomaly_pipeline(config.iforest_estimators, config.seed).fit(genuine)
    reference = np.quantile(-anomaly_model.score_samples(genuine), np.linspace(0, 1, _REFERENCE_QUANTILES))
    bundle = ModelBundle(classifier=classifier, platt=platt, anomaly_model=anomaly_model,
                         anomaly_reference=reference, medians=np.median(x, axis=0), explain_features=FEATURES)
    bundle.explain_features = _explain_order(bundle, train_set, config)

    scored = score_frame(holdout, bundle, policy)
    bundle.drift_reference = ScoreReference.from_frame(scored)  # out-of-sample scores, per hour
    evaluation = evaluate_frame(scored, config.k, policy)
    metrics = evaluation.summary()
    yh = scored["is_fraud"].to_numpy(dtype=bool)
    metrics["model_brier"] = float(np.mean((scored["fraud_probability"].to_numpy() - yh) ** 2))
    metadata = ModelMetadata(
        features=FEATURES, train_window=_window(train_set), holdout_window=_window(holdout),
        rows=SplitCounts(train=len(train_set), holdout=len(holdout)),
        frauds=SplitCounts(train=int(y.sum()), holdout=int(yh.sum())),
        metrics=metrics, notes=evaluation.notes, calibration=info["calibration"],
        libraries=library_versions(), data_source=data_source, seed=config.seed,
        params={**config.model_dump(), **{k: v for k, v in info.items() if k != "calibration"},
                "platt": list(platt), "explain_features": list(bundle.explain_features),
                "policy": policy.model_dump()},
    )
    return TrainingResult(bundle=bundle, metadata=metadata, holdout=scored, evaluation=evaluation)


def train(events: Sequence["TransactionEvent"], labels: Sequence["Label"],
          config: TrainingConfig = TrainingConfig(), *, data_source: str,
          policy: RiskPolicy | None = None) -> TrainingResult:
    """Labelled history (contract events + their labels) -> bundle, metadata, scored hold-out."""
    return train_frame(labelled_features(events, labels), config, data_source=data_source, policy=policy)
