"""The simulator's regime change: unchanged before ``at``, the configured drift after."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from faker import Faker
from pydantic import ValidationError

from txmon.infra.errors import ConfigError
from txmon.ingestion.events import Channel, TxnType, to_json
from txmon.ingestion.scenarios import ALL_SCENARIOS, EMERGING_SCENARIOS, SCENARIOS, EmergingScenarioId
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.ingestion.simulator import (
    DEFAULT_SCENARIO_WEIGHTS,
    RegimeChange,
    SimulatedTransaction,
    Simulator,
    SimulatorConfig,
    expected_time_after,
)

QR = EmergingScenarioId.QR_CODE_SWAP.value
N = 12_000
SEED = 21
BASE: dict[str, object] = {"n_customers": 300, "n_merchants": 60, "mean_tps": 0.2}
START = SimulatorConfig(**BASE).start_time
AT = START + timedelta(hours=12)


def _config(**drift: object) -> SimulatorConfig:
    return SimulatorConfig(**BASE, drift=RegimeChange(at=AT, **drift) if drift else None)


def _items(config: SimulatorConfig, n: int = N) -> list[SimulatedTransaction]:
    return list(Simulator(config, seed=SEED).generate(n))


@pytest.fixture(scope="module")
def baseline() -> list[SimulatedTransaction]:
    return _items(_config(), N + 3_000)  # longer: holds every attack started before AT


@pytest.fixture(scope="module")
def drifted() -> list[SimulatedTransaction]:
    return _items(
        _config(fraud_rate=0.05, scenario_weights={"card_testing": 1.0}, new_scenario=QR, spending_multiplier=2.0)
    )


def _new_frauds(items: list[SimulatedTransaction], baseline: list[SimulatedTransaction]) -> list:
    """Fraud from attacks started after AT (attacks started before are in the baseline)."""
    before = {item.event.txn_id for item in baseline}
    return [item for item in items if item.label.is_fraud and item.event.txn_id not in before]


def test_new_scenario_is_held_out_of_the_default_mix() -> None:
    assert QR in EMERGING_SCENARIOS and QR in ALL_SCENARIOS
    assert QR not in SCENARIOS and QR not in DEFAULT_SCENARIO_WEIGHTS
    assert QR not in SimulatorConfig().scenario_weights


def test_stream_before_the_change_is_the_unchanged_stream(baseline, drifted) -> None:
    pre = [to_json(i.event) for i in drifted if i.event.event_time < AT]
    assert len(pre) > 3_000
    assert pre == [to_json(i.event) for i in baseline[: len(pre)]]
    assert [i.label for i in drifted[: len(pre)]] == [i.label for i in baseline[: len(pre)]]
    assert drifted[len(pre)].event.event_time >= AT
    assert to_json(drifted[len(pre) + 10].event) != to_json(baseline[len(pre) + 10].event)


def test_after_the_change_fraud_rate_and_mix_follow_the_new_regime(baseline, drifted) -> None:
    pre = [i for i in drifted if i.event.event_time < AT]
    end = drifted[-1].event.event_time - timedelta(hours=3)  # later attacks are cut off by N
    post = [i for i in drifted if AT <= i.event.event_time < end]
    pre_rate = sum(i.label.is_fraud for i in pre) / len(pre)
    post_rate = sum(i.label.is_fraud for i in post) / len(post)
    assert 0.005 <= pre_rate <= 0.015, pre_rate
    assert 0.0425 <= post_rate <= 0.0575, post_rate
    new = _new_frauds(drifted, baseline)
    assert {i.event.event_time >= AT for i in new} == {True}
    scenarios = Counter(i.label.scenario for i in new)
    assert set(scenarios) == {"card_testing", QR}
    assert not any(i.label.scenario == QR for i in pre)


def test_qr_code_swap_events_carry_their_signature(drifted) -> None:
    sim = Simulator(_config(), seed=SEED)
    vpas = {c.upi_payer.vpa for c in sim.population.customers}
    qr = [i.event for i in drifted if i.label.scenario == QR]
    assert len(qr) >= 100
    for event in qr:
        assert event.channel is Channel.UPI and event.txn_type is TxnType.P2P and event.mcc is None
        assert 50 * 100 <= event.amount_paise <= 2_500 * 100 and event.amount_paise % 100 == 0
        assert event.payee.vpa not in vpas and event.payee.account_number is None


def test_qr_code_swap_run_is_many_strangers_paying_one_fresh_vpa() -> None:
    sim = Simulator(_config(), seed=SEED)
    rng, faker = np.random.default_rng(3), Faker("en_IN")
    faker.seed_instance(3)
    start = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    for k in range(20):
        run = ALL_SCENARIOS[QR](rng, faker, sim.population, start + timedelta(hours=k))
        assert 12 <= len(run) <= 40
        assert len({e.payer.account_number for e in run}) == len(run)
        assert len({e.payee for e in run}) == 1
        assert run[-1].event_time - run[0].event_time <= timedelta(hours=2)
        assert all(e.device_id in d for e, d in zip(run, [p.devices for p in _payers(sim, run)]))


def _payers(sim: Simulator, run) -> list:
    by_account = {c.bank_payer.account_number: c for c in sim.population.customers}
    return [by_account[e.payer.account_number] for e in run]


def test_spending_multiplier_raises_legit_amounts_and_adds_no_fraud(baseline) -> None:
    surged = _items(_config(spending_multiplier=3.0))
    base = {i.event.txn_id: i for i in baseline}
    assert [i.event.txn_id for i in surged] == [i.event.txn_id for i in baseline[: len(surged)]]
    ratios = []
    for item in surged:
        before = base[item.event.txn_id]
        if item.label.is_fraud or item.event.event_time < AT:
            assert to_json(item.event) == to_json(before.event) and item.label == before.label
        else:
            assert item.event.amount_paise >= before.event.amount_paise
            if item.event.txn_type is TxnType.P2M:
                ratios.append(item.event.amount_paise / before.event.amount_paise)
    assert 2.8 <= statistics.median(ratios) <= 3.2


def test_fraud_rate_zero_after_the_change_stops_new_attacks(baseline) -> None:
    items = _items(_config(fraud_rate=0.0))
    assert _new_frauds(items, baseline) == []
    assert any(i.label.is_fraud for i in items)


def test_regime_change_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        RegimeChange(at=AT, fraud=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown scenario"):
        RegimeChange(at=AT, new_scenario="bank_robbery")
    with pytest.raises(ValidationError, match="unknown scenarios"):
        RegimeChange(at=AT, scenario_weights={"bank_robbery": 1.0})
    with pytest.raises(ValidationError):
        RegimeChange(at=datetime(2025, 1, 6, 12))  # naive: ambiguous
    with pytest.raises(ValidationError, match="needs a positive scenario weight"):
        SimulatorConfig(drift=RegimeChange(at=AT, scenario_weights={"card_testing": 0.0}))
    assert RegimeChange(at=AT, new_scenario=QR, new_scenario_share=0.25).weights_after(
        {"card_testing": 1.0, "structuring": 3.0}
    ) == {"card_testing": 0.1875, "structuring": 0.5625, QR: 0.25}


def test_simulate_options_place_the_change_after_about_n_events() -> None:
    opts = SimulateOptions(
        count=6_000,
        rate=None,
        live=False,
        n_customers=300,
        n_merchants=60,
        drift_after_events=4_000,
        drift_scenario=QR,
        drift_fraud_rate=0.05,
    )
    sim = simulator_for(opts)
    assert sim.config.drift is not None and sim.config.drift.new_scenario == QR
    before = sum(i.event.event_time < sim.config.drift.at for i in sim.generate(6_000))
    assert 3_400 <= before <= 4_600, before
    with pytest.raises(ConfigError, match="drift-after-events"):
        simulator_for(SimulateOptions(live=False, drift_scenario=QR))
    with pytest.raises(ConfigError, match="new_scenario"):
        simulator_for(
            SimulateOptions(
                live=False, n_customers=300, n_merchants=60, drift_after_events=10, drift_scenario="bank_robbery"
            )
        )


def test_expected_time_after_follows_the_daily_rhythm() -> None:
    quiet = expected_time_after(START, 1.0, 1_000)  # starts at midnight IST: slow hours
    busy = expected_time_after(START + timedelta(hours=12), 1.0, 1_000)  # noon: busy hours
    assert quiet - START > busy - (START + timedelta(hours=12))
