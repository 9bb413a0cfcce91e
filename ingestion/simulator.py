"""Synthetic Indian bank + UPI traffic with labelled fraud, reproducible from a seed.

Why synthetic: real transaction data cannot leave a bank, yet the pipeline, the
rules and the models need realistic volume, shape and ground truth. The simulator
builds a population once with Faker (names -> VPAs, accounts, devices, home cities)
and then draws traffic with numpy in chunks, so generation keeps up with a Kafka
producer. Everything depends only on ``seed`` and :class:`SimulatorConfig`: event
times come from a simulated clock, never from the wall clock, so the same seed
gives byte-identical output (see :func:`ingestion.events.to_json`).

Ground truth travels beside the event, never inside it: each item is a
:class:`SimulatedTransaction` ``(event, label)``.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import itertools
import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

import numpy as np
from faker import Faker
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from txmon.ingestion.events import (
    IST,
    LAKH,
    PAISE_PER_RUPEE,
    RTGS_MIN_AMOUNT_PAISE,
    SCHEMA_VERSION,
    Channel,
    Geo,
    Party,
    Payer,
    Status,
    TransactionEvent,
    TxnType,
)
from txmon.ingestion.scenarios import ALL_SCENARIOS, UPI_LIMIT_PAISE, ScenarioId

__all__ = [
    "BANKS",
    "CITIES",
    "DEFAULT_SCENARIO_WEIGHTS",
    "MERCHANT_CATEGORIES",
    "City",
    "Customer",
    "Label",
    "Merchant",
    "Population",
    "RegimeChange",
    "SimulatedTransaction",
    "Simulator",
    "SimulatorConfig",
    "build_population",
    "expected_time_after",
    "live_start_time",
    "write_labels",
]

# ------------------------------------------------------------------ reference data


@dataclass(frozen=True, slots=True)
class City:
    name: str
    lat: float
    lon: float
    weight: float  # share of customers, roughly by urban population


CITIES: tuple[City, ...] = (
    City("Mumbai", 19.0760, 72.8777, 12.0),
    City("Delhi", 28.7041, 77.1025, 11.0),
    City("Bengaluru", 12.9716, 77.5946, 8.5),
    City("Hyderabad", 17.3850, 78.4867, 7.0),
    City("Ahmedabad", 23.0225, 72.5714, 5.5),
    City("Chennai", 13.0827, 80.2707, 6.5),
    City("Kolkata", 22.5726, 88.3639, 7.0),
    City("Pune", 18.5204, 73.8567, 5.0),
    City("Jaipur", 26.9124, 75.7873, 3.0),
    City("Surat", 21.1702, 72.8311, 3.0),
    City("Lucknow", 26.8467, 80.9462, 2.8),
    City("Kanpur", 26.4499, 80.3319, 2.0),
    City("Nagpur", 21.1458, 79.0882, 1.9),
    City("Indore", 22.7196, 75.8577, 1.9),
    City("Bhopal", 23.2599, 77.4126, 1.5),
    City("Patna", 25.5941, 85.1376, 1.7),
    City("Vadodara", 22.3072, 73.1812, 1.4),
    City("Ludhiana", 30.9010, 75.8573, 1.3),
    City("Agra", 27.1767, 78.0081, 1.2),
    City("Nashik", 19.9975, 73.7898, 1.2),
    City("Kochi", 9.9312, 76.2673, 1.6),
    City("Coimbatore", 11.0168, 76.9558, 1.6),
    City("Visakhapatnam", 17.6868, 83.2185, 1.5),
    City("Guwahati", 26.1445, 91.7362, 1.0),
    City("Chandigarh", 30.7333, 76.7794, 1.0),
    City("Bhubaneswar", 20.2961, 85.8245, 0.9),
    City("Thiruvananthapuram", 8.5241, 76.9366, 0.9),
    City("Mysuru", 12.2958, 76.6394, 0.8),
)


@dataclass(frozen=True, slots=True)
class Bank:
    ifsc_prefix: str
    account_digits: int  # each bank numbers its accounts its own way
    weight: float


BANKS: tuple[Bank, ...] = (
    Bank("SBIN", 11, 23.0),
    Bank("HDFC", 14, 14.0),
    Bank("ICIC", 12, 12.0),
    Bank("UTIB", 15, 8.0),
    Bank("PUNB", 16, 7.0),
    Bank("BARB", 14, 6.0),
    Bank("KKBK", 10, 5.0),
    Bank("CNRB", 13, 5.0),
    Bank("UBIN", 15, 5.0),
    Bank("YESB", 15, 3.0),
    Bank("INDB", 12, 3.0),
    Bank("IDFB", 11, 3.0),
    Bank("FDRL", 14, 2.0),
    Bank("IOBA", 15, 2.0),
    Bank("BKID", 15, 2.0),
)

UPI_HANDLES: tuple[tuple[str, float], ...] = (
    ("ybl", 27.0),
    ("oksbi", 11.0),
    ("okaxis", 10.0),
    ("okhdfcbank", 9.0),
    ("ibl", 10.0),
    ("paytm", 14.0),
    ("okicici", 7.0),
    ("axl", 7.0),
    ("upi", 5.0),
)
MERCHANT_HANDLES = ("ybl", "paytm", "hdfcbank", "icici", "axisbank", "okbizaxis")

# Mobile / broadband /16 blocks allocated to Indian ISPs (Jio, Airtel, Vi, BSNL, ACT).
IP_PREFIXES = (
    "49.36",
    "49.37",
    "49.43",
    "157.34",
    "157.35",
    "157.48",
    "106.195",
    "106.200",
    "223.182",
    "223.187",
    "42.106",
    "42.108",
    "117.211",
    "117.230",
    "122.161",
    "122.172",
    "59.92",
    "59.89",
    "182.68",
    "182.69",
    "103.21",
    "27.60",
)


@dataclass(frozen=True, slots=True)
class MerchantCategory:
    mcc: str
    name: str
    weight: float  # share of merchants
    median_rupees: float
    sigma: float  # lognormal spread of ticket sizes
    where: str  # "shop" (QR / POS), "online", "biller"


MERCHANT_CATEGORIES: tuple[MerchantCategory, ...] = (
    MerchantCategory("5411", "grocery", 18.0, 450.0, 0.9, "shop"),
    MerchantCategory("5499", "kirana", 16.0, 120.0, 0.8, "shop"),
    MerchantCategory("5541", "fuel", 8.0, 800.0, 0.6, "shop"),
    MerchantCategory("5812", "restaurant", 11.0, 650.0, 0.8, "shop"),
    MerchantCategory("5814", "fast food", 8.0, 250.0, 0.7, "shop"),
    MerchantCategory("5912", "pharmacy", 6.0, 400.0, 0.8, "shop"),
    MerchantCategory("5651", "clothing", 5.0, 1_800.0, 0.9, "shop"),
    MerchantCategory("4121", "taxi", 4.0, 300.0, 0.6, "shop"),
    MerchantCategory("5732", "electronics", 4.0, 6_000.0, 1.1, "online"),
    MerchantCategory("5999", "e-commerce", 10.0, 900.0, 1.0, "online"),
    MerchantCategory("4900", "utilities", 5.0, 1_500.0, 0.7, "biller"),
    MerchantCategory("4814", "telecom", 5.0, 399.0, 0.5, "biller"),
)
ATM_MCC = "6011"

# Hour-of-day (IST) activity: quiet 1-5 am, lunch peak, evening peak.
HOURLY_PROFILE = (
    0.25,
    0.12,
    0.07,
    0.05,
    0.06,
    0.12,
    0.30,
    0.55,
    0.80,
    1.00,
    1.20,
    1.35,
    1.50,
    1.45,
    1.30,
    1.20,
    1.20,
    1.35,
    1.55,
    1.70,
    1.70,
    1.45,
    1.00,
    0.55,
)
WEEKDAY_PROFILE = (1.00, 0.97, 0.97, 1.00, 1.08, 1.15, 0.95)  # Monday first


@dataclass(frozen=True, slots=True)
class _Kind:
    """One slice of the channel mix: which rail, what for, whom it pays."""

    channel: Channel
    txn_type: TxnType
    weight: float
    payee: str  # "shop", "online", "biller", "contact", "atm"


TRAFFIC_MIX: tuple[_Kind, ...] = (
    _Kind(Channel.UPI, TxnType.P2M, 36.0, "shop"),
    _Kind(Channel.UPI, TxnType.P2P, 22.0, "contact"),
    _Kind(Channel.UPI, TxnType.COLLECT, 2.0, "online"),
    _Kind(Channel.UPI, TxnType.BILL_PAY, 5.0, "biller"),
    _Kind(Channel.CARD_POS, TxnType.CARD_PAYMENT, 10.0, "shop"),
    _Kind(Channel.CARD_ECOM, TxnType.CARD_PAYMENT, 7.0, "online"),
    _Kind(Channel.IMPS, TxnType.TRANSFER, 6.0, "contact"),
    _Kind(Channel.NEFT, TxnType.TRANSFER, 4.0, "contact"),
    _Kind(Channel.RTGS, TxnType.TRANSFER, 0.5, "contact"),
    _Kind(Channel.ATM, TxnType.CASH_WITHDRAWAL, 5.5, "atm"),
)

# Transfers between people: (median INR, sigma, cap in paise) per rail.
TRANSFER_TICKETS: dict[Channel, tuple[float, float, int]] = {
    Channel.UPI: (800.0, 1.1, UPI_LIMIT_PAISE),
    Channel.IMPS: (7_500.0, 1.0, 5 * LAKH * PAISE_PER_RUPEE),
    Channel.NEFT: (30_000.0, 1.0, 25 * LAKH * PAISE_PER_RUPEE),
    Channel.RTGS: (0.0, 0.9, 5 * 100 * LAKH * PAISE_PER_RUPEE),  # 2 lakh + lognormal excess
}
STATUS_ODDS = (0.97, 0.995)  # cumulative: SUCCESS, FAILED, then PENDING
CARD_LIMIT_PAISE = 5 * LAKH * PAISE_PER_RUPEE


# ---------------------------------------------------------------------- population


@dataclass(frozen=True, slots=True, eq=False)
class Customer:
    """A retail account holder; the parties are prebuilt so events reuse them."""

    index: int
    city: City
    geo: Geo
    devices: tuple[str, ...]
    ip: str
    ticket_paise: float  # typical P2P ticket: the customer's spending level
    spend_multiplier: float
    contacts: tuple[int, ...]  # customers this one usually pays
    upi_payer: Payer  # account + IFSC + VPA
    bank_payer: Payer  # account + IFSC
    vpa_payee: Party  # how others pay them on UPI
    bank_payee: Party  # how others pay them by IMPS/NEFT/RTGS


@dataclass(frozen=True, slots=True, eq=False)
class Merchant:
    index: int
    category: MerchantCategory
    city: City
    geo: Geo
    payee: Party
    terminal_id: str  # POS terminal, used as device_id for card-present payments

    @property
    def mcc(self) -> str:
        return self.category.mcc


@dataclass(frozen=True, slots=True, eq=False)
class Atm:
    city: City
    geo: Geo
    payee: Party  # the acquiring bank's cash settlement account
    terminal_id: str


_T = TypeVar("_T")


class _Picker(Generic[_T]):
    """Weighted choice from a fixed list with one uniform draw (no numpy call)."""

    __slots__ = ("cumulative", "items")

    def __init__(self, items: list[_T], weights: Iterable[float]) -> None:
        self.items = items
        self.cumulative = list(itertools.accumulate(weights))

    def pick(self, u: float) -> _T:
        i = bisect.bisect_right(self.cumulative, u * self.cumulative[-1])
        return self.items[min(i, len(self.items) - 1)]


class _Identity:
    """Makes Indian-looking identifiers. Remembers the ones given to the population
    so that fraud counterparties made later are guaranteed never seen before."""

    def __init__(self, faker: Faker) -> None:
        self.first = sorted({_slug(faker.first_name()) for _ in range(400)} - {""})
        self.last = sorted({_slug(faker.last_name()) for _ in range(300)} - {""})
        self.accounts: set[str] = set()
        self.vpas: set[str] = set()
        self.branches: dict[tuple[str, str], list[str]] = {}
        self.bank_picker = _Picker(list(BANKS), [b.weight for b in BANKS])
        self.handle_picker = _Picker([h for h, _ in UPI_HANDLES], [w for _, w in UPI_HANDLES])

    def bank(self, rng: np.random.Generator) -> Bank:
        return self.bank_picker.pick(float(rng.random()))

    def account(self, rng: np.random.Generator, bank: Bank, *, register: bool = True) -> str:
        while True:
            number = str(int(rng.integers(10 ** (bank.account_digits - 1), 10**bank.account_digits)))
            if number not in self.accounts:
                if register:
                    self.accounts.add(number)
                return number

    def ifsc(self, rng: np.random.Generator, bank: Bank, city: City | None) -> str:
        """A few branches per bank and city, shared by their customers; any branch
        (not remembered) when ``city`` is None."""
        if city is None:
            return f"{bank.ifsc_prefix}0{int(rng.integers(1, 999_999)):06d}"
        branches = self.branches.setdefault((bank.ifsc_prefix, city.name), [])
        if len(branches) < 3:
            branches.append(f"{bank.ifsc_prefix}0{int(rng.integers(1, 999_999)):06d}")
            return branches[-1]
        return branches[int(rng.integers(0, len(branches)))]

    def vpa(
        self, rng: np.random.Generator, *, handle: str | None = None, name: str | None = None, register: bool = True
    ) -> str:
        handle = handle or self.handle_picker.pick(float(rng.random()))
        if name is None:
            first = self.first[int(rng.integers(0, len(self.first)))]
            last = self.last[int(rng.integers(0, len(self.last)))]
            name = f"{first}.{last}" if rng.random() < 0.6 else f"{first}{last[:1]}"
        suffix = "" if rng.random() < 0.4 else str(int(rng.integers(1, 100)))
        while f"{name}{suffix}@{handle}" in self.vpas:
            suffix += str(int(rng.integers(0, 10)))
        if register:
            self.vpas.add(f"{name}{suffix}@{handle}")
        return f"{name}{suffix}@{handle}"

    @staticmethod
    def device(rng: np.random.Generator) -> str:
        return rng.bytes(8).hex()

    @staticmethod
    def ip(rng: np.random.Generator) -> str:
        prefix = IP_PREFIXES[int(rng.integers(0, len(IP_PREFIXES)))]
        a, b = rng.integers(1, 255, 2)
        return f"{prefix}.{a}.{b}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def _geo(city: City, rng: np.random.Generator | None = None, jitter: float = 0.0) -> Geo:
    dlat, dlon = rng.normal(0.0, jitter, 2) if rng is not None else (0.0, 0.0)
    return Geo(city=city.name, lat=round(city.lat + float(dlat), 4), lon=round(city.lon + float(dlon), 4))


class Population:
    """Everyone who transacts in the simulation, plus factories for fresh fraud
    counterparties (mules, attacker devices) that never appear in normal traffic."""

    def __init__(
        self,
        customers: list[Customer],
        merchants: list[Merchant],
        atms: list[Atm],
        activity: np.ndarray,
        identity: _Identity,
    ) -> None:
        self.customers = tuple(customers)
        self.merchants = tuple(merchants)
        self.atms = tuple(atms)
        self._identity = identity
        self.activity_cdf = np.cumsum(activity) / activity.sum()
        self.city_geo = {c.name: _geo(c) for c in CITIES}
        self.online_merchants = tuple(m for m in merchants if m.category.where == "online")
        self.billers = tuple(m for m in merchants if m.category.where == "biller")
        shops = [m for m in merchants if m.category.where == "shop"]
        self.shops_by_city = {c.name: tuple(m for m in shops if m.city is c) or tuple(shops) for c in CITIES}
        self.atms_by_city = {c.name: tuple(a for a in atms if a.city is c) for c in CITIES}

    def pick_customer(self, rng: np.random.Generator) -> Customer:
        return self.customers[int(rng.integers(0, len(self.customers)))]

    def distinct_customers(self, rng: np.random.Generator, n: int) -> list[Customer]:
        chosen = rng.choice(len(self.customers), size=min(n, len(self.customers)), replace=False)
        return [self.customers[int(i)] for i in chosen]

    def fresh_party(self, rng: np.random.Generator, faker: Faker, *, account: bool = True, vpa: bool = True) -> Party:
        """A counterparty absent from the population (a mule or a scammer)."""
        ident = self._identity
        bank = ident.bank(rng)
        name = f"{_slug(faker.first_name())}{_slug(faker.last_name())[:3]}"
        return Party(
            account_number=ident.account(rng, bank, register=False) if account else None,
            ifsc=ident.ifsc(rng, bank, None) if account else None,
            vpa=ident.vpa(rng, name=name if len(name) >= 2 else "user", register=False) if vpa else None,
        )

    def fresh_device(self, rng: np.random.Generator) -> str:
        return _Identity.device(rng)

    def fresh_ip(self, rng: np.random.Generator) -> str:
        return _Identity.ip(rng)

    def away_geo(self, rng: np.random.Generator, home: City) -> Geo:
        """A city other than ``home``: logins from far away are a takeover tell."""
        others = [c for c in CITIES if c is not home]
        return self.city_geo[others[int(rng.integers(0, len(others)))].name]


def build_population(n_customers: int, n_merchants: int, rng: np.random.Generator, faker: Faker) -> Population:
    """Draw customers, merchants and ATMs once; Faker is used here, not per event."""
    ident = _Identity(faker)
    city_picker = _Picker(list(CITIES), [c.weight for c in CITIES])
    home = [city_picker.pick(float(u)) for u in rng.random(n_customers)]
    by_city: dict[str, list[int]] = {}
    for i, city in enumerate(home):
        by_city.setdefault(city.name, []).append(i)
    multipliers = rng.lognormal(0.0, 0.5, n_customers)
    activity = rng.lognormal(0.0, 1.0, n_customers)
    customers = [
        _customer(i, city, float(multipliers[i]), by_city[city.name], n_customers, rng, ident)
        for i, city in enumerate(home)
    ]
    category_picker = _Picker(list(MERCHANT_CATEGORIES), [m.weight for m in MERCHANT_CATEGORIES])
    merchants = []
    for j in range(n_merchants):
        category = category_picker.pick(float(rng.random()))
        merchant_city = city_picker.pick(float(rng.random()))
        bank = ident.bank(rng)
        handle = MERCHANT_HANDLES[int(rng.integers(0, len(MERCHANT_HANDLES)))]
        name = f"{_slug(faker.last_name())}{_slug(category.name)}"
        merchants.append(
            Merchant(
                index=j,
                category=category,
                city=merchant_city,
                geo=_geo(merchant_city, rng, 0.03),
                payee=Party(
                    account_number=ident.account(rng, bank),
                    ifsc=ident.ifsc(rng, bank, merchant_city),
                    vpa=ident.vpa(rng, handle=handle, name=name),
                ),
                terminal_id=f"T{int(rng.integers(10**7, 10**8))}",
            )
        )
    for where in ("shop", "online", "biller"):  # every kind of payee must exist
        if not any(m.category.where == where for m in merchants):
            raise ValueError(f"n_merchants={n_merchants} left no '{where}' merchant; raise n_merchants")
    atms = []
    for city in CITIES:
        for _ in range(3):
            bank = ident.bank(rng)
            atms.append(
                Atm(
                    city=city,
                    geo=_geo(city, rng, 0.03),
                    payee=Party(account_number=ident.account(rng, bank), ifsc=ident.ifsc(rng, bank, city)),
                    terminal_id=f"ATM{bank.ifsc_prefix}{int(rng.integers(10**5, 10**6))}",
                )
            )
    return Population(customers, merchants, atms, activity, ident)


def _customer(
    i: int,
    city: City,
    multiplier: float,
    neighbours: list[int],
    n_customers: int,
    rng: np.random.Generator,
    ident: _Identity,
) -> Customer:
    bank = ident.bank(rng)
    account, ifsc, vpa = ident.account(rng, bank), ident.ifsc(rng, bank, city), ident.vpa(rng)
    n_contacts = int(rng.integers(3, 13))
    local = rng.integers(0, len(neighbours), n_contacts)
    anywhere = rng.integers(0, n_customers, n_contacts)
    near = rng.random(n_contacts) < 0.7  # most people pay people in their own city
    contacts = tuple(int(neighbours[j]) if n else int(a) for j, a, n in zip(local, anywhere, near))
    return Customer(
        index=i,
        city=city,
        geo=_geo(city, rng, 0.03),
        devices=tuple(ident.device(rng) for _ in range(1 if rng.random() < 0.7 else 2)),
        ip=ident.ip(rng),
        ticket_paise=800.0 * PAISE_PER_RUPEE * multiplier,
        spend_multiplier=multiplier,
        contacts=tuple(c for c in contacts if c != i) or ((i + 1) % n_customers,),
        upi_payer=Payer(account_number=account, ifsc=ifsc, vpa=vpa),
        bank_payer=Payer(account_number=account, ifsc=ifsc),
        vpa_payee=Party(vpa=vpa),
        bank_payee=Party(account_number=account, ifsc=ifsc),
    )


# -------------------------------------------------------------------------- config


def _default_start() -> datetime:
    return datetime(2025, 1, 6, tzinfo=IST)  # a Monday, midnight IST


DEFAULT_SCENARIO_WEIGHTS: dict[str, float] = {
    ScenarioId.VELOCITY_BURST: 0.20,
    ScenarioId.NEW_PAYEE_HIGH_VALUE: 0.20,
    ScenarioId.MULE_FAN_IN: 0.10,
    ScenarioId.LATE_NIGHT_SOCIAL_ENGINEERING: 0.10,
    ScenarioId.ACCOUNT_TAKEOVER: 0.15,
    ScenarioId.CARD_TESTING: 0.15,
    ScenarioId.STRUCTURING: 0.10,
}
"""Relative frequency of each attack; configs may override any subset."""


def _check_weights(value: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(value) - set(ALL_SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; choose from {sorted(ALL_SCENARIOS)}")
    if any(w < 0 for w in value.values()):
        raise ValueError("scenario weights must be >= 0")
    return value


class RegimeChange(BaseModel):
    """A change of regime at simulated time ``at``: what drift looks like to the models.

    Every field left None keeps the value from before. Events before ``at`` are exactly
    those of the same seed without the change; attacks already under way at ``at``
    finish as planned.

    - ``fraud_rate``: the new share of fraud events (paced afresh from ``at``).
    - ``scenario_weights``: the new attack mix (replaces the old one).
    - ``new_scenario``: a pattern the default mix never produces (e.g. ``qr_code_swap``,
      see ``ingestion.scenarios.EMERGING_SCENARIOS``), given ``new_scenario_share`` of
      the attacks from ``at`` on; the rest follow the (new or old) mix.
    - ``spending_multiplier``: a benign surge (festival season): every legitimate
      ticket — shop, online, bill, transfer, ATM — is scaled by it, rail limits still
      apply. Fraud is untouched.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime = Field(description="simulated time the new regime starts")
    fraud_rate: float | None = Field(None, ge=0.0, lt=0.5)
    scenario_weights: dict[str, float] | None = None
    new_scenario: str | None = None
    new_scenario_share: float = Field(
        0.5, gt=0.0, le=1.0, description="share of attacks after `at` that are new_scenario"
    )
    spending_multiplier: float | None = Field(None, gt=0.0, le=20.0)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("scenario_weights")
    @classmethod
    def _known_scenarios(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return None if value is None else _check_weights(value)

    @field_validator("new_scenario")
    @classmethod
    def _known_new_scenario(cls, value: str | None) -> str | None:
        if value is not None and value not in ALL_SCENARIOS:
            raise ValueError(f"unknown scenario {value!r}; choose from {sorted(ALL_SCENARIOS)}")
        return value

    def weights_after(self, before: dict[str, float]) -> dict[str, float]:
        """The attack mix from ``at`` on, normalised to sum to 1 (positive weights only)."""
        base = {
            k: w
            for k, w in (self.scenario_weights if self.scenario_weights is not None else before).items()
            if w > 0 and k != self.new_scenario
        }
        total = sum(base.values())
        if self.new_scenario is None:
            return {k: w / total for k, w in base.items()} if total > 0 else {}
        if total <= 0:
            return {self.new_scenario: 1.0}
        rest = 1.0 - self.new_scenario_share
        mix = {k: rest * w / total for k, w in base.items() if rest > 0}
        return {**mix, self.new_scenario: self.new_scenario_share}


class SimulatorConfig(BaseModel):
    """What to simulate. Frozen and strict so a typo in YAML fails loudly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_customers: int = Field(10_000, ge=20, description="retail account holders")
    n_merchants: int = Field(1_000, ge=20, description="merchants (shops, online, billers)")
    fraud_rate: float = Field(0.01, ge=0.0, lt=0.5, description="share of events that are fraud")
    scenario_weights: dict[str, float] = Field(
        default_factory=lambda: {str(k): w for k, w in DEFAULT_SCENARIO_WEIGHTS.items()}
    )
    start_time: AwareDatetime = Field(default_factory=_default_start, description="simulated clock start")
    mean_tps: float = Field(50.0, gt=0.0, description="events per simulated second, averaged over a week")
    label_delay_seconds: float = Field(
        86_400.0, ge=0.0, description="event_time -> label_time (chargeback / complaint delay)"
    )
    drift: RegimeChange | None = Field(None, description="a regime change part-way through")

    @field_validator("start_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("scenario_weights")
    @classmethod
    def _known_scenarios(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_weights(value)

    @model_validator(mode="after")
    def _some_weight(self) -> SimulatorConfig:
        if self.fraud_rate > 0 and sum(self.scenario_weights.values()) <= 0:
            raise ValueError("fraud_rate > 0 needs at least one positive scenario weight")
        drift = self.drift
        if drift is not None:
            rate = drift.fraud_rate if drift.fraud_rate is not None else self.fraud_rate
            if rate > 0 and not drift.weights_after(self.scenario_weights):
                raise ValueError(
                    "drift: a fraud rate > 0 after `at` needs a positive scenario weight or a new_scenario"
                )
        return self


# -------------------------------------------------------------------------- output


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one transaction, known only ``label_delay`` after it."""

    txn_id: str
    is_fraud: bool
    scenario: str | None
    label_time: datetime

    def to_dict(self) -> dict[str, object]:
        return {
            "txn_id": self.txn_id,
            "is_fraud": self.is_fraud,
            "scenario": self.scenario,
            "label_time": self.label_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }


class SimulatedTransaction(NamedTuple):
    event: TransactionEvent
    label: Label


def write_labels(labels: Iterable[Label], path: Path | str) -> int:
    """Write labels as JSON Lines (``.jsonl``) or CSV (``.csv``); return the count.

    Labels go to their own file, joined to events by ``txn_id`` later, exactly as a
    bank's chargeback feed arrives separately from its transaction feed.
    """
    path = Path(path)
    if path.suffix not in (".jsonl", ".csv"):
        raise ValueError(f"label file {path} must end in .jsonl or .csv")
    count = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(Label.__dataclass_fields__))
        if path.suffix == ".csv":
            writer.writeheader()
        for label in labels:
            row = label.to_dict()
            if path.suffix == ".csv":
                writer.writerow(row)
            else:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    return count


# ----------------------------------------------------------------------- simulator

_CHUNK = 4_096  # events drawn per numpy call
_Parts = tuple[Payer, Party, int, str | None, str | None, str | None, Geo | None]
"""payer, payee, amount_paise, mcc, device_id, ip, geo of one normal event."""
_HOUR_US = 3_600_000_000
_WEEK_HOURS = 168


class Simulator:
    """Seeded traffic generator. Every call to :meth:`stream` replays the same
    sequence from the start, so ``generate(n)`` is a prefix of ``stream()``."""

    def __init__(self, config: SimulatorConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        population_seed, self._traffic_seed, self._fraud_seed = np.random.SeedSequence(seed).spawn(3)
        faker = Faker("en_IN")
        faker.seed_instance(seed)
        self.population = build_population(
            config.n_customers, config.n_merchants, np.random.default_rng(population_seed), faker
        )
        self._kinds = _Picker(list(TRAFFIC_MIX), [k.weight for k in TRAFFIC_MIX])
        self._gap_us = _gap_table(config.mean_tps)
        self._week_offset_us = _week_offset_us(config.start_time)
        self._label_delay = timedelta(seconds=config.label_delay_seconds)
        self._mix = _mix({k: w for k, w in config.scenario_weights.items() if w > 0})
        drift = config.drift
        self._drift_at_us = (
            None if drift is None else max(0, (drift.at - config.start_time) // timedelta(microseconds=1))
        )

    def generate(self, n: int) -> Iterator[SimulatedTransaction]:
        """The first ``n`` transactions, in event-time order."""
        return itertools.islice(self.stream(), n)

    def stream(self) -> Iterator[SimulatedTransaction]:
        """Endless transactions in event-time order (non-decreasing ``event_time``)."""
        rng = np.random.default_rng(self._traffic_seed)
        fraud_rng = np.random.default_rng(self._fraud_seed)
        faker = Faker("en_IN")
        faker.seed_instance(int(fraud_rng.integers(0, 2**31)))
        pending: list[tuple[int, int, SimulatedTransaction]] = []  # fraud events not yet due
        order = itertools.count()
        pacer = _FraudPacer(self.config.fraud_rate, fraud_rng)
        start = self.config.start_time
        t_us = 0
        mix, season = self._mix, 1.0
        drift_at = self._drift_at_us  # None once the regime has changed (or never will)
        while True:
            chunk = self._draw_chunk(rng)
            for i in range(_CHUNK):
                hour = (self._week_offset_us + t_us) // _HOUR_US % _WEEK_HOURS
                t_us += int(chunk.gaps[i] * self._gap_us[hour])
                if drift_at is not None and t_us >= drift_at:
                    drift_at = None
                    mix, season = self._change_regime(pacer)
                while pending and pending[0][0] <= t_us:
                    yield heapq.heappop(pending)[2]
                if pacer.attack_due():
                    run = self._start_scenario(fraud_rng, faker, start + timedelta(microseconds=t_us), mix)
                    for item in run:
                        at = (item.event.event_time - start) // timedelta(microseconds=1)
                        heapq.heappush(pending, (at, next(order), item))
                    pacer.scheduled(len(run))
                event = self._normal_event(chunk, i, start + timedelta(microseconds=t_us), season)
                yield SimulatedTransaction(
                    event, Label(event.txn_id, False, None, event.event_time + self._label_delay)
                )

    def _change_regime(self, pacer: _FraudPacer) -> tuple[_Mix, float]:
        """Apply ``config.drift``: new fraud pacing, attack mix and legit spending level.
        Draws from the fraud generator only from here on, so earlier events are unchanged."""
        drift = self.config.drift
        assert drift is not None
        if drift.fraud_rate is not None:
            pacer.retarget(drift.fraud_rate)
        mix = _mix(drift.weights_after(self.config.scenario_weights))
        return mix, drift.spending_multiplier if drift.spending_multiplier is not None else 1.0

    def _start_scenario(
        self, rng: np.random.Generator, faker: Faker, at: datetime, mix: _Mix
    ) -> list[SimulatedTransaction]:
        ids, p = mix
        scenario = ids[int(rng.choice(len(ids), p=p))]
        events = ALL_SCENARIOS[scenario](rng, faker, self.population, at)
        return [
            SimulatedTransaction(e, Label(e.txn_id, True, scenario, e.event_time + self._label_delay)) for e in events
        ]

    # --- normal traffic: numpy draws per chunk, cheap Python per event

    def _draw_chunk(self, rng: np.random.Generator) -> _Chunk:
        cdf = self.population.activity_cdf
        payers = np.minimum(np.searchsorted(cdf, rng.random(_CHUNK)), len(cdf) - 1)
        raw_ids = rng.bytes(16 * _CHUNK)
        return _Chunk(
            gaps=rng.standard_exponential(_CHUNK).tolist(),
            payers=payers.tolist(),
            kinds=rng.random(_CHUNK).tolist(),
            z=rng.standard_normal(_CHUNK).tolist(),
            u=rng.random((_CHUNK, 3)).tolist(),
            ids=[str(uuid.UUID(bytes=raw_ids[16 * i : 16 * i + 16], version=4)) for i in range(_CHUNK)],
        )

    def _normal_event(self, chunk: _Chunk, i: int, at: datetime, season: float = 1.0) -> TransactionEvent:
        kind = self._kinds.pick(chunk.kinds[i])
        payer = self.population.customers[chunk.payers[i]]
        u_payee, u_device, u_status = chunk.u[i]
        device = payer.devices[0] if u_device < 0.85 or len(payer.devices) == 1 else payer.devices[1]
        if kind.payee == "contact":
            parts = self._to_contact(kind.channel, payer, device, chunk.z[i], u_payee, season)
        elif kind.payee == "atm":
            parts = self._at_atm(payer, chunk.z[i], u_payee, season)
        else:
            parts = self._at_merchant(kind, payer, device, chunk.z[i], u_payee, season)
        payer_party, payee, amount, mcc, device_id, ip, geo = parts
        status = (
            Status.SUCCESS
            if u_status < STATUS_ODDS[0]
            else Status.FAILED
            if u_status < STATUS_ODDS[1]
            else Status.PENDING
        )
        return TransactionEvent(
            schema_version=SCHEMA_VERSION,
            txn_id=chunk.ids[i],
            event_time=at,
            channel=kind.channel,
            txn_type=kind.txn_type,
            payer=payer_party,
            payee=payee,
            amount_paise=amount,
            currency="INR",
            mcc=mcc,
            device_id=device_id,
            ip=ip,
            geo=geo,
            status=status,
        )

    def _to_contact(
        self, channel: Channel, payer: Customer, device: str, z: float, u: float, season: float = 1.0
    ) -> _Parts:
        """A person-to-person payment: UPI by VPA, other rails by account + IFSC."""
        payee = self._contact(payer, u)
        amount = self._transfer_amount(channel, payer, z, season)
        if channel is Channel.UPI:
            return payer.upi_payer, payee.vpa_payee, amount, None, device, payer.ip, payer.geo
        # NEFT/RTGS are often keyed in at a branch or in net banking: no phone involved.
        device_id = device if channel is Channel.IMPS else None
        return payer.bank_payer, payee.bank_payee, amount, None, device_id, payer.ip, payer.geo

    def _at_atm(self, payer: Customer, z: float, u: float, season: float = 1.0) -> _Parts:
        """Cash from an ATM in the home city, in 100-rupee notes, 100 to 20,000 INR."""
        atms = self.population.atms_by_city[payer.city.name]
        atm = atms[int(u * len(atms))]
        notes = min(max(round(30 * season * math.exp(0.6 * z)), 1), 200)
        return (payer.bank_payer, atm.payee, notes * 100 * PAISE_PER_RUPEE, ATM_MCC, atm.terminal_id, None, atm.geo)

    def _at_merchant(
        self, kind: _Kind, payer: Customer, device: str, z: float, u: float, season: float = 1.0
    ) -> _Parts:
        """A shop (QR or card terminal), an online store or a biller."""
        pop = self.population
        if kind.payee == "shop":
            merchants = pop.shops_by_city[payer.city.name]
        else:
            merchants = pop.online_merchants if kind.payee == "online" else pop.billers
        merchant = merchants[int(u * len(merchants))]
        category = merchant.category
        rupees = category.median_rupees * payer.spend_multiplier * season * math.exp(category.sigma * z)
        if kind.channel is Channel.UPI:  # UPI amounts are usually whole rupees
            amount = min(max(round(rupees), 1) * PAISE_PER_RUPEE, UPI_LIMIT_PAISE)
            return payer.upi_payer, merchant.payee, amount, merchant.mcc, device, payer.ip, payer.geo
        amount = min(max(round(rupees * PAISE_PER_RUPEE), 100), CARD_LIMIT_PAISE)
        if kind.channel is Channel.CARD_POS:  # card present: the terminal is the device
            return (payer.bank_payer, merchant.payee, amount, merchant.mcc, merchant.terminal_id, None, merchant.geo)
        return payer.bank_payer, merchant.payee, amount, merchant.mcc, device, payer.ip, payer.geo

    def _contact(self, payer: Customer, u: float) -> Customer:
        """Mostly people the payer already pays; sometimes anyone (still not a mule)."""
        customers = self.population.customers
        if u < 0.85:
            return customers[payer.contacts[int(u / 0.85 * len(payer.contacts))]]
        other = int((u - 0.85) / 0.15 * len(customers))
        return customers[other if other != payer.index else (other + 1) % len(customers)]

    @staticmethod
    def _transfer_amount(channel: Channel, payer: Customer, z: float, season: float = 1.0) -> int:
        median, sigma, cap = TRANSFER_TICKETS[channel]
        if channel is Channel.RTGS:
            excess = math.exp(sigma * z) * payer.spend_multiplier * season
            rupees = RTGS_MIN_AMOUNT_PAISE / PAISE_PER_RUPEE * (1 + excess)
        else:
            rupees = median * payer.spend_multiplier * season * math.exp(sigma * z)
        return min(max(round(rupees), 1) * PAISE_PER_RUPEE, cap)


_Mix = tuple[list[str], list[float]]
"""Scenario ids (sorted) and their probabilities."""


def _mix(weights: dict[str, float]) -> _Mix:
    ids = sorted(weights)
    total = sum(weights.values())
    return ids, [weights[k] / total for k in ids]


def _gap_table(mean_tps: float) -> list[float]:
    """Mean microseconds between events for each IST hour of the week."""
    profile = [d * h for d in WEEKDAY_PROFILE for h in HOURLY_PROFILE]
    mean = sum(profile) / len(profile)
    return [1e6 / (mean_tps * p / mean) for p in profile]


def _week_offset_us(start: datetime) -> int:
    """Microseconds from Monday 00:00 IST to ``start``."""
    local = start.astimezone(IST)
    monday = (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return (local - monday) // timedelta(microseconds=1)


def expected_time_after(start_time: datetime, mean_tps: float, n_events: int, fraud_rate: float = 0.0) -> datetime:
    """The simulated time by which about ``n_events`` events (fraud included) have
    happened, following the diurnal and weekly rhythm: turns "drift after N events"
    into the ``at`` of a :class:`RegimeChange`.

    >>> start = datetime(2025, 1, 6, tzinfo=IST)  # Monday midnight, a quiet hour
    >>> expected_time_after(start, 10.0, 0) == start
    True
    >>> expected_time_after(start, 10.0, 36_000) - start > timedelta(hours=1)
    True
    """
    gaps = _gap_table(mean_tps)
    offset = _week_offset_us(start_time)
    remaining = n_events * (1.0 - fraud_rate)
    t = 0.0
    while remaining > 0:
        position = offset + t
        hour = int(position // _HOUR_US) % _WEEK_HOURS
        left = _HOUR_US - position % _HOUR_US
        fits = left / gaps[hour]
        if remaining <= fits:
            t += remaining * gaps[hour]
            break
        remaining -= fits
        t += left
    return start_time + timedelta(microseconds=round(t))


# Room for a live run to need more simulated time than its expected count says (attack
# bursts, the randomness of a short run's arrivals): with 1.25, no run of a week-long sweep
# (300-12,000 events, every 5 hours, 3 seeds each) put an event after the wall clock.
LIVE_EVENTS_MARGIN = 1.25


def live_start_time(
    planned_events: int | None, mean_tps: float, fraud_rate: float = 0.0, now: datetime | None = None
) -> datetime:
    """Start the simulated clock so that a run of ``planned_events`` ends before now.

    The latest start from which :func:`expected_time_after` puts ``LIVE_EVENTS_MARGIN``
    times the planned events before ``now`` — so the diurnal rhythm is accounted for: a
    run planned across the quiet night hours starts further back than one across the
    day. (A fixed multiple of the mean span does not: from 23:30 UTC a 300-event run of
    300 customers started 1.5 mean spans back ran up to 3 h past the wall clock, and the
    producer clamped ~13 % of its events to now.) Whatever still lands after the wall
    clock is clamped by the producer (:func:`ingestion.producer.clamp_future`).
    Unbounded runs start one simulated day back.
    """
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    if planned_events is None:
        return now - timedelta(days=1)
    if planned_events == 0:
        return now
    events = math.ceil(planned_events * LIVE_EVENTS_MARGIN)
    span = timedelta(seconds=events / mean_tps)

    def ends_before_now(start: datetime) -> bool:
        return expected_time_after(start, mean_tps, events, fraud_rate) <= now

    earliest, latest = now - span, now  # a run starting now ends after it
    while not ends_before_now(earliest):  # quieter hours than average: go further back
        earliest -= span
    # The expected end grows with the start, so bisect to the second.
    while latest - earliest > timedelta(seconds=1):
        middle = earliest + (latest - earliest) / 2
        if ends_before_now(middle):
            earliest = middle
        else:
            latest = middle
    return earliest.replace(microsecond=0)


class _FraudPacer:
    """Decides when the next attack starts so that fraud events stay close to
    ``fraud_rate`` of all events, with random spacing but no drift: each gap is
    aimed at the running target, not measured from the previous attack."""

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        self.rate = rate
        self.rng = rng
        self.normals = 0  # normal events seen so far
        self.fraud = 0  # fraud events scheduled so far
        self.normals0 = 0  # counts when the current rate took effect (see retarget)
        self.fraud0 = 0
        self.next_at = round(10 * self._ratio() * rng.random()) if rate > 0 else 0

    def retarget(self, rate: float) -> None:
        """Aim at ``rate`` from now on, counting afresh (no catch-up burst or pause)."""
        self.rate = rate
        self.normals0, self.fraud0 = self.normals, self.fraud
        self.next_at = self.normals + round(self._ratio() * self.rng.random()) if rate > 0 else 0

    def _ratio(self) -> float:
        return (1 - self.rate) / self.rate

    def attack_due(self) -> bool:
        """Count one normal event; True when an attack should start now."""
        self.normals += 1
        return self.rate > 0 and self.normals > self.next_at

    def scheduled(self, run_length: int) -> None:
        self.fraud += run_length
        jitter = run_length * self._ratio() * (self.rng.gamma(4.0, 0.25) - 1.0)
        target = self.normals0 + round((self.fraud - self.fraud0) * self._ratio() + jitter)
        self.next_at = max(self.normals, target)


@dataclass(slots=True)
class _Chunk:
    """Pre-drawn randomness for _CHUNK events, as Python lists for fast indexing."""

    gaps: list[float]
    payers: list[int]
    kinds: list[float]
    z: list[float]
    u: list[list[float]]
    ids: list[str]
