"""The console's pure parts: who may do what, the queue's filter from a query string,
what a viewer sees of an identifier, label ids, charts. Pages, Cassandra and Kafka are
covered in tests/integration/test_console_browser.py."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from txmon.webapp.console import auth, cases, charts, queries
from txmon.webapp.console.store import ROLES, token_hash

TODAY = date(2026, 12, 6)


@pytest.mark.parametrize(
    ("role", "work", "clear", "bulk"),
    [
        ("viewer", False, False, False),
        ("analyst", True, True, False),
        ("supervisor", True, True, True),
        ("admin", True, True, True),
    ],
)
def test_roles_grant_what_the_desk_expects(role, work, clear, bulk):
    assert role in ROLES
    assert auth.allowed(role, "read")
    assert (auth.allowed(role, "work"), auth.allowed(role, "see_clear"), auth.allowed(role, "bulk_close")) == (
        work,
        clear,
        bulk,
    )


def test_an_unknown_role_may_do_nothing():
    assert not any(auth.allowed("root", p) for p in ("read", "work", "see_clear", "assign_others", "bulk_close"))


def test_passwords_are_argon2_hashed_and_verified():
    h = auth.hash_password("correct horse battery")
    assert h.startswith("$argon2id$") and "correct" not in h
    assert auth.verify_password(h, "correct horse battery")
    assert not auth.verify_password(h, "correct horse batterY")
    assert not auth.verify_password("not a hash", "x")


def test_session_tokens_are_stored_hashed():
    assert token_hash("abc") == token_hash("abc") != token_hash("abd")
    assert "abc" not in token_hash("abc") and len(token_hash("abc")) == 64


def test_queue_filter_defaults_to_the_active_queue_of_the_last_seven_days():
    f = queries.QueueFilter.parse({}, TODAY)
    assert (f.status, f.page, f.day_from, f.day_to) == ("active", 1, date(2026, 11, 30), TODAY)
    assert len(f.days()) == 7


def test_queue_filter_ignores_what_it_does_not_know_and_caps_the_range():
    f = queries.QueueFilter.parse(
        {
            "status": "drop table",
            "severity": "HUGE",
            "decision": "ALLOW",
            "page": "-3",
            "from": "2025-01-01",
            "to": "2026-12-01",
        },
        TODAY,
    )
    assert (f.status, f.severity, f.decision, f.page) == ("active", "", "", 1)
    assert f.day_to == date(2026, 12, 1) and len(f.days()) == queries.MAX_DAYS
    swapped = queries.QueueFilter.parse({"from": "2026-12-05", "to": "2026-12-01", "page": "x"}, TODAY)
    assert (swapped.day_from, swapped.day_to, swapped.page) == (date(2026, 12, 1), date(2026, 12, 5), 1)


def test_queue_filter_round_trips_through_its_query_string():
    from urllib.parse import parse_qsl

    f = queries.QueueFilter.parse(
        {
            "status": "closed",
            "severity": "HIGH",
            "decision": "BLOCK",
            "rule": "NEW_PAYEE",
            "channel": "UPI",
            "page": "2",
        },
        TODAY,
    )
    again = queries.QueueFilter.parse(dict(parse_qsl(f.query())), TODAY)
    assert again == f
    assert "page=3" in f.query(page=3)


@pytest.mark.parametrize(
    ("value", "kind", "masked"),
    [
        ("123456789012", "account", "XXXXXXXX9012"),
        ("rahul.sharma@okaxis", "vpa", "ra***@okaxis"),
        ("+919876543210", "phone", "+91XXXXXX3210"),
        ("fraud-desk@bank.example", "email", "fr***@bank.example"),
    ],
)
def test_viewers_see_identifiers_masked_others_in_clear(value, kind, masked):
    assert queries.present(value, kind, clear=False) == masked
    assert queries.present(value, kind, clear=True) == value
    assert queries.present(None, kind, clear=False) == ""


def test_a_case_has_one_label_id_forever():
    a, b = uuid.UUID(int=7), uuid.UUID(int=8)
    assert cases.label_id_for(a) == cases.label_id_for(a) != cases.label_id_for(b)
    assert cases.label_id_for(a) == uuid.uuid5(cases.LABEL_NAMESPACE, str(a))


def test_only_fraud_and_legitimate_dispositions_make_labels():
    assert {d: label for d, (_, label) in cases.DISPOSITIONS.items()} == {
        "confirmed_fraud": True,
        "legitimate": False,
        "escalate": None,
    }


def test_charts_are_svg_data_uris_and_say_when_there_is_no_data():
    import base64

    uri = charts.bars("Top rules", ["NEW_PAYEE", "AMOUNT_SPIKE"], [5, 3])
    assert uri.startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    empty = base64.b64decode(charts.bars("Nothing", [], []).split(",", 1)[1]).decode()
    assert "no data yet" in empty
    assert charts.bars("Top rules", ["NEW_PAYEE", "AMOUNT_SPIKE"], [5, 3]) is uri  # drawn once
