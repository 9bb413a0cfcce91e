"""The bundle's few-row tree walks (models.lockstep: LockstepTrees, and DispatchTrees for
the scoring API's one row), give scikit-learn's own outputs bit for bit: the boosting's
decision_function and the forest's score_samples, for ordinary, missing, infinite and
hostile values; and DispatchTrees gives LockstepTrees' totals for any row."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from txmon.models.bundle import ForestPaths, ModelBundle, feature_matrix
from txmon.models.features import FEATURES
from txmon.models.lockstep import DISPATCH_PAIRS, LOCKSTEP_ROWS, DispatchTrees, LockstepTrees
from txmon.models.testing import planted_frame
from txmon.models.training import TrainingConfig, train_frame

CONFIG = TrainingConfig(seed=5, max_iter=40, iforest_estimators=25)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return train_frame(planted_frame(dominant="payer_count_5m"), CONFIG, data_source="planted").bundle


@pytest.fixture(scope="module")
def rows(bundle) -> np.ndarray:
    x = feature_matrix(planted_frame(dominant="payer_count_5m", seed=11).head(LOCKSTEP_ROWS))
    x[::5, FEATURES.index("amount_to_mean")] = np.nan
    x[::7, FEATURES.index("amount_paise")] = np.inf
    x[::9, FEATURES.index("secs_since_prev")] = -np.inf
    return x


def _sklearn_probability(bundle: ModelBundle, x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    a, b = bundle.platt
    p = expit(a * bundle.classifier.decision_function(x) + b)
    if bundle.linear is not None and bundle.linear_weight > 0:
        p = (1.0 - bundle.linear_weight) * p + bundle.linear_weight * bundle.linear.probability(x)
    return p


def _sklearn_anomaly(bundle: ModelBundle, x: np.ndarray) -> np.ndarray:
    raw = -bundle.anomaly_model.score_samples(x)
    return np.interp(raw, bundle.anomaly_reference, np.linspace(0.0, 1.0, len(bundle.anomaly_reference)))


def test_the_walks_are_what_a_few_rows_use(bundle, rows):
    bundle.probability(rows[:1])
    bundle.anomaly(rows[:1])
    assert isinstance(bundle.__dict__["_walk"], LockstepTrees)
    assert isinstance(bundle._forest_paths().__dict__["_walk"], LockstepTrees)
    # one row: every tree in one compiled call
    assert isinstance(bundle.__dict__["_dispatch"], DispatchTrees)
    assert isinstance(bundle._forest_paths().__dict__["_dispatch"], DispatchTrees)


def test_boosting_totals_equal_decision_function_bit_for_bit(bundle, rows):
    walk = LockstepTrees.of_classifier(bundle.classifier)
    assert walk is not None
    np.testing.assert_array_equal(walk.total(rows), bundle.classifier.decision_function(rows))
    for i in range(len(rows)):  # one row at a time, as the API scores
        np.testing.assert_array_equal(walk.total(rows[i : i + 1]), bundle.classifier.decision_function(rows[i : i + 1]))


def test_forest_depths_equal_score_samples_bit_for_bit(bundle, rows):
    paths = ForestPaths(bundle.anomaly_model)
    np.testing.assert_array_equal(paths(rows), -bundle.anomaly_model.score_samples(rows))
    for i in range(len(rows)):
        np.testing.assert_array_equal(paths(rows[i : i + 1]), -bundle.anomaly_model.score_samples(rows[i : i + 1]))


def test_bundle_outputs_for_one_row_and_for_many_are_sklearns(bundle, rows):
    np.testing.assert_array_equal(bundle.probability(rows[:1]), _sklearn_probability(bundle, rows[:1]))
    np.testing.assert_array_equal(bundle.anomaly(rows[:1]), _sklearn_anomaly(bundle, rows[:1]))
    many = np.tile(rows, (3, 1))  # over LOCKSTEP_ROWS: scikit-learn's own path, same answers
    np.testing.assert_array_equal(bundle.probability(many), np.tile(bundle.probability(rows), 3))
    np.testing.assert_array_equal(bundle.anomaly(many), np.tile(bundle.anomaly(rows), 3))


def test_above_dispatch_pairs_the_lockstep_walk_scores_as_sklearn(bundle, rows, monkeypatch):
    import txmon.models.bundle as bundle_module

    assert len(rows) * len(bundle.__dict__["_walk"].roots) <= DISPATCH_PAIRS  # the default: one call
    monkeypatch.setattr(bundle_module, "DISPATCH_PAIRS", 0)  # every few-row call walks in lockstep
    np.testing.assert_array_equal(bundle.probability(rows), _sklearn_probability(bundle, rows))
    np.testing.assert_array_equal(bundle.anomaly(rows), _sklearn_anomaly(bundle, rows))


def test_dispatch_totals_equal_the_lockstep_walks_bit_for_bit(bundle, rows):
    bundle.probability(rows[:1]), bundle.anomaly(rows[:1])  # the walks are made on first use
    boosting, forest = bundle.__dict__["_walk"], bundle._forest_paths()._lockstep()
    x32 = bundle._forest_paths().forest_input(rows)
    both = DispatchTrees([(boosting, 0), (forest, len(FEATURES))], 2 * len(FEATURES))
    for n in (1, 2, LOCKSTEP_ROWS):
        h, f = both.totals(np.hstack([rows[:n], x32[:n]]))
        np.testing.assert_array_equal(h, boosting.total(rows[:n]))
        np.testing.assert_array_equal(f, forest.total(x32[:n]))
    for i in range(len(rows)):  # one row at a time, as the API scores
        np.testing.assert_array_equal(
            both.totals(np.hstack([rows[i : i + 1], x32[i : i + 1]]))[0], boosting.total(rows[i : i + 1])
        )


def test_hand_made_trees_walk_as_sklearn_splits():
    """Two hand-made trees: NaN follows missing_go_to_left, ties go left, outputs add in order."""
    children = (np.array([1, -1, -1]), np.array([2, -1, -1]))
    stump = (np.array([0, 0, 0]), np.array([1.0, 0, 0]), np.array([True, False, False]), *children, [0.0, 10, 20])
    other = (np.array([1, 0, 0]), np.array([5.0, 0, 0]), np.array([False, False, False]), *children, [0.0, 1, 2])
    walk = LockstepTrees([stump, other], start=0.5)
    x = np.array([[1.0, 5.0], [1.5, 6.0], [np.nan, np.nan], [-np.inf, np.inf]])
    np.testing.assert_array_equal(walk.leaf_outputs(x), [[10, 1], [20, 2], [10, 2], [10, 2]])
    np.testing.assert_array_equal(walk.total(x), [11.5, 22.5, 12.5, 12.5])
    assert walk.levels == 1
    for trees in ([stump, other], [stump], [other, stump, other]):  # 2, 1 and 3 trees to pick among
        one = LockstepTrees(trees, start=0.5)
        np.testing.assert_array_equal(DispatchTrees([(one, 0)], 2).totals(x)[0], one.total(x))


def _hostile_rows(n: int, *edges: float):
    """n feature rows of any doubles, NaN and infinities included, with the edges that
    split a tree's comparisons (signed zeros, the extremes, the smallest subnormal) drawn
    often."""
    return arrays(
        np.float64,
        (n, len(FEATURES)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64)
        | st.sampled_from([0.0, -0.0, 1.0, *edges, 1e300, -1e300, 5e-324]),
    )


@settings(max_examples=60, deadline=None)
@given(data=_hostile_rows(3))
def test_hostile_rows_score_as_sklearn_scores_them(bundle, data):
    np.testing.assert_array_equal(bundle.probability(data), _sklearn_probability(bundle, data))
    np.testing.assert_array_equal(bundle.anomaly(data), _sklearn_anomaly(bundle, data))


@settings(max_examples=200, deadline=None)
@given(row=_hostile_rows(1, np.nan))
def test_one_hostile_row_walks_the_same_in_one_call_as_in_lockstep(bundle, row):
    """The API's path (DispatchTrees, one row) against the reference walk and scikit-learn."""
    np.testing.assert_array_equal(bundle.probability(row), _sklearn_probability(bundle, row))
    np.testing.assert_array_equal(bundle.anomaly(row), _sklearn_anomaly(bundle, row))
    boosting, paths = bundle.__dict__["_walk"], bundle._forest_paths()
    x32 = paths.forest_input(row)
    np.testing.assert_array_equal(bundle.__dict__["_dispatch"].totals(row)[0], boosting.total(row))
    np.testing.assert_array_equal(paths.__dict__["_dispatch"].totals(x32)[0], paths._lockstep().total(x32))


@pytest.fixture(scope="module")
def forest_bundle(bundle) -> ModelBundle:
    """The module's bundle with a random forest blended in (models.bundle.ForestPart)."""
    import copy

    from txmon.models.training import _fit_forest

    frame = planted_frame(dominant="payer_count_5m", seed=4)
    x = feature_matrix(frame)
    x[::6, FEATURES.index("amount_to_mean")] = np.nan  # the fill decides where a missing value goes
    blended = copy.copy(bundle)
    blended.__dict__.pop("_walk", None)
    blended.__dict__.pop("_dispatch", None)
    blended.forest = _fit_forest(x, frame["is_fraud"].to_numpy(dtype=bool), TrainingConfig(seed=2, forest_trees=9))
    blended.forest_weight = 0.5
    return blended


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 4).flatmap(lambda n: _hostile_rows(n, np.nan, 3.4028235e38, 3.4028236e38)))
def test_hostile_rows_get_the_blended_forests_batch_probability_on_the_few_row_paths(forest_bundle, rows):
    """A few rows (the scoring API, explanations) walk the blended forest with NaN folded into
    each split's direction and float32 comparisons; a batch fills NaN with the medians and
    lets scikit-learn's trees place the rows. Both give the same probability, bit for bit,
    for any doubles (float32's edge and beyond included), and the bundle's blend stays a
    probability."""
    forest = forest_bundle.forest
    with np.errstate(over="ignore"):
        filled = np.ascontiguousarray(np.where(np.isnan(rows), forest.fill, rows), dtype=np.float32)
    batch = sum(share[tree.apply(filled)] for tree, share in zip(forest.trees, forest.shares)) / len(forest.trees)
    np.testing.assert_array_equal(forest.probability(rows), batch)
    np.testing.assert_array_equal(
        np.concatenate([forest.probability(rows[i : i + 1]) for i in range(len(rows))]), batch
    )
    blended = forest_bundle.probability(rows)
    assert np.isfinite(blended).all() and ((blended >= 0) & (blended <= 1)).all()
    np.testing.assert_array_equal(blended, 0.5 * _sklearn_probability(forest_bundle, rows) + 0.5 * batch)
