"""Train a model bundle from labelled history: one fit function for every caller.

:func:`fit` is the one place models are fitted. ``txmon train`` (:func:`train_frame`:
the latest ``holdout_fraction`` of the history held out), ``txmon backtest``
(spark_jobs/backtest.py: an explicit training window, only labels known at its end) and
retraining (spark_jobs/retraining.py) all call it with the rows they may learn from and the
stream's rule scores of them (its rules file: :mod:`models.rule_engine` for the first and
the last, the same rules through Spark for the backtest), so the model the stream serves
is chosen and measured on the same risk whichever command trained it.

Inside :func:`fit`, time order again: the latest ``validation_fraction`` of the rows is
the validation slice (never random: the slice measures days the trees have not seen).

1. Supervised: HistGradientBoostingClassifier with balanced class weights (fraud is
   ~1% of traffic), on the earlier part. With enough frauds on both sides
   (``min_calibration_frauds``), each point of a small grid (learning rate, leaves,
   min_samples_leaf, l2) grows until the validation slice's average precision stops
   improving (early stopping out of time: scikit-learn's ``X_val``); the point whose
   calibrated probability gives the validation slice's served risk (with the rules'
   scores, when the caller gives them; anomaly left out) the best average precision wins,
   with its iteration count. Its validation AP over three seeds (mean, std, spread) is
   recorded; missing values (a field a source lacks) go down the side each split learned
   for them, no imputation. Below 200,000 rows the boosting draws nothing at random (no
   binning subsample, no feature subsampling, a fixed validation slice), so the seeds
   agree exactly; the seed moves the Isolation Forest, and the trees on larger data. With
   ``refit_all`` the chosen model is grown again on every row (the
   latest days matter most when fraud moves) with the chosen iteration count.
2. Calibration: weighting inflates probabilities, so they are mapped back to the real
   base rate by a Platt sigmoid fitted on the validation slice; with too few frauds to
   validate, the exact prior correction of the weights (``logit + log(n_fraud/n_legit)``)
   and the default hyperparameters. Both are monotone: they change the probability's
   scale, never the ranking. (Isotonic calibration lowered hold-out AP in our runs, by
   ties it creates; it is not used.)
   Then a logistic regression (median-filled, standardised features) is fitted on the
   same earlier part, and its probability is blended into the boosting's. The weight is
   judged on the score the bundle will serve: the validation slice's risk (the rules'
   scores of those rows, when the caller gives them, combined with each blend by the
   policy's noisy-OR, anomaly left out); the largest weight of ``linear_weights`` whose
   risk AP is within one bootstrap standard error of the best weight's is kept (0: none).
   Without rule scores, the weight with the best validation AP.
   The trees give one
   flat score to rows unlike the ones they learned from; the linear model keeps ordering
   them by every feature, which is what a fraud pattern with weak signals needs.
   Then a random forest (deep trees on bootstrap samples, median-filled features) is
   fitted on the same earlier part and blended into that probability (``forest_weights``)
   at the weight with the best validation risk AP: its average over many partitions of the
   rows grades what the boosting's few shallow trees score flat (docs/detection.md).
3. Unsupervised: Isolation Forest on the presumed-genuine rows, on log-transformed
   money/count features; its score is reported as the empirical CDF against those rows
   (0-1). Its weight in the risk score is the policy's ``anomaly_weight``
   (config/rules.yaml) where it adds: a forest fitted before the time cut scores the
   validation slice, and unless the risk there (rules included, where given) ranks better by average
   precision with the anomaly than without, by more than one bootstrap standard error of
   that AP, the bundle leaves it out of the risk score
   (``ModelBundle.anomaly_in_risk``). Every evaluation reports the risk with and without it.
4. Explanations: features ranked by the mean probability drop when occluded (set to
   the training median) over training frauds; the top ones are what ``explain`` tries.

Everything is seeded by ``TrainingConfig.seed``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import expit

from txmon.models.bundle import ForestPart, LinearPart, ModelBundle, anomaly_pipeline, feature_matrix
from txmon.models.dataset import labelled_features, time_split
from txmon.models.drift import ScoreReference
from txmon.models.errors import TrainingDataError
from txmon.models.evaluation import DEFAULT_K, EvaluationMetrics, evaluate_frame, ranking
from txmon.models.features import FEATURES
from txmon.models.metadata import ModelMetadata, SplitCounts, TimeWindow, library_versions
from txmon.models.risk import RiskPolicy, risk_values
from txmon.models.rule_engine import CompiledRules
from txmon.models.scoring import RuleScores, rule_scores_for, score_frame

if TYPE_CHECKING:
    from txmon.ingestion.events import TransactionEvent
    from txmon.ingestion.simulator import Label

__all__ = ["FitResult", "TrainingConfig", "TrainingResult", "fit", "train", "train_frame"]

_REFERENCE_QUANTILES = 1001
_IMPORTANCE_SAMPLE = 500
_SPREAD_SEEDS = 3  # seeds the chosen point is fitted with to measure its spread
_BOOTSTRAP_ROUNDS = 200  # resamples of the validation slice behind the blend's standard error


class TrainingConfig(BaseModel):
    """Knobs of one training run (recorded in the version's metadata)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 42
    holdout_fraction: float = Field(0.3, gt=0, lt=1, description="latest share of history `txmon train` holds out")
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="latest share of the training rows that tunes, stops and calibrates"
    )
    min_calibration_frauds: int = Field(20, ge=1, description="frauds needed on each side to validate out of time")
    max_iter: int = Field(300, ge=1, description="most boosting iterations (early stopping usually ends sooner)")
    learning_rate: float = Field(0.1, gt=0, le=1, description="used when there is too little fraud to tune")
    max_leaf_nodes: int = Field(31, ge=2)
    min_samples_leaf: int = Field(20, ge=1)
    l2_regularization: float = Field(0.0, ge=0)
    tune: bool = Field(True, description="search `grid` on the validation slice")
    grid: tuple[tuple[float, int, int, float], ...] = Field(
        ((0.1, 31, 20, 0.0), (0.05, 15, 100, 1.0), (0.05, 63, 50, 1.0), (0.1, 15, 20, 0.1)),
        description="(learning rate, max leaf nodes, min samples per leaf, l2) points: the old default, "
        "small regularised trees, large slow trees, small fast trees; a few points, as each "
        "costs a fit on 2 cores",
    )
    n_iter_no_change: int = Field(10, ge=1, description="iterations without validation gain before stopping")
    class_weight: Literal["balanced"] | None = Field(
        "balanced", description="weight fraud up to the genuine traffic's total (None: unweighted)"
    )
    refit_all: bool = Field(True, description="grow the chosen model again on every training row")
    seed_spread: bool = Field(
        True,
        description="fit the chosen point with 3 seeds and record the validation AP's "
        "mean, standard deviation and spread",
    )
    forest_weights: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5),
        description="weights of a random forest blended into that (boosting and logistic regression) probability; "
        "the one with the best validation risk AP is kept (0: no forest)",
    )
    forest_trees: int = Field(100, ge=1, description="trees of the blended random forest")
    forest_min_samples_leaf: int = Field(5, ge=1, description="fewest training rows in a leaf of the forest")
    linear_weights: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5),
        description="weights of a logistic regression blended into the boosting's probability; the largest "
        "whose validation risk AP is within one standard error of the best weight's is kept (without rule "
        "scores: the best; 0: the boosting alone)",
    )
    iforest_estimators: int = Field(100, ge=1)
    explain_top_n: int = Field(12, ge=1, le=len(FEATURES))
    k: int = Field(DEFAULT_K, ge=1, description="precision@k of the hold-out report")

    def points(self) -> list[dict]:
        """The hyperparameter points :func:`fit` tries, in a fixed order."""
        if not self.tune:
            return [self.defaults()]
        return [
            {"learning_rate": lr, "max_leaf_nodes": int(leaves), "min_samples_leaf": int(leaf), "l2_regularization": l2}
            for lr, leaves, leaf, l2 in self.grid
        ]

    def defaults(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "max_leaf_nodes": self.max_leaf_nodes,
            "min_samples_leaf": self.min_samples_leaf,
            "l2_regularization": self.l2_regularization,
        }


@dataclass
class FitResult:
    """What :func:`fit` learned and how it chose (``info`` goes into the metadata's params)."""

    bundle: ModelBundle
    calibration: str
    info: dict = field(default_factory=dict)


@dataclass
class TrainingResult:
    bundle: ModelBundle
    metadata: ModelMetadata
    holdout: pd.DataFrame
    """The hold-out, scored (features, labels, fraud_probability, anomaly, risk_score, decision)."""
    evaluation: EvaluationMetrics


def _classifier(params: dict, max_iter: int, seed: int, config: TrainingConfig, early: bool = False):
    # scikit-learn (the slowest import here) only when a model is fitted.
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=max_iter,
        class_weight=config.class_weight,
        early_stopping=early,
        scoring="average_precision",
        n_iter_no_change=config.n_iter_no_change,
        random_state=seed,
        **params,
    )


def _ap(y: np.ndarray, score: np.ndarray) -> float:
    # lazy: sklearn (3.8 s to import); txmon.spark_jobs.backtest imports this module without it
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, score))


def _platt(logit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) maximising the likelihood of y under expit(a * logit + b)."""
    # lazy: sklearn (4.1 s to import); txmon.spark_jobs.backtest imports this module without it
    from sklearn.linear_model import LogisticRegression

    fit_ = LogisticRegression(C=1e6, max_iter=1000).fit(logit.reshape(-1, 1), y)
    return float(fit_.coef_[0, 0]), float(fit_.intercept_[0])


def _validation_cut(rows: pd.DataFrame, fraction: float) -> np.ndarray:
    """True for the rows that fit (before the time cut), False for the validation slice."""
    times = rows["event_time"]
    cut = times.iloc[min(len(rows) - 1, int(len(rows) * (1 - fraction)))]
    return (times < cut).to_numpy()


def _learnable(x: np.ndarray) -> np.ndarray:
    """``x`` with every column that is missing on all its rows set to 0.

    A field the source never has (no device id on card data) is NaN on every row, and
    scikit-learn 1.9's binning fails on a column with no value at all ("window shape
    cannot be larger than input array shape"). A constant column gets no split either, so
    the trees are the same as if the column were ignored, and scoring it later as NaN (the
    stream's value for it) goes through no node that reads it."""
    empty = np.isnan(x).all(axis=0)
    if not empty.any():
        return x
    out = x.copy()
    out[:, empty] = 0.0
    return out


def _median_filled(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``x`` with every missing or non-finite value replaced by its column's median, the
    medians): what the blended linear model and forest are fitted on."""
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": the column's fill is then 0
        fill = np.nan_to_num(np.nanmedian(x, axis=0)) if len(x) else np.zeros(x.shape[1])
    return np.where(np.isnan(x), fill, x), fill


def _fit_linear(x: np.ndarray, y: np.ndarray) -> LinearPart:
    """A logistic regression on median-filled, standardised features (LinearPart's arithmetic)."""
    # lazy: sklearn (4.1 s to import); txmon.spark_jobs.backtest imports this module without it
    from sklearn.linear_model import LogisticRegression

    filled, fill = _median_filled(x)
    mean, scale = filled.mean(axis=0), filled.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(max_iter=2000).fit((filled - mean) / scale, y)
    return LinearPart(
        fill=fill, mean=mean, scale=scale, coef=model.coef_[0].copy(), intercept=float(model.intercept_[0])
    )


def _ap_standard_error(y: np.ndarray, score: np.ndarray) -> float:
    """Standard error of the average precision of ``score`` on these rows: its standard
    deviation over bootstrap resamples of the rows (fixed draws, so that a choice made
    with it does not move with the training seed)."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(_BOOTSTRAP_ROUNDS):
        i = rng.integers(0, len(y), len(y))
        if y[i].any():
            values.append(_ap(y[i], score[i]))
    return float(np.std(values)) if len(values) > 1 else 0.0


def _blend(
    x: np.ndarray,
    y: np.ndarray,
    fit_part: np.ndarray,
    boosted_validation: np.ndarray,
    config: TrainingConfig,
    rule_validation: np.ndarray | None = None,
    policy: RiskPolicy | None = None,
) -> tuple[LinearPart | None, float, dict, np.ndarray]:
    """The linear model's weight, judged on the validation slice's risk score (the
    boosting's calibrated probability there given; ``rule_validation``: the rules' scores
    of those rows, 0 when None), the linear model refitted on every row when it is kept,
    and the chosen blend's validation probability."""
    weights = sorted(set(config.linear_weights))
    if weights == [0.0]:
        return None, 0.0, {}, boosted_validation
    linear = _fit_linear(x[fit_part], y[fit_part])
    linear_validation = linear.probability(x[~fit_part])
    yv = y[~fit_part]
    # Judged on the risk the bundle will serve, not on the probability: with the rules'
    # noisy-OR, a blend that lowers the frauds' probabilities lets legitimate payments
    # that fired a rule outrank them (on the simulator the even blend kept the model's AP
    # and cost the risk score 0.05 AP against a quarter blend). The anomaly is left out:
    # whether it belongs in the risk is decided afterwards, on the chosen blend.
    served = _served_risk(rule_validation, len(yv), policy)
    weight, info, blended = _member_weight(
        "linear", weights, boosted_validation, linear_validation, yv, served, rule_validation is not None
    )
    if weight == 0.0:
        return None, 0.0, info, boosted_validation
    return (_fit_linear(x, y) if config.refit_all else linear), weight, info, blended


def _member_weight(
    name: str,
    weights: Sequence[float],
    base_validation: np.ndarray,
    member_validation: np.ndarray,
    yv: np.ndarray,
    served,
    judged_with_rules: bool,
    one_se: bool = True,
) -> tuple[float, dict, np.ndarray]:
    """The weight of a model blended into ``base_validation`` (the validation slice's
    probability so far), judged on the served risk (``served``: :func:`_served_risk`):
    (weight, what was measured under ``{name}_...`` keys, the chosen blend's probability).
    ``one_se``: with the rules' scores, the largest weight within one standard error of the
    best (below); otherwise the best validation risk AP (the smaller weight on a tie)."""
    # lazy: sklearn (3.8 s to import); txmon.spark_jobs.backtest imports this module without it
    from sklearn.metrics import roc_auc_score

    blended = {w: (1.0 - w) * base_validation + w * member_validation for w in weights}
    risks = {w: served(p) for w, p in blended.items()}
    aps = {w: _ap(yv, r) for w, r in risks.items()}
    aucs = {w: float(roc_auc_score(yv, r)) for w, r in risks.items()}
    # The one-standard-error rule: the largest weight whose validation risk AP is within
    # one standard error of the best weight's. The slice is the end of the training window,
    # right after the rows the trees learned from (~100 frauds on a week of card data):
    # it flatters the trees, and its AP differences between weights, a few thousandths,
    # are inside its noise. Where the slice cannot tell them apart, the blend of two
    # different models holds up better a week later than the trees alone, which rank rows
    # unlike their training mix below random (docs/detection.md, "The supervised model").
    # Without the rules' scores (a caller with no rules) the served risk cannot be judged,
    # and the rule's larger weights are what cost the simulator's risk score: there the
    # best validation AP decides.
    best = max(weights, key=lambda w: (round(aps[w], 6), -w))
    info = {
        f"{name}_weight": best,
        f"{name}_best_validation_weight": best,
        f"{name}_judged_with_rules": judged_with_rules,
        f"{name}_validation_ap": {str(w): round(a, 6) for w, a in aps.items()},
        f"{name}_validation_auc": {str(w): round(a, 6) for w, a in aucs.items()},
    }
    weight = best
    if judged_with_rules and one_se:  # the bootstrap (200 APs) only where the rule uses it
        error = _ap_standard_error(yv, risks[best])
        weight = info[f"{name}_weight"] = max(w for w in weights if aps[best] - aps[w] <= error)
        info[f"{name}_validation_ap_se"] = round(error, 6)
    return weight, info, blended[weight]


def _fit_forest(x: np.ndarray, y: np.ndarray, config: TrainingConfig) -> ForestPart:
    """A random forest on median-filled features (ForestPart's arithmetic), seeded."""
    # lazy: sklearn (4.1 s to import); txmon.spark_jobs.backtest imports this module without it
    from sklearn.ensemble import RandomForestClassifier

    filled, fill = _median_filled(x)
    forest = RandomForestClassifier(
        n_estimators=config.forest_trees,
        min_samples_leaf=config.forest_min_samples_leaf,
        random_state=config.seed,
        n_jobs=-1,
    ).fit(filled, y)
    return ForestPart(forest, fill)


def _forest_blend(
    x: np.ndarray,
    y: np.ndarray,
    fit_part: np.ndarray,
    validation: np.ndarray,
    config: TrainingConfig,
    rule_validation: np.ndarray | None,
    policy: RiskPolicy | None,
) -> tuple[ForestPart | None, float, dict, np.ndarray]:
    """The random forest's weight in the blend, judged as the linear model's is, on top of
    ``validation`` (the boosting and linear blend's validation probability)."""
    weights = sorted(set(config.forest_weights))
    if weights == [0.0]:
        return None, 0.0, {}, validation
    forest = _fit_forest(x[fit_part], y[fit_part], config)
    yv = y[~fit_part]
    served = _served_risk(rule_validation, len(yv), policy)
    # The best validation risk AP, not the one-SE rule: the forest is a second set of trees,
    # not a model of another kind, so there is no reason to lean towards it when the slice
    # cannot tell; on the simulator the one-SE rule took it at 0.25 where the slice ranked it
    # worse (AP 0.891 against 0.900), and a week later the risk lost 0.008 AP and 3 points
    # of recall at 1 % alerts (docs/decisions/forest-variants-in-the-blend.md).
    weight, info, blended = _member_weight(
        "forest",
        weights,
        validation,
        forest.probability(x[~fit_part]),
        yv,
        served,
        rule_validation is not None,
        one_se=False,
    )
    info["forest_hyperparameters"] = {
        "n_estimators": config.forest_trees,
        "min_samples_leaf": config.forest_min_samples_leaf,
        "max_features": "sqrt",
    }
    if weight == 0.0:
        return None, 0.0, info, validation
    return (_fit_forest(x, y, config) if config.refit_all else forest), weight, info, blended


@dataclass
class _Supervised:
    """What :func:`_fit_supervised` learned, and the validation slice's probabilities that
    later choices (the Isolation Forest's place in the risk score) are judged on."""

    classifier: object
    platt: tuple[float, float]
    calibration: str
    info: dict
    linear: LinearPart | None
    fit_part: np.ndarray | None = None
    """True for the rows fitted before the time cut; None when there was no validation slice."""
    validation_probability: np.ndarray | None = None
    """The chosen model's calibrated (and blended) probability on the validation slice."""
    rule_validation: np.ndarray | None = None
    """The rules' scores of the validation slice's rows (None: no rules given)."""
    forest: ForestPart | None = None
    forest_weight: float = 0.0


def _fit_supervised(
    rows: pd.DataFrame, config: TrainingConfig, rules: RuleScores = None, policy: RiskPolicy | None = None
) -> _Supervised:
    x, y = feature_matrix(rows), rows["is_fraud"].to_numpy(dtype=bool)
    fit_part = _validation_cut(rows, config.validation_fraction)
    need = config.min_calibration_frauds
    if not (y[fit_part].sum() >= need and y[~fit_part].sum() >= need):
        params = config.defaults()
        model = _classifier(params, config.max_iter, config.seed, config).fit(_learnable(x), y)
        # The exact prior correction of balanced weights; unweighted trees need none.
        platt = (1.0, float(np.log(y.sum() / (len(y) - y.sum()))) if config.class_weight else 0.0)
        return _Supervised(
            model,
            platt,
            f"prior correction (fewer than {need} frauds to validate out of time)",
            {
                "hyperparameters": params,
                "boosting_iterations": int(model.n_iter_),
                "tuned": False,
                "fit_rows": len(y),
                "validation_rows": 0,
            },
            None,
        )
    xf, yf, xv, yv = _learnable(x[fit_part]), y[fit_part], x[~fit_part], y[~fit_part]
    rule_validation = None if rules is None else _validation_rules(rows, fit_part, rules)
    served = _served_risk(rule_validation, len(yv), policy)
    tried, models, platts, calibrated = [], [], [], []
    for params in config.points():
        # Early stopping on the validation slice (X_val): time-based, never a random split.
        model = _classifier(params, config.max_iter, config.seed, config, early=True).fit(xf, yf, X_val=xv, y_val=yv)
        logit = model.decision_function(xv)
        platts.append(_platt(logit, yv))
        calibrated.append(expit(platts[-1][0] * logit + platts[-1][1]))
        models.append(model)
        tried.append(
            {
                **params,
                "iterations": int(model.n_iter_),
                "validation_ap": round(_ap(yv, logit), 6),
                "validation_risk_ap": round(_ap(yv, served(calibrated[-1])), 6),
            }
        )
    # Chosen on the risk the bundle will serve, as the blend and the forest are: where a
    # rule fires the model only adds to it, so the point that ranks the model's own rows
    # best is not always the one that ranks the served risk best. Without rule scores the
    # risk orders rows as the probability does, and the two measures choose alike.
    chosen = max(range(len(tried)), key=lambda i: tried[i]["validation_risk_ap"])  # first of equals: grid order
    fitted, best, platt, boosted_validation = models[chosen], tried[chosen], platts[chosen], calibrated[chosen]
    params = {k: best[k] for k in ("learning_rate", "max_leaf_nodes", "min_samples_leaf", "l2_regularization")}
    iters = best["iterations"]
    info = {
        "hyperparameters": params,
        "boosting_iterations": iters,
        "tuned": config.tune,
        "grid": tried,
        "fit_rows": int(fit_part.sum()),
        "validation_rows": int((~fit_part).sum()),
        "validation_frauds": int(yv.sum()),
        "validation_ap": best["validation_ap"],
    }
    if config.seed_spread:
        aps = [best["validation_ap"]] + [
            _ap(
                yv,
                _classifier(params, config.max_iter, config.seed + i, config, early=True)
                .fit(xf, yf, X_val=xv, y_val=yv)
                .decision_function(xv),
            )
            for i in range(1, _SPREAD_SEEDS)
        ]
        info["seed_validation_ap"] = [round(a, 6) for a in aps]
        info["seed_ap_mean"] = round(float(np.mean(aps)), 6)
        info["seed_ap_std"] = round(float(np.std(aps)), 6)
        info["seed_ap_spread"] = round(max(aps) - min(aps), 6)
    model = _classifier(params, iters, config.seed, config).fit(_learnable(x), y) if config.refit_all else fitted
    how = "platt sigmoid on the latest training slice" + (
        " (trees then grown again on every training row)" if config.refit_all else ""
    )
    linear, weight, blend_info, validation_probability = _blend(
        x, y, fit_part, boosted_validation, config, rule_validation, policy
    )
    info.update(blend_info)
    if linear is not None:
        how += f"; a logistic regression blended in at weight {weight}"
    forest, forest_weight, forest_info, validation_probability = _forest_blend(
        x, y, fit_part, validation_probability, config, rule_validation, policy
    )
    info.update(forest_info)
    if forest is not None:
        how += f"; a random forest blended in at weight {forest_weight}"
    return _Supervised(
        model, platt, how, info, linear, fit_part, validation_probability, rule_validation, forest, forest_weight
    )


def _served_risk(rule_validation: np.ndarray | None, n: int, policy: RiskPolicy | None):
    """(probability, anomaly) -> the validation slice's risk as the bundle would serve it:
    the rules' scores of those rows (0 when None) by the policy's noisy-OR; the anomaly is
    left out (0, which its weight cannot raise) unless given."""
    policy = policy or RiskPolicy()
    zero = np.zeros(n)
    rules = zero if rule_validation is None else np.asarray(rule_validation, dtype=float)
    return lambda probability, anomaly=zero: risk_values(rules, probability, anomaly, policy)


def _validation_rules(rows: pd.DataFrame, fit_part: np.ndarray, rules: RuleScores) -> np.ndarray:
    """The rules' scores (0-100) of the validation slice's rows: a callable is given only
    those rows (a Spark pass over the whole window would be wasted), any other form of
    :data:`models.scoring.RuleScores` is resolved against every row of ``rows`` (in the
    order :func:`fit` sorted them) and cut."""
    if callable(rules) and not isinstance(rules, (pd.Series, Mapping)):
        return rule_scores_for(rows[~fit_part].reset_index(drop=True), rules)
    return rule_scores_for(rows, rules)[~fit_part]


def _anomaly_reference(model, genuine: np.ndarray) -> np.ndarray:
    """Quantiles of the fitted forest's anomaly scores over ``genuine``: the empirical CDF
    that ModelBundle.anomaly maps a score through."""
    return np.quantile(-model.score_samples(genuine), np.linspace(0, 1, _REFERENCE_QUANTILES))


def _adds_beyond_noise(y: np.ndarray, ap_with: float, ap_without: float, score_with: np.ndarray) -> tuple[bool, float]:
    """Whether a part raises the validation AP (``ap_without`` -> ``ap_with``) by more than
    one bootstrap standard error of the AP with it, and that error.

    The rule the blends' weights follow, for a part that is in or out: a few
    ten-thousandths of AP on the slice's ~100 frauds is noise, and an Isolation Forest kept
    on noise cost 0.008 ROC-AUC a week later on public card data (docs/detection.md)."""
    error = _ap_standard_error(y, score_with)
    return round(ap_with - ap_without, 6) > round(error, 6), error


def _anomaly_choice(
    x: np.ndarray, y: np.ndarray, supervised: _Supervised, config: TrainingConfig, policy: RiskPolicy
) -> tuple[bool, dict]:
    """Whether the Isolation Forest belongs in this bundle's risk score: the validation
    slice's served risk (its rules' scores included, where given) with the policy's anomaly
    weight against without it, by average
    precision, as the other choices are made; a forest fitted on the genuine rows before
    the time cut scores the slice. Kept where there is nothing to judge by."""
    fit_part, probability = supervised.fit_part, supervised.validation_probability
    if policy.anomaly_weight <= 0 or fit_part is None or probability is None:
        return True, {}
    genuine = x[fit_part & ~y]
    forest = anomaly_pipeline(config.iforest_estimators, config.seed).fit(genuine)
    reference = _anomaly_reference(forest, genuine)
    anomaly = np.interp(-forest.score_samples(x[~fit_part]), reference, np.linspace(0.0, 1.0, len(reference)))
    yv = y[~fit_part]
    served = _served_risk(supervised.rule_validation, len(probability), policy)
    # lazy: sklearn (3.8 s to import); txmon.spark_jobs.backtest imports this module without it
    from sklearn.metrics import roc_auc_score

    scores = {"with": served(probability, anomaly), "without": served(probability)}
    aps = {k: _ap(yv, v) for k, v in scores.items()}
    aucs = {k: float(roc_auc_score(yv, v)) for k, v in scores.items()}
    keep, error = _adds_beyond_noise(yv, aps["with"], aps["without"], scores["with"])
    return keep, {
        "anomaly_in_risk": keep,
        "anomaly_validation_ap": {k: round(v, 6) for k, v in aps.items()},
        "anomaly_validation_ap_se": round(error, 6),
        "anomaly_validation_auc": {k: round(v, 6) for k, v in aucs.items()},
        "anomaly_judged_at_weight": policy.anomaly_weight,
        "anomaly_judged_with_rules": supervised.rule_validation is not None,
    }


def fit(
    rows: pd.DataFrame,
    config: TrainingConfig = TrainingConfig(),
    policy: RiskPolicy | None = None,
    rules: RuleScores = None,
) -> FitResult:
    """Fit both models on ``rows``: labelled feature rows the caller may learn from (every
    label known), any order. ``policy``: the risk policy the bundle will score under (its
    anomaly weight is what the Isolation Forest is judged at; default RiskPolicy()).
    ``rules``: the rule scores of ``rows`` (:data:`models.scoring.RuleScores`; a callable
    is given the validation slice only), so that the blend is judged on the risk the
    bundle will serve (None: the blend with the best validation AP of the probability).
    Raises TrainingDataError when they cannot train a model."""
    rows = rows.reset_index(drop=True)
    ordered = rows.sort_values("event_time", kind="mergesort")
    if rules is not None and not callable(rules) and not isinstance(rules, (pd.Series, Mapping)):
        rules = rule_scores_for(rows, rules)[ordered.index.to_numpy()]  # aligned with the rows as given
    rows = ordered.reset_index(drop=True)
    y = rows["is_fraud"].to_numpy(dtype=bool)
    if not y.any():
        raise TrainingDataError(
            f"the training window ({len(rows)} transactions with known labels, up to {rows['event_time'].max()}) "
            "has no confirmed fraud, so the supervised model has nothing to learn from; "
            "use a longer labelled history"
        )
    if y.all():
        raise TrainingDataError("every transaction in the training window is fraud; check the label mapping")
    supervised = _fit_supervised(rows, config, rules, policy)
    info, linear = supervised.info, supervised.linear
    x = feature_matrix(rows)
    anomaly_in_risk, anomaly_info = _anomaly_choice(x, y, supervised, config, policy or RiskPolicy())
    info.update(anomaly_info)
    genuine = x[~y]
    anomaly_model = anomaly_pipeline(config.iforest_estimators, config.seed).fit(genuine)
    reference = _anomaly_reference(anomaly_model, genuine)
    # Medians ignore missing values (a feature a source lacks is NaN on every row: then 0).
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": the column's median is then 0
        medians = np.nan_to_num(np.nanmedian(x, axis=0)) if len(x) else np.zeros(len(FEATURES))
    bundle = ModelBundle(
        classifier=supervised.classifier,
        platt=supervised.platt,
        anomaly_model=anomaly_model,
        anomaly_reference=reference,
        medians=medians,
        explain_features=FEATURES,
        linear=linear,
        linear_weight=float(info.get("linear_weight", 0.0)) if linear is not None else 0.0,
        forest=supervised.forest,
        forest_weight=supervised.forest_weight,
        anomaly_in_risk=anomaly_in_risk,
    )
    bundle.explain_features = _explain_order(bundle, rows, config)
    info["platt"] = list(supervised.platt)
    info["explain_features"] = list(bundle.explain_features)
    calibration = supervised.calibration
    if not anomaly_in_risk:
        calibration += "; the Isolation Forest left out of the risk score (it lowered the validation AP)"
    return FitResult(bundle=bundle, calibration=calibration, info=info)


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
    return TimeWindow(
        start=frame["event_time"].min().to_pydatetime(warn=False),
        end=frame["event_time"].max().to_pydatetime(warn=False),
    )


def train_frame(
    frame: pd.DataFrame,
    config: TrainingConfig = TrainingConfig(),
    *,
    data_source: str,
    policy: RiskPolicy | None = None,
    rules: CompiledRules | None = None,
) -> TrainingResult:
    """Train on a labelled feature frame (see :func:`models.dataset.labelled_features`):
    the earliest ``1 - holdout_fraction`` by time fits (:func:`fit`), the rest is scored
    exactly as the stream will (:func:`models.scoring.score_frame`) and every metric of
    :mod:`models.evaluation` goes into the metadata.

    ``rules``: the stream's rules (:func:`models.rule_engine.compile_rules` of its rules
    file). They judge the blend on the validation slice's served risk and score the
    hold-out, so the risk metrics are the stream's risk; the metadata's params name their
    version (``rules_version``). None: rule score 0 everywhere (the model alone)."""
    policy = policy or RiskPolicy()
    train_set, holdout = time_split(frame, config.holdout_fraction)
    rule_scores = None if rules is None else rules.scores
    fitted = fit(train_set, config, policy, rules=rule_scores)
    scored = score_frame(holdout, fitted.bundle, policy, rules=rule_scores)
    fitted.bundle.drift_reference = ScoreReference.from_frame(scored)  # out-of-sample scores, per hour
    evaluation = evaluate_frame(scored, config.k, policy)
    metrics = holdout_metrics(scored, evaluation, fitted.bundle, policy, config.k)
    y = train_set["is_fraud"].to_numpy(dtype=bool)
    metadata = ModelMetadata(
        features=FEATURES,
        train_window=_window(train_set),
        holdout_window=_window(holdout),
        rows=SplitCounts(train=len(train_set), holdout=len(holdout)),
        frauds=SplitCounts(train=int(y.sum()), holdout=int(scored["is_fraud"].sum())),
        metrics=metrics,
        notes=evaluation.notes,
        calibration=fitted.calibration,
        libraries=library_versions(),
        data_source=data_source,
        seed=config.seed,
        params={
            **config.model_dump(),
            **fitted.info,
            "policy": policy.model_dump(),
            "rules_version": None if rules is None else rules.label,
        },
    )
    return TrainingResult(bundle=fitted.bundle, metadata=metadata, holdout=scored, evaluation=evaluation)


def holdout_metrics(
    scored: pd.DataFrame, evaluation: EvaluationMetrics, bundle: ModelBundle, policy: RiskPolicy, k: int
) -> dict:
    """The evaluation's summary plus the model's Brier score and the risk score without
    and with the anomaly model at the policy's weight (so every report shows whether the
    Isolation Forest adds, whichever the bundle chose)."""
    metrics = evaluation.summary()
    y = scored["is_fraud"].to_numpy(dtype=bool)
    metrics["model_brier"] = float(np.mean((scored["fraud_probability"].to_numpy() - y) ** 2)) if len(y) else None
    parts = (scored["rule_score"], scored["fraud_probability"], scored["anomaly"])
    for name, weight in (("without", 0.0), ("with", policy.anomaly_weight)):
        variant = scored.assign(_risk=risk_values(*parts, policy.model_copy(update={"anomaly_weight": weight})))
        measured = ranking(variant, "_risk", k, evaluation.tz, evaluation.fixed_alert_rate)
        metrics[f"risk_{name}_anomaly_average_precision"] = measured.average_precision
        metrics[f"risk_{name}_anomaly_roc_auc"] = measured.roc_auc
        metrics[f"risk_{name}_anomaly_card_precision_at_{k}"] = measured.card_precision_at_k
    return metrics


def train(
    events: Sequence[TransactionEvent],
    labels: Sequence[Label],
    config: TrainingConfig = TrainingConfig(),
    *,
    data_source: str,
    policy: RiskPolicy | None = None,
    rules: CompiledRules | None = None,
) -> TrainingResult:
    """Labelled history (contract events + their labels) -> bundle, metadata, scored hold-out
    (:func:`train_frame`, ``rules`` included)."""
    return train_frame(labelled_features(events, labels), config, data_source=data_source, policy=policy, rules=rules)
