"""The model bundle: supervised classifier + anomaly detector + what scoring needs, in one object.

One bundle is what the registry stores (``model.joblib``) and what Spark broadcasts
once (:meth:`ModelBundle.to_bytes`). Scoring is vectorised over a pandas frame that
has the :data:`~models.features.FEATURES` columns:

- ``fraud_probability``: the class-weighted gradient-boosting model's logit, mapped
  by a Platt sigmoid ``expit(a * logit + b)`` fitted out of time (or, with too few
  frauds to fit one, the exact prior correction of the class weights), so it is a
  probability on the real base rate, which the noisy-OR in :mod:`models.risk` needs;
  blended with a logistic regression's probability (:class:`LinearPart`) when that
  ranked the validation slice better.
- ``anomaly``: the Isolation Forest's score as its empirical CDF over the training
  traffic: 0.9 means "more unusual than 90% of the genuine transactions it saw".
  The forest's score is computed by :class:`ForestPaths` (the same per-tree Cython
  ``apply`` and the same float operations as ``IsolationForest.score_samples``,
  without its per-call validation, joblib dispatch and per-tree leaf arithmetic).

For a few rows (the scoring API's one) both ensembles are walked by
:mod:`txmon.models.lockstep` instead (:class:`~txmon.models.lockstep.DispatchTrees`: every
tree in one compiled call; :class:`~txmon.models.lockstep.LockstepTrees` above
:data:`~txmon.models.lockstep.DISPATCH_PAIRS` row-tree pairs): the same outputs, bit for
bit, without a scikit-learn call per tree.

This module imports only numpy, pandas, scikit-learn and the feature list, so Spark
executors can unpickle a bundle cheaply.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pandas as pd
from scipy.special import expit

from txmon.models.features import FEATURES
from txmon.models.lockstep import DISPATCH_PAIRS, LOCKSTEP_ROWS, DispatchTrees, LockstepTrees

__all__ = [
    "LOG_FEATURES",
    "ForestPart",
    "ForestPaths",
    "LinearPart",
    "ModelBundle",
    "anomaly_pipeline",
    "feature_matrix",
    "signed_log1p",
]

LOG_FEATURES = tuple(f for f in FEATURES if not f.startswith("is_") and f != "hour_ist")
"""Money, count, ratio, time and distance features: heavy-tailed, so the anomaly model
sees ``sign(x) * log1p(|x|)`` of them (trees split on a uniform draw in [min, max])."""
_LOG_INDEX = np.array([FEATURES.index(f) for f in LOG_FEATURES])


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)`` on the LOG_FEATURES columns of a FEATURES matrix.

    >>> m = np.zeros((1, len(FEATURES))); m[0, 0] = np.e - 1; m[0, FEATURES.index("hour_ist")] = 3
    >>> out = signed_log1p(m); float(out[0, 0]), float(out[0, FEATURES.index("hour_ist")])
    (1.0, 3.0)
    """
    out = np.array(x, dtype=np.float64, copy=True)
    cols = out[:, _LOG_INDEX]
    out[:, _LOG_INDEX] = np.sign(cols) * np.log1p(np.abs(cols))
    return out


def anomaly_pipeline(n_estimators: int, seed: int):
    """Log transform, then an Isolation Forest (unfitted)."""
    # scikit-learn (the slowest import here) only to fit; scoring a saved bundle needs numpy and scipy.
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(
        FunctionTransformer(signed_log1p), IsolationForest(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    )


def feature_matrix(frame) -> np.ndarray:
    """The FEATURES columns, in order, as float64. Raises KeyError naming missing columns.

    ``frame``: a pandas DataFrame, or a pyarrow RecordBatch/Table (the stream's scoring
    step: columns straight to NumPy, nulls as NaN, no pandas frame in between).
    """
    names = frame.schema.names if hasattr(frame, "schema") and hasattr(frame, "column") else frame.columns
    missing = [f for f in FEATURES if f not in names]
    if missing:
        raise KeyError(f"frame lacks feature columns {missing}; compute them with models.features.add_features first")
    if isinstance(frame, pd.DataFrame):
        return frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    out = np.empty((frame.num_rows, len(FEATURES)), dtype=np.float64)
    for j, name in enumerate(FEATURES):
        out[:, j] = frame.column(name).to_numpy(zero_copy_only=False)
    return out


class ForestPaths:
    """``-IsolationForest.score_samples`` of a fitted pipeline, bit for bit, in fewer steps.

    scikit-learn (1.9) scores each tree through joblib, and for every tree and row adds
    ``decision_path_length[leaf] + average_path_length[leaf] - 1.0``. Here that leaf
    term is computed once per tree at construction (same float operations, so the same
    values), each tree's own Cython ``apply`` finds the leaves, and the depths are summed
    in the same tree order, then ``2 ** -(depths / (n_trees * c(max_samples)))`` as
    sklearn does. It reads the forest's private per-tree arrays (scikit-learn is pinned
    in requirements.lock); tests/unit/test_models_training.py checks bit-for-bit equality
    with ``score_samples`` on a trained forest, so an upgrade that changes them fails
    there. bench/stream_scoring_bench.py measures the gain.
    """

    def __init__(self, pipeline) -> None:
        # lazy: sklearn (4.5 s to import); the stream supervisor imports this module without it
        from sklearn.ensemble._iforest import _average_path_length

        forest = pipeline[-1]
        self.prepare = pipeline[:-1]  # the pipeline's transforms (signed_log1p)
        subsample = forest._max_features != forest.n_features_in_
        self.trees = [
            (est.tree_, features if subsample else None, dpl + apl - 1.0)
            for est, features, dpl, apl in zip(
                forest.estimators_,
                forest.estimators_features_,
                forest._decision_path_lengths,
                forest._average_path_length_per_tree,
            )
        ]
        self.denominator = len(forest.estimators_) * _average_path_length([forest._max_samples])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The forest's anomaly score (higher = more unusual) of each row of a FEATURES matrix."""
        x32 = self.forest_input(x)
        if len(x32) <= LOCKSTEP_ROWS:
            depths = _few_rows_total(self, self._lockstep(), x32)
        else:
            depths = np.zeros(len(x32), order="F")
            for tree, features, leaf_depth in self.trees:
                depths += leaf_depth[tree.apply(x32 if features is None else x32[:, features])]
        return 2 ** -np.divide(depths, self.denominator, out=np.ones_like(depths), where=self.denominator != 0)

    def forest_input(self, x: np.ndarray) -> np.ndarray:
        """What the trees compare: the pipeline's transforms, then float32 (as sklearn's
        validate_data). signed_log1p is called directly when it is the only transform: the
        Pipeline's own transform costs more than the function on one row."""
        step = self.prepare[0] if len(self.prepare) == 1 else None
        if step is not None and getattr(step, "func", None) is signed_log1p and not getattr(step, "kw_args", None):
            return np.asarray(signed_log1p(x), dtype=np.float32)
        return np.asarray(self.prepare.transform(x), dtype=np.float32)

    def _lockstep(self) -> LockstepTrees:
        walk = self.__dict__.get("_walk")
        if walk is None:
            walk = self.__dict__["_walk"] = LockstepTrees.of_forest(self)
        return walk


def _few_rows_total(owner, walk: LockstepTrees, x: np.ndarray) -> np.ndarray:
    """``walk.total(x)`` for a few rows: in one compiled call up to DISPATCH_PAIRS (row, tree)
    pairs, level by level above (the same sums, bit for bit)."""
    if len(x) * len(walk.roots) <= DISPATCH_PAIRS:
        return _dispatch(owner, walk).totals(x)[0]
    return walk.total(x)


def _dispatch(owner, walk: LockstepTrees) -> DispatchTrees:
    """``walk``'s trees as one :class:`DispatchTrees`, made once per ``owner`` (a bundle, a
    forest) and process, as its walk is."""
    dispatch = owner.__dict__.get("_dispatch")
    if dispatch is None:
        dispatch = owner.__dict__["_dispatch"] = DispatchTrees([(walk, 0)], len(FEATURES))
    return dispatch


@dataclass(eq=False)
class LinearPart:
    """A logistic regression on the standardised FEATURES, blended into the boosting's
    probability when the validation slice says it adds (models.training).

    Trees rank the rows they have seen many of well and give one flat score to the rest; a
    linear model's score moves with every feature, so on data unlike the training mix (a
    fraud pattern with weak signals) it orders what the trees tie. The JVM scorer
    (TreeModels.java) repeats these operations; its dot product sums feature by feature,
    so the two agree to a few units in the last place, as the trees' sums do."""

    fill: np.ndarray
    """Value used for a missing or non-finite feature: its training median (0 when it had none)."""
    mean: np.ndarray
    scale: np.ndarray
    """Standardisation: (x - mean) / scale; scale 1 for a constant feature."""
    coef: np.ndarray
    intercept: float

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(fraud) of each row of a FEATURES matrix."""
        filled = np.where(np.isfinite(x), x, self.fill)
        # A row's sum along its own contiguous axis, not a matrix product: BLAS blocks a
        # product by the number of rows, so one row scored alone (the API) and the same
        # row in a micro-batch would differ in the last bits.
        z = float(self.intercept) + (((filled - self.mean) / self.scale) * self.coef).sum(axis=1)
        return expit(z)  # 1 / (1 + exp(-z)) without overflowing exp for very negative z


class ForestPart:
    """A random forest's fraud probability (the mean over its trees of the fraud share in
    the leaf a row reaches), blended into the model's probability when the validation
    slice says it adds (models.training).

    The boosting and the forest both split on the features, but a forest of deep trees
    grown on bootstrap samples averages many partitions of the rows: rows unlike the
    training mix (a compromised card spending small amounts, a terminal nobody has
    reported yet) get a graded score from it where the boosting's few shallow trees give
    them one flat low score. It was fitted on median-filled features, so a missing value
    goes the way its training median would (folded into each split's missing-value
    direction at construction); an infinite one compares as it is.

    Every path computes the same float operations: the trees' leaf shares added in tree
    order onto 0.0, then divided by the number of trees (scikit-learn's ``predict_proba``
    order); a row's float32 value compared with each threshold, as the trees were grown.
    The JVM scorer (TreeModels.java) compares raw values with thresholds mapped back to
    doubles (models.tree_export.raw_thresholds) and agrees bit for bit."""

    def __init__(self, forest, fill: np.ndarray) -> None:
        """``forest``: a fitted binary RandomForestClassifier on median-filled FEATURES
        (``fill``: the medians)."""
        self.fill = np.asarray(fill, dtype=np.float64)
        fraud = int(np.flatnonzero(np.asarray(forest.classes_) == 1)[0])
        self.trees = [est.tree_ for est in forest.estimators_]
        # tree_.value holds each node's class shares (scikit-learn >= 1.4), as predict_proba reads them
        self.shares = [np.ascontiguousarray(tree.value[:, 0, fraud], dtype=np.float64) for tree in self.trees]

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(fraud) of each row of a FEATURES matrix."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) <= LOCKSTEP_ROWS:
            # float32 as the trees compare it (past its range: +-inf); NaN goes the fill's way
            with np.errstate(over="ignore"):
                x32 = x.astype(np.float32).astype(np.float64)
            total = _few_rows_total(self, self._lockstep(), x32)
        else:
            with np.errstate(over="ignore"):
                filled = np.ascontiguousarray(np.where(np.isnan(x), self.fill, x), dtype=np.float32)
            total = np.zeros(len(x))
            for tree, share in zip(self.trees, self.shares):
                total += share[tree.apply(filled)]
        return total / len(self.trees)

    def node_arrays(self) -> list[tuple]:
        """Per tree (feature, threshold, missing_go_to_left, left, right, fraud share): the
        missing-value direction is where the fill (as float32) goes at each split."""
        fill32 = self.fill.astype(np.float32).astype(np.float64)
        out = []
        for tree, share in zip(self.trees, self.shares):
            feature = tree.feature.astype(np.int64)
            leaf = tree.children_left < 0
            missing_left = np.where(leaf, False, fill32[np.maximum(feature, 0)] <= tree.threshold)
            out.append((feature, tree.threshold, missing_left, tree.children_left, tree.children_right, share))
        return out

    def _lockstep(self) -> LockstepTrees:
        walk = self.__dict__.get("_walk")
        if walk is None:
            walk = self.__dict__["_walk"] = LockstepTrees(self.node_arrays(), start=0.0)
        return walk

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_walk", "_dispatch")}


@dataclass(eq=False)
class ModelBundle:
    """Both models and what scoring and explanations need. Build with models.training.train."""

    classifier: Any  # scikit-learn has no type information
    """Fitted HistGradientBoostingClassifier on the raw FEATURES matrix (class-weighted)."""
    platt: tuple[float, float]
    """(a, b): fraud_probability = expit(a * classifier logit + b)."""
    anomaly_model: Any
    """Fitted pipeline (signed_log1p -> IsolationForest)."""
    anomaly_reference: np.ndarray
    """Quantiles (0, 0.001, ..., 1) of the training traffic's anomaly scores."""
    medians: np.ndarray
    """Training median of each feature: the neutral value explanations substitute."""
    explain_features: tuple[str, ...]
    """Features explanations consider, most important first."""
    features: tuple[str, ...] = field(default=FEATURES)
    drift_reference: object = None
    """models.drift.ScoreReference of the hold-out this bundle scored (None: older bundles)."""
    linear: LinearPart | None = None
    """The logistic regression blended in (None: the boosting alone; older bundles)."""
    linear_weight: float = 0.0
    """fraud_probability = (1 - w) * boosting probability + w * linear probability."""
    forest: ForestPart | None = None
    """The random forest blended in (None: none; older bundles)."""
    forest_weight: float = 0.0
    """fraud_probability = (1 - v) * (the above) + v * forest probability."""
    anomaly_in_risk: bool = True
    """False when training's validation slice ranked better without the Isolation Forest:
    the risk score then leaves the anomaly out (:meth:`risk_policy`); it is still computed
    and recorded (drift monitor, reports). True for older bundles."""

    # ------------------------------------------------------------------ scoring

    def matrix(self, frame) -> np.ndarray:
        """:func:`feature_matrix` of ``frame`` (pandas or Arrow), for this bundle's feature list."""
        if tuple(self.features) != FEATURES:
            raise ValueError("this bundle was trained on a different feature list; retrain it with `txmon train`")
        return feature_matrix(frame)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability of each row of a FEATURES matrix."""
        if len(x) == 0:
            return np.zeros(0)
        a, b = self.platt
        p = expit(a * self._decision(x) + b)
        if self.linear is not None and self.linear_weight > 0:
            w = self.linear_weight
            p = (1.0 - w) * p + w * self.linear.probability(x)
        if self.forest is not None and self.forest_weight > 0:
            v = self.forest_weight
            p = (1.0 - v) * p + v * self.forest.probability(x)
        return p

    def anomaly(self, x: np.ndarray) -> np.ndarray:
        """Anomaly in [0, 1] (empirical CDF against the training traffic) of each row."""
        if len(x) == 0:
            return np.zeros(0)
        raw = self._forest_paths()(x)
        grid = self.__dict__.get("_grid")
        if grid is None or len(grid) != len(self.anomaly_reference):  # made once per process, as _paths
            grid = self.__dict__["_grid"] = np.linspace(0.0, 1.0, len(self.anomaly_reference))
        return np.interp(raw, self.anomaly_reference, grid)

    def _decision(self, x: np.ndarray) -> np.ndarray:
        """The boosting's ``decision_function``: walked in lockstep for a few rows."""
        if len(x) <= LOCKSTEP_ROWS:
            if "_walk" not in self.__dict__:
                self.__dict__["_walk"] = LockstepTrees.of_classifier(self.classifier)
            walk = self.__dict__["_walk"]
            if walk is not None:
                return _few_rows_total(self, walk, np.asarray(x, dtype=np.float64))
        return self.classifier.decision_function(x)

    def _forest_paths(self) -> ForestPaths:
        # Built on first use in each process (an executor after unpickling the broadcast);
        # never pickled with the bundle (__getstate__).
        paths = self.__dict__.get("_paths")
        if paths is None:
            paths = self.__dict__["_paths"] = ForestPaths(self.anomaly_model)
        return paths

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_paths", "_walk", "_dispatch", "_grid", "_policy")}

    def score(self, frame) -> tuple[np.ndarray, np.ndarray]:
        """(fraud_probability, anomaly), each in [0, 1], one per row of ``frame`` (pandas or Arrow)."""
        x = self.matrix(frame)
        return self.probability(x), self.anomaly(x)

    def explain(self, frame: pd.DataFrame, top_k: int = 3) -> list[list[tuple[str, float]]]:
        """Per row, up to ``top_k`` (feature, probability drop) pairs, largest first.

        Occlusion: each candidate feature in turn is set to its training median and the
        drop in fraud probability is measured; only features whose usual value would
        have *lowered* the probability (drop > 0) are reported. One batched prediction
        over rows x candidate features; meant for flagged rows.
        """
        return self.explain_matrix(self.matrix(frame), top_k)

    def explain_matrix(self, x: np.ndarray, top_k: int = 3) -> list[list[tuple[str, float]]]:
        """:meth:`explain` of a FEATURES matrix (the scoring API's one row, without a frame)."""
        n, d = x.shape
        if n == 0 or top_k <= 0:
            return [[] for _ in range(n)]
        columns = [self.features.index(f) for f in self.explain_features]
        base = self.probability(x)
        occluded = np.broadcast_to(x, (len(columns), n, d)).copy()
        for j, col in enumerate(columns):
            occluded[j, :, col] = self.medians[col]
        drops = base[None, :] - self.probability(occluded.reshape(-1, d)).reshape(len(columns), n)
        out: list[list[tuple[str, float]]] = []
        for i in range(n):
            order = np.argsort(-drops[:, i], kind="stable")[:top_k]
            # Rounded before the test: a drop under 5e-7 would otherwise be reported as 0.0.
            rounded = [(self.explain_features[j], round(float(drops[j, i]), 6)) for j in order]
            out.append([(name, drop) for name, drop in rounded if drop > 0])
        return out

    def risk_policy(self, policy):
        """``policy`` (models.risk.RiskPolicy) as this bundle's scores are combined under it:
        the anomaly weight 0 when the Isolation Forest was left out of the risk score.
        Every path that turns this bundle's scores into a risk score goes through it."""
        if self.anomaly_in_risk or policy.anomaly_weight == 0:
            return policy
        # The API asks once per request: one copy per rules policy, not one per call.
        cached = self.__dict__.get("_policy")
        if cached is None or cached[0] is not policy:
            cached = self.__dict__["_policy"] = (policy, policy.model_copy(update={"anomaly_weight": 0.0}))
        return cached[1]

    # ------------------------------------------------------------ serialisation

    def to_bytes(self) -> bytes:
        """The bundle as joblib bytes (compressed), e.g. for a Spark broadcast."""
        buffer = io.BytesIO()
        joblib.dump(self, buffer, compress=3)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> ModelBundle:
        bundle = joblib.load(io.BytesIO(data))
        if not isinstance(bundle, ModelBundle):
            raise TypeError(f"expected a ModelBundle, got {type(bundle).__name__}")
        return bundle
