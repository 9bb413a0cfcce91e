"""The stream's JVM scorer (spark_jobs/jvm_scoring.py) against the Python scoring it replaces.

Offline evaluation and training score with models.bundle / models.scoring in Python;
the stream scores the same bundle in the JVM. These tests hold the two to the same
answers: scores equal to the last bits Java's and the C library's exp/log1p/pow may
differ in, and the same risk score and decision on every row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from txmon.models.features import FEATURES
from txmon.models.risk import RiskPolicy, decision_column, decisions, risk_column, risk_scores
from txmon.models.scoring import score_frame
from txmon.models.sources import simulated
from txmon.models.training import TrainingConfig, train
from txmon.spark_jobs.jvm_scoring import broadcast_trees, with_model_scores

TOLERANCE = 1e-12  # measured differences are <= 1e-15 (TreeModels.java)


@pytest.fixture(scope="module")
def trained():
    history = simulated(20_000, seed=11)
    return train(
        history.events,
        history.labels,
        TrainingConfig(seed=2, max_iter=80, iforest_estimators=40),
        data_source=history.source,
    )


@pytest.fixture(scope="module")
def holdout(trained):
    """The hold-out (transactions and features) with missing and infinite values planted."""
    frame = trained.holdout.copy().reset_index(drop=True)
    frame["amount_to_mean"] = frame["amount_to_mean"].astype(float)
    frame.loc[::7, "amount_to_mean"] = np.nan
    frame["secs_since_prev"] = frame["secs_since_prev"].astype(float)
    frame.loc[::11, "secs_since_prev"] = np.inf
    frame["km_from_prev"] = frame["km_from_prev"].astype(float)
    frame.loc[::13, "km_from_prev"] = -np.inf
    return frame


def _jvm_scores(spark, bundle, frame):
    trees = broadcast_trees(spark, bundle, "test")
    try:
        sdf = spark.createDataFrame(frame[["txn_id", *FEATURES]]).repartition(2)
        out = with_model_scores(sdf, trees, spark).select("txn_id", "fraud_probability", "anomaly_score")
        return out.toPandas().set_index("txn_id").loc[frame["txn_id"]]
    finally:
        trees.destroy()


def test_jvm_scores_equal_the_bundle_scores(spark, trained, holdout):
    probability, anomaly = trained.bundle.score(holdout)
    jvm = _jvm_scores(spark, trained.bundle, holdout)
    assert len(jvm) == len(holdout) > 1000
    np.testing.assert_allclose(jvm["fraud_probability"].to_numpy(), probability, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(jvm["anomaly_score"].to_numpy(), anomaly, rtol=0, atol=TOLERANCE)
    # Not a vacuous match: the hold-out spans the score range.
    assert probability.max() > 0.5 and anomaly.max() > 0.9 and anomaly.min() < 0.1


def test_jvm_blends_the_linear_model_as_the_bundle_does(spark, trained, holdout):
    """A bundle with a logistic regression blended in (training keeps one when it ranks the
    validation slice better): the JVM repeats its arithmetic, missing and infinite values
    included."""
    import copy

    from txmon.models.training import _fit_linear

    bundle = copy.copy(trained.bundle)
    x = bundle.matrix(trained.holdout)
    bundle.linear = _fit_linear(x, trained.holdout["is_fraud"].to_numpy(dtype=bool))
    bundle.linear_weight = 0.4
    probability, _ = bundle.score(holdout)
    boosted, _ = trained.bundle.score(holdout)
    assert np.abs(probability - boosted).max() > 0.01  # the blend moves the scores
    jvm = _jvm_scores(spark, bundle, holdout)
    np.testing.assert_allclose(jvm["fraud_probability"].to_numpy(), probability, rtol=0, atol=TOLERANCE)


def test_jvm_blends_the_random_forest_as_the_bundle_does(spark, trained, holdout):
    """A bundle with a random forest blended in on top of a logistic regression: the JVM walks
    the forest's trees (thresholds mapped back from float32, missing values the fill's way)
    and repeats the blend's arithmetic; rows with missing and infinite values included."""
    import copy

    from txmon.models.training import TrainingConfig, _fit_forest, _fit_linear

    bundle = copy.copy(trained.bundle)
    x = bundle.matrix(trained.holdout)
    y = trained.holdout["is_fraud"].to_numpy(dtype=bool)
    bundle.linear, bundle.linear_weight = _fit_linear(x, y), 0.25
    bundle.forest = _fit_forest(x, y, TrainingConfig(forest_trees=30))
    bundle.forest_weight = 0.5
    rows = holdout.copy()
    numeric = [c for c in rows.columns if c in bundle.features and rows[c].dtype.kind == "f"]
    rows.loc[rows.index[::7], numeric[0]] = np.nan
    rows.loc[rows.index[3::11], numeric[1]] = np.inf
    probability, _ = bundle.score(rows)
    bundle_without = copy.copy(bundle)
    bundle_without.forest_weight = 0.0
    linear_only, _ = bundle_without.score(rows)
    assert np.abs(probability - linear_only).max() > 0.01  # the forest moves the scores
    jvm = _jvm_scores(spark, bundle, rows)
    np.testing.assert_allclose(jvm["fraud_probability"].to_numpy(), probability, rtol=0, atol=TOLERANCE)


def test_jvm_risk_and_decision_equal_the_python_scoring(spark, trained, holdout):
    from txmon.bench.stream_scoring_bench import _spark_frame
    from txmon.models.rules import load_rules
    from txmon.spark_jobs.detection import score_ruled
    from txmon.spark_jobs.rules import apply_rules

    rules = load_rules()
    ruled = apply_rules(_spark_frame(spark, holdout), rules)
    trees = broadcast_trees(spark, trained.bundle, "test")
    try:
        stream = (
            score_ruled(ruled, trees, "test", rules, spark, trained.bundle.risk_policy(rules.policy))
            .select("txn_id", "rule_score", "risk_score", "decision")
            .toPandas()
            .set_index("txn_id")
            .loc[holdout["txn_id"]]
        )
    finally:
        trees.destroy()
    offline = score_frame(holdout, trained.bundle, rules.policy, rules=stream["rule_score"].to_numpy())
    np.testing.assert_array_equal(stream["risk_score"].to_numpy(), offline["risk_score"].to_numpy())
    np.testing.assert_array_equal(stream["decision"].to_numpy(), offline["decision"].to_numpy())
    assert set(stream["decision"]) >= {"APPROVE", "REVIEW"}


def test_risk_columns_equal_numpy_risk_on_a_grid(spark):
    """Every rule score 0-110 against probabilities/anomalies that put risk near x.5 too."""
    rng = np.random.default_rng(5)
    n = 20_000
    frame = pd.DataFrame(
        {
            "rule_score": rng.integers(0, 111, n).astype(float),
            "p": np.concatenate([rng.random(n - 4), [0.0, 1.0, 0.5, 0.25]]),
            "a": np.concatenate([rng.random(n - 4), [0.0, 1.0, 0.5, 0.75]]),
        }
    )
    for policy in (RiskPolicy(), RiskPolicy(model_weight=0.55, anomaly_weight=0.8, review_at=30, block_at=70)):
        out = (
            spark.createDataFrame(frame)
            .withColumn("risk", risk_column("rule_score", "p", "a", policy))
            .withColumn("decision", decision_column("risk", policy))
            .toPandas()
        )
        expected = risk_scores(frame["rule_score"], frame["p"], frame["a"], policy)
        np.testing.assert_array_equal(out["risk"].to_numpy(), expected)
        np.testing.assert_array_equal(out["decision"].to_numpy(), decisions(expected, policy))


def test_interp_matches_numpy_with_repeated_reference_values(spark, trained):
    """The anomaly CDF is numpy.interp over quantiles, which repeat where the training
    scores pile up; the JVM's interp must pick the same segment."""
    import copy

    bundle = copy.copy(trained.bundle)
    reference = np.sort(np.concatenate([np.full(5, 0.4), np.full(3, 0.55), np.linspace(0.3, 0.8, 12)]))
    bundle.anomaly_reference = reference
    grid = np.linspace(0.0, 1.0, len(reference))
    values = np.concatenate(
        [reference, [0.0, 0.29, 0.4, 0.41, 0.55, 0.549999, 0.8, 0.81, 1.0], np.linspace(0.25, 0.85, 97)]
    )
    trees = broadcast_trees(spark, bundle, "test")
    try:
        models = trees.value()
        got = np.array([models.interp(float(v)) for v in values])
    finally:
        trees.destroy()
    np.testing.assert_array_equal(got, np.interp(values, reference, grid))


def test_a_corrupt_export_is_refused_with_its_reason(spark):
    from pyspark.errors import IllegalArgumentException

    jvm = spark.sparkContext._jvm
    with pytest.raises(IllegalArgumentException, match="bad magic"):
        jvm.io.txmon.scoring.StreamScoring.broadcast(spark._jsparkSession, bytearray(b"not a model export"))
