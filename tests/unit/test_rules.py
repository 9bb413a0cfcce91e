"""Rules YAML: channel targeting and the shipped rule file (no Spark needed)."""

from __future__ import annotations

import pytest

from txmon.models.features import FEATURES
from txmon.models.rules import RulesError, load_rules, parse_rules

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
