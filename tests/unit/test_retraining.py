"""Retraining decisions and stage bookkeeping (the Spark/Cassandra stages are in
tests/integration/test_adaptive_loop.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from txmon.models.registry import Registry
from txmon.models.testing import planted_frame
from txmon.models.training import TrainingConfig, train_frame
from txmon.spark_jobs import retraining

SMALL = TrainingConfig(seed=3, max_iter=15, iforest_estimators=5)


@pytest.fixture(scope="module")
def frames():
    """A model that learnt the planted signal, and one that learnt from noise only."""
    good = train_frame(planted_frame(n=2000, seed=1), SMALL, data_source="planted")
    noise = planted_frame(n=2000, seed=2, dominant="payer_count_5m")
    noise["is_fraud"] = noise["is_fraud"].sample(frac=1.0, random_state=0).to_numpy()  # labels unrelated to features
    noise["scenario"] = noise["is_fraud"].map({True: "planted", False: None})
    bad = train_frame(noise, SMALL, data_source="shuffled labels")
    holdout = planted_frame(n=1500, seed=9)
    return good.bundle, bad.bundle, holdout


def test_a_better_challenger_is_promoted(frames):
    good, bad, holdout = frames
    result = retraining.compare(holdout, bad, good, metric="model_average_precision", margin=0.01)
    assert result["promote"] is True
    assert result["challenger"]["model_average_precision"] > result["champion"]["model_average_precision"] + 0.01
    assert "+" in result["reason"] and ">= margin" in result["reason"]
    assert result["holdout_rows"] == 1500 and result["holdout_frauds"] == int(holdout["is_fraud"].sum())


def test_a_worse_challenger_is_kept_out(frames):
    good, bad, holdout = frames
    result = retraining.compare(holdout, good, bad, metric="model_average_precision", margin=0.0)
    assert result["promote"] is False and "< margin" in result["reason"]


def test_an_equal_challenger_needs_the_margin(frames):
    good, _, holdout = frames
    assert retraining.compare(holdout, good, good, metric="model_roc_auc", margin=0.0)["promote"] is True
    assert retraining.compare(holdout, good, good, metric="model_roc_auc", margin=0.01)["promote"] is False


def test_first_model_is_promoted_when_nothing_is_live(frames):
    good, _, holdout = frames
    result = retraining.compare(holdout, None, good, metric="model_average_precision", margin=0.5)
    assert result["promote"] is True and result["champion"] is None
    text = retraining.comparison_markdown({**result, "run_id": "r1", "challenger_version": "v0002"})
    assert "(none)" in text and "v0002" in text and "promote" in text


def test_every_configurable_metric_is_measured_as_the_backtest_measures_it(frames):
    """Each value retraining.metric accepts is a measure the comparison computes (average
    precision, ROC-AUC, card precision@100, recall at the fixed alert rate), defined on a
    hold-out with fraud: a typo-free setting can never compare on an absent number."""
    from typing import get_args

    from txmon.infra.settings import RetrainingSettings

    good, bad, holdout = frames
    metrics = get_args(RetrainingSettings.model_fields["metric"].annotation)
    assert {"model_average_precision", "model_roc_auc", "model_card_precision_at_100"} <= set(metrics)
    for metric in metrics:
        result = retraining.compare(holdout, bad, good, metric=metric, margin=0.0)
        assert result["challenger"][metric] is not None and result["champion"][metric] is not None, metric
        assert "undefined" not in result["reason"], metric
    assert retraining.compare(holdout, bad, good, metric="model_card_precision_at_100", margin=0.0)["promote"]


def test_a_holdout_without_fraud_promotes_nothing(frames):
    good, bad, holdout = frames
    clean = holdout[~holdout["is_fraud"]].copy()
    result = retraining.compare(clean, bad, good, metric="model_average_precision", margin=0.0)
    assert result["promote"] is False and "undefined" in result["reason"]


def test_both_bundles_are_compared_on_the_risk_with_the_rules_scores(frames):
    """The hold-out's rule scores go into both bundles' risk (the model's own metrics stay):
    a rule that fires on every fraud and nothing else ranks the hold-out perfectly."""
    good, bad, holdout = frames
    perfect = holdout["is_fraud"].to_numpy(dtype=float) * 100.0
    plain = retraining.compare(holdout, bad, good, metric="average_precision", margin=0.0)
    ruled = retraining.compare(holdout, bad, good, metric="average_precision", margin=0.0, rules=perfect)
    assert plain["champion"]["average_precision"] < 0.9
    assert ruled["champion"]["average_precision"] == ruled["challenger"]["average_precision"] == 1.0
    for side in ("champion", "challenger"):
        assert ruled[side]["model_average_precision"] == plain[side]["model_average_precision"]


def test_run_ids_are_checked(settings_tmp):
    assert (
        retraining.run_dir(settings_tmp, "scheduled__2026-11-23T00:00:00+00:00").name
        == "scheduled__2026-11-23T00_00_00+00_00"
    )
    for bad in ("", "../x", ".hidden", "a b"):
        with pytest.raises(retraining.RetrainingError, match="run id"):
            retraining.run_dir(settings_tmp, bad)


def test_stages_need_their_predecessors(settings_tmp):
    with pytest.raises(retraining.RetrainingError, match="run the 'extract' stage"):
        retraining.build_features(settings_tmp, "r1")
    with pytest.raises(retraining.RetrainingError, match="run the 'evaluate' stage"):
        retraining.promote(settings_tmp, "r1")


def test_promote_respects_a_champion_changed_since_the_comparison(settings_tmp, frames, monkeypatch, tmp_path):
    _good, _bad, _holdout = frames
    registry = Registry(tmp_path / "models")
    monkeypatch.setenv("TXMON_MODELS_DIR", str(tmp_path / "models"))
    trained = train_frame(planted_frame(n=1500, seed=4), SMALL, data_source="x")
    v1 = registry.promote(registry.register(trained.bundle, trained.metadata))
    v2 = registry.register(trained.bundle, trained.metadata)
    v3 = registry.register(trained.bundle, trained.metadata)
    out = retraining.run_dir(settings_tmp, "r2")
    out.mkdir(parents=True)
    retraining._write_json(out / "comparison.json", {"promote": True, "champion_version": v1, "challenger_version": v2})
    registry.promote(v3)  # an operator promoted another version in between
    assert retraining.promote(settings_tmp, "r2") is None and registry.champion() == v3
    registry.rollback()
    assert retraining.promote(settings_tmp, "r2") == v2 and registry.champion() == v2
    assert retraining.promote(settings_tmp, "r2") == v2  # again: nothing changes
    assert [h["version"] for h in registry.champion_history()] == [v1, v2]


def test_registry_annotations(tmp_path):
    from txmon.models.errors import RegistryError

    registry = Registry(tmp_path / "models")
    trained = train_frame(planted_frame(n=1500, seed=4), SMALL, data_source="x")
    version = registry.register(trained.bundle, trained.metadata)
    assert registry.annotation(version, "retraining") is None
    registry.annotate(version, "retraining", {"promote": False, "reason": "r"})
    assert registry.annotation(version, "retraining") == {"promote": False, "reason": "r"}
    with pytest.raises(RegistryError, match="annotation name"):
        registry.annotate(version, "../metadata", {})


WINDOW = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
STAGES = {
    "extract": lambda settings: retraining.extract(settings, "r1", *WINDOW),
    "build_features": lambda settings: retraining.build_features(settings, "r1"),
    "train_challenger": lambda settings: retraining.train_challenger(settings, "r1"),
    "evaluate": lambda settings: retraining.evaluate(settings, "r1"),
    "promote": lambda settings: retraining.promote(settings, "r1"),
}


@pytest.mark.parametrize(
    ("name", "content", "writer", "reader"),
    [
        ("extract.json", '{"rows": 1', "extract", "extract"),
        ("extract.json", '{"rows": 1', "extract", "build_features"),
        ("extract.json", '{"start": 1}', "extract", "build_features"),
        ("challenger.json", "{}", "train_challenger", "train_challenger"),
        ("challenger.json", '{"version": "v0', "train_challenger", "train_challenger"),
        ("challenger.json", "[]", "train_challenger", "evaluate"),
        ("comparison.json", '{"promote": "yes"}', "evaluate", "evaluate"),
        ("comparison.json", '{"promote": true}', "evaluate", "promote"),
        ("comparison.json", "[" * 100_000 + "]" * 100_000, "evaluate", "promote"),
    ],
    ids=lambda value: value if len(value) < 40 else "deep",
)
def test_a_damaged_stage_output_names_the_stage_to_redo(settings_tmp, name, content, writer, reader):
    path = retraining.run_dir(settings_tmp, "r1") / name
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    with pytest.raises(retraining.RetrainingError) as err:
        STAGES[reader](settings_tmp)
    message = str(err.value)
    assert f"{path} is damaged" in message and f"delete it and run the {writer!r} stage of this run again" in message


@pytest.fixture
def settings_tmp(tmp_path, monkeypatch):
    from txmon.infra.settings import load_settings

    monkeypatch.setenv("TXMON_STATE_DIR", str(tmp_path / "state"))
    return load_settings()
