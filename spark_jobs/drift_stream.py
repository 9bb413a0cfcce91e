"""The drift monitor (models/drift.py) fed from the running transactions stream.

Two parts, each owned by one streaming query and so by one driver thread:

* ``scores`` — the ingest query calls :meth:`StreamDrift.observe_scores` with every
  scored micro-batch: model score, anomaly score, amount and velocity (unsupervised).
* ``labels`` — the labels query calls :meth:`StreamDrift.observe_labels` with every
  batch of late labels, joined here with the decisions the stream made
  (``scored_transactions``): recall among frauds and precision of alerts (supervised).
  Only outcomes of the live champion are fed, and the label detectors restart when a
  new champion goes live, so a swap is judged on its own decisions.

State survives restarts in Cassandra ``drift_state`` (one row per stream and part),
together with the last micro-batch folded in: a batch Spark replays after a crash is
not fed twice. Every detection is written to ``drift_events`` (keyed by the batch that
raised it, so a replay rewrites the same row) and handed to the notifier — by default
Airflow's ``model_retraining`` DAG (:func:`infra.airflow.on_drift_event`), at most once
per ``drift.notify_cooldown_minutes``. A notifier that fails is logged and recorded on
the event; it never stops the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd

from txmon.infra.airflow import on_drift_event, reachable
from txmon.infra.cassandra_schema import rows_in, table_columns
from txmon.infra.settings import Settings
from txmon.infra.statements import DRIFT_STATE_GET, DRIFT_STATE_INSERT, SCORED_DECISIONS_IN
from txmon.models.drift import DriftConfig, DriftEvent, DriftMonitor, DriftStateStore
from txmon.models.registry import Registry
from txmon.spark_jobs.cassandra_sink import CassandraTarget, prepared, session_for, write_rows
from txmon.spark_jobs.detection import OUTCOME_COLUMNS

log = logging.getLogger(__name__)

SCORE_COLUMNS = OUTCOME_COLUMNS
"""The columns :meth:`StreamDrift.observe_scores` reads: what each micro-batch of the
detection query returns to the driver (one list, owned by spark_jobs/detection.py)."""
EVENT_COLUMNS = table_columns("drift_events")
Notifier = Callable[[DriftEvent], str]
"""Takes a drift event, returns what it did (e.g. the DAG run id); raises on failure."""


class CassandraDriftStateStore(DriftStateStore):
    """Monitor bytes in ``drift_state``, keyed ``<stream>/<part>``, with the applied batch."""

    def __init__(self, target: CassandraTarget, stream: str) -> None:
        self.target = target
        self.stream = stream

    def _session(self):
        return session_for(self.target)

    def row(self, part: str):
        session = self._session()
        stmt = prepared(session, DRIFT_STATE_GET)
        return session.execute(stmt, (self.stream, part)).one()

    def load(self, key: str) -> bytes | None:
        row = self.row(key)
        return bytes(row.state) if row is not None and row.state is not None else None

    def save(
        self, key: str, data: bytes, *, applied_batch: int | None = None, last_notified_at: datetime | None = None
    ) -> None:
        # One INSERT replaces the row atomically (a reader sees the old or the new state).
        session = self._session()
        stmt = prepared(session, DRIFT_STATE_INSERT)
        session.execute(stmt, (self.stream, key, data, applied_batch, last_notified_at, datetime.now(UTC)))


def airflow_notifier(settings: Settings) -> Notifier:
    """Trigger the retraining DAG through Airflow's REST API."""

    def notify(event: DriftEvent) -> str:
        return f"airflow run {on_drift_event(settings, event)}"

    return notify


class NotNotified(Exception):
    """Raised by a notifier that has nobody to tell: the event is recorded with the reason,
    no error is logged and the notification cooldown does not start."""


def default_notifier(settings: Settings) -> Notifier | None:
    """``drift.notify: airflow``: trigger retraining when there is an Airflow to tell
    (:func:`txmon.infra.airflow.reachable`, checked at each event, so an Airflow started
    later is told of the next one); otherwise the event is only recorded."""
    if settings.drift.notify != "airflow":
        return None
    notify = airflow_notifier(settings)

    def when_airflow_runs(event: DriftEvent) -> str:
        if not reachable(settings):
            raise NotNotified("Airflow is not running (`txmon airflow up`: drift then triggers model_retraining)")
        return notify(event)

    return when_airflow_runs


class _Part:
    """One part's monitor, its last applied batch and its notification clock."""

    def __init__(self, store: CassandraDriftStateStore, name: str, config) -> None:
        row = store.row(name)
        self.name = name
        self.monitor = (
            DriftMonitor.from_bytes(bytes(row.state))
            if row is not None and row.state is not None
            else DriftMonitor(config)
        )
        self.applied_batch = row.applied_batch if row is not None and row.applied_batch is not None else -1
        last = row.last_notified_at if row is not None else None
        self.last_notified_at = last.replace(tzinfo=UTC) if last is not None and last.tzinfo is None else last


class StreamDrift:
    """Drift detection for one stream (``stream`` names its state, e.g. the checkpoint)."""

    def __init__(
        self,
        settings: Settings,
        target: CassandraTarget,
        stream: str,
        *,
        notifier: Notifier | None = None,
        registry_root=None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.stream = stream
        self.store = CassandraDriftStateStore(target, stream)
        config = DriftConfig(grace=settings.drift.grace, sample_size=settings.drift.sample_size)
        self.parts = {name: _Part(self.store, name, config) for name in ("scores", "labels")}
        self.notifier = notifier
        self.cooldown = timedelta(minutes=settings.drift.notify_cooldown_minutes)
        self.registry_root = registry_root
        self.events: list[DriftEvent] = []  # this process's detections, newest last (operators, tests)

    # ----------------------------------------------------------------- feeding

    def observe_scores(self, frame: pd.DataFrame, batch_id: int, reference=None) -> list[DriftEvent]:
        """Feed one scored micro-batch: a pandas frame with SCORE_COLUMNS (what
        detection.Detector.process returns to the driver); ``reference``: the scoring
        model's per-hour ScoreReference (None: raw values)."""
        part = self.parts["scores"]
        if batch_id <= part.applied_batch:
            return []  # a replay of a batch already folded in
        missing = set(SCORE_COLUMNS) - set(frame.columns)
        if missing:
            raise ValueError(f"scored batch lacks the drift monitor's columns {sorted(missing)}")
        if frame.empty:
            return []
        frame = frame.sort_values(["event_time", "txn_id"], kind="stable")
        version = str(frame["model_version"].iloc[-1])
        if part.monitor.model_version != version:
            part.monitor.new_model(version)
        events = part.monitor.update_scores(frame, datetime.now(UTC), model_version=version, reference=reference)
        return self._finish(part, batch_id, events, frame["event_time"].max())

    def observe_labels(self, labels: pd.DataFrame, batch_id: int) -> list[DriftEvent]:
        """Feed one batch of labels (columns txn_id, is_fraud, label_time)."""
        part = self.parts["labels"]
        if batch_id <= part.applied_batch or labels.empty:
            return []
        champion = self._champion()
        if champion is not None and part.monitor.model_version != champion:
            part.monitor.new_model(champion)
        outcomes = labels.merge(self._decisions(labels["txn_id"].tolist()), on="txn_id", how="inner")
        if champion is not None:
            outcomes = outcomes[outcomes["model_version"] == champion]
        events = part.monitor.update_labels(outcomes, datetime.now(UTC), model_version=champion)
        data_time = pd.to_datetime(labels["label_time"], utc=True).max() if "label_time" in labels else None
        return self._finish(part, batch_id, events, data_time)

    # ---------------------------------------------------------------- internals

    def _champion(self) -> str | None:
        if self.registry_root is None:
            return None
        try:
            return Registry(self.registry_root).champion()
        except Exception as exc:  # noqa: BLE001 - an unreadable registry must not stop the labels query
            log.error("model registry unreadable (%s); label drift fed without a model filter", exc)
            return None

    def _decisions(self, ids: list[str]) -> pd.DataFrame:
        session = session_for(self.target)
        rows = rows_in(session, prepared(session, SCORED_DECISIONS_IN), ids)
        return pd.DataFrame(
            [(r.txn_id, r.decision, r.model_version) for r in rows], columns=["txn_id", "decision", "model_version"]
        )

    def _finish(self, part: _Part, batch_id: int, events: list[DriftEvent], data_time) -> list[DriftEvent]:
        # Events first, state second: a crash in between replays the batch, which finds
        # the same events (deterministic sample) and rewrites the same rows.
        if events:
            data_time = None if data_time is None or pd.isna(data_time) else pd.Timestamp(data_time).to_pydatetime()
            rows = []
            for event in events:
                notified = self._notify(part, event)
                rows.append(
                    (
                        self.stream,
                        part.name,
                        batch_id,
                        event.signal.value,
                        event.detected_at,
                        data_time,
                        event.n_seen,
                        event.mean_before,
                        event.variance_before,
                        event.width_before,
                        event.mean_after,
                        event.variance_after,
                        event.width_after,
                        event.model_version,
                        notified,
                    )
                )
                # Recorded without anyone to tell (no Airflow): the operator reads drift_events.
                level = logging.INFO if notified.startswith("not notified") else logging.WARNING
                log.log(
                    level,
                    "drift on %s/%s: %s mean %.4f -> %.4f after %d values (%s)",
                    self.stream,
                    part.name,
                    event.signal.value,
                    event.mean_before,
                    event.mean_after,
                    event.n_seen,
                    notified,
                )
            write_rows(self.target, "drift_events", EVENT_COLUMNS, rows, batch_rows=1)
            self.events.extend(events)
        part.applied_batch = batch_id
        self.store.save(
            part.name, part.monitor.to_bytes(), applied_batch=batch_id, last_notified_at=part.last_notified_at
        )
        return events

    def _notify(self, part: _Part, event: DriftEvent) -> str:
        if self.notifier is None:
            return "not notified: drift.notify is none"
        last = max((p.last_notified_at for p in self.parts.values() if p.last_notified_at), default=None)
        if last is not None and event.detected_at - last < self.cooldown:
            return f"not notified: within the cooldown after {last.isoformat()}"
        try:
            done = self.notifier(event)
        except NotNotified as exc:
            return f"not notified: {exc}"
        except Exception as exc:  # noqa: BLE001 - Airflow down or refusing: record it, keep streaming
            log.error("drift event on %s could not be notified: %s", event.signal.value, exc)
            return f"notify failed: {exc}"[:500]
        part.last_notified_at = event.detected_at
        return done
