"""`txmon simulate`: seeded simulator -> Kafka, with labels to a topic and a file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from txmon.infra.errors import ConfigError
from txmon.infra.settings import Settings
from txmon.ingestion.labels import LabelReleaser
from txmon.ingestion.producer import ProduceSummary, TransactionProducer, produce_events
from txmon.ingestion.simulator import RegimeChange, Simulator, SimulatorConfig, expected_time_after, live_start_time


@dataclass(frozen=True)
class SimulateOptions:
    seed: int = 42
    rate: float | None = 1000.0
    count: int | None = None
    duration: float | None = None
    fraud_rate: float = 0.01
    n_customers: int = 10_000
    n_merchants: int = 1_000
    label_delay_seconds: float = 3600.0
    txns_per_customer_per_day: float = 4.0
    labels_file: Path | None = None
    topic: str | None = None
    labels_topic: str | None = None
    live: bool = True
    # Live runs end at about the wall clock, so one seed draws other event times (and with
    # the diurnal rhythm, other events) each run; a fixed end time draws the same events.
    live_until: datetime | None = None
    progress: bool = True
    # A regime change after this many events (None: none). The other drift_* options say
    # what changes; each None keeps the value from before.
    drift_after_events: int | None = None
    drift_fraud_rate: float | None = None
    drift_scenario: str | None = None  # a new pattern, e.g. "qr_code_swap"
    drift_scenario_share: float = 0.5  # share of attacks after the change that use it
    drift_spending_multiplier: float | None = None  # benign surge of legit ticket sizes


def simulator_for(opts: SimulateOptions) -> Simulator:
    """A simulator whose customers behave like real ones whatever the producing rate.

    The simulated clock runs at the population's own pace (``txns_per_customer_per_day``
    per customer), not at the producing rate: producing 2,000 tx/s from 10,000 customers
    replays about five days of their history per minute, so per-account windows and
    profiles look like a bank's. Live runs start the clock far enough back that the run
    ends at about the wall clock (see :func:`live_start_time`).
    """
    mean_tps = opts.n_customers * opts.txns_per_customer_per_day / 86_400
    planned = (
        opts.count
        if opts.count is not None
        else (int(opts.duration * opts.rate) if opts.duration is not None and opts.rate else None)
    )
    extra = (
        {"start_time": live_start_time(planned, mean_tps, opts.fraud_rate, now=opts.live_until)} if opts.live else {}
    )
    config = SimulatorConfig(
        n_customers=opts.n_customers,
        n_merchants=opts.n_merchants,
        fraud_rate=opts.fraud_rate,
        mean_tps=mean_tps,
        label_delay_seconds=opts.label_delay_seconds,
        **extra,
    )
    drift = drift_for(opts, config)
    if drift is not None:
        config = SimulatorConfig(**{**config.model_dump(), "drift": drift})
    return Simulator(config, seed=opts.seed)


def drift_for(opts: SimulateOptions, config: SimulatorConfig) -> RegimeChange | None:
    """The regime change the ``drift_*`` options ask for, placed at the simulated time by
    which about ``drift_after_events`` events have happened (:func:`expected_time_after`)."""
    asked = (opts.drift_fraud_rate, opts.drift_scenario, opts.drift_spending_multiplier)
    if opts.drift_after_events is None:
        if any(a is not None for a in asked):
            raise ConfigError("drift options need --drift-after-events (when the regime changes)")
        return None
    if opts.drift_after_events < 0:
        raise ConfigError(f"--drift-after-events must be >= 0, got {opts.drift_after_events}")
    at = expected_time_after(config.start_time, config.mean_tps, opts.drift_after_events, config.fraud_rate)
    try:
        return RegimeChange(
            at=at,
            fraud_rate=opts.drift_fraud_rate,
            new_scenario=opts.drift_scenario,
            new_scenario_share=opts.drift_scenario_share,
            spending_multiplier=opts.drift_spending_multiplier,
        )
    except ValueError as exc:  # pydantic's ValidationError: name the bad option in one line
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or "drift"
        raise ConfigError(f"drift option {where}: {first['msg']}") from exc


def run_simulation(settings: Settings, opts: SimulateOptions, on_event=None) -> ProduceSummary:
    """Produce simulated traffic; fraud labels follow on the labels topic after their delay.

    ``on_event(event, label, producer)`` is called after each event is handed to Kafka.
    """
    simulator = simulator_for(opts)
    producer = TransactionProducer(settings, topic=opts.topic, labels_topic=opts.labels_topic)
    releaser = LabelReleaser(producer, opts.labels_file)

    def _on_label(label, event):
        releaser(label, event)
        if on_event is not None:
            on_event(event, label, producer)

    try:
        summary = produce_events(
            producer,
            ((s.event, s.label) for s in simulator.stream()),
            rate=opts.rate,
            count=opts.count,
            duration=opts.duration,
            on_label=_on_label,
            progress=opts.progress,
        )
        releaser.close(release_pending=True)
        producer.flush()
    finally:
        producer.close()
    return summary
