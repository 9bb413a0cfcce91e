"""The bundle on a planted frame (one feature decides fraud): scores, explanations, determinism."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from txmon.models.bundle import ModelBundle, signed_log1p
from txmon.models.features import FEATURES
from txmon.models.testing import planted_frame
from txmon.models.training import TrainingConfig, train_frame

CONFIG = TrainingConfig(seed=3, max_iter=30, iforest_estimators=20)


@pytest.fixture(scope="module")
def planted():
    return train_frame(planted_frame(dominant="payer_count_5m"), CONFIG, data_source="planted")


def test_planted_feature_is_explained_first(planted):
    fraud = planted.holdout[planted.holdout["is_fraud"]]
    explanations = planted.bundle.explain(fraud, top_k=3)
    assert len(explanations) == len(fraud) > 10
    assert all(row and row[0][0] == "payer_count_5m" for row in explanations)
    assert all(row[0][1] > 0.5 for row in explanations)
    assert planted.bundle.explain_features[0] == "payer_count_5m"


def test_explain_skips_features_that_did_not_raise_the_probability(planted):
    genuine = planted.holdout[~planted.holdout["is_fraud"]].head(50)
    for row in planted.bundle.explain(genuine, top_k=5):
        assert all(drop > 0 for _, drop in row)
        assert "payer_count_5m" not in [name for name, _ in row]


def test_planted_signal_is_learned(planted):
    assert planted.metadata.metrics["model_average_precision"] > 0.95
    assert planted.metadata.calibration.startswith("platt")


def test_score_is_vectorised_and_order_preserving(planted):
    frame = planted.holdout.head(200)
    p, a = planted.bundle.score(frame)
    assert p.shape == a.shape == (200,)
    p_rev, a_rev = planted.bundle.score(frame.iloc[::-1])
    np.testing.assert_allclose(p_rev[::-1], p)
    np.testing.assert_allclose(a_rev[::-1], a)


def test_score_needs_every_feature(planted):
    with pytest.raises(KeyError, match="amount_paise"):
        planted.bundle.score(planted.holdout.drop(columns=["amount_paise"]))


def test_empty_frames(planted):
    empty = planted.holdout.head(0)
    p, a = planted.bundle.score(empty)
    assert len(p) == len(a) == 0
    assert planted.bundle.explain(empty) == []


def test_training_is_deterministic(planted):
    again = train_frame(planted_frame(dominant="payer_count_5m"), CONFIG, data_source="planted")
    frame = planted.holdout
    for x, y in zip(planted.bundle.score(frame), again.bundle.score(frame)):
        np.testing.assert_array_equal(x, y)
    assert again.bundle.explain_features == planted.bundle.explain_features


def test_bytes_round_trip(planted):
    clone = ModelBundle.from_bytes(planted.bundle.to_bytes())
    frame = planted.holdout.head(100)
    np.testing.assert_array_equal(clone.score(frame)[0], planted.bundle.score(frame)[0])
    assert clone.explain(frame) == planted.bundle.explain(frame)


def test_signed_log1p_only_touches_heavy_tailed_columns():
    x = np.full((1, len(FEATURES)), -3.0)
    out = signed_log1p(x)[0]
    assert out[FEATURES.index("hour_ist")] == -3.0
    assert out[FEATURES.index("is_night")] == -3.0
    assert out[FEATURES.index("amount_zscore")] == pytest.approx(-np.log1p(3.0))


def test_too_little_fraud_uses_prior_correction():
    frame = planted_frame(n=600, fraud_rate=0.02, seed=11)
    result = train_frame(frame, CONFIG, data_source="planted-small")
    assert result.metadata.calibration.startswith("prior correction")
    a, b = result.bundle.platt
    train_frauds = result.metadata.frauds.train
    assert a == 1.0 and b == pytest.approx(np.log(train_frauds / (result.metadata.rows.train - train_frauds)))


def test_no_fraud_in_training_window_says_what_to_do():
    from txmon.models.errors import TrainingDataError

    frame = planted_frame(n=300, fraud_rate=0.0)
    with pytest.raises(TrainingDataError, match="longer labelled history"):
        train_frame(frame, CONFIG, data_source="none")


def test_no_fraud_in_holdout_is_reported_not_fatal():
    frame = planted_frame(n=800, fraud_rate=0.05, seed=5)
    late = frame["event_time"] >= frame["event_time"].quantile(0.6)
    frame.loc[late, "is_fraud"] = False
    frame.loc[late, "scenario"] = None
    result = train_frame(frame, CONFIG, data_source="early-fraud-only")
    assert result.metadata.frauds.holdout == 0
    assert result.metadata.metrics["average_precision"] is None
    assert any("no fraud" in note for note in result.metadata.notes)
    assert isinstance(result.holdout, pd.DataFrame)


def test_rule_scores_combine_with_the_models(planted):
    from txmon.models.risk import RiskPolicy, risk_score
    from txmon.models.scoring import score_frame

    policy = RiskPolicy()
    frame = planted.holdout.head(300).drop(
        columns=["fraud_probability", "anomaly", "rule_score", "risk_score", "decision"]
    )
    model_only = score_frame(frame, planted.bundle, policy)
    assert (model_only["rule_score"] == 0).all()
    row = model_only.iloc[7]
    combined = planted.bundle.risk_policy(policy)  # the anomaly weight 0 if training left the forest out
    assert row["risk_score"] == risk_score(0, row["fraud_probability"], row["anomaly"], combined)

    by_function = score_frame(frame, planted.bundle, policy, lambda f: np.where(f["amount_paise"] > 3, 60.0, 0.0))
    assert (by_function["rule_score"] == np.where(frame["amount_paise"] > 3, 60.0, 0.0)).all()
    assert (by_function["risk_score"] >= model_only["risk_score"]).all()
    assert (by_function.loc[by_function["rule_score"] == 60, "risk_score"] >= 60).all()

    one = frame["txn_id"].iloc[3]
    by_txn = score_frame(frame, planted.bundle, policy, pd.Series({one: 100.0}))
    assert by_txn["rule_score"].tolist() == [100.0 if t == one else 0.0 for t in frame["txn_id"]]
    assert by_txn.loc[by_txn["txn_id"] == one, "decision"].item() == "BLOCK"

    with pytest.raises(ValueError, match="one per row"):
        score_frame(frame, planted.bundle, policy, [1.0, 2.0])


def test_the_anomaly_counts_in_the_risk_only_where_the_bundle_keeps_it(planted):
    import copy

    from txmon.models.risk import RiskPolicy, risk_scores
    from txmon.models.scoring import score_frame

    policy = RiskPolicy(anomaly_weight=0.3)
    frame = planted.holdout.head(500).drop(
        columns=["fraud_probability", "anomaly", "rule_score", "risk_score", "decision"]
    )
    scored = {}
    for kept in (True, False):
        bundle = copy.copy(planted.bundle)
        bundle.anomaly_in_risk = kept
        assert bundle.risk_policy(policy).anomaly_weight == (0.3 if kept else 0.0)
        scored[kept] = score_frame(frame, bundle, policy)
        p, a = scored[kept]["fraud_probability"], scored[kept]["anomaly"]
        assert (scored[kept]["risk_score"] == risk_scores(np.zeros(len(p)), p, a if kept else 0 * a, policy)).all()
    assert (scored[True]["anomaly"] == scored[False]["anomaly"]).all()  # still computed and reported
    assert (scored[True]["risk_exact"] > scored[False]["risk_exact"]).any()
    # A policy without the anomaly is never given one back.
    assert planted.bundle.risk_policy(RiskPolicy(anomaly_weight=0.0)).anomaly_weight == 0.0


def test_training_keeps_the_anomaly_by_the_validation_slice(planted):
    params = planted.metadata.params
    aps = params["anomaly_validation_ap"]
    assert params["anomaly_in_risk"] is planted.bundle.anomaly_in_risk
    margin = round(aps["with"] - aps["without"], 6)
    assert params["anomaly_validation_ap_se"] >= 0
    assert planted.bundle.anomaly_in_risk == (margin > params["anomaly_validation_ap_se"])
    assert params["anomaly_judged_at_weight"] == params["policy"]["anomaly_weight"]
    metrics = planted.metadata.metrics
    assert {"risk_with_anomaly_roc_auc", "risk_without_anomaly_roc_auc"} <= set(metrics)


def test_scoring_bench_runs(planted):
    from txmon.bench.scoring_bench import format_table, run

    rows = run(planted.bundle, planted.holdout, batches=(200,), repeats=1, explain_batch=20)
    assert len(rows) == 1 and rows[0].score_rows_s > 0 and rows[0].predict_proba_rows_s > 0
    assert rows[0].explain_rows_s is not None and rows[0].explain_rows_s > 0
    assert "ratio" in format_table(rows)


def test_feature_matrix_from_arrow_equals_the_pandas_path(planted):
    """The stream's scoring step reads Arrow batches; nulls must become NaN as in pandas."""
    import pyarrow as pa

    from txmon.models.bundle import feature_matrix

    frame = planted.holdout.head(50).copy()
    frame.loc[frame.index[::5], "amount_to_mean"] = np.nan
    batch = pa.RecordBatch.from_pandas(frame[list(FEATURES)], preserve_index=False)
    np.testing.assert_array_equal(feature_matrix(batch), feature_matrix(frame))
    for got, expected in zip(planted.bundle.score(batch), planted.bundle.score(frame)):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(KeyError, match="amount_paise"):
        feature_matrix(batch.drop_columns(["amount_paise"]))


def test_tree_export_refuses_what_the_jvm_scorer_cannot_evaluate(planted):
    """The stream scores bundles in the JVM (spark_jobs/jvm_scoring.py); a bundle it would score
    differently is refused, with the reason, instead of being scored."""
    import copy

    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from txmon.models.tree_export import UnsupportedModelError, tree_bytes

    data = tree_bytes(planted.bundle, "v1")
    assert data[:4] == data[-4:] == b"TXM1"
    other = copy.copy(planted.bundle)
    x = planted.bundle.matrix(planted.holdout)
    other.anomaly_model = make_pipeline(StandardScaler(), IsolationForest(n_estimators=5, random_state=0)).fit(x)
    with pytest.raises(UnsupportedModelError, match="signed_log1p -> IsolationForest"):
        tree_bytes(other, "v2")


def test_raw_thresholds_split_raw_values_exactly_as_the_forest_splits_its_input():
    """The JVM forest compares raw values against thresholds mapped back through the forest's
    input transform (float32 of signed_log1p); every value must go the same way as in Python."""
    from txmon.models.tree_export import _forest_input, raw_thresholds

    rng = np.random.default_rng(9)
    for log in (True, False):
        logged = rng.normal(0, 8, 300) if log else rng.normal(0, 1e6, 300)
        thresholds = np.concatenate([logged, [0.0, -0.0, 1e-30, 2.5, 23.0]])
        flags = np.full(len(thresholds), log)
        mapped = raw_thresholds(thresholds, flags)
        assert np.isfinite(mapped).all()
        # the boundary itself, its neighbours, and random raw values of every magnitude
        probes = np.concatenate([mapped, np.nextafter(mapped, np.inf), np.nextafter(mapped, -np.inf)])
        values = np.concatenate(
            [probes, rng.normal(0, 1, 2000) * 10.0 ** rng.integers(-3, 12, 2000), [0.0, -0.0, np.inf, -np.inf]]
        )
        for t, raw in zip(thresholds, mapped):
            expected = _forest_input(values, np.full(len(values), log)) <= t
            np.testing.assert_array_equal(values <= raw, expected)


def _exported_probability(data: bytes, x: np.ndarray) -> np.ndarray:
    """The classifier part of a tree export, walked as TreeModels.probability walks it
    (leaf: feature -1; NaN follows the node's missing-values side; left when v <= threshold;
    leaf values added in tree order onto the baseline; then the Platt sigmoid)."""
    import io
    import struct

    src = io.BytesIO(data)

    def ints(n):
        return np.frombuffer(src.read(4 * n), dtype=">i4").astype(np.int64)

    def doubles(n):
        return np.frombuffer(src.read(8 * n), dtype=">f8").astype(np.float64)

    ints(1)  # magic
    src.read(struct.unpack(">H", src.read(2))[0])  # version
    ints(1)  # feature count
    baseline, a, b = doubles(3)
    sizes = ints(ints(1)[0])
    n = int(sizes.sum())
    feature, threshold = ints(n), doubles(n)
    missing_left = np.frombuffer(src.read(n), dtype=np.uint8).astype(bool)
    left, right, value = ints(n), ints(n), doubles(n)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.empty(len(x))
    for i, row in enumerate(x):
        total = baseline
        for root in roots:
            node = root
            while feature[node] >= 0:
                v = row[feature[node]]
                go_left = missing_left[node] if np.isnan(v) else v <= threshold[node]
                node = root + (left[node] if go_left else right[node])
            total += value[node]
        out[i] = 1.0 / (1.0 + np.exp(-(a * total + b)))
    return out


def test_missing_values_are_learned_and_exported_for_the_stream():
    """A field a source lacks reaches the model as NaN (never imputed): the boosting learns
    which side missing values go at each split, and the stream's export carries that side,
    so the JVM walk gives the Python probability on rows with missing values too."""
    from sklearn.metrics import average_precision_score

    from txmon.models.tree_export import tree_bytes

    frame = planted_frame(n=3000, seed=4, dominant="payer_sum_5m")
    rng = np.random.default_rng(4)
    fraud = frame["is_fraud"].to_numpy()
    # Missingness alone signals fraud here (90 % of frauds, 1 % of the rest lack the field),
    # and one field is absent from the whole source.
    frame["km_from_prev"] = frame["km_from_prev"].where(
        ~np.where(fraud, rng.random(len(frame)) < 0.9, rng.random(len(frame)) < 0.01)
    )
    frame["kmh_from_prev"] = np.nan
    frame["payer_sum_5m"] = rng.lognormal(0.0, 1.0, len(frame))  # the planted signal removed
    result = train_frame(
        frame,
        TrainingConfig(seed=1, max_iter=30, iforest_estimators=5, tune=False, seed_spread=False),
        data_source="missing",
    )
    holdout = result.holdout
    x = result.bundle.matrix(holdout)
    assert np.isnan(x).any()
    probability = result.bundle.probability(x)
    assert average_precision_score(holdout["is_fraud"], probability) > 0.5  # learned from missingness
    exported = _exported_probability(tree_bytes(result.bundle, "v-missing"), x)
    a, b = result.bundle.platt
    boosted = expit(a * result.bundle.classifier.decision_function(x) + b)  # the trees' part of the probability
    np.testing.assert_allclose(exported, boosted, rtol=0, atol=1e-12)


def test_the_blended_linear_model_is_exported_with_its_arithmetic():
    """The export's last section (before the closing magic) is the LinearPart: weight, then
    fill, mean, scale, coefficient per feature, then the intercept; rebuilt from those bytes
    it gives the bundle's linear probability exactly, missing and infinite values included."""
    from txmon.models.bundle import LinearPart
    from txmon.models.training import _fit_linear
    from txmon.models.tree_export import tree_bytes

    frame, result = _small_training("linear")
    bundle = result.bundle
    x = bundle.matrix(result.holdout)
    x[::5, 0], x[::7, 1] = np.nan, np.inf
    bundle.linear = _fit_linear(bundle.matrix(frame), frame["is_fraud"].to_numpy(dtype=bool))
    bundle.linear_weight = 0.25
    bundle.forest = None  # its section follows: then the weight 0 and no trees (12 bytes)
    n = len(FEATURES)
    data = tree_bytes(bundle, "v-linear")
    assert data[-16:-4] == np.array([0.0], dtype=">f8").tobytes() + np.array([0], dtype=">i4").tobytes()
    tail = np.frombuffer(data[-16 - 8 * (4 * n + 2) : -16], dtype=">f8").astype(np.float64)
    weight, intercept = tail[0], tail[-1]
    fill, mean, scale, coef = tail[1:-1].reshape(4, n)
    rebuilt = LinearPart(fill=fill, mean=mean, scale=scale, coef=coef, intercept=intercept)
    assert weight == 0.25
    np.testing.assert_array_equal(rebuilt.probability(x), bundle.linear.probability(x))
    a, b = bundle.platt
    boosted = expit(a * bundle.classifier.decision_function(x) + b)
    np.testing.assert_array_equal(bundle.probability(x), 0.75 * boosted + 0.25 * bundle.linear.probability(x))
    assert np.isfinite(bundle.probability(x)).all()
    bundle.linear_weight = 0.0  # a bundle without a blend exports zeros there
    assert not np.frombuffer(tree_bytes(bundle, "v0")[-16 - 8 * (4 * n + 2) : -16], dtype=">f8").any()


def _small_training(source: str):
    """(frame, train_frame's result): a quick training on planted rows."""
    frame = planted_frame(n=3000, seed=5, dominant="payer_sum_5m")
    config = TrainingConfig(seed=1, max_iter=20, iforest_estimators=5, tune=False, seed_spread=False)
    return frame, train_frame(frame, config, data_source=source)


def _forest_section(section: bytes) -> tuple[float, list[tuple]]:
    """The export's blended-forest section as TreeModels.java reads it: the weight, then per
    tree (feature, threshold, missing left, left, right, value)."""
    weight = float(np.frombuffer(section[:8], dtype=">f8")[0])
    trees = int(np.frombuffer(section[8:12], dtype=">i4")[0])
    counts = np.frombuffer(section[12 : 12 + 4 * trees], dtype=">i4")
    total, at = int(counts.sum()), 12 + 4 * trees
    assert len(section) == at + total * (4 + 8 + 1 + 4 + 4 + 8)
    columns = []
    for dtype, size in ((">i4", 4), (">f8", 8), ("u1", 1), (">i4", 4), (">i4", 4), (">f8", 8)):
        columns.append(np.frombuffer(section[at : at + size * total], dtype=dtype))
        at += size * total
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return weight, [tuple(c[lo:hi] for c in columns) for lo, hi in itertools.pairwise(bounds)]


def test_the_blended_forest_is_exported_so_a_raw_value_walk_gives_its_probability():
    """What TreeModels.java does with the export's forest section (raw float64 values against
    the mapped-back thresholds, a NaN the exported way, leaf shares summed in tree order, then
    divided by the number of trees) gives ForestPart.probability bit for bit, on values at and
    around the thresholds, missing, infinite and beyond float32's range; and the forest's
    three Python paths (one row, a few rows, a batch) agree bit for bit."""
    from txmon.models.training import _fit_forest
    from txmon.models.tree_export import _blended_forest, tree_bytes

    frame, result = _small_training("forest")
    bundle = result.bundle
    x_train = bundle.matrix(frame)
    x_train[::9, 2] = np.nan  # the fill then decides where a missing value goes
    bundle.forest = _fit_forest(x_train, frame["is_fraud"].to_numpy(dtype=bool), TrainingConfig(forest_trees=12))
    bundle.forest_weight = 0.5
    x = bundle.matrix(result.holdout)
    rng = np.random.default_rng(3)
    thresholds = np.concatenate([t.threshold[t.children_left >= 0] for t in bundle.forest.trees])
    features = np.concatenate([t.feature[t.children_left >= 0] for t in bundle.forest.trees])
    pick = rng.integers(0, len(thresholds), len(x))
    x[np.arange(len(x)), features[pick]] = thresholds[pick] + rng.choice([-1e-9, 0.0, 1e-9, 1e-30], len(x))
    x[::5, 0], x[::7, 1], x[::11, 2], x[::13, 3] = np.nan, np.inf, -np.inf, 1e300
    expected = bundle.forest.probability(x)
    one = np.concatenate([bundle.forest.probability(x[i : i + 1]) for i in range(len(x))])
    few = np.concatenate([bundle.forest.probability(x[i : i + 40]) for i in range(0, len(x), 40)])
    np.testing.assert_array_equal(one, expected)
    np.testing.assert_array_equal(few, expected)
    section = io.BytesIO()
    _blended_forest(section, bundle)
    data = tree_bytes(bundle, "v-forest")
    assert data.endswith(section.getvalue() + data[:4])  # the last section, then the magic
    weight, trees = _forest_section(section.getvalue())
    assert weight == 0.5 and len(trees) == 12
    walked = np.zeros(len(x))
    for feature, threshold, missing_left, left, right, value in trees:
        node = np.zeros(len(x), dtype=np.intp)
        for _ in range(len(feature)):
            inner = feature[node] >= 0
            if not inner.any():
                break
            v = x[np.arange(len(x)), np.maximum(feature[node], 0)]
            go_left = np.where(np.isnan(v), missing_left[node].astype(bool), v <= threshold[node])
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        walked += value[node]
    np.testing.assert_array_equal(walked / len(trees), expected)
    assert len(np.unique(expected)) > 20  # not a constant forest: the walk is compared on many leaves
