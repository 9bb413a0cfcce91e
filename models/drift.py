"""Drift monitoring with River's ADWIN: is the stream still the one the model learnt?

Two kinds of signal, one :class:`river.drift.ADWIN` detector each:

**Unsupervised** — fed per micro-batch from the scored frame, available at once:

- ``fraud_probability``: the model's score distribution;
- ``anomaly_score``: the Isolation Forest's view;
- ``log_amount``: ``log1p(amount_paise)`` (amounts are lognormal; the log keeps one
  RTGS transfer from dominating a window's mean and variance);
- ``payer_count_1h``: the payer's velocity feature.

A shift here says the *inputs* moved (a festival surge, a new fraud pattern, a broken
feature); it does not say the model got worse.

Raw values are not stationary even when nothing changes: amounts, velocity and scores
follow the time of day (the simulator's traffic alarmed about 370 times per million
transactions on raw values). So when the model bundle carries a :class:`ScoreReference`
(per IST hour, the quantiles of each signal on the hold-out the model scored when it was
trained), each value is fed as its probability integral transform against its hour's
reference: uniform-like at every hour while nothing changes, so only a real change in
the distribution moves ADWIN's mean.

Only transactions of payers known for at least ``min_history_days`` (the longest feature
window, 30 days) feed the score signals. Before that, a payer's 7- and 30-day features
are still filling, and a population that is new to the stream (a first deployment, a
fresh simulator population as in ``make demo``) scores lower and lower as its history
grows: every score signal trends for a month. ADWIN rightly calls that a change, and
the simulator's fresh population alarmed about 180 times per million transactions
(bench/drift_bench.py ``--demo``). Established payers' features are complete, so their
scores are stationary while nothing changes; new customers keep arriving at a steady
share in a running bank and are judged by the models as before, only not by the drift
monitor. The label signals are fed from every transaction: they measure the decisions
themselves.

**Supervised** — fed as late labels (chargebacks, analyst dispositions) arrive:

- ``recall_among_frauds``: for each confirmed fraud, 1.0 if the stream flagged it
  (decision != APPROVE) else 0.0;
- ``precision_of_alerts``: for each alert whose outcome is known, 1.0 if fraud else 0.0.

Why watch the fraud class itself rather than an overall error rate: at 1% fraud an
overall error rate is dominated by the 99% genuine traffic. If recall falls from 0.9
to 0.2, the error rate moves from about 0.1% + FP to 0.8% + FP — a change ADWIN needs
tens of thousands of labels to separate from noise in false positives, and which a
modest drop in false positives can hide entirely. Among frauds alone the same collapse
is a jump of the mean from 0.9 to 0.2 on a Bernoulli stream, found within a few dozen
fraud labels.

Cost and sampling: ADWIN (Rust, in River 0.26) takes about 0.3 µs per value, so
feeding every row is cheap; what is not cheap is bringing every row of a 10k rows/s
stream to the driver. :attr:`DriftConfig.sample_size` caps the rows taken from each
micro-batch with a *deterministic* sample: the rows whose ``txn_id`` hashes lowest
(``pandas.util.hash_pandas_object``, fixed key), fed in frame order. The same batch
replayed gives the same sample, so the state after a replay is the same; each kept
value has the distribution of a single transaction whatever the batch size, so a
change in load is not mistaken for drift. We do not feed per-batch means: their
variance depends on the batch size (load, trigger interval) and one value per batch
would make detection delays counted in batches, i.e. minutes. ``sample_size=None``
feeds every row.

After a detection River's ADWIN resets itself on the next update (the whole window
starts over), and alarms are held back again for ``grace`` values: a natural cooldown.
Note that River's ``ADWIN.variance`` is the window's *sum of squared deviations*;
events report the per-value variance (``variance / width``).

Events carry the time they were detected as an argument (``at``), never ``now()``.
State (the detectors and counters) survives restarts with :meth:`DriftMonitor.to_bytes`
and :meth:`DriftMonitor.from_bytes`, kept in a :class:`DriftStateStore`; only a file
store lives here (a Cassandra store belongs next to the Cassandra code).

>>> import numpy as np
>>> monitor = DriftMonitor(DriftConfig(grace=50))
>>> at = datetime(2025, 1, 6, tzinfo=UTC)
>>> rng = np.random.default_rng(7)
>>> stable = (rng.random(2_000) < 0.9).astype(float).tolist()
>>> collapsed = (rng.random(500) < 0.2).astype(float).tolist()
>>> events = monitor.observe(Signal.RECALL_AMONG_FRAUDS, stable + collapsed, at)
>>> [(e.signal.value, e.n_seen, round(e.mean_before, 2)) for e in events]
[('recall_among_frauds', 2048, 0.89)]
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from txmon.models.errors import ModelError
from txmon.models.features import LONG_HORIZON_S

if TYPE_CHECKING:
    from river.drift import ADWIN

__all__ = [
    "FORMAT_VERSION",
    "LABEL_SIGNALS",
    "SCORE_SIGNALS",
    "Deltas",
    "DriftConfig",
    "DriftEvent",
    "DriftMonitor",
    "DriftStateError",
    "DriftStateStore",
    "FileDriftStateStore",
    "ScoreReference",
    "Signal",
    "deterministic_sample",
    "established",
]

FORMAT_VERSION = 1
"""Version of the :meth:`DriftMonitor.to_bytes` payload; bump when its layout changes."""


class DriftStateError(ModelError):
    """Saved drift state cannot be read (damaged, or written by another format version)."""


class Signal(StrEnum):
    FRAUD_PROBABILITY = "fraud_probability"
    ANOMALY_SCORE = "anomaly_score"
    LOG_AMOUNT = "log_amount"
    PAYER_COUNT_1H = "payer_count_1h"
    RECALL_AMONG_FRAUDS = "recall_among_frauds"
    PRECISION_OF_ALERTS = "precision_of_alerts"


SCORE_SIGNALS = (Signal.FRAUD_PROBABILITY, Signal.ANOMALY_SCORE, Signal.LOG_AMOUNT, Signal.PAYER_COUNT_1H)
"""Fed by :meth:`DriftMonitor.update_scores`, in this order for each batch."""
LABEL_SIGNALS = (Signal.RECALL_AMONG_FRAUDS, Signal.PRECISION_OF_ALERTS)
"""Fed by :meth:`DriftMonitor.update_labels`."""
MODEL_SIGNALS = (Signal.FRAUD_PROBABILITY, Signal.ANOMALY_SCORE, *LABEL_SIGNALS)
"""Signals that depend on the model: reset when a new champion goes live."""
APPROVE = "APPROVE"


# -------------------------------------------------------------------------- config


class Deltas(BaseModel):
    """ADWIN's confidence ``delta`` per signal: smaller = fewer false alarms, later alarms.

    Score and feature signals see thousands of values a minute, so a very small delta
    costs little delay and keeps false alarms near zero over days; label signals see
    far fewer values, so they use a larger delta to alarm within tens of labels.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fraud_probability: float = Field(1e-5, gt=0.0, lt=1.0)
    anomaly_score: float = Field(1e-5, gt=0.0, lt=1.0)
    log_amount: float = Field(1e-5, gt=0.0, lt=1.0)
    payer_count_1h: float = Field(1e-5, gt=0.0, lt=1.0)
    recall_among_frauds: float = Field(1e-3, gt=0.0, lt=1.0)
    precision_of_alerts: float = Field(1e-3, gt=0.0, lt=1.0)

    def of(self, signal: Signal) -> float:
        return float(getattr(self, signal.value))


class DriftConfig(BaseModel):
    """Drift monitor settings. Frozen; unknown keys are rejected.

    >>> DriftConfig(deltas={"recall_among_frauds": 0.01}).deltas.of(Signal.RECALL_AMONG_FRAUDS)
    0.01
    >>> DriftConfig(delta=0.1)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for DriftConfig
    delta
      Extra inputs are not permitted [type=extra_forbidden, input_value=0.1, input_type=float]
        For further information visit https://errors.pydantic.dev/2.../v/extra_forbidden
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    deltas: Deltas = Field(default_factory=Deltas)
    grace: int = Field(
        200, ge=1, description="values a detector must see before it may alarm (again after every alarm)"
    )
    sample_size: int | None = Field(
        2_000, ge=1, description="rows per micro-batch fed to the score signals; None = every row"
    )
    clock: int = Field(32, ge=1, description="ADWIN checks for change every `clock` values")
    min_history_days: float = Field(
        LONG_HORIZON_S / 86_400,
        ge=0,
        description=(
            "score signals take only transactions whose payer the stream has known this long "
            "(days_since_first_seen): younger profiles' features are still filling"
        ),
    )

    def detector(self, signal: Signal) -> ADWIN:
        # river pulls in scikit-learn: loaded when a detector is made.
        from river.drift import ADWIN  # river.drift pulls in scikit-learn: import when used

        return ADWIN(delta=self.deltas.of(signal), clock=self.clock, grace_period=self.grace)


# -------------------------------------------------------------------------- events


class DriftEvent(BaseModel):
    """One alarm from one signal's detector.

    ``*_before``: the detector's window just before the value that triggered it;
    ``*_after``: just after (River has dropped the older sub-window by then).
    ``variance_*`` is per value (River's ``variance`` divided by ``width``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    detected_at: AwareDatetime
    signal: Signal
    n_seen: int = Field(description="values this signal has seen, the triggering one included")
    mean_before: float
    variance_before: float
    width_before: int
    mean_after: float
    variance_after: float
    width_after: int
    model_version: str | None = None

    @field_validator("detected_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


def _window(detector: ADWIN) -> tuple[float, float, int]:
    width = int(detector.width)
    if width == 0:
        return 0.0, 0.0, 0
    return float(detector.estimation), float(detector.variance) / width, width


def _from_raw(total: float, variance: float, width: float) -> tuple[float, float, int]:
    return (total / width, variance / width, int(width)) if width else (0.0, 0.0, 0)


# ------------------------------------------------------------------------ sampling


def deterministic_sample(frame: pd.DataFrame, size: int | None, key: str = "txn_id") -> pd.DataFrame:
    """At most ``size`` rows of ``frame``, the same ones every time, in frame order.

    Rows whose ``key`` hashes lowest are kept (pandas' hash has a fixed key, so the
    choice does not change between processes); without a ``key`` column, evenly
    spaced rows.

    >>> frame = pd.DataFrame({"txn_id": [f"t{i}" for i in range(10)], "v": range(10)})
    >>> deterministic_sample(frame, 4)["v"].tolist()
    [3, 4, 5, 9]
    >>> deterministic_sample(frame.drop(columns="txn_id"), 4)["v"].tolist()
    [0, 3, 6, 9]
    """
    if size is None or len(frame) <= size:
        return frame
    if key in frame.columns:
        hashes = pd.util.hash_pandas_object(frame[key].astype(str), index=False).to_numpy()
        keep = np.sort(np.argsort(hashes, kind="stable")[:size])
    else:
        keep = np.unique(np.linspace(0, len(frame) - 1, size).round().astype(int))
    return frame.iloc[keep]


def established(frame: pd.DataFrame, min_history_days: float) -> pd.DataFrame:
    """The rows whose payer has been known ``min_history_days`` or longer (see module doc);
    a frame without ``days_since_first_seen`` is returned whole.

    >>> frame = pd.DataFrame({"days_since_first_seen": [0.0, 29.9, 30.0, None]})
    >>> established(frame, 30).index.tolist()
    [2]
    """
    if min_history_days <= 0 or "days_since_first_seen" not in frame.columns:
        return frame
    return frame[frame["days_since_first_seen"].to_numpy(dtype=float) >= min_history_days]


def _score_values(frame: pd.DataFrame) -> dict[Signal, np.ndarray]:
    missing = [
        c for c in ("fraud_probability", "anomaly_score", "amount_paise", "payer_count_1h") if c not in frame.columns
    ]
    if missing:
        raise ValueError(
            f"scored frame lacks columns {missing}; pass the frame after scoring (spark_jobs/detection.py adds them)"
        )
    return {
        Signal.FRAUD_PROBABILITY: frame["fraud_probability"].to_numpy(dtype=float),
        Signal.ANOMALY_SCORE: frame["anomaly_score"].to_numpy(dtype=float),
        Signal.LOG_AMOUNT: np.log1p(frame["amount_paise"].to_numpy(dtype=float)),
        Signal.PAYER_COUNT_1H: frame["payer_count_1h"].to_numpy(dtype=float),
    }


# ------------------------------------------------------------------------ reference


class ScoreReference(BaseModel):
    """Per IST hour of day, ``points`` quantiles of each score signal (see module doc).

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"hour_ist": [h % 24 for h in range(4800)],
    ...     "fraud_probability": [(h % 24) / 100 for h in range(4800)], "anomaly_score": 0.5,
    ...     "amount_paise": 100_00, "payer_count_1h": 1})
    >>> ref = ScoreReference.from_frame(frame)
    >>> ref.transform(Signal.FRAUD_PROBABILITY, np.array([0.0, 0.23]), np.array([0, 23])).tolist()
    [0.5, 0.5]
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantiles: dict[str, list[list[float]]] = Field(description="signal -> 24 hours -> sorted quantiles")
    min_rows_per_hour: int = 50

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        points: int = 101,
        min_rows_per_hour: int = 50,
        min_history_days: float = LONG_HORIZON_S / 86_400,
    ) -> ScoreReference:
        """From a scored frame (``hour_ist`` + the score columns; ``anomaly`` is accepted
        for ``anomaly_score``). Hours with fewer than ``min_rows_per_hour`` rows use all hours.

        Built from the established payers' rows (those the monitor is fed, see
        :func:`established`) when there are ``24 * min_rows_per_hour`` of them, else from
        every row (a short history): an offset between the reference and the fed rows
        is the same at every moment, which ADWIN does not see as change."""
        if "anomaly_score" not in frame.columns and "anomaly" in frame.columns:
            frame = frame.rename(columns={"anomaly": "anomaly_score"})
        old = established(frame, min_history_days)
        if len(old) >= 24 * min_rows_per_hour:
            frame = old
        hours = frame["hour_ist"].to_numpy(dtype=int)
        grid = np.linspace(0.0, 1.0, points)
        out: dict[str, list[list[float]]] = {}
        for signal, values in _score_values(frame).items():
            overall = np.quantile(values, grid).tolist()
            out[signal.value] = [
                np.quantile(values[hours == h], grid).tolist() if (hours == h).sum() >= min_rows_per_hour else overall
                for h in range(24)
            ]
        return cls(quantiles=out, min_rows_per_hour=min_rows_per_hour)

    def transform(self, signal: Signal, values: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """Each value's mid-rank among its hour's quantiles, in [0, 1] (ties share the middle)."""
        table = np.asarray(self.quantiles[signal.value])
        out = np.empty(len(values), dtype=float)
        for h in np.unique(hours):
            rows = hours == h
            q = table[int(h) % 24]
            left = np.searchsorted(q, values[rows], "left")
            right = np.searchsorted(q, values[rows], "right")
            out[rows] = (left + right) / (2.0 * len(q))
        return out


# ------------------------------------------------------------------------- monitor


class DriftMonitor:
    """One ADWIN per :class:`Signal`; feed batches, get :class:`DriftEvent` lists back."""

    def __init__(self, config: DriftConfig | None = None, *, model_version: str | None = None) -> None:
        self.config = config or DriftConfig()
        self.model_version = model_version
        self.detectors: dict[Signal, ADWIN] = {s: self.config.detector(s) for s in Signal}
        self.n_seen: dict[Signal, int] = dict.fromkeys(Signal, 0)
        self.n_alarms: dict[Signal, int] = dict.fromkeys(Signal, 0)

    # --- feeding

    def observe(
        self, signal: Signal, values: Iterable[float], at: datetime, *, model_version: str | None = None
    ) -> list[DriftEvent]:
        """Feed ``values`` to one signal in order; an event for every alarm raised."""
        detector = self.detectors[signal]
        version = model_version if model_version is not None else self.model_version
        events = []
        seen = self.n_seen[signal]
        update = detector.update
        for x in values:
            if x != x:  # NaN: a missing score or feature says nothing about drift
                continue
            helper = detector._helper  # River replaces it when it resets after an alarm
            raw = (helper.get_total(), helper.get_variance(), helper.get_width())
            update(x)
            seen += 1
            if detector.drift_detected:
                before, after = _from_raw(*raw), _window(detector)
                events.append(
                    DriftEvent(
                        detected_at=at,
                        signal=signal,
                        n_seen=seen,
                        mean_before=before[0],
                        variance_before=before[1],
                        width_before=before[2],
                        mean_after=after[0],
                        variance_after=after[1],
                        width_after=after[2],
                        model_version=version,
                    )
                )
        self.n_seen[signal] = seen
        self.n_alarms[signal] += len(events)
        return events

    def update_scores(
        self,
        frame: pd.DataFrame,
        at: datetime,
        *,
        model_version: str | None = None,
        reference: ScoreReference | None = None,
    ) -> list[DriftEvent]:
        """Feed one scored micro-batch (columns ``fraud_probability``, ``anomaly_score``,
        ``amount_paise``, ``payer_count_1h``; ``txn_id`` for the sample).

        At most ``config.sample_size`` rows are used (:func:`deterministic_sample`).
        The frame's order is kept: pass it sorted (e.g. by ``event_time, txn_id``) for
        replay-stable state. ``model_version`` defaults to the frame's last
        ``model_version`` value, then to the monitor's. With a ``reference`` (the live
        model's, needs ``hour_ist``), values are fed as their per-hour PIT.
        """
        frame = established(frame, self.config.min_history_days)
        if frame.empty:
            return []
        sample = deterministic_sample(frame, self.config.sample_size)
        if model_version is None and "model_version" in sample.columns:
            model_version = str(sample["model_version"].iloc[-1])
        events: list[DriftEvent] = []
        hours = sample["hour_ist"].to_numpy(dtype=int) if reference is not None else None
        for signal, values in _score_values(sample).items():
            if reference is not None and hours is not None:
                values = reference.transform(signal, values, hours)
            events += self.observe(signal, values.tolist(), at, model_version=model_version)
        return events

    def update_labels(
        self, outcomes: pd.DataFrame, at: datetime, *, model_version: str | None = None
    ) -> list[DriftEvent]:
        """Feed late labels joined with the stream's decisions (``is_fraud``, ``decision``).

        Frauds feed ``recall_among_frauds`` (1.0 if the decision was not APPROVE);
        flagged transactions feed ``precision_of_alerts`` (1.0 if fraud). Rows are fed
        in frame order, or by ``label_time`` (then ``txn_id``) when those columns exist.
        """
        if outcomes.empty:
            return []
        missing = [c for c in ("is_fraud", "decision") if c not in outcomes.columns]
        if missing:
            raise ValueError(
                f"label outcomes lack columns {missing}; join the labels with scored_transactions on txn_id first"
            )
        order = [c for c in ("label_time", "txn_id") if c in outcomes.columns]
        if "label_time" in order:
            outcomes = outcomes.sort_values(order, kind="stable")
        is_fraud = outcomes["is_fraud"].to_numpy(dtype=bool)
        flagged = outcomes["decision"].astype(str).to_numpy() != APPROVE
        recall = flagged[is_fraud].astype(float).tolist()
        precision = is_fraud[flagged].astype(float).tolist()
        return self.observe(Signal.RECALL_AMONG_FRAUDS, recall, at, model_version=model_version) + self.observe(
            Signal.PRECISION_OF_ALERTS, precision, at, model_version=model_version
        )

    def new_model(self, version: str) -> None:
        """A new champion went live: restart the signals that depend on the model,
        so its different score distribution is not reported as drift."""
        self.model_version = version
        self.reset(MODEL_SIGNALS)

    def reset(self, signals: Sequence[Signal] | None = None) -> None:
        for signal in signals if signals is not None else tuple(Signal):
            self.detectors[signal] = self.config.detector(signal)
            self.n_seen[signal] = 0

    def windows(self) -> dict[Signal, tuple[float, float, int]]:
        """(mean, per-value variance, width) of each signal's current window."""
        return {s: _window(d) for s, d in self.detectors.items()}

    # --- persistence

    def to_bytes(self) -> bytes:
        """Everything needed to carry on after a restart (format :data:`FORMAT_VERSION`)."""
        return pickle.dumps(
            {
                "format": FORMAT_VERSION,
                "config": self.config.model_dump(mode="json"),
                "model_version": self.model_version,
                "detectors": {s.value: d for s, d in self.detectors.items()},
                "n_seen": {s.value: n for s, n in self.n_seen.items()},
                "n_alarms": {s.value: n for s, n in self.n_alarms.items()},
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DriftMonitor:
        """Restore :meth:`to_bytes` output. Unpickles: load only state this service wrote."""
        try:
            state = pickle.loads(data)
            version = state["format"]
        except (
            pickle.UnpicklingError,
            EOFError,
            KeyError,
            TypeError,
            AttributeError,
            ValueError,
            ImportError,
            IndexError,
        ) as exc:
            raise DriftStateError(f"drift state is damaged ({exc}); delete it to start the detectors afresh") from exc
        if version != FORMAT_VERSION:
            raise DriftStateError(
                f"drift state has format {version}, this code reads {FORMAT_VERSION}; "
                "delete it to start the detectors afresh"
            )
        monitor = cls(DriftConfig.model_validate(state["config"]), model_version=state["model_version"])
        monitor.detectors = {Signal(k): d for k, d in state["detectors"].items()}
        monitor.n_seen = {Signal(k): n for k, n in state["n_seen"].items()}
        monitor.n_alarms = {Signal(k): n for k, n in state["n_alarms"].items()}
        return monitor


# --------------------------------------------------------------------------- store


class DriftStateStore(ABC):
    """Where a monitor's bytes live between runs, by a key such as the stream's name."""

    @abstractmethod
    def load(self, key: str) -> bytes | None:
        """The saved bytes, or None when nothing was saved under ``key``."""

    @abstractmethod
    def save(self, key: str, data: bytes) -> None:
        """Replace what is saved under ``key`` (atomically: a reader sees old or new)."""

    def load_monitor(self, key: str, config: DriftConfig | None = None) -> DriftMonitor:
        """The saved monitor, or a fresh one with ``config`` when none was saved."""
        data = self.load(key)
        return DriftMonitor.from_bytes(data) if data is not None else DriftMonitor(config)

    def save_monitor(self, key: str, monitor: DriftMonitor) -> None:
        self.save(key, monitor.to_bytes())


_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class FileDriftStateStore(DriftStateStore):
    """One file per key under ``root`` (e.g. ``<state_dir>/drift``), replaced atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or key.startswith("."):
            raise ValueError(f"drift state key {key!r} must be 1-128 letters, digits, '_', '-' or '.'")
        return self.root / f"{key}.drift"

    def load(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def save(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
