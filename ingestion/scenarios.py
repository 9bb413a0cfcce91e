"""Fraud scenarios the simulator injects, each with a recognisable signature.

A scenario is a small function ``(rng, faker, population, start) -> list[event]``:
given the seeded generator, the Faker instance, the simulated population and the
moment the attack begins, it returns the attack's events in time order. Every event
a scenario returns is fraudulent; the simulator labels it with the scenario id (the
label never travels inside the event). Ids are stable strings: they appear in label
files, metrics and model evaluation reports.

The signatures are deliberately crisp so that tests, rules and models can be
checked against them; see each function's docstring.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
from faker import Faker

from txmon.ingestion.events import (
    IST,
    LAKH,
    PAISE_PER_RUPEE,
    SCHEMA_VERSION,
    Channel,
    Geo,
    Party,
    Payer,
    Status,
    TransactionEvent,
    TxnType,
)

if TYPE_CHECKING:
    from txmon.ingestion.simulator import Customer, Population

__all__ = [
    "ALL_SCENARIOS",
    "EMERGING_SCENARIOS",
    "SCENARIOS",
    "THRESHOLDS_PAISE",
    "UPI_LIMIT_PAISE",
    "EmergingScenarioId",
    "Scenario",
    "ScenarioId",
]

UPI_LIMIT_PAISE = 1 * LAKH * PAISE_PER_RUPEE
"""NPCI's general per-transaction UPI limit (1 lakh INR)."""
THRESHOLDS_PAISE = (50_000 * PAISE_PER_RUPEE, 10 * LAKH * PAISE_PER_RUPEE)
"""Reporting thresholds structurers stay under: 50k INR (PAN quoting) and 10 lakh
INR (cash / suspicious transaction reporting)."""


class ScenarioId(StrEnum):
    VELOCITY_BURST = "velocity_burst"
    NEW_PAYEE_HIGH_VALUE = "new_payee_high_value"
    MULE_FAN_IN = "mule_fan_in"
    LATE_NIGHT_SOCIAL_ENGINEERING = "late_night_social_engineering"
    ACCOUNT_TAKEOVER = "account_takeover"
    CARD_TESTING = "card_testing"
    STRUCTURING = "structuring"


class EmergingScenarioId(StrEnum):
    """Patterns held out of the default mix: they appear only when a simulated regime
    change (``SimulatorConfig.drift``) or an explicit ``scenario_weights`` asks for them,
    so models trained on default traffic have never seen them."""

    QR_CODE_SWAP = "qr_code_swap"


Scenario = Callable[[np.random.Generator, Faker, "Population", datetime], list[TransactionEvent]]


def _txn_id(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _times(rng: np.random.Generator, start: datetime, n: int, span_seconds: float) -> list[datetime]:
    """n sorted instants in [start, start + span]; the first is ``start`` itself."""
    offsets = np.sort(rng.uniform(0.0, span_seconds, n))
    offsets[0] = 0.0
    return [start + timedelta(microseconds=int(s * 1e6)) for s in offsets]


def _event(
    rng: np.random.Generator,
    at: datetime,
    channel: Channel,
    txn_type: TxnType,
    payer: Payer,
    payee: Party,
    amount_paise: int,
    *,
    device_id: str | None,
    ip: str | None,
    geo: Geo | None,
    mcc: str | None = None,
    status: Status = Status.SUCCESS,
) -> TransactionEvent:
    return TransactionEvent(
        schema_version=SCHEMA_VERSION,
        txn_id=_txn_id(rng),
        event_time=at,
        channel=channel,
        txn_type=txn_type,
        payer=payer,
        payee=payee,
        amount_paise=amount_paise,
        currency="INR",
        mcc=mcc,
        device_id=device_id,
        ip=ip,
        geo=geo,
        status=status,
    )


def _own_upi(
    rng: np.random.Generator,
    victim: Customer,
    at: datetime,
    payee: Party,
    amount_paise: int,
    txn_type: TxnType = TxnType.P2P,
) -> TransactionEvent:
    """A UPI push made from the victim's own phone (authorised push-payment fraud)."""
    return _event(
        rng,
        at,
        Channel.UPI,
        txn_type,
        victim.upi_payer,
        payee,
        amount_paise,
        device_id=victim.devices[0],
        ip=victim.ip,
        geo=victim.geo,
    )


def velocity_burst(
    rng: np.random.Generator, faker: Faker, population: Population, start: datetime
) -> list[TransactionEvent]:
    """Hijacked UPI app drains an account in many mid-size pushes to a few fresh payees.

    Signature: 8-15 UPI P2P payments of 2k-20k INR from one payer within 8 minutes.
    """
    victim = population.pick_customer(rng)
    mules = [population.fresh_party(rng, faker, account=False) for _ in range(rng.integers(2, 5))]
    n = int(rng.integers(8, 16))
    amounts = rng.integers(2_000, 20_001, n) * PAISE_PER_RUPEE
    return [
        _own_upi(rng, victim, at, mules[i % len(mules)], int(amounts[i]))
        for i, at in enumerate(_times(rng, start, n, 480.0))
    ]


def new_payee_high_value(
    rng: np.random.Generator, faker: Faker, population: Population, start: datetime
) -> list[TransactionEvent]:
    """Impersonation scam: one or two large transfers to a payee never paid before.

    Signature: amount >= 50k INR (25-80x the payer's usual ticket) to a payee that
    does not exist in the simulated population.
    """
    victim = population.pick_customer(rng)
    ticket = victim.ticket_paise * rng.uniform(25, 80)
    amount = int(np.clip(ticket, 50_000 * PAISE_PER_RUPEE, 4.5 * LAKH * PAISE_PER_RUPEE))
    amount -= amount % (1_000 * PAISE_PER_RUPEE)
    n = int(rng.integers(1, 3))
    if amount > UPI_LIMIT_PAISE:
        payee = population.fresh_party(rng, faker, vpa=False)
        return [
            _event(
                rng,
                at,
                Channel.IMPS,
                TxnType.TRANSFER,
                victim.bank_payer,
                payee,
                amount,
                device_id=victim.devices[0],
                ip=victim.ip,
                geo=victim.geo,
            )
            for at in _times(rng, start, n, 600.0)
        ]
    payee = population.fresh_party(rng, faker, account=False)
    return [_own_upi(rng, victim, at, payee, amount) for at in _times(rng, start, n, 600.0)]


def mule_fan_in(
    rng: np.random.Generator, faker: Faker, population: Population, start: datetime
) -> list[TransactionEvent]:
    """A mule account collects from many scam victims (fake jobs, lottery, KYC).

    Signature: 10-20 distinct payers pay one fresh payee within 30-180 minutes.
    """
    mule = population.fresh_party(rng, faker)
    victims = population.distinct_customers(rng, int(rng.integers(10, 21)))
    amounts = rng.integers(1_000, 25_001, len(victims)) * PAISE_PER_RUPEE
    kinds = np.where(rng.random(len(victims)) < 0.2, TxnType.COLLECT, TxnType.P2P)
    times = _times(rng, start, len(victims), rng.uniform(1_800, 10_800))
    return [
        _own_upi(rng, victim, at, mule, int(amount), TxnType(kind))
        for victim, at, amount, kind in zip(victims, times, amounts, kinds)
    ]


def _night_start(rng: np.random.Generator, start: datetime) -> datetime:
    """``start`` if it falls between 00:00 and 03:00 IST, else a moment in the next
    such window: scammers call when victims are drowsy and banks' helplines thin."""
    local = start.astimezone(IST)
    if local.hour < 3:
        return start
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(minutes=30, seconds=float(rng.uniform(0, 9_000)))


def late_night_social_engineering(
    rng: np.random.Generator, faker: Faker, population: Population, start: datetime
) -> list[TransactionEvent]:
    """Caller posing as bank staff talks the victim into approving payments at night.

    Signature: 2-5 escalating UPI payments (P2P or approved COLLECT) from one payer to
    one fresh payee, all between 00:00 and 05:00 IST.
    """
    victim = population.pick_customer(rng)
    scammer = population.fresh_party(rng, faker, account=False)
    n = int(rng.integers(2, 6))
    amount = float(rng.integers(5_000, 20_001) * PAISE_PER_RUPEE)
    events = []
    for at in _times(rng, _night_start(rng, start), n, rng.uniform(1_200, 3_600)):
        paise = int(min(amount, UPI_LIMIT_PAISE)) // PAISE_PER_RUPEE * PAISE_PER_RUPEE
        kind = TxnType.COLLECT if rng.random() < 0.5 else TxnType.P2P
        events.append(_own_upi(rng, victim, at, scammer, paise, kind))
        amount *= rng.uniform(1.3, 2.0)
    return events


def account_takeover(
    rng: np.random.Generator, faker: Faker, population: Population, start: datetime
) -> list[TransactionEvent]:
    """Credentials phished, SIM swapped: the attacker logs in from a new phone in
    another city, sends a token payment, then drains the account.

    Signature: a device the payer never used, a city away from home, a 1-10 INR
    probe followed by 3-6 transfers of 20k-2 lakh INR within 15 minutes.
    """
    victim = population.pick_customer(rng)
    device, ip = population.fresh_device(rng), population.fresh_ip(rng)
    geo = population.away_geo(rng, victim.city)
    mules = [population.fresh_party(rng, faker) for _ in range(rng.integers(1, 3))]
    n = int(rng.integers(3, 7))
    times = _times(rng, start, n + 1, rng.uniform(300, 900))
    probe = int(rng.integers(1, 11)) * PAISE_PER_RUPEE
    events = [
        _event(
            rng, times[0], Channel.UPI, TxnType.P2P, victim.upi_payer, mules[0], probe, device_id=device, ip=ip, geo=geo
        )
    ]
    for i, at in enumerate(times[1:]):
        amount = int(rng.integers(20_000, 200_001)) * PAISE_PER_RUPEE
        mule = mules[i % len(mules)]
        if amount <= UPI_LIMIT_PAISE:
            channel, txn_type, payer = Channel.UPI, TxnType.P2P, victim.upi_payer
        else:
            channel, txn_type, payer = Channel.IMPS, TxnType.TRANSFER, victim.bank_payer
        events.append(_event(rng, at, channel, txn_type, payer, mule, amount, device_id=device, ip=ip, geo=geo))
    return events


def card_testing(
    rng: np.random.Generator, faker: Faker, population: Population, start: datetime
) -> list[TransactionEvent]:
    """A bot checks which stolen card numbers work with tiny online purchases.

    Signature: 15-40 CARD_ECOM payments of 1-10 INR from one payer within 5 minutes,
    most of them FAILED, from a device and IP the payer never used.
    """
    victim = population.pick_customer(rng)
    device, ip = population.fresh_device(rng), population.fresh_ip(rng)
    geo = population.away_geo(rng, victim.city)
    shops = population.online_merchants
    targets = [shops[i] for i in rng.integers(0, len(shops), int(rng.integers(1, 4)))]
    n = int(rng.integers(15, 41))
    amounts = rng.integers(100, 1_001, n)
    failed = rng.random(n) < 0.6
    return [
        _event(
            rng,
            at,
            Channel.CARD_ECOM,
            TxnType.CARD_PAYMENT,
            victim.bank_payer,
            targets[i % len(targets)].payee,
            int(amounts[i]),
            device_id=device,
            ip=ip,
            geo=geo,
            mcc=targets[i % len(targets)].mcc,
            status=Status.FAILED if failed[i] else Status.SUCCESS,
        )
        for i, at in enumerate(_times(rng, start, n, rng.uniform(60, 300)))
    ]


def structuring(
    rng: np.random.Generator, faker: Faker, population: Population, start: datetime
) -> list[TransactionEvent]:
    """Splitting a large sum into transfers that each stay under a reporting threshold.

    Signature: 3-6 transfers from one payer, each in [90%, 100%) of 50k INR (IMPS) or
    of 10 lakh INR (NEFT/RTGS), to 1-3 fresh payees over 1-6 hours.
    """
    payer = population.pick_customer(rng)
    threshold = THRESHOLDS_PAISE[int(rng.integers(0, len(THRESHOLDS_PAISE)))]
    payees = [population.fresh_party(rng, faker, vpa=False) for _ in range(rng.integers(1, 4))]
    n = int(rng.integers(3, 7))
    below = rng.integers(1, threshold // 10 // PAISE_PER_RUPEE + 1, n) * PAISE_PER_RUPEE
    big = threshold > THRESHOLDS_PAISE[0]
    events = []
    for i, at in enumerate(_times(rng, start, n, rng.uniform(3_600, 21_600))):
        channel = (Channel.RTGS if rng.random() < 0.5 else Channel.NEFT) if big else Channel.IMPS
        events.append(
            _event(
                rng,
                at,
                channel,
                TxnType.TRANSFER,
                payer.bank_payer,
                payees[i % len(payees)],
                int(threshold - below[i]),
                device_id=payer.devices[0],
                ip=payer.ip,
                geo=payer.geo,
            )
        )
    return events


def qr_code_swap(
    rng: np.random.Generator, faker: Faker, population: Population, start: datetime
) -> list[TransactionEvent]:
    """A fraudster pastes his own QR sticker over a shop's QR code: the shop's walk-in
    customers scan it and pay him instead of the merchant, until someone notices.

    Signature: 12-40 distinct payers (customers of the shop's city; visitors make up
    the number where the town is small) each make one UPI P2P push — a scanned
    personal QR is P2P, with no merchant code — of a shop-sized amount (a 50-2,500 INR
    ticket of that shop's category) to one fresh personal VPA within 20-120 minutes,
    each from the payer's own phone, home city and usual device. Per
    event nothing stands out (amounts and places of ordinary P2M payments); the tell
    is the payee: a VPA nobody paid before that suddenly receives shop-like traffic
    from many strangers.
    """
    city = population.customers[int(rng.integers(0, len(population.customers)))].city
    shops = population.shops_by_city[city.name]
    shop = shops[int(rng.integers(0, len(shops)))]
    locals_ = [c for c in population.customers if c.city is city]
    n = min(int(rng.integers(12, 41)), len(population.customers))
    if len(locals_) >= n:
        payers = [locals_[int(i)] for i in rng.choice(len(locals_), size=n, replace=False)]
    else:
        visitors = [c for c in population.distinct_customers(rng, n + len(locals_)) if c.city is not city]
        payers = locals_ + visitors[: n - len(locals_)]
    fraudster = population.fresh_party(rng, faker, account=False)
    rupees = shop.category.median_rupees * np.exp(shop.category.sigma * rng.standard_normal(n))
    amounts = np.clip(np.round(rupees), 50, 2_500).astype(int) * PAISE_PER_RUPEE
    times = _times(rng, start, n, rng.uniform(1_200, 7_200))
    return [_own_upi(rng, payer, at, fraudster, int(amount)) for payer, at, amount in zip(payers, times, amounts)]


SCENARIOS: dict[str, Scenario] = {
    ScenarioId.VELOCITY_BURST.value: velocity_burst,
    ScenarioId.NEW_PAYEE_HIGH_VALUE.value: new_payee_high_value,
    ScenarioId.MULE_FAN_IN.value: mule_fan_in,
    ScenarioId.LATE_NIGHT_SOCIAL_ENGINEERING.value: late_night_social_engineering,
    ScenarioId.ACCOUNT_TAKEOVER.value: account_takeover,
    ScenarioId.CARD_TESTING.value: card_testing,
    ScenarioId.STRUCTURING.value: structuring,
}
"""Scenario id -> generator. A new scenario is one function plus one entry here."""


EMERGING_SCENARIOS: dict[str, Scenario] = {
    EmergingScenarioId.QR_CODE_SWAP.value: qr_code_swap,
}
"""Scenario id -> generator for patterns outside the default mix (see
:class:`EmergingScenarioId`). Never part of ``SCENARIOS`` or the default weights."""

ALL_SCENARIOS: dict[str, Scenario] = {**SCENARIOS, **EMERGING_SCENARIOS}
"""Every scenario a config may name."""
