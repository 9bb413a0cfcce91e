"""Training on a small seeded simulation: honest time split, useful models, picklable bundle."""

from __future__ import annotations

import numpy as np
import pytest

from txmon.models.bundle import ForestPaths, ModelBundle, feature_matrix
from txmon.models.dataset import time_split
from txmon.models.features import FEATURES
from txmon.models.sources import simulated
from txmon.models.training import TrainingConfig, train

EVENTS = 20_000  # ~1.2 simulated days at the training default of 0.2 tx/s; ~200 frauds
CONFIG = TrainingConfig(seed=7, max_iter=40, iforest_estimators=30)


@pytest.fixture(scope="module")
def result():
    history = simulated(EVENTS, seed=7)
    return train(history.events, history.labels, CONFIG, data_source=history.source)


def test_time_split_has_no_overlap(result):
    meta = result.metadata
    assert meta.train_window.end < meta.holdout_window.start
    assert result.holdout["event_time"].min() == meta.holdout_window.start
    assert meta.rows.train + meta.rows.holdout == EVENTS
    assert 0.68 < meta.rows.train / EVENTS < 0.72


def test_time_split_keeps_equal_timestamps_together(result):
    frame = result.holdout.copy()
    frame["event_time"] = frame["event_time"].dt.floor("h")  # many rows share each hour
    train_part, holdout_part = time_split(frame, 0.3)
    assert train_part["event_time"].max() < holdout_part["event_time"].min()


def test_holdout_average_precision_well_above_base_rate(result):
    metrics = result.metadata.metrics
    base = metrics["fraud_rate"]
    assert 0.005 < base < 0.02
    assert result.metadata.frauds.holdout >= 40
    assert metrics["model_average_precision"] > 20 * base
    assert metrics["model_roc_auc"] > 0.8
    assert metrics["average_precision"] > 20 * base  # risk score (model + anomaly, rule score 0)


def test_probabilities_are_calibrated_to_the_base_rate(result):
    p = result.holdout["fraud_probability"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert 0.3 < p.mean() / result.metadata.metrics["fraud_rate"] < 3  # balanced weights alone give ~10x


def test_anomaly_is_a_cdf_against_training_traffic(result):
    a = result.holdout["anomaly"].to_numpy()
    assert ((a >= 0) & (a <= 1)).all()
    genuine = ~result.holdout["is_fraud"].to_numpy(dtype=bool)
    # Near uniform on genuine traffic, shifted up a little: the hold-out comes after the
    # training window, and in a simulation that starts from no history the tenure and
    # 30-day features of every customer are still growing.
    assert 0.35 < a[genuine].mean() < 0.7
    assert a[~genuine].mean() > a[genuine].mean()


def test_metadata_records_what_was_trained(result):
    meta = result.metadata
    assert meta.features == FEATURES
    assert meta.seed == 7 and meta.params["max_iter"] == 40
    assert meta.data_source.startswith("simulator n=20000 seed=7")
    assert set(meta.libraries) == {"python", "sklearn", "numpy", "pandas"}
    assert meta.frauds.train > 0 and meta.version is None
    # The registry records how the boosting was chosen and how much the seed moves it.
    params = meta.params
    assert set(params["hyperparameters"]) == {
        "learning_rate",
        "max_leaf_nodes",
        "min_samples_leaf",
        "l2_regularization",
    }
    assert len(params["grid"]) == len(CONFIG.grid) and params["boosting_iterations"] >= 1
    assert len(params["seed_validation_ap"]) == 3
    assert params["seed_ap_mean"] == pytest.approx(np.mean(params["seed_validation_ap"]), abs=1e-6)
    assert params["seed_ap_std"] == pytest.approx(np.std(params["seed_validation_ap"]), abs=1e-6)
    assert params["seed_ap_spread"] <= 0.03


def test_bundle_round_trips_through_bytes(result):
    frame = result.holdout.head(500)
    clone = ModelBundle.from_bytes(result.bundle.to_bytes())
    for original, copy in zip(result.bundle.score(frame), clone.score(frame)):
        np.testing.assert_array_equal(original, copy)


def test_forest_paths_equal_sklearn_score_samples_bit_for_bit(result):
    """The bundle's forest traversal (models.bundle.ForestPaths) on the trained forest gives
    exactly sklearn's scores, also for missing and infinite values."""
    x = feature_matrix(result.holdout)
    x[::7, FEATURES.index("amount_to_mean")] = np.nan
    x[::11, FEATURES.index("amount_paise")] = np.inf
    x[::13, FEATURES.index("secs_since_prev")] = -np.inf
    expected = -result.bundle.anomaly_model.score_samples(x)
    np.testing.assert_array_equal(ForestPaths(result.bundle.anomaly_model)(x), expected)
    grid = np.linspace(0.0, 1.0, len(result.bundle.anomaly_reference))
    np.testing.assert_array_equal(result.bundle.anomaly(x), np.interp(expected, result.bundle.anomaly_reference, grid))


def test_forest_paths_are_not_pickled_with_the_bundle(result):
    result.bundle.score(result.holdout.head(10))  # builds the traversal on this copy
    assert "_paths" not in ModelBundle.from_bytes(result.bundle.to_bytes()).__dict__


def test_explain_names_known_features_for_flagged_rows(result):
    flagged = result.holdout[result.holdout["decision"] != "APPROVE"].head(20)
    assert len(flagged) > 0
    explanations = result.bundle.explain(flagged, top_k=3)
    assert len(explanations) == len(flagged)
    for row in explanations:
        assert 1 <= len(row) <= 3
        assert all(name in FEATURES and drop > 0 for name, drop in row)
        assert [d for _, d in row] == sorted((d for _, d in row), reverse=True)
