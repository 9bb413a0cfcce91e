"""Evaluation metrics on hand-made frames: exact values, ties, time zones, the report."""

from __future__ import annotations

import pandas as pd
import pytest

from txmon.models.evaluation import (
    daily_precision_at_k,
    evaluate_frame,
    precision_at_k,
    ranking_metrics,
    recall_by_scenario,
    write_report,
)


def _frame(rows: list[tuple[str, str, int, bool]], **extra) -> pd.DataFrame:
    """(event_time UTC, account, risk_score, is_fraud) rows -> an evaluation frame."""
    frame = pd.DataFrame(rows, columns=["event_time", "payer_account", "risk_score", "is_fraud"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["txn_id"] = [f"t{i}" for i in range(len(frame))]
    frame["decision"] = "APPROVE"
    frame["scenario"] = [("velocity_burst" if f else None) for f in frame["is_fraud"]]
    for name, values in extra.items():
        frame[name] = values
    return frame


DAYS = _frame(
    [
        # 2025-01-06 IST (04:00 UTC = 09:30 IST)
        ("2025-01-06T04:00Z", "A", 90, True),
        ("2025-01-06T04:10Z", "A", 10, False),
        ("2025-01-06T04:20Z", "B", 80, False),
        ("2025-01-06T04:30Z", "C", 70, True),
        ("2025-01-06T04:40Z", "D", 20, True),
        # 2025-01-07 IST: 19:00 UTC on the 6th is 00:30 IST on the 7th
        ("2025-01-06T19:00Z", "E", 95, False),
        ("2025-01-07T04:00Z", "A", 50, True),
        ("2025-01-07T04:10Z", "B", 50, False),
        ("2025-01-07T04:20Z", "C", 50, False),
        ("2025-01-07T04:30Z", "D", 10, True),
    ]
)


def test_daily_precision_at_k_ranks_accounts_per_ist_day():
    days = daily_precision_at_k(DAYS, k=2)
    assert [(d.day, d.accounts, d.fraud_accounts) for d in days] == [("2025-01-06", 4, 3), ("2025-01-07", 5, 2)]
    # day 1: top 2 accounts by max score are A (fraud) and B -> 1/2
    # day 2: E, then one of the three tied at 50 (one with fraud) -> (0 + 1/3) / 2
    assert days[0].precision == pytest.approx(0.5)
    assert days[1].precision == pytest.approx(1 / 6)
    assert evaluate_frame(DAYS, k=2).risk.daily_precision_at_k == pytest.approx((0.5 + 1 / 6) / 2)


def test_daily_precision_at_k_in_utc_days():
    days = daily_precision_at_k(DAYS, k=2, tz="UTC")
    # day 1 now holds E (95): E, A -> 1/2; day 2: two of three tied at 50 -> (2 * 1/3) / 2
    assert [d.precision for d in days] == pytest.approx([0.5, 1 / 3])


def test_precision_at_k_with_fewer_accounts_than_k():
    assert precision_at_k([3, 2, 1], [True, False, True], k=100) == pytest.approx(2 / 3)


def test_daily_precision_ceiling():
    metrics = evaluate_frame(DAYS, k=2)
    assert metrics.daily_precision_ceiling == pytest.approx(1.0)  # 3 and 2 fraud accounts >= k = 2
    assert evaluate_frame(DAYS, k=4).daily_precision_ceiling == pytest.approx((3 / 4 + 2 / 4) / 2)


def _decisions() -> pd.DataFrame:
    rows = [  # (scenario or None for genuine, is_fraud, decision)
        ("velocity_burst", True, "BLOCK"),
        ("velocity_burst", True, "REVIEW"),
        ("velocity_burst", True, "APPROVE"),
        ("structuring", True, "APPROVE"),
        ("structuring", True, "APPROVE"),
        (None, True, "REVIEW"),
        *[(None, False, "APPROVE")] * 5,
        (None, False, "REVIEW"),
    ]
    frame = pd.DataFrame(rows, columns=["scenario", "is_fraud", "decision"])
    frame["txn_id"] = [f"t{i}" for i in range(len(frame))]
    frame["payer_account"] = [f"acct{i % 4}" for i in range(len(frame))]
    frame["event_time"] = pd.Timestamp("2025-01-06T06:00Z") + pd.to_timedelta(range(len(frame)), unit="min")
    frame["risk_score"] = frame["decision"].map({"APPROVE": 10, "REVIEW": 60, "BLOCK": 90})
    return frame


def test_recall_per_scenario_is_exact():
    table = {r.scenario: (r.frauds, r.flagged, r.recall) for r in recall_by_scenario(_decisions())}
    assert table == {"structuring": (2, 0, 0.0), "unknown": (1, 1, 1.0), "velocity_burst": (3, 2, pytest.approx(2 / 3))}


def test_alert_rate_block_rate_and_recall():
    metrics = evaluate_frame(_decisions())
    assert metrics.rows == 12 and metrics.frauds == 6
    assert metrics.alert_rate == pytest.approx(4 / 12)
    assert metrics.block_rate == pytest.approx(1 / 12)
    assert metrics.recall == pytest.approx(3 / 6)
    assert metrics.model is None  # no fraud_probability column
    summary = metrics.summary()
    assert summary["recall_structuring"] == 0.0 and summary["alert_rate"] == pytest.approx(1 / 3)


def test_ranking_metrics_for_risk_and_model_probability():
    frame = _decisions()
    frame["fraud_probability"] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2]
    metrics = evaluate_frame(frame)
    assert metrics.model is not None
    assert metrics.model.roc_auc == pytest.approx(1.0)
    assert metrics.model.average_precision == pytest.approx(1.0)
    auc, ap = ranking_metrics(frame["is_fraud"], frame["risk_score"])
    assert metrics.risk.roc_auc == pytest.approx(auc) and metrics.risk.average_precision == pytest.approx(ap)
    assert metrics.risk.roc_auc is not None and metrics.risk.roc_auc < 1.0


def test_no_fraud_is_explained_not_fatal(tmp_path):
    frame = _decisions()
    frame["is_fraud"] = False
    frame["scenario"] = None
    metrics = evaluate_frame(frame)
    assert metrics.risk.roc_auc is None and metrics.risk.average_precision is None and metrics.recall is None
    assert metrics.by_scenario == ()
    assert "no fraud" in metrics.notes[0]
    report = write_report(metrics, tmp_path / "empty")
    assert "no fraud" in report.read_text()
    assert (tmp_path / "empty" / "pr_curve.png").stat().st_size > 0


def test_report_files_are_written(tmp_path):
    frame = _decisions()
    frame["fraud_probability"] = [0.9, 0.8, 0.3, 0.6, 0.5, 0.95, 0.1, 0.4, 0.1, 0.1, 0.1, 0.2]
    metrics = evaluate_frame(frame, k=2)
    report = write_report(metrics, tmp_path / "out", title="Model v0001")
    text = report.read_text()
    assert text.startswith("# Model v0001")
    assert "| recall: velocity_burst | 66.67% (2/3) |" in text
    assert "## Daily precision@2" in text and "![precision-recall curve](pr_curve.png)" in text
    png = (tmp_path / "out" / "pr_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert set(metrics.curves) == {"risk score", "model probability"}
    again = type(metrics).model_validate_json((tmp_path / "out" / "metrics.json").read_text())
    assert again == metrics


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match="decision"):
        evaluate_frame(DAYS.drop(columns=["decision"]))


def test_risk_is_ranked_before_rounding_when_the_frame_has_it():
    # Four transactions tied at risk 1 once rounded; the unrounded risk puts the fraud first.
    frame = _frame(
        [
            ("2025-01-06T04:00Z", "A", 1, False),
            ("2025-01-06T04:10Z", "B", 1, False),
            ("2025-01-06T04:20Z", "C", 1, True),
            ("2025-01-06T04:30Z", "D", 1, False),
        ]
    )
    tied = evaluate_frame(frame)
    assert tied.risk.roc_auc == pytest.approx(0.5)
    frame["risk_exact"] = [0.91, 0.95, 1.3, 0.8]
    exact = evaluate_frame(frame)
    assert exact.risk.roc_auc == pytest.approx(1.0) and exact.risk.average_precision == pytest.approx(1.0)
    assert exact.card_daily[0].detected == 1
