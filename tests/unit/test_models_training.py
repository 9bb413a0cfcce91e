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


def test_a_blended_random_forest_is_recorded_round_trips_and_equals_scikit_learn(result):
    """A forest the validation slice keeps: its weight, validation figures and
    hyperparameters are in the registry's params; the bundle's probability is the blend's
    arithmetic (the forest's part equal to scikit-learn's predict_proba on the median-filled
    rows to the last few bits); the bundle round-trips through bytes with it; and a forest
    weight of 0 alone trains none."""
    from scipy.special import expit

    history = simulated(EVENTS, seed=7)
    forced = train(
        history.events,
        history.labels,
        CONFIG.model_copy(update={"forest_weights": (0.5,), "forest_trees": 20, "seed_spread": False}),
        data_source=history.source,
    )
    bundle, params = forced.bundle, forced.metadata.params
    assert bundle.forest is not None and bundle.forest_weight == params["forest_weight"] == 0.5
    assert params["forest_hyperparameters"] == {"n_estimators": 20, "min_samples_leaf": 5, "max_features": "sqrt"}
    assert set(params["forest_validation_ap"]) == {"0.5"} and "random forest blended in" in forced.metadata.calibration
    x = bundle.matrix(forced.holdout)
    x[::7, FEATURES.index("amount_to_mean")] = np.nan
    filled = np.where(np.isnan(x), bundle.forest.fill, x)
    forest = bundle.forest.probability(x)
    # scikit-learn's trees on the median-filled rows (predict_proba renormalises each tree's
    # shares, so equal to the last few bits)
    shares = np.mean([t.predict(filled.astype(np.float32))[:, 1] for t in bundle.forest.trees], axis=0)
    np.testing.assert_allclose(forest, shares, rtol=0, atol=1e-12)
    a, b = bundle.platt
    boosted = expit(a * bundle.classifier.decision_function(x) + b)
    if bundle.linear is not None:
        boosted = (1 - bundle.linear_weight) * boosted + bundle.linear_weight * bundle.linear.probability(x)
    np.testing.assert_array_equal(bundle.probability(x), 0.5 * boosted + 0.5 * forest)
    clone = ModelBundle.from_bytes(bundle.to_bytes())
    np.testing.assert_array_equal(clone.probability(x), bundle.probability(x))
    assert "_walk" not in clone.forest.__dict__
    none = train(
        history.events,
        history.labels,
        CONFIG.model_copy(update={"forest_weights": (0.0,), "seed_spread": False}),
        data_source=history.source,
    )
    assert none.bundle.forest is None and "forest_weight" not in none.metadata.params


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


def _blend_case(linear_on_validation: str, rules: np.ndarray | None = None, sharp: bool = False):
    """A validation slice where the boosting's probability is given and the logistic
    regression learns one feature: on the slice that feature is the boosting's own signal
    with a little noise ("alike": the blends differ by little) or its reverse ("reversed":
    every blend is clearly worse). ``rules``: the rule scores of the slice's rows;
    ``sharp``: the boosting gives the frauds probabilities near 1 (the linear model does not)."""
    from scipy.special import expit

    from txmon.models.training import _blend

    rng = np.random.default_rng(3)
    n, fit_rows = 30_000, 20_000
    y = rng.random(n) < 0.02
    fit_part = np.arange(n) < fit_rows
    latent = y * 3.0 + rng.normal(0, 1.0, n)
    x = np.zeros((n, len(FEATURES)))
    x[:, 0] = latent + rng.normal(0, 0.3, n)
    if linear_on_validation == "reversed":
        x[~fit_part, 0] = -x[~fit_part, 0]
    boosted = expit(3.0 * latent[~fit_part] - 6.0) if sharp else expit(latent[~fit_part] - 5.0)
    return _blend(x, y, fit_part, boosted, TrainingConfig(), rules), y[~fit_part]


def test_the_blend_takes_the_largest_weight_within_one_standard_error_of_the_best():
    (linear, weight, info, _), _ = _blend_case("alike", np.zeros(10_000))
    aps = {float(w): a for w, a in info["linear_validation_ap"].items()}
    se, best = info["linear_validation_ap_se"], info["linear_best_validation_weight"]
    assert se > 0 and aps[best] == max(aps.values())
    assert weight == max(w for w, a in aps.items() if aps[best] - a <= se)
    # the case is one where the rule matters: the weight taken is not the best AP's
    assert weight > best and linear is not None and info["linear_judged_with_rules"]


def test_without_rule_scores_the_best_validation_ap_decides():
    (linear, weight, info, _), _ = _blend_case("alike")
    aps = {float(w): a for w, a in info["linear_validation_ap"].items()}
    assert not info["linear_judged_with_rules"]
    assert weight == info["linear_best_validation_weight"] == max(aps, key=lambda w: aps[w]) == 0.0
    assert linear is None


def test_a_blend_clearly_worse_on_validation_is_not_taken():
    (linear, weight, info, _), _ = _blend_case("reversed", np.zeros(10_000))
    aps = {float(w): a for w, a in info["linear_validation_ap"].items()}
    assert aps[0.0] - aps[0.25] > info["linear_validation_ap_se"]
    assert (weight, linear) == (0.0, None)


def test_the_blend_is_judged_on_the_risk_with_the_rules_scores():
    """Legitimate payments that fire a rule (score 60) sit between the frauds' risk with
    the boosting alone (~0.9 x 0.95) and with a blend that pulls their probability down:
    the probability alone would take the blend, the served risk does not."""
    (_, alone, _, _), yv = _blend_case("alike", np.zeros(10_000), sharp=True)
    rules = np.where(~yv & (np.random.default_rng(5).random(len(yv)) < 0.05), 60.0, 0.0)
    (linear, weight, info, _), _ = _blend_case("alike", rules, sharp=True)
    aps = {float(w): a for w, a in info["linear_validation_ap"].items()}
    assert alone > 0 and info["linear_judged_with_rules"]  # no rule fired: the blend is taken
    assert (weight, linear) == (0.0, None) and aps[0.0] - aps[alone] > info["linear_validation_ap_se"]


def test_the_standard_error_of_ap_does_not_move_with_the_seed():
    from txmon.models.training import _ap_standard_error

    rng = np.random.default_rng(1)
    y, score = rng.random(2_000) < 0.05, rng.random(2_000)
    first = _ap_standard_error(y, score)
    rng.random(10)  # whatever else drew random numbers meanwhile
    assert _ap_standard_error(y, score) == first > 0


def test_rule_scores_reach_the_blend_for_the_validation_rows_only():
    import pandas as pd

    from txmon.models.training import _validation_rules

    rows = pd.DataFrame({"txn_id": [f"t{i}" for i in range(6)], "amount_paise": np.arange(6)})
    fit_part = np.array([True, True, True, True, False, False])
    seen = []

    def scorer(frame):
        seen.append(frame["txn_id"].tolist())
        return frame["amount_paise"] * 10.0

    assert _validation_rules(rows, fit_part, scorer).tolist() == [40.0, 50.0]
    assert seen == [["t4", "t5"]]  # a Spark pass over the fitted rows would be wasted
    assert _validation_rules(rows, fit_part, {"t5": 30.0}).tolist() == [0.0, 30.0]
    assert _validation_rules(rows, fit_part, np.arange(6) * 1.0).tolist() == [4.0, 5.0]


def test_fit_gives_a_rule_scorer_the_validation_slice_only():
    from txmon.models.dataset import labelled_features
    from txmon.models.training import fit

    history = simulated(EVENTS, seed=7)
    rows = labelled_features(history.events, history.labels)
    seen = []

    def scorer(frame):
        seen.append(frame["event_time"])
        return np.zeros(len(frame))

    info = fit(rows, CONFIG.model_copy(update={"tune": False, "seed_spread": False}), rules=scorer).info
    assert info["linear_judged_with_rules"] and len(seen) == 1 and len(seen[0]) == info["validation_rows"] > 0
    ordered = rows["event_time"].sort_values(kind="mergesort").reset_index(drop=True)
    assert seen[0].min() >= ordered.iloc[info["fit_rows"] - 1]


def test_train_frame_judges_and_scores_with_the_streams_rules():
    """Given the stream's rules, train_frame hands their scores to the blend and to the
    hold-out's risk: the hold-out's rule scores are the rules', the risk is raised exactly
    where a rule fired (the noisy-OR), and the metrics and metadata are those of that risk."""
    from txmon.infra.settings import DEFAULT_RULES
    from txmon.models.evaluation import ranking
    from txmon.models.risk import RiskPolicy, risk_values
    from txmon.models.rule_engine import compile_rules
    from txmon.models.rules import load_rules
    from txmon.models.testing import planted_frame
    from txmon.models.training import train_frame
    from txmon.spark_jobs.rules import RULE_COLUMNS

    rules = compile_rules(load_rules(DEFAULT_RULES), RULE_COLUMNS)
    frame = planted_frame(n=4000, seed=11)
    small = TrainingConfig(
        seed=3, max_iter=15, iforest_estimators=5, seed_spread=False, tune=False, min_calibration_frauds=10
    )
    policy = RiskPolicy()
    served = train_frame(frame, small, data_source="planted", policy=policy, rules=rules)
    scored = served.holdout
    expected = rules.scores(scored)
    fired = expected > 0
    assert 0 < fired.sum() < len(scored)  # the planted counts fire some rules, not all
    np.testing.assert_array_equal(scored["rule_score"].to_numpy(), expected)
    parts = (scored["fraud_probability"], scored["anomaly"], served.bundle.risk_policy(policy))
    model_only = risk_values(np.zeros(len(scored)), *parts)
    exact = scored["risk_exact"].to_numpy()
    assert (exact[fired] > model_only[fired]).all() and (exact[~fired] == model_only[~fired]).all()
    np.testing.assert_allclose(exact, risk_values(expected, *parts))
    params = served.metadata.params
    assert params["rules_version"] == rules.label and params["linear_judged_with_rules"]
    measured = ranking(scored, "risk_exact", small.k, served.evaluation.tz, served.evaluation.fixed_alert_rate)
    assert served.metadata.metrics["average_precision"] == measured.average_precision

    alone = train_frame(frame, small, data_source="planted", policy=policy)
    assert alone.metadata.params["rules_version"] is None and not alone.metadata.params["linear_judged_with_rules"]
    assert (alone.holdout["rule_score"] == 0).all()


def test_the_grid_point_and_the_forest_are_chosen_on_the_served_risk():
    """Each grid point is judged by the validation slice's risk with the rules' scores, not
    by the probability alone: when the rules already rank every validation fraud first, no
    point can add, every point's served risk AP is 1, the first point in grid order is kept
    and the Isolation Forest stays out; without the rules the best probability decides."""
    from txmon.models.dataset import labelled_features
    from txmon.models.training import fit

    history = simulated(EVENTS, seed=7)
    rows = labelled_features(history.events, history.labels)
    config = CONFIG.model_copy(update={"seed_spread": False, "linear_weights": (0.0,)})
    alone = fit(rows, config).info
    model_aps = [point["validation_ap"] for point in alone["grid"]]
    best = max(range(len(model_aps)), key=lambda i: model_aps[i])
    assert best != 0  # the case discriminates: on the probability alone a later point wins
    # no rules: the risk orders rows as the probability does (equal but for float ties)
    assert [point["validation_risk_ap"] for point in alone["grid"]] == pytest.approx(model_aps, abs=1e-5)
    assert alone["hyperparameters"]["max_leaf_nodes"] == CONFIG.grid[best][1]
    assert not alone["anomaly_judged_with_rules"]

    frauds = dict.fromkeys(rows.loc[rows["is_fraud"], "txn_id"], 100.0)
    served = fit(rows, config, rules=frauds).info
    assert [point["validation_risk_ap"] for point in served["grid"]] == [1.0] * len(CONFIG.grid)
    first = CONFIG.grid[0]
    assert (served["hyperparameters"]["learning_rate"], served["hyperparameters"]["max_leaf_nodes"]) == first[:2]
    assert served["anomaly_judged_with_rules"] and served["anomaly_validation_ap"] == {"with": 1.0, "without": 1.0}
    assert served["anomaly_in_risk"] is False


def test_a_part_is_kept_only_when_it_adds_beyond_the_slices_noise() -> None:
    from txmon.models.training import _adds_beyond_noise, _ap

    rng = np.random.default_rng(3)
    y = rng.random(3000) < 0.03
    without = rng.normal(size=3000) + 1.5 * y
    # One fraud nudged up: a higher AP by a few ten-thousandths, well inside the noise.
    nudged = without.copy()
    nudged[np.flatnonzero(y)[0]] += 0.05
    clearer = without + 2.0 * y
    ap_without = _ap(y, without)
    assert _ap(y, nudged) > ap_without
    keep, error = _adds_beyond_noise(y, _ap(y, nudged), ap_without, nudged)
    assert not keep and error > _ap(y, nudged) - ap_without
    keep, error = _adds_beyond_noise(y, _ap(y, clearer), ap_without, clearer)
    assert keep and _ap(y, clearer) - ap_without > error > 0
