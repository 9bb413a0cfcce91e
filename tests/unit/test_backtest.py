"""Backtesting on small files: chunked reading and features, labels known only after their
delay, one score per test row, the report, the literature's card precision@k.

The rules (Spark SQL) are replaced by zeros here; tests/integration/test_backtest_parity.py
runs them, and the whole scoring, against the stream."""

from __future__ import annotations

import contextlib
import copy
import csv
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from txmon.models.dataset import compact_text, concat_compact, features_in_chunks, labelled_features
from txmon.models.errors import TrainingDataError
from txmon.models.evaluation import card_precision_at_k, recall_at_alert_rate
from txmon.models.features import FEATURES
from txmon.models.rules import load_rules
from txmon.models.training import TrainingConfig
from txmon.spark_jobs import backtest as bt

ROOT = Path(__file__).resolve().parents[2]
CARD_MAPPING = ROOT / "config/replay/card_transactions.yaml"
FAST = TrainingConfig(seed=5, max_iter=30, iforest_estimators=10, tune=False, seed_spread=False)


def _no_rules(frame):
    return np.zeros(len(frame)), [[] for _ in range(len(frame))]


@pytest.fixture(scope="module")
def source():
    return bt.simulated(6_000, seed=11, mean_tps=0.02, chunk_rows=1_000)  # ~3.5 days


def test_card_precision_removes_accounts_detected_on_earlier_days_and_divides_by_k():
    t = pd.to_datetime(["2025-01-06T04:00Z"] * 4 + ["2025-01-07T04:00Z"] * 4, utc=True)
    frame = pd.DataFrame(
        {
            "event_time": t,
            "payer_account": list("ABCDABCD"),
            "risk_score": [90, 80, 80, 10, 99, 70, 70, 70],
            "is_fraud": [1, 0, 1, 0, 1, 1, 0, 1],
        }
    )
    days = card_precision_at_k(frame, k=2, tz="UTC")
    # day 1: A (90) then B before C on the tie at 80 (account order): A detected -> 1/2
    # day 2: A is removed although it scores 99; B, C tie at 70 with D: B (fraud), C -> 1/2
    assert [(d.candidates, d.detected, d.precision) for d in days] == [(4, 1, 0.5), (3, 1, 0.5)]
    assert card_precision_at_k(frame, k=10, tz="UTC")[0].precision == pytest.approx(0.2)  # 2 found / k


def test_an_account_counts_as_known_fraud_from_the_day_after_its_label_arrives():
    """The literature's protocol: a card whose fraud was known when the day began is out of
    that day's test; a fraud before the training window, or one whose label lands during
    the day, does not count."""
    utc = lambda s: pd.Timestamp(s, tz="UTC")
    history = pd.DataFrame(
        {
            "payer_account": ["A", "B", "C", "D"],
            "event_time": [
                utc("2025-01-02T10:00"),
                utc("2025-01-02T10:00"),
                utc("2024-12-01T10:00"),
                utc("2025-01-03"),
            ],
            "label_time": [
                utc("2025-01-04T10:00"),
                utc("2025-01-05T10:00"),
                utc("2024-12-03T10:00"),
                utc("2025-01-05"),
            ],
            "is_fraud": [True, True, True, False],
        }
    )
    test = pd.DataFrame(
        {
            "payer_account": ["A", "A", "B", "B", "C", "D", "E"],
            "event_time": [
                utc(t)
                for t in [
                    "2025-01-04T23:00",
                    "2025-01-05T01:00",
                    "2025-01-05T12:00",
                    "2025-01-06T01:00",
                    "2025-01-06T01:00",
                    "2025-01-06T01:00",
                    "2025-01-06T01:00",
                ]
            ],
        }
    )
    known = bt.known_fraud_accounts(test, history, since=utc("2025-01-01").to_pydatetime(), tz="UTC")
    # A: label at 01-04 10:00 -> out from 01-05; B: label lands mid-day 01-05 -> out from 01-06;
    # C's fraud predates the training window; D was never fraud; E has no history.
    assert known.tolist() == [False, True, False, True, False, False, False]
    # Days are the report's time zone's: 01-04T23:00 UTC is 01-05 in Kolkata, after A's label.
    in_ist = bt.known_fraud_accounts(test.iloc[:1], history, since=utc("2025-01-01").to_pydatetime(), tz="Asia/Kolkata")
    assert in_ist.tolist() == [True]


def test_recall_at_a_fixed_alert_rate_shares_ties():
    assert recall_at_alert_rate([True, False, True, False], [5, 5, 5, 5], 0.5) == pytest.approx(0.5)
    assert recall_at_alert_rate([False, False], [1, 2], 0.5) is None


def test_features_in_chunks_equal_one_pass(source):
    frame = source.transactions
    chunked = features_in_chunks(frame, chunk_rows=700)
    whole = features_in_chunks(frame, chunk_rows=100_000)
    pd.testing.assert_frame_equal(chunked[["txn_id", *FEATURES]], whole[["txn_id", *FEATURES]])
    assert chunked["event_time"].is_monotonic_increasing


def test_a_compact_history_gives_the_features_of_a_plain_one(source):
    """A source is held with its repeated text as categoricals (about 1/8 of the memory);
    the features are those of the same rows as plain text, whatever the chunks."""
    frame = source.transactions
    assert isinstance(frame["payer_account"].dtype, pd.CategoricalDtype)
    assert isinstance(frame["txn_id"].dtype, pd.StringDtype)
    plain = frame.copy()
    for name in plain.columns:
        if isinstance(plain[name].dtype, pd.CategoricalDtype | pd.StringDtype):
            plain[name] = plain[name].astype(object).where(plain[name].notna(), None)
    shuffled = plain.sample(frac=1.0, random_state=3)  # any order in, the features' order out
    expected = features_in_chunks(shuffled, chunk_rows=100_000)
    got = features_in_chunks(frame, chunk_rows=900)
    pd.testing.assert_frame_equal(got, expected)
    for name in ("payee_key", "txn_id"):  # text again, not categories or Arrow strings
        assert got[name].map(type).isin([str, type(None)]).all()
    # the same rows split otherwise give the same compact frame
    halves = [compact_text(plain.iloc[:1234].copy()), compact_text(plain.iloc[1234:].copy())]
    thirds = [compact_text(plain.iloc[i : i + 2000].copy()) for i in range(0, len(plain), 2000)]
    pd.testing.assert_frame_equal(concat_compact(halves), concat_compact(thirds))


def test_rows_before_keep_from_build_profiles_but_are_not_kept(source):
    whole = features_in_chunks(source.transactions, chunk_rows=700)
    keep_from = whole["event_time"].iloc[len(whole) // 2]
    kept = features_in_chunks(source.transactions, chunk_rows=700, keep_from=keep_from)
    expected = whole[whole["event_time"] >= keep_from].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, expected)
    # the earlier rows' profiles are carried: featured from an empty start, the same rows count less
    later = source.transactions[source.transactions["event_time"] >= keep_from]
    fresh = features_in_chunks(later, chunk_rows=700)
    assert (kept["payer_count_30d"] > fresh["payer_count_30d"]).any()
    after_all = whole["event_time"].max() + pd.Timedelta(1, "s")
    nothing = features_in_chunks(source.transactions, chunk_rows=700, keep_from=after_all)
    assert nothing.empty and list(nothing.columns) == list(whole.columns)


def test_simulated_source_matches_the_training_path(source):
    from txmon.models.sources import simulated

    history = simulated(6_000, seed=11, mean_tps=0.02)
    expected = labelled_features(history.events, history.labels)
    got = features_in_chunks(source.transactions, 1_000)
    pd.testing.assert_frame_equal(
        got[["txn_id", *FEATURES]].reset_index(drop=True), expected[["txn_id", *FEATURES]].reset_index(drop=True)
    )
    assert got["is_fraud"].sum() == expected["is_fraud"].sum()


def _card_file(path: Path) -> Path:
    """The sample card file plus a few broken rows, one of them a labelled fraud."""
    rows = list(csv.reader((ROOT / "ingestion/samples/card_transactions_sample.csv").open()))
    header, data = rows[0], rows[1:]
    bad = list(data[5])
    bad[header.index("amt")] = "not money"
    bad[header.index("is_fraud")] = "1"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([*data[:50], bad, *data[50:]])
    return path


def test_read_file_in_chunks_keeps_row_numbers_ids_and_rejected_labels(tmp_path):
    path = _card_file(tmp_path / "cards.csv")
    small = bt.read_file(
        path, CARD_MAPPING, chunk_rows=100, rejects_path=tmp_path / "rejects.csv", label_delay=timedelta(hours=6)
    )
    whole = bt.read_file(path, CARD_MAPPING, chunk_rows=10_000)
    pd.testing.assert_frame_equal(
        small.transactions.drop(columns="label_time"), whole.transactions.drop(columns="label_time")
    )
    # the rejects file is the same when the file is read (and read again for it) in chunks
    bt.read_file(path, CARD_MAPPING, chunk_rows=10_000, rejects_path=tmp_path / "rejects_whole.csv")
    assert (tmp_path / "rejects.csv").read_text() == (tmp_path / "rejects_whole.csv").read_text()
    assert small.rows_read == 201
    bad = [r for r in small.rejects if r.row_number == 51]
    assert bad and bad[0].is_fraud is True and small.rejected_fraud >= 1
    rejects = pd.read_csv(tmp_path / "rejects.csv")
    assert {"row_number", "reason", "is_fraud"} <= set(rejects.columns)
    assert 51 in rejects["row_number"].tolist()
    # ids are the file's own (trans_num), row numbers count from the file's first data row
    first = small.transactions.set_index("row_number").loc[1]
    assert first["txn_id"] == "d21a7ef5562f19d82f73545bb54e9988"
    lag = small.transactions["label_time"] - small.transactions["event_time"]
    assert (lag == pd.Timedelta(hours=6)).all()


def test_a_repeated_txn_id_is_judged_as_the_stream_judges_it(tmp_path):
    """The first row in event-time order stands; an exact repeat is left out and counted; a
    row with other content is rejected as a conflicting duplicate, with its label."""
    rows = list(csv.reader((ROOT / "ingestion/samples/card_transactions_sample.csv").open()))
    header, data = rows[0], rows[1:]
    amt, when, fraud = header.index("amt"), header.index("trans_date_trans_time"), header.index("is_fraud")
    repeat = list(data[3])
    other = list(data[7])
    other[amt], other[fraud] = "1.00", "1"
    earlier = list(data[9])  # the same id, an hour before the row already in the file
    earlier[when] = (datetime.fromisoformat(data[9][when]) - timedelta(hours=1)).isoformat(sep=" ")
    path = tmp_path / "repeats.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([*data, repeat, other, earlier])
    n = len(data)
    source = bt.read_file(path, CARD_MAPPING, chunk_rows=64, rejects_path=tmp_path / "rejects.csv")
    plain = bt.read_file(ROOT / "ingestion/samples/card_transactions_sample.csv", CARD_MAPPING)
    assert source.rows_read == n + 3 and source.duplicates == 1
    conflicts = {r.row_number: r for r in source.rejects if r.reason == "conflicting_duplicate"}
    assert sorted(conflicts) == [10, n + 2]  # the later copy, and the file's own row after the earlier copy
    assert conflicts[n + 2].is_fraud is True
    assert f"amount_paise: {round(float(data[7][amt]) * 100)} -> 100" in conflicts[n + 2].detail
    assert "event_time" in conflicts[10].detail and "already seen at row " + str(n + 3) in conflicts[10].detail
    kept = source.transactions.set_index("txn_id")
    assert kept.index.is_unique and len(kept) == len(plain.transactions)
    assert kept.loc[data[9][header.index("trans_num")], "row_number"] == n + 3
    assert set(pd.read_csv(tmp_path / "rejects.csv")["row_number"]) >= {n + 2, 10}


def test_the_verdict_sentence_counts_only_defined_comparisons():
    say = bt.verdict_sentence
    assert say({}) is None
    assert say({"logistic regression: roc_auc": True, "random forest: roc_auc": False}) == (
        "txmon's risk score beats the baselines on 1 of 2 comparisons; not on: random forest: roc_auc"
    )
    # A test without fraud: ROC-AUC undefined for everyone, card precision 0 for everyone (a tie, not a win).
    no_fraud = {"logistic regression: roc_auc": None, "logistic regression: card_precision_at_k": False}
    assert say(no_fraud) == (
        "txmon's risk score beats the baselines on 0 of 1 comparisons (1 more undefined: no fraud among these "
        "test rows); not on: logistic regression: card_precision_at_k"
    )
    assert (
        say({"random forest: roc_auc": None})
        == "no comparison with the baselines is defined: no fraud among these test rows"
    )


def _window(source, history_days=1.0, train_days=1.5, test_days=1.0):
    t0 = source.transactions["event_time"].min().floor("D")
    w = lambda d: (t0 + pd.Timedelta(days=d)).to_pydatetime()
    return bt.BacktestWindow(
        train_start=w(history_days),
        train_end=w(history_days + train_days),
        test_start=w(history_days + train_days),
        test_end=w(history_days + train_days + test_days),
    )


@pytest.fixture(scope="module")
def result(source):
    import copy

    config = bt.BacktestConfig(window=_window(source), label_delay=timedelta(hours=12), training=FAST, k=20)
    return bt.run(copy.deepcopy(source), config, load_rules(), log=lambda *_: None, rule_scorer=_no_rules)


def test_training_uses_only_labels_known_at_train_end(result):
    w = result.windows[0]
    c = w.counts
    # Rows of the training window's last 12 hours have no known label yet: left out, not counted genuine.
    assert 0 < c["train_rows_label_known"] < c["train_rows"]
    assert c["history_rows"] > 0
    info = w.fit.info
    assert info["fit_rows"] + info["validation_rows"] == c["train_rows_label_known"]


def test_a_gap_before_the_test_is_where_the_training_labels_arrive(source):
    """The literature's set-up: a training week, a delay period as long as the label delay,
    then the test week. Fitted at the test's start, the model knows every training label;
    fitted at train-end it knows none, and says what to do instead of training on nothing."""
    import copy

    t0 = source.transactions["event_time"].min().floor("D")
    w = lambda d: (t0 + pd.Timedelta(days=d)).to_pydatetime()
    window = bt.BacktestWindow(train_start=w(1.0), train_end=w(1.5), test_start=w(2.0), test_end=w(3.0))
    at_test = bt.BacktestConfig(window=window, label_delay=timedelta(hours=12), training=FAST, baselines=False)
    result = bt.run(copy.deepcopy(source), at_test, load_rules(), log=lambda *_: None, rule_scorer=_no_rules)
    c = result.windows[0].counts
    assert c["train_rows"] > 0 and c["train_rows_label_known"] == c["train_rows"]
    assert c["train_frauds_unknown_yet"] == 0 and c["train_frauds_known"] > 0

    at_end = at_test.model_copy(update={"fit_at": "train-end"})
    with pytest.raises(TrainingDataError, match="no training transaction's label is known by train-end"):
        bt.run(copy.deepcopy(source), at_end, load_rules(), log=lambda *_: None, rule_scorer=_no_rules)


def test_every_test_row_is_scored_once_with_every_scorer(result, tmp_path):
    w = result.windows[0]
    test = w.scored
    assert len(test) == w.counts["test_rows"] and test["txn_id"].is_unique
    assert test["event_time"].min() >= pd.Timestamp(w.window.test_start)
    assert set(result.summary()) == set(bt.SCORERS)
    # txmon's risk is the "with anomaly" or the "without" variant, as training chose for the bundle.
    chosen = "risk_with_anomaly" if w.fit.bundle.anomaly_in_risk else "risk_without_anomaly"
    assert test["risk_exact"].to_numpy() == pytest.approx(test[chosen].to_numpy(), rel=0, abs=1e-9)
    out = bt.write_outputs(
        result,
        scores_out=tmp_path / "scores.csv",
        report_dir=tmp_path / "report",
        command="txmon backtest --simulate 6000",
    )
    scores = pd.read_csv(out["scores"])
    assert len(scores) == len(test)
    assert {"txn_id", "row_number", "risk_score", "fraud_probability", "decision", "top_reasons"} <= set(scores)
    assert scores["risk_score"].between(0, 100).all()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "logistic regression" in report and "card precision@20" in report
    # Both protocols are reported; the second leaves out the rows scores.csv marks.
    assert "the literature's test protocol" in report
    marked = scores["known_fraud_account"].astype(bool)
    assert marked.sum() == w.counts["test_rows_known_fraud_account"]
    unblocked = scores[~marked]
    assert result.summary("unblocked")["txmon risk"]["roc_auc"]["values"] == [
        pytest.approx(bt.ranking(unblocked, "risk_exact", 20, result.config.tz).roc_auc)
    ]
    for chart in ("pr_curve.png", "score_distribution.png", "daily_precision.png", "backtest.json"):
        assert (tmp_path / "report" / chart).stat().st_size > 0


def test_rolling_windows_slide_by_the_test_length(source):
    import copy

    window = _window(source, history_days=1.0, train_days=1.5, test_days=1.0)
    config = bt.BacktestConfig(window=window, label_delay=timedelta(hours=1), training=FAST, rolling=2, baselines=False)
    result = bt.run(copy.deepcopy(source), config, load_rules(), log=lambda *_: None, rule_scorer=_no_rules)
    first, second = (w.window for w in result.windows)
    assert second.test_start == first.test_end and second.train_start - first.train_start == timedelta(days=1)
    entry = result.summary()["txmon risk"]["average_precision"]
    assert len(entry["values"]) == 2 and entry["std"] is not None


def test_a_window_outside_the_data_says_what_to_do(source):
    import copy

    far = _window(source, history_days=30)
    config = bt.BacktestConfig(window=far, training=FAST)
    with pytest.raises(TrainingDataError, match="holds no transaction"):
        bt.run(copy.deepcopy(source), config, load_rules(), log=lambda *_: None, rule_scorer=_no_rules)


def test_windows_must_be_in_order():
    t = pd.Timestamp("2025-01-06T00:00Z").to_pydatetime()
    with pytest.raises(ValueError, match="train-start < train-end <= test-start < test-end"):
        bt.BacktestWindow(
            train_start=t,
            train_end=t + timedelta(days=2),
            test_start=t + timedelta(days=1),
            test_end=t + timedelta(days=3),
        )


def test_backtest_cli_checks_its_source_options():
    from typer.testing import CliRunner

    from txmon.infra.cli import app

    result = CliRunner().invoke(app, ["backtest", str(ROOT / "ingestion/samples/card_transactions_sample.csv")])
    assert result.exit_code != 0
    assert "--mapping" in (result.output + str(result.exception))


def _cache_config(source):
    # the test window ends a day before the data does: the entry holds the rows before it
    window = _window(source, history_days=1.0, train_days=1.0, test_days=0.5)
    return bt.BacktestConfig(window=window, label_delay=timedelta(hours=12), training=FAST, k=20)


def test_the_features_cache_reuses_the_rows_and_gives_the_same_scores(source, tmp_path, monkeypatch):
    import copy
    import json

    config = _cache_config(source)
    cache = bt.FeatureCache(tmp_path, bt.simulated_identity(6_000, 11, config.label_delay, 0.02))
    said: list[str] = []
    first = bt.run(copy.deepcopy(source), config, load_rules(), log=said.append, rule_scorer=_no_rules, cache=cache)
    assert any("saved" in s for s in said)
    assert pd.Timestamp(json.loads((cache.path / "meta.json").read_text())["until"]) == config.window.test_end

    def no_features(*_args, **_kwargs):
        raise AssertionError("the cached rows should have been reused")

    monkeypatch.setattr(bt, "features_in_chunks", no_features)
    loaded = cache.load(config.window.train_start, config.window.test_end, said.append)
    assert loaded is not None
    cached_source, featured = loaded
    assert featured["event_time"].max() < pd.Timestamp(config.window.test_end)
    # rows before the training window built the profiles and are counted, not kept
    assert featured["event_time"].min() >= pd.Timestamp(config.window.train_start)
    assert cached_source.rows_before > 0
    again = bt.run(cached_source, config, load_rules(), log=said.append, rule_scorer=_no_rules, featured=featured)
    pd.testing.assert_frame_equal(again.windows[0].scored, first.windows[0].scored)
    assert again.windows[0].counts == first.windows[0].counts
    assert (again.rows, again.source) == (first.rows, first.source)


def test_the_features_cache_refuses_another_source_or_code_and_a_shorter_entry(source, tmp_path):
    import copy
    import json

    config = _cache_config(source)
    identity = bt.simulated_identity(6_000, 11, config.label_delay, 0.02)
    cache = bt.FeatureCache(tmp_path, identity)
    bt.run(copy.deepcopy(source), config, load_rules(), log=lambda *_: None, rule_scorer=_no_rules, cache=cache)
    start, end = config.window.train_start, config.window.test_end
    said: list[str] = []
    assert cache.load(start, end, said.append) is not None
    assert cache.load(start + timedelta(hours=1), end, said.append) is not None
    # any part of the identity differs: another entry, so none yet
    for change in ({"label_delay_s": 3600.0}, {"seed": 12}, {"code": "0" * 64}):
        assert bt.FeatureCache(tmp_path, {**identity, **change}).load(start, end, said.append) is None
        assert "no entry" in said[-1]
    # the entry covers rows before the test end it was made for, not a later one, nor the whole source,
    # and rows from the training start it was made for, not an earlier one
    assert cache.load(start, end + timedelta(days=1), said.append) is None and "holds rows before" in said[-1]
    assert cache.load(start, None, said.append) is None
    assert cache.load(start - timedelta(hours=1), end, said.append) is None and "holds rows from" in said[-1]
    # an entry that does not read back as written, or was written for another identity
    meta_path = cache.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "rows": meta["rows"] + 1}))
    assert cache.load(start, end, said.append) is None and "does not read back" in said[-1]
    meta_path.write_text(json.dumps({**meta, "identity": {**identity, "n": 7}}))
    assert cache.load(start, end, said.append) is None and "another source" in said[-1]


def _meta_with(identity: dict, **changes: object) -> bytes:
    """A meta.json of the shape FeatureCache.save writes, with ``changes``."""
    meta = {
        "identity": identity,
        "until": "2024-06-03T00:00:00+00:00",
        "kept_from": "2024-06-01T00:00:00+00:00",
        "rows_before": 0,
        "span": None,
        "rows": 0,
        "dtypes": {},
        "name": "x",
        "rows_read": 0,
        "duplicates": 0,
        "rejects": [],
    }
    return json.dumps({**meta, **changes}).encode()


DAMAGED_META: list = [
    pytest.param(lambda identity: b'{"identity": {"sour', id="truncated"),
    pytest.param(lambda identity: b"", id="empty"),
    pytest.param(lambda identity: b"[]", id="a list"),
    pytest.param(lambda identity: b"\xff", id="not utf-8"),
    pytest.param(lambda identity: b"[" * 100_000 + b"]" * 100_000, id="nested too deep"),
    pytest.param(lambda identity: json.dumps({"identity": identity}).encode(), id="identity only"),
    pytest.param(lambda identity: _meta_with(identity, until="garbage"), id="until not a time"),
    pytest.param(lambda identity: _meta_with(identity, until="2024-06-03T00:00:00"), id="until without a zone"),
    pytest.param(lambda identity: _meta_with(identity, rejects=[{"row": 1}]), id="a reject without its fields"),
]


def _damaged_entry(tmp_path: Path, config, content: Callable[[dict], bytes]) -> tuple[bt.FeatureCache, Path]:
    cache = bt.FeatureCache(tmp_path, bt.simulated_identity(6_000, 11, config.label_delay, 0.02))
    meta = cache.path / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_bytes(content(cache.identity))
    return cache, meta


@pytest.mark.parametrize("damage", DAMAGED_META)
def test_a_damaged_features_cache_entry_is_a_miss(source, tmp_path: Path, damage: Callable[[dict], bytes]) -> None:
    config = _cache_config(source)
    cache, meta = _damaged_entry(tmp_path, config, damage)
    said: list[str] = []
    assert cache.span() is None
    assert cache.load(config.window.train_start, config.window.test_end, said.append) is None
    assert said[-1].startswith(f"features cache: {meta} cannot be read (") and said[-1].endswith("computing afresh")


def test_a_damaged_features_cache_entry_is_computed_afresh_and_rewritten(source, tmp_path: Path) -> None:
    config = _cache_config(source)
    cache, meta = _damaged_entry(tmp_path, config, lambda identity: json.dumps({"identity": identity}).encode())
    start, end = config.window.train_start, config.window.test_end
    said: list[str] = []
    assert cache.load(start, end, said.append) is None
    bt.run(copy.deepcopy(source), config, load_rules(), log=said.append, rule_scorer=_no_rules, cache=cache)
    assert any("featured rows saved" in line for line in said)
    assert json.loads(meta.read_text())["until"] is not None  # the entry is written anew
    assert cache.load(start, end, said.append) is not None and "reusing" in said[-1]


def test_a_features_cache_entry_whose_rows_are_damaged_is_computed_afresh(source, tmp_path: Path) -> None:
    config = _cache_config(source)
    cache = bt.FeatureCache(tmp_path, bt.simulated_identity(6_000, 11, config.label_delay, 0.02))
    bt.run(copy.deepcopy(source), config, load_rules(), log=lambda *_: None, rule_scorer=_no_rules, cache=cache)
    rows = cache.path / "featured.parquet"
    rows.write_bytes(rows.read_bytes()[:100])
    start, end = config.window.train_start, config.window.test_end
    said: list[str] = []
    assert cache.load(start, end, said.append) is None
    assert said[-1].startswith(f"features cache: {rows} cannot be read (") and said[-1].endswith("computing afresh")
    bt.run(copy.deepcopy(source), config, load_rules(), log=said.append, rule_scorer=_no_rules, cache=cache)
    assert cache.load(start, end, said.append) is not None and "reusing" in said[-1]


def test_a_file_identity_follows_the_file_the_mapping_and_the_delay(tmp_path):
    path = _card_file(tmp_path / "cards.csv")
    mapping = tmp_path / "map.yaml"
    mapping.write_text(CARD_MAPPING.read_text())
    base = bt.file_identity(path, mapping, timedelta(hours=6))
    assert bt.file_identity(path, mapping, timedelta(hours=6)) == base
    assert bt.file_identity(path, mapping, timedelta(hours=7)) != base
    assert base["code"] == bt.feature_code_digest()
    mapping.write_text(CARD_MAPPING.read_text() + "\n# changed\n")
    assert bt.file_identity(path, mapping, timedelta(hours=6))["mapping_sha256"] != base["mapping_sha256"]
    with path.open("a") as f:
        f.write(path.read_text().splitlines()[1] + "\n")
    changed = bt.file_identity(path, CARD_MAPPING, timedelta(hours=6))
    assert changed["size"] != base["size"]


def _weeks_of_cards(path: Path) -> Path:
    """The sample card file's two days again every two days for a week (new ids), and its
    broken rows: long enough for the default split."""
    rows = list(csv.reader(_card_file(path).open()))
    header, data = rows[0], rows[1:]
    when, ids = header.index("trans_date_trans_time"), header.index("trans_num")
    out = []
    for k in range(4):
        for row in data:
            copy = list(row)
            with contextlib.suppress(ValueError):  # a broken time stays broken
                copy[when] = (datetime.fromisoformat(row[when]) + timedelta(days=2 * k)).isoformat(sep=" ")
            copy[ids] = f"{k}{row[ids][1:]}" if row[ids] else row[ids]
            out.append(copy)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *out])
    return path


@pytest.mark.parametrize("dated", [True, False], ids=["window dates", "default split"])
def test_backtest_cli_reuses_its_features_cache(tmp_path, monkeypatch, dated):
    """Given the dates, or without them (the default split then comes from the source's first
    and last times as the entry recorded them)."""
    from typer.testing import CliRunner

    from txmon.infra.cli import app

    # The rules run in Spark; tests/integration/test_backtest_parity.py covers them.
    monkeypatch.setattr(bt, "rule_hits", lambda frame, ruleset, spark: _no_rules(frame))
    monkeypatch.setattr(bt, "local_spark", lambda: None)
    path = _card_file(tmp_path / "cards.csv") if dated else _weeks_of_cards(tmp_path / "cards.csv")
    args = [
        "backtest",
        str(path),
        "--mapping",
        str(CARD_MAPPING),
        "--train-start",
        "2024-06-01",
        "--train-end",
        "2024-06-02",
        "--test-start",
        "2024-06-02",
        "--test-end",
        "2024-06-03",
        "--label-delay",
        "PT6H",
        "--no-tune",
        "--features-cache",
        str(tmp_path / "cache"),
    ]
    if not dated:
        at = args.index("--train-start")
        del args[at : at + 8]
    outputs = []
    for run in ("first", "second"):
        out = tmp_path / run
        result = CliRunner().invoke(app, [*args, "--report-dir", str(out)])
        assert result.exit_code == 0, result.output + repr(result.exception)
        outputs.append((result.output, pd.read_csv(out / "scores.csv"), pd.read_csv(out / "rejects.csv")))
    (first, scores_1, rejects_1), (second, scores_2, rejects_2) = outputs
    assert "featured rows saved" in first and "reusing" not in first
    assert "reusing" in second and "features:" not in second
    assert ("default split" in first) == ("default split" in second) == (not dated)
    pd.testing.assert_frame_equal(scores_1, scores_2)
    pd.testing.assert_frame_equal(rejects_1, rejects_2)
    assert ("1 of them labelled fraud" if dated else "4 of them labelled fraud") in second


def test_each_window_fit_is_given_the_rule_scorer(source, monkeypatch):
    """The blend is judged on the risk with the rules: each window's fit gets the same
    rule scorer as the test rows (it calls it on its validation slice only,
    tests/unit/test_models_training.py)."""
    import copy

    calls = []
    real_fit = bt.fit

    def spying_fit(rows, config, policy, rules=None):
        calls.append(np.asarray(rules(rows.head(3))).tolist())
        return real_fit(rows, config, policy, rules)

    def sevens(frame):
        return np.full(len(frame), 7.0), [[] for _ in range(len(frame))]

    monkeypatch.setattr(bt, "fit", spying_fit)
    config = bt.BacktestConfig(window=_window(source), label_delay=timedelta(hours=12), training=FAST, k=20)
    bt.run(copy.deepcopy(source), config, load_rules(), log=lambda *_: None, rule_scorer=sevens)
    assert calls == [[7.0, 7.0, 7.0]]


@pytest.mark.parametrize("delay", ["P99999999D", "-P1D"])
def test_backtest_cli_refuses_a_label_delay_outside_the_calendar(delay):
    from typer.testing import CliRunner

    from txmon.infra.cli import app

    out = CliRunner().invoke(app, ["backtest", "--simulate", "1000", "--label-delay", delay])
    assert out.exit_code != 0 and "from 0 to P3650D" in (out.output + str(out.exception))


def test_backtest_refuses_an_unknown_time_zone():
    from typer.testing import CliRunner

    from txmon.infra.cli import app

    out = CliRunner().invoke(app, ["backtest", "--simulate", "1000", "--tz", "Mars/Base"])
    assert out.exit_code != 0 and "unknown time zone 'Mars/Base'" in (out.output + str(out.exception))
    with pytest.raises(ValueError, match="IANA name"):
        bt.BacktestConfig(window=_window(bt.simulated(500)), tz="Mars/Base")


def test_feature_order_is_judged_on_ties_by_txn_id():
    from txmon.models.dataset import feature_ordered

    t = pd.to_datetime(["2025-01-01T00:00Z", "2025-01-01T00:00Z", "2025-01-01T00:01Z"], utc=True)
    ordered = pd.DataFrame({"event_time": t, "txn_id": pd.array(["a", "b", "a2"], dtype="string[pyarrow]")})
    assert feature_ordered(ordered) is ordered  # already in order: not copied
    swapped = pd.DataFrame({"event_time": t, "txn_id": ["b", "a", "a2"]})
    assert feature_ordered(swapped)["txn_id"].tolist() == ["a", "b", "a2"]
    late = pd.DataFrame({"event_time": t[::-1], "txn_id": ["x", "y", "z"]})
    assert feature_ordered(late)["txn_id"].tolist() == ["y", "z", "x"]
