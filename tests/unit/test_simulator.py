"""The simulator: seeded determinism, valid events, realistic shape, labelled fraud."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from faker import Faker
from pydantic import ValidationError

from txmon.ingestion.events import (
    IST,
    RTGS_MIN_AMOUNT_PAISE,
    Channel,
    Status,
    TransactionEvent,
    TxnType,
    to_json,
    validate_event,
)
from txmon.ingestion.scenarios import SCENARIOS, THRESHOLDS_PAISE, UPI_LIMIT_PAISE, ScenarioId
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.ingestion.simulator import (
    Customer,
    Label,
    Population,
    SimulatedTransaction,
    Simulator,
    SimulatorConfig,
    live_start_time,
    write_labels,
)

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)  # simulated times are never "future"
N = 20_000
EVEN_WEIGHTS = dict.fromkeys(SCENARIOS, 1.0)
Heavy = tuple[Simulator, list[SimulatedTransaction]]


def config(**overrides: object) -> SimulatorConfig:
    # 0.2 events per simulated second: 20k events span more than a day.
    base: dict[str, object] = {"n_customers": 1_500, "n_merchants": 200, "mean_tps": 0.2}
    return SimulatorConfig(**{**base, **overrides})


def small(**overrides: object) -> SimulatorConfig:
    """A cheap population for tests that only need a few thousand events."""
    base: dict[str, object] = {"n_customers": 300, "n_merchants": 60, "mean_tps": 0.2}
    return SimulatorConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def default_sim() -> Simulator:
    return Simulator(config(), seed=42)


@pytest.fixture(scope="module")
def traffic(default_sim: Simulator) -> list[SimulatedTransaction]:
    """Default fraud mix at 1%."""
    return list(default_sim.generate(N))


@pytest.fixture(scope="module")
def fraud_heavy() -> tuple[Simulator, list[SimulatedTransaction]]:
    """5% fraud, every scenario equally likely, so each shows up many times."""
    sim = Simulator(config(fraud_rate=0.05, scenario_weights=EVEN_WEIGHTS), seed=7)
    return sim, list(sim.generate(N))


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_byte_identical_stream() -> None:
    a = Simulator(small(), seed=123).generate(3_000)
    b = Simulator(small(), seed=123).generate(3_000)
    for x, y in zip(a, b, strict=True):
        assert to_json(x.event) == to_json(y.event)
        assert x.label == y.label


def test_stream_replays_from_the_start(default_sim: Simulator, traffic: list[SimulatedTransaction]) -> None:
    again = [to_json(item.event) for item in default_sim.generate(2_000)]
    assert again == [to_json(item.event) for item in traffic[:2_000]]


def test_different_seed_gives_different_stream() -> None:
    a = [to_json(x.event) for x in Simulator(small(), seed=1).generate(50)]
    b = [to_json(x.event) for x in Simulator(small(), seed=2).generate(50)]
    assert a != b


def test_seeded_regression_exact_fraud_counts(traffic: list[SimulatedTransaction]) -> None:
    """Exact outcome for seed 42: any change to the generator shows up here."""
    counts = Counter(item.label.scenario for item in traffic if item.label.is_fraud)
    assert counts == {
        "account_takeover": 34,
        "card_testing": 52,
        "late_night_social_engineering": 12,
        "mule_fan_in": 45,
        "new_payee_high_value": 10,
        "structuring": 13,
        "velocity_burst": 32,
    }


# ------------------------------------------------------------------- validity


def test_every_event_passes_the_contract(traffic: list[SimulatedTransaction], fraud_heavy: Heavy) -> None:
    for item in [*traffic, *fraud_heavy[1]]:
        assert validate_event(to_json(item.event), now=FAR_FUTURE) == item.event


def test_events_in_event_time_order_from_the_start(traffic: list[SimulatedTransaction]) -> None:
    times = [item.event.event_time for item in traffic]
    assert times == sorted(times)
    assert times[0] >= config().start_time
    assert times[-1] - times[0] > timedelta(hours=24)
    assert len({item.event.txn_id for item in traffic}) == len(traffic)


def test_labels_never_travel_inside_events(fraud_heavy: Heavy) -> None:
    allowed = set(TransactionEvent.model_fields)
    for item in fraud_heavy[1]:
        wire = to_json(item.event)
        assert set(json.loads(wire)) <= allowed
        if item.label.scenario:
            assert item.label.scenario.encode() not in wire


def test_labels_match_their_events(traffic: list[SimulatedTransaction]) -> None:
    delay = timedelta(seconds=config().label_delay_seconds)
    for item in traffic:
        assert item.label.txn_id == item.event.txn_id
        assert item.label.label_time == item.event.event_time + delay
        assert item.label.is_fraud == (item.label.scenario is not None)


# ------------------------------------------------------------------ fraud mix


def test_fraud_rate_within_tolerance(traffic: list[SimulatedTransaction], fraud_heavy: Heavy) -> None:
    for items, target in ((traffic, 0.01), (fraud_heavy[1], 0.05)):
        rate = sum(item.label.is_fraud for item in items) / len(items)
        assert target * 0.85 <= rate <= target * 1.15, rate


def test_no_fraud_when_rate_is_zero() -> None:
    items = list(Simulator(small(fraud_rate=0.0), seed=3).generate(3_000))
    assert not any(item.label.is_fraud for item in items)


def test_every_scenario_appears_with_its_id(fraud_heavy: Heavy) -> None:
    seen = Counter(item.label.scenario for item in fraud_heavy[1] if item.label.is_fraud)
    assert set(seen) == set(SCENARIOS) == {s.value for s in ScenarioId}
    assert min(seen.values()) >= 10


def test_zero_weight_scenarios_never_run() -> None:
    only = dict.fromkeys(SCENARIOS, 0.0) | {"card_testing": 1.0}
    items = Simulator(small(fraud_rate=0.05, scenario_weights=only), seed=5).generate(5_000)
    assert {item.label.scenario for item in items if item.label.is_fraud} == {"card_testing"}


def _signature_holds(
    scenario: str, event: TransactionEvent, customers: dict[str, Customer], vpas: set[str | None]
) -> bool:
    """Per-event part of each scenario's signature (the per-run part is tested below)."""
    fresh_payee = event.payee.account_number not in customers and event.payee.vpa not in vpas
    payer = customers[event.payer.account_number]
    amount = event.amount_paise
    match scenario:
        case "card_testing":
            return event.channel is Channel.CARD_ECOM and amount <= 1_000
        case "structuring":
            return any(0.9 * t <= amount < t for t in THRESHOLDS_PAISE)
        case "late_night_social_engineering":
            return event.event_time.astimezone(IST).hour < 5 and fresh_payee
        case "account_takeover":
            return event.device_id not in payer.devices and event.geo is not None and event.geo.city != payer.city.name
        case "velocity_burst":
            return event.txn_type is TxnType.P2P and 200_000 <= amount <= 2_000_000 and fresh_payee
        case "new_payee_high_value":
            return amount >= 5_000_000 and fresh_payee
        case "mule_fan_in":
            return fresh_payee
    raise AssertionError(f"no signature for {scenario}")


def test_fraud_events_carry_their_scenario_signature(
    fraud_heavy: Heavy,
) -> None:
    sim, items = fraud_heavy
    customers = {c.bank_payer.account_number: c for c in sim.population.customers}
    vpas = {c.upi_payer.vpa for c in sim.population.customers}
    for item in items:
        if item.label.is_fraud:
            assert item.label.scenario is not None, item
            assert _signature_holds(item.label.scenario, item.event, customers, vpas), item


# --------------------------------------------------- scenarios, run by run


def _runs(scenario: str, population: Population, n_runs: int = 25) -> list[list[TransactionEvent]]:
    rng = np.random.default_rng(11)
    faker = Faker("en_IN")
    faker.seed_instance(11)
    start = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    return [SCENARIOS[scenario](rng, faker, population, start + timedelta(hours=5 * k)) for k in range(n_runs)]


def _span(run: list[TransactionEvent]) -> timedelta:
    return run[-1].event_time - run[0].event_time


def test_card_testing_is_many_micro_payments_from_one_payer(default_sim: Simulator) -> None:
    for run in _runs("card_testing", default_sim.population):
        assert len(run) >= 15 and _span(run) <= timedelta(minutes=5)
        assert len({e.payer.account_number for e in run}) == 1
        assert all(e.amount_paise <= 1_000 for e in run)
        assert sum(e.status is Status.FAILED for e in run) >= 1


def test_mule_fan_in_is_many_payers_to_one_payee(default_sim: Simulator) -> None:
    for run in _runs("mule_fan_in", default_sim.population):
        assert len({e.payer.account_number for e in run}) >= 10
        assert len({e.payee for e in run}) == 1
        assert _span(run) <= timedelta(hours=3)


def test_structuring_stays_just_below_a_threshold(default_sim: Simulator) -> None:
    for run in _runs("structuring", default_sim.population):
        threshold = next(t for t in THRESHOLDS_PAISE if run[0].amount_paise < t)
        assert len(run) >= 3 and len({e.payer.account_number for e in run}) == 1
        assert all(0.9 * threshold <= e.amount_paise < threshold for e in run)


def test_velocity_burst_is_many_payments_in_minutes(default_sim: Simulator) -> None:
    for run in _runs("velocity_burst", default_sim.population):
        assert len(run) >= 8 and _span(run) <= timedelta(minutes=10)
        assert len({e.payer.account_number for e in run}) == 1


def test_late_night_payments_happen_at_night_and_escalate(default_sim: Simulator) -> None:
    for run in _runs("late_night_social_engineering", default_sim.population):
        assert all(e.event_time.astimezone(IST).hour < 5 for e in run)
        amounts = [e.amount_paise for e in run]
        assert amounts == sorted(amounts) and len({e.payee for e in run}) == 1


def test_account_takeover_probes_then_drains_from_a_new_device(default_sim: Simulator) -> None:
    for run in _runs("account_takeover", default_sim.population):
        assert run[0].amount_paise <= 1_000 < min(e.amount_paise for e in run[1:])
        assert len({e.device_id for e in run}) == 1 and _span(run) <= timedelta(minutes=15)
        assert all(e.amount_paise <= UPI_LIMIT_PAISE for e in run if e.channel is Channel.UPI)


def test_new_payee_high_value_is_large(default_sim: Simulator) -> None:
    for run in _runs("new_payee_high_value", default_sim.population):
        assert 1 <= len(run) <= 2 and all(e.amount_paise >= 5_000_000 for e in run)


# ------------------------------------------------------------ realistic shape


def test_diurnal_pattern_busy_afternoons_quiet_nights(traffic: list[SimulatedTransaction]) -> None:
    by_hour = Counter(item.event.event_time.astimezone(IST).hour for item in traffic)
    day = statistics.mean(by_hour[h] for h in range(12, 22))
    night = statistics.mean(by_hour[h] for h in range(1, 6))
    assert day > 4 * night


def test_channel_mix_and_ticket_sizes(traffic: list[SimulatedTransaction]) -> None:
    normal = [item.event for item in traffic if not item.label.is_fraud]
    channels = Counter(e.channel for e in normal)
    assert channels.most_common(1)[0][0] is Channel.UPI
    assert channels[Channel.UPI] > 0.5 * len(normal)
    assert set(channels) == set(Channel)
    tickets: dict[TxnType, list[int]] = defaultdict(list)
    for e in normal:
        tickets[e.txn_type].append(e.amount_paise)
    assert statistics.median(tickets[TxnType.P2M]) < statistics.median(tickets[TxnType.P2P])
    assert all(e.amount_paise >= RTGS_MIN_AMOUNT_PAISE for e in normal if e.channel is Channel.RTGS)
    assert all(e.amount_paise <= UPI_LIMIT_PAISE for e in normal if e.channel is Channel.UPI)
    assert all(e.amount_paise % 10_000 == 0 for e in normal if e.channel is Channel.ATM)


def test_population_looks_indian(default_sim: Simulator) -> None:
    customer = default_sim.population.customers[0]
    assert customer.upi_payer.vpa is not None and customer.upi_payer.ifsc is not None
    assert customer.upi_payer.vpa.split("@")[1] in {
        "ybl",
        "oksbi",
        "okaxis",
        "okhdfcbank",
        "ibl",
        "paytm",
        "okicici",
        "axl",
        "upi",
    }
    assert customer.upi_payer.ifsc[4] == "0"
    assert 6 < customer.geo.lat < 37 and 68 < customer.geo.lon < 98


# ----------------------------------------------------------- config and labels


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        SimulatorConfig(n_customer=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown scenarios"):
        SimulatorConfig(scenario_weights={"bank_robbery": 1.0})
    with pytest.raises(ValidationError):
        SimulatorConfig(start_time=datetime(2025, 1, 1))  # naive: ambiguous
    with pytest.raises(ValidationError):
        config().n_customers = 5  # type: ignore[misc]
    assert SimulatorConfig(start_time=datetime(2025, 1, 1, tzinfo=IST)).start_time.tzinfo == UTC


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_write_labels(tmp_path: Path, traffic: list[SimulatedTransaction], suffix: str) -> None:
    labels = [item.label for item in traffic[:100]]
    path = tmp_path / f"labels{suffix}"
    assert write_labels(labels, path) == 100
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle] if suffix == ".jsonl" else list(csv.DictReader(handle))
    assert [row["txn_id"] for row in rows] == [label.txn_id for label in labels]
    assert rows[0]["label_time"].endswith("Z")


def test_write_labels_refuses_unknown_format(tmp_path: Path) -> None:
    label = Label("0f8fad5b-d9cb-469f-a165-70867728950e", False, None, datetime.now(UTC))
    with pytest.raises(ValueError, match=r"\.jsonl or \.csv"):
        write_labels([label], tmp_path / "labels.parquet")


@pytest.mark.parametrize("hour_utc", [23.5, 5.0, 12.0, 18.0])
def test_a_live_run_ends_before_the_wall_clock_at_any_hour(hour_utc: float) -> None:
    """300 customers, 300 events: a short run, planned from the quiet night hours (23:30
    UTC is 05:00 IST) as well as from busy ones. The start follows the diurnal rhythm, so no
    event lands after "now" (the stream would dead-letter it as a future timestamp, or the
    producer clamp a burst of events to now), and the run still ends on the same day: the
    night is quiet, so its last event may be hours before now, not days."""
    now = datetime(2026, 11, 24, tzinfo=UTC) + timedelta(hours=hour_utc)
    mean_tps = 300 * 4 / 86_400
    start = live_start_time(300, mean_tps, fraud_rate=0.01, now=now)
    assert start < now
    for seed in range(4):
        items = Simulator(small(mean_tps=mean_tps, fraud_rate=0.01, start_time=start), seed=seed).generate(300)
        last = max(item.event.event_time for item in items)
        assert last <= now
        assert now - last < timedelta(hours=12)


def test_a_live_run_without_a_planned_count_starts_a_day_back() -> None:
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert live_start_time(None, 1.0, now=now) == now - timedelta(days=1)
    assert live_start_time(0, 1.0, now=now) == now


def test_a_live_run_with_a_fixed_end_draws_the_same_events_whatever_the_wall_clock() -> None:
    """Live traffic ends at about the wall clock, so a seed alone draws other event times
    (and through the diurnal rhythm other events) each run; `--ends-at` fixes the clock."""
    ends = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)

    def first(opts: SimulateOptions) -> list[bytes]:
        return [to_json(item.event) for item in simulator_for(opts).generate(300)]

    pinned = SimulateOptions(seed=5, count=300, n_customers=200, live_until=ends)
    assert first(pinned) == first(pinned)
    events = [item.event for item in simulator_for(pinned).generate(300)]
    assert events[-1].event_time < ends  # the run is planned to end before that time
    later = SimulateOptions(seed=5, count=300, n_customers=200, live_until=ends + timedelta(hours=7))
    assert first(later) != first(pinned)
