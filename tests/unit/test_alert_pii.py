"""No account number or VPA of a transaction leaves the stream in clear: not in the alert
the stream publishes, its Kafka key, its Cassandra rows, nor any message rendered from it
(docs/security-pii.md). Properties over arbitrary identifiers the event contract accepts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txmon.alerting.config import BankConfig, load_alerting_config
from txmon.alerting.contract import alert_row, from_json, kafka_key, to_json
from txmon.alerting.render import FollowUp, render_message
from txmon.alerting.routing import Directory
from txmon.alerting.testing import TEST_PII_KEY, make_alert
from txmon.infra.masking import account_ref, mask_identifiers
from txmon.ingestion.events import ACCOUNT_NUMBER_PATTERN, VPA_PATTERN
from txmon.spark_jobs.detection import _alert_json

COMBOS = [("customer", "sms"), ("customer", "email"), ("staff", "email"), ("staff", "sms"), ("staff", "webhook")]
# The txn id has no digits, so no digit run of a test's own making can pass for an account.
TXN_ID = "TXN-PIITEST-abcdef"

accounts = st.from_regex(ACCOUNT_NUMBER_PATTERN, fullmatch=True)
vpas = st.from_regex(VPA_PATTERN, fullmatch=True).filter(lambda v: len(v) <= 80)


@st.composite
def parties(draw):
    """Clear identifiers of one transaction, and reason texts that quote them."""
    ids = {
        "payer_account": draw(accounts),
        "payer_vpa": draw(st.none() | vpas),
        "payee_account": draw(st.none() | accounts),
        "payee_vpa": draw(st.none() | vpas),
    }
    quoted = [v for v in ids.values() if v]
    words = st.sampled_from(["to", "from", "new payee", "a/c", ",", " ", "(", ")"]) | st.sampled_from(quoted)
    description = "".join(draw(st.lists(words, min_size=1, max_size=8))).strip() or "flagged"
    value = "".join(draw(st.lists(words, max_size=4)))[:200]
    return ids, description, value


def _alert(ids, description, value, n=1):
    return make_alert(
        n,
        txn_id=TXN_ID,
        amount_paise=1_250_001,
        **ids,
        reasons=[{"code": "R1", "description": description, "value": value, "contribution": 1.0}],
    )


def _leaks(ids: dict, *outputs: str | bytes) -> list[str]:
    blob = "\n".join(o.decode() if isinstance(o, bytes) else o for o in outputs)
    return [v for v in ids.values() if v and v in blob]


def _rendered(alert=None, followup=None) -> list[str]:
    out = []
    for audience, channel in COMBOS:
        r = render_message(audience, channel, BankConfig(), alert=alert, followup=followup)
        out += [r.subject, r.text, r.html or ""]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parties())
def test_no_topic_message_key_or_row_holds_a_clear_identifier(case):
    ids, description, value = case
    alert = _alert(ids, description, value)
    raw = to_json(alert)
    row = alert_row(alert)
    assert not _leaks(ids, raw, kafka_key(alert), json.dumps(row, default=str))
    assert from_json(raw) == alert


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parties())
def test_no_rendered_message_holds_a_clear_identifier(case):
    ids, description, value = case
    alert = _alert(ids, description, value)
    assert not _leaks(ids, *_rendered(alert=alert))
    assert not _leaks(ids, *_rendered(followup=FollowUp("R1", (alert, _alert(ids, value or "x", description, n=2)))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parties(), st.sampled_from(["REVIEW", "BLOCK"]))
def test_the_streams_alert_message_holds_no_clear_identifier(case, decision):
    """What spark_jobs.detection publishes for a flagged row, reasons quoting the row."""
    ids, description, value = case
    row = {
        "txn_id": TXN_ID,
        "event_time": datetime(2026, 1, 5, 3, 30),
        "amount_paise": 99_999,
        "channel": "UPI",
        "txn_type": "P2P",
        **{k: (v if v is not None else float("nan")) for k, v in ids.items()},
    }
    reasons = [{"code": "KNOWN_FRAUD_PAYEE", "description": description, "value": value, "contribution": 0.7}]
    text = _alert_json(
        row, 88, decision, reasons, [], {}, "m1", "r1", datetime(2026, 1, 5, 3, 30, 1, tzinfo=UTC), TEST_PII_KEY
    )
    alert = from_json(text)
    assert not _leaks(ids, text, kafka_key(alert))
    assert alert.payer_ref == account_ref(ids["payer_account"], TEST_PII_KEY)
    assert alert.payer_account_masked.endswith(ids["payer_account"][-4:])


@given(accounts, accounts)
def test_one_account_one_ref_and_two_accounts_two_refs(a, b):
    assert (account_ref(a, TEST_PII_KEY) == account_ref(b, TEST_PII_KEY)) == (a == b)


@given(st.text(max_size=60), st.lists(accounts, max_size=3), st.lists(vpas, max_size=3))
def test_mask_identifiers_leaves_none_of_them(text, accts, vs):
    for extra in (text + "".join(accts + vs), "".join(vs + accts) + text):
        out = mask_identifiers(extra, tuple(accts), tuple(vs))
        assert not any(v in out for v in accts + vs)


def test_the_customer_placeholder_names_the_ref_not_the_account():
    """A customer with no contact on file is recorded under a key made from the ref."""
    alert = make_alert(3, severity="HIGH")
    directory = Directory(load_alerting_config(), environ={"TXMON_WEBHOOK_FRAUD_DESK": "https://hooks.example/x"})
    _, unreachable = directory.resolve(alert, None)
    assert unreachable and all("500000000003" not in (u.recipient.address + u.recipient.masked) for u in unreachable)
    assert re.fullmatch(r"customer X+0003", unreachable[0].recipient.masked)
