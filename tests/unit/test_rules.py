"""Rules YAML: channel targeting and the shipped rule file (no Spark needed)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.verdicts import loads_or_names_the_problem
from txmon.infra.settings import DEFAULT_RULES
from txmon.models.features import FEATURES, PAYER_FEATURES, PayerState, payer_fold
from txmon.models.rules import RulesError, load_rules, parse_rules
from txmon.spark_jobs import rules as spark_rules
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


# Values a person might write when editing a rule, right and wrong.
_RULE_TEXT = st.sampled_from(
    [
        "amount_paise >= 5000000",
        "amount_paise >",
        "1/0 > 1",
        "payer_count_5m >= 'x'",
        "amount_paise >= 1e400",
        "channel IN ('UPI', 'IMPS')",
        "channel IN ()",
        "NOT",
        "(((",
        "amount_paise BETWEEN 1 AND",
        "mcc IS NULL",
        "reflect('java.lang.Runtime', 'exec', 'x')",
        "no_such_column = 1",
        "payer_count_5m >= 4 OR",
        "TRUE",
        "{amount_paise} paise",
        "{no_such_column}",
        "{amount_paise:>999999999}",
        "{",
        "}",
        "HIGH",
        "LOW",
        "CRITICAL",
        "UPI",
        "CARD_POS",
        "",
        " ",
        "\u202e",
        "9" * 40,
    ]
)
_RULE_VALUE = st.one_of(
    _RULE_TEXT,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(_RULE_TEXT, max_size=3),
    st.text(max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_shipped_rules_edited_anyhow_load_or_name_the_problem(data) -> None:
    """The rules file is edited by staff while the stream runs: an edit that breaks it must
    come back as RulesError (the stream then keeps the last good rules), never another
    exception; one that loads also compiles for the Python evaluations, or says why."""
    raw = yaml.safe_load(DEFAULT_RULES.read_text())
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        where = data.draw(st.sampled_from(["rule", "rule", "rule", "policy", "top"]))
        rules = [r for r in raw["rules"] if isinstance(r, dict)] if isinstance(raw.get("rules"), list) else []
        if where == "rule" and rules:
            rule = data.draw(st.sampled_from(rules))
            rule[data.draw(st.sampled_from(sorted({*rule, "channels", "enabled", "severity", "score"})))] = data.draw(
                _RULE_VALUE
            )
        elif where == "policy" and isinstance(raw.get("policy"), dict) and raw["policy"]:
            raw["policy"][data.draw(st.sampled_from(sorted(raw["policy"])))] = data.draw(_RULE_VALUE)
        else:
            raw[data.draw(st.sampled_from(["version", "policy", "rules", "extra"]))] = data.draw(_RULE_VALUE)
    ruleset = loads_or_names_the_problem(lambda: parse_rules(yaml.safe_dump(raw, allow_unicode=True)), RulesError)
    if ruleset is not None:
        loads_or_names_the_problem(lambda: python_rules(ruleset), RulesError)


def test_the_stream_keeps_its_rules_when_an_edit_mixes_kinds_or_nests_too_deep(tmp_path, monkeypatch) -> None:
    """The stream's watcher compiles the rules for Python too: a condition Spark would cast
    text to a number for on every row (failing each micro-batch in ANSI mode) or one too
    deep for the API is refused before Spark sees it, and the last good rules stay.
    Spark's own analysis is replaced here (it needs a session); its refusals are the
    integration suite's (tests/integration/test_detection.py)."""
    checked: list[str] = []
    monkeypatch.setattr(spark_rules, "check_conditions", lambda spark, ruleset, schema: checked.append(ruleset.label))
    path = tmp_path / "rules.yaml"
    path.write_text(BASE)
    watcher = spark_rules.RulesWatcher(path)
    assert watcher.refresh(None, None) and watcher.current is not None
    good = watcher.current.label
    for condition in ("amount_paise > 'abc'", "channel % 2 = 0", "(" * 150 + "amount_paise > 1" + ")" * 150):
        path.write_text(BASE.replace("amount_paise > 100", condition) + f"# {len(condition)}\n")
        assert watcher.refresh(None, None) is False
        assert watcher.current.label == good and "BIG_CARD" in (watcher.last_error or "")
    assert checked == [good]  # Spark was never asked about the refused ones


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\n1: 2\nrules: []\n",
        "version: 1\n~: 2\n",
        "version: " + "[" * 5000 + "]" * 5000,
    ],
)
def test_a_rules_file_with_odd_keys_or_deep_nesting_is_a_rules_error(text) -> None:
    with pytest.raises(RulesError):
        parse_rules(text)


def test_a_rules_path_that_is_not_a_utf8_file_is_a_rules_error(tmp_path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path)  # a directory
    latin = tmp_path / "rules.yaml"
    latin.write_bytes(BASE.replace("big card", "gro\xdfe Karte").encode("latin-1"))
    with pytest.raises(RulesError, match="UTF-8"):
        load_rules(latin)


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("score", BASE.replace("score: 10", "score: true")),
        ("version", BASE.replace("version: 1", "version: true")),
        ("review_at", BASE + "policy: {review_at: true}\n"),
        ("model_weight", BASE + "policy: {model_weight: false}\n"),
    ],
)
def test_a_boolean_where_a_rule_file_wants_a_number_is_refused(where: str, text: str) -> None:
    # pydantic's lax mode reads true as 1: `score: true` would add one point, silently.
    with pytest.raises(RulesError, match=f"(?s){where}.*expected a number, not the boolean"):
        parse_rules(text)


def test_numbers_in_a_rule_file_still_load() -> None:
    ruleset = parse_rules(BASE.replace("score: 10", "score: 10.5") + "policy: {review_at: 40, model_weight: 1}\n")
    assert ruleset.rules[0].score == 10.5 and ruleset.policy.review_at == 40 and ruleset.policy.model_weight == 1.0
