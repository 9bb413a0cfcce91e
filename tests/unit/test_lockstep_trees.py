"""The bundle's lockstep tree walk (models.bundle.LockstepTrees), used for a few rows at a
time (the scoring API's one row), gives scikit-learn's own outputs bit for bit: the
boosting's decision_function and the forest's score_samples, for ordinary, missing,
infinite and hostile values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from txmon.models.bundle import ForestPaths, ModelBundle, feature_matrix
from txmon.models.features import FEATURES
from txmon.models.lockstep import LOCKSTEP_ROWS, LockstepTrees
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


def test_the_walk_is_what_a_few_rows_use(bundle, rows):
    bundle.probability(rows[:1])
    bundle.anomaly(rows[:1])
    assert isinstance(bundle.__dict__["_walk"], LockstepTrees)
    assert isinstance(bundle._forest_paths().__dict__["_walk"], LockstepTrees)


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


@settings(max_examples=60, deadline=None)
@given(
    data=arrays(
        np.float64,
        (3, len(FEATURES)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64)
        | st.sampled_from([0.0, -0.0, 1.0, 1e300, -1e300, 5e-324]),
    )
)
def test_hostile_rows_score_as_sklearn_scores_them(bundle, data):
    np.testing.assert_array_equal(bundle.probability(data), _sklearn_probability(bundle, data))
    np.testing.assert_array_equal(bundle.anomaly(data), _sklearn_anomaly(bundle, data))
