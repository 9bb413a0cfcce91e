"""Rules YAML: channel targeting and the shipped rule file (no Spark needed)."""

from __future__ import annotations

import pytest

from txmon.models.features import FEATURES, PAYER_FEATURES, PayerState, payer_fold
from txmon.models.rules import RulesError, load_rules, parse_rules
from txmon.spark_jobs.rules import python_rules

BASE = """
version: 1
rules:
  - id: BIG_CARD
    description: big card payment
    condition: amount_paise > 100
    score: 10
    severity: LOW
"""


def test_a_rule_without_channels_applies_to_every_channel() -> None:
    (rule,) = parse_rules(BASE).rules
    assert rule.channels is None and rule.effective_condition == "amount_paise > 100"


def test_channels_restrict_the_condition_spark_evaluates() -> None:
    (rule,) = parse_rules(BASE + "    channels: [CARD_POS, CARD_ECOM]\n").rules
    assert rule.effective_condition == "(amount_paise > 100) AND channel IN ('CARD_POS', 'CARD_ECOM')"


@pytest.mark.parametrize("channels", ["[TELEGRAPH]", "[]", "[upi]"])
def test_unknown_or_empty_channels_are_rejected_naming_the_rule(channels: str) -> None:
    with pytest.raises(RulesError, match="rule BIG_CARD: channels"):
        parse_rules(BASE + f"    channels: {channels}\n")


def test_the_shipped_rules_give_card_payments_reasons_of_their_own() -> None:
    rules = load_rules()
    card = [r for r in rules.active if r.channels and set(r.channels) <= {"CARD_POS", "CARD_ECOM"}]
    assert len(card) >= 3
    for rule in card:  # every card rule reads features that exist, and says why in words
        assert rule.reason and all(name in FEATURES for name in rule.placeholders())


def test_an_accounts_first_payment_just_below_a_threshold_counts_and_the_second_is_structuring() -> None:
    conditions = {rule.id: condition for rule, condition in python_rules(load_rules()).conditions}
    hour_us = 3_600 * 1_000_000

    def fired(state: PayerState, at: int, channel: str, rupees: int) -> set[str]:
        amount = rupees * 100
        row = dict(zip(PAYER_FEATURES, payer_fold(state, at * hour_us, f"payee-{at}", amount, "d1", None, None, False)))
        row.update(channel=channel, amount_paise=amount)
        return {rule for rule in ("FIRST_PAYMENT_NEAR_THRESHOLD", "STRUCTURING") if conditions[rule](row) is True}

    account = PayerState()
    assert fired(account, 1, "IMPS", 49_600) == {"FIRST_PAYMENT_NEAR_THRESHOLD"}  # Rs 50,000 is a threshold
    assert fired(account, 2, "IMPS", 48_900) == {"STRUCTURING"}  # history now: the second is the rule's
    assert fired(PayerState(), 1, "NEFT", 9_80_000) == {"FIRST_PAYMENT_NEAR_THRESHOLD"}  # Rs 10 lakh
    assert fired(PayerState(), 1, "NEFT", 7_00_000) == set()  # large, but not just below one
    assert fired(PayerState(), 1, "CARD_ECOM", 49_600) == set()  # cards: push rails only
