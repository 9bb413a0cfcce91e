"""Drift monitor: exact seeded detections, quiet on stationary streams, state across restarts."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from txmon.models.drift import (
    FORMAT_VERSION,
    LABEL_SIGNALS,
    SCORE_SIGNALS,
    DriftConfig,
    DriftEvent,
    DriftMonitor,
    DriftStateError,
    FileDriftStateStore,
    Signal,
    deterministic_sample,
)

AT = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
BATCH = 2_000


def scored_batch(
    rng: np.random.Generator, n: int = BATCH, *, amount_scale: float = 1.0, start: int = 0
) -> pd.DataFrame:
    """A scored micro-batch shaped like the stream's: small scores, lognormal amounts."""
    return pd.DataFrame(
        {
            "txn_id": [f"t{start + i}" for i in range(n)],
            "fraud_probability": rng.beta(0.3, 12.0, n),
            "anomaly_score": rng.beta(4.0, 10.0, n),
            "amount_paise": np.round(rng.lognormal(np.log(80_000), 1.2, n) * amount_scale).astype(np.int64),
            "payer_count_1h": rng.negative_binomial(2, 0.5, n),
            "model_version": "v0003",
        }
    )


def label_batch(
    rng: np.random.Generator, n_frauds: int, recall: float, *, n_legit_alerts: int = 0, start: int = 0
) -> pd.DataFrame:
    """Late labels joined with decisions: frauds flagged with probability ``recall``."""
    flagged = rng.random(n_frauds) < recall
    frame = pd.DataFrame(
        {
            "txn_id": [f"f{start + i}" for i in range(n_frauds + n_legit_alerts)],
            "is_fraud": [True] * n_frauds + [False] * n_legit_alerts,
            "decision": [("REVIEW" if f else "APPROVE") for f in flagged] + ["REVIEW"] * n_legit_alerts,
        }
    )
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)  # labels arrive mixed


# ------------------------------------------------------------- exact regressions


def test_seeded_score_shift_is_detected_at_an_exact_index() -> None:
    """Exact outcome for seed 42, as River pins its own: a change shows up here."""
    rng = np.random.default_rng(42)
    values = np.concatenate([rng.beta(0.3, 12.0, 10_000), rng.beta(0.6, 12.0, 5_000)]).tolist()
    events = DriftMonitor().observe(Signal.FRAUD_PROBABILITY, values, AT, model_version="v0003")
    assert [e.n_seen - 1 for e in events] == [10_751]  # the shift starts at index 10,000
    event = events[0]
    assert (event.width_before, event.width_after) == (10_751, 8_704)
    assert event.mean_before == pytest.approx(0.0257, abs=1e-4)
    assert event.mean_after > event.mean_before
    assert event.detected_at == AT and event.model_version == "v0003"
    assert event.signal is Signal.FRAUD_PROBABILITY


def test_seeded_recall_collapse_is_detected_at_an_exact_index() -> None:
    rng = np.random.default_rng(42)
    values = [float(v) for v in np.concatenate([rng.random(3_000) < 0.9, rng.random(1_000) < 0.2])]
    events = DriftMonitor().observe(Signal.RECALL_AMONG_FRAUDS, values, AT)
    assert [e.n_seen - 1 for e in events] == [3_039]  # the collapse starts at index 3,000
    assert events[0].mean_before == pytest.approx(0.8891, abs=1e-4)
    assert events[0].mean_after < 0.65 and events[0].width_after == 96


def test_stationary_seeded_stream_raises_no_alarm_with_the_default_config() -> None:
    rng = np.random.default_rng(2025)
    monitor = DriftMonitor()
    events = []
    for b in range(100):  # 200,000 rows, every signal
        events += monitor.update_scores(scored_batch(rng, start=b * BATCH), AT + timedelta(seconds=5 * b))
        events += monitor.update_labels(label_batch(rng, 20, 0.9, n_legit_alerts=40, start=b * 60), AT)
    assert events == []
    assert all(monitor.n_seen[s] == 200_000 for s in SCORE_SIGNALS)
    assert monitor.n_seen[Signal.RECALL_AMONG_FRAUDS] == 2_000


# ---------------------------------------------------------------- what alarms


@pytest.mark.parametrize("seed", range(5))
def test_recall_collapse_among_frauds_is_detected_within_bounded_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    monitor = DriftMonitor()
    for b in range(40):  # 2,000 fraud labels at recall 0.9, with false-positive alerts mixed in
        assert monitor.update_labels(label_batch(rng, 50, 0.9, n_legit_alerts=100, start=b * 150), AT) == []
    events = []
    for b in range(4):  # then recall 0.2: 50 fraud labels per batch
        events = monitor.update_labels(label_batch(rng, 50, 0.2, n_legit_alerts=100, start=9_000 + b * 150), AT)
        if events:
            break
    recall_events = [e for e in events if e.signal is Signal.RECALL_AMONG_FRAUDS]
    assert recall_events, "no alarm within 200 fraud labels of the collapse"
    assert recall_events[0].n_seen - 2_000 <= 100
    assert recall_events[0].mean_before > 0.85


def test_benign_amount_shift_raises_only_the_amount_signal() -> None:
    """A festival surge moves amounts; the model still catches fraud as before."""
    rng = np.random.default_rng(9)
    monitor = DriftMonitor()
    events: list[DriftEvent] = []
    for b in range(30):
        events += monitor.update_scores(scored_batch(rng, start=b * BATCH), AT)
        events += monitor.update_labels(label_batch(rng, 30, 0.9, n_legit_alerts=60, start=b * 90), AT)
    assert events == []
    for b in range(30, 60):
        events += monitor.update_scores(scored_batch(rng, amount_scale=3.0, start=b * BATCH), AT)
        events += monitor.update_labels(label_batch(rng, 30, 0.9, n_legit_alerts=60, start=b * 90), AT)
    assert {e.signal for e in events} == {Signal.LOG_AMOUNT}
    assert events[0].mean_after > events[0].mean_before


def test_nan_values_are_skipped_not_counted() -> None:
    monitor = DriftMonitor()
    assert monitor.observe(Signal.ANOMALY_SCORE, [0.1, float("nan"), 0.2], AT) == []
    assert monitor.n_seen[Signal.ANOMALY_SCORE] == 2


def test_scored_frame_without_the_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="payer_count_1h"):
        DriftMonitor().update_scores(
            pd.DataFrame({"fraud_probability": [0.1], "anomaly_score": [0.2], "amount_paise": [100]}), AT
        )
    with pytest.raises(ValueError, match="decision"):
        DriftMonitor().update_labels(pd.DataFrame({"is_fraud": [True]}), AT)


def test_new_model_restarts_only_model_dependent_signals() -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(model_version="v0001")
    monitor.update_scores(scored_batch(rng), AT)
    monitor.update_labels(label_batch(rng, 20, 0.9), AT)
    monitor.new_model("v0002")
    assert monitor.model_version == "v0002"
    assert {s for s, n in monitor.n_seen.items() if n} == {Signal.LOG_AMOUNT, Signal.PAYER_COUNT_1H}
    assert set(LABEL_SIGNALS) <= {s for s, n in monitor.n_seen.items() if n == 0}


# ------------------------------------------------------------------- sampling


def test_sample_is_capped_deterministic_and_independent_of_row_order() -> None:
    frame = scored_batch(np.random.default_rng(4), 5_000)
    sample = deterministic_sample(frame, 1_000)
    assert len(sample) == 1_000 and list(sample.index) == sorted(sample.index)
    shuffled = frame.sample(frac=1.0, random_state=0)
    assert set(deterministic_sample(shuffled, 1_000)["txn_id"]) == set(sample["txn_id"])
    assert deterministic_sample(frame, None) is frame


def test_update_scores_feeds_at_most_sample_size_rows_per_batch() -> None:
    monitor = DriftMonitor(DriftConfig(sample_size=500))
    monitor.update_scores(scored_batch(np.random.default_rng(5), 3_000), AT)
    assert all(monitor.n_seen[s] == 500 for s in SCORE_SIGNALS)


# ------------------------------------------------------------ config, events


def test_config_is_frozen_and_strict() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        DriftConfig(delta=0.01)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="Extra inputs"):
        DriftConfig(deltas={"amount": 0.01})
    with pytest.raises(ValidationError):
        DriftConfig(deltas={"recall_among_frauds": 1.5})
    config = DriftConfig(deltas={"recall_among_frauds": 0.01}, grace=50)
    assert config.deltas.of(Signal.RECALL_AMONG_FRAUDS) == 0.01
    assert config.deltas.of(Signal.FRAUD_PROBABILITY) == 1e-5
    with pytest.raises(ValidationError):
        config.grace = 10  # type: ignore[misc]
    with pytest.raises(ValidationError):
        DriftEvent(
            detected_at=datetime(2025, 1, 6),
            signal="log_amount",
            n_seen=1,
            mean_before=0,
            variance_before=0,
            width_before=0,
            mean_after=0,
            variance_after=0,
            width_after=0,
        )


# ------------------------------------------------------------------ restarts


def test_restored_monitor_carries_on_exactly_as_if_never_stopped(tmp_path: Path) -> None:
    rng = np.random.default_rng(42)
    values = np.concatenate([rng.beta(0.3, 12.0, 10_000), rng.beta(0.6, 12.0, 5_000)]).tolist()
    store = FileDriftStateStore(tmp_path / "drift")
    first = store.load_monitor("transactions", DriftConfig())
    assert first.observe(Signal.FRAUD_PROBABILITY, values[:7_000], AT) == []
    store.save_monitor("transactions", first)
    restored = store.load_monitor("transactions")
    assert restored.n_seen[Signal.FRAUD_PROBABILITY] == 7_000
    assert restored.windows() == first.windows()
    events = restored.observe(Signal.FRAUD_PROBABILITY, values[7_000:], AT)
    assert [e.n_seen - 1 for e in events] == [10_751]
    assert restored.config == DriftConfig()


def test_file_store_is_atomic_and_refuses_odd_keys(tmp_path: Path) -> None:
    store = FileDriftStateStore(tmp_path)
    assert store.load("stream") is None
    store.save("stream", b"one")
    store.save("stream", b"two")
    assert store.load("stream") == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["stream.drift"]
    for key in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(ValueError, match="drift state key"):
            store.save(key, b"")


def test_damaged_or_foreign_state_says_what_to_do() -> None:
    with pytest.raises(DriftStateError, match="delete it"):
        DriftMonitor.from_bytes(b"not a pickle")
    state = pickle.loads(DriftMonitor().to_bytes())
    assert state["format"] == FORMAT_VERSION
    state["format"] = FORMAT_VERSION + 1
    with pytest.raises(DriftStateError, match=f"format {FORMAT_VERSION + 1}"):
        DriftMonitor.from_bytes(pickle.dumps(state))
