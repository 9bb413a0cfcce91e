"""Templates: exact customer SMS, masking everywhere, SMS segment limits, digest."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from txmon.alerting.config import BankConfig
from txmon.alerting.digest import CHART_CID, chart_png, render_digest, summarize
from txmon.alerting.errors import AlertingConfigError
from txmon.alerting.render import FollowUp, render_message
from txmon.alerting.segments import is_gsm7, sms_segments
from txmon.alerting.testing import make_alert
from txmon.ingestion.events import MAX_AMOUNT_PAISE

COMBOS = [("customer", "sms"), ("customer", "email"), ("staff", "email"), ("staff", "sms"), ("staff", "webhook")]


def test_customer_sms_exact_text():
    text = render_message("customer", "sms", BankConfig(), alert=make_alert(1)).text
    assert text == (
        "txmon Bank: We BLOCKED a UPI payment of Rs.12,500.01 from a/c XXXXXXXX0001 to me***@ybl on "
        "05-Jan 09:00 (amount is 25 times this account's usual payment). Not you? Call 1800-000-0000. "
        "Never share OTP/PIN."
    )
    assert sms_segments(text) == 2 and is_gsm7(text)


def test_review_sms_says_checking_not_blocked():
    text = render_message("customer", "sms", BankConfig(), alert=make_alert(2, decision="REVIEW")).text
    assert text.startswith("txmon Bank: We are checking a UPI payment of Rs.12,500.02")


def _random_alerts(seed: int, n: int):
    rng = random.Random(seed)
    for i in range(n):
        account = "".join(rng.choice("0123456789") for _ in range(rng.randint(9, 18)))
        user = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz.") for _ in range(rng.randint(3, 30)))
        payee = "".join(rng.choice("0123456789") for _ in range(12))
        clear = {
            "payer_account": account,
            "payer_vpa": f"{user}x@okicici",
            "payee_account": payee,
            "payee_vpa": f"shop{payee}@paytm",
        }
        yield (
            clear,
            make_alert(
                i,
                **clear,
                reasons=[
                    {
                        "code": "R1",
                        "description": f"new payee {payee} / {user}x@okicici",
                        "value": account,
                        "contribution": 1.0,
                    }
                ],
            ),
        )


def test_no_raw_identifier_appears_in_any_message():
    bank = BankConfig()
    alerts = list(_random_alerts(seed=11, n=40))
    for clear, alert in alerts:
        raw = [*clear.values(), clear["payer_vpa"].split("@")[0], clear["payee_account"][-8:]]
        for audience, channel in COMBOS:
            r = render_message(audience, channel, bank, alert=alert)
            blob = "\n".join(filter(None, [r.subject, r.text, r.html]))
            for value in raw:
                assert value not in blob, (audience, channel, value)
            assert "X" * 4 + clear["payer_account"][-4:] in blob or (
                audience == "staff" and channel == "webhook" and clear["payer_account"][-4:] in blob
            )
    followup = FollowUp("R1", tuple(alert for _, alert in alerts[:5]))
    for audience, channel in COMBOS:
        r = render_message(audience, channel, bank, followup=followup)
        blob = "\n".join(filter(None, [r.subject, r.text, r.html]))
        for clear, _ in alerts[:5]:
            assert clear["payer_account"] not in blob and clear["payee_vpa"] not in blob


def test_staff_email_tells_what_happened_why_and_what_to_do():
    r = render_message("staff", "email", BankConfig(), alert=make_alert(5))
    assert r.subject == "[txmon] BLOCK CRITICAL: ₹12,500.05 UPI from XXXXXXXX0005 (AMOUNT_SPIKE)"
    for part in (r.text, r.html):
        assert part is not None
        assert "₹12,500.05" in part
        assert "05 Jan 2026 09:00:05 IST" in part
        assert (
            "amount is 25 times this account&#39;s usual payment" in part
            or "amount is 25 times this account's usual payment" in part
        )
        assert "Call the customer on the registered number" in part
        assert "XXXXXXXX0005 / pa***@okhdfc" in part


def test_html_escapes_reason_text():
    alert = make_alert(1, reasons=[{"code": "X", "description": "<script>alert(1)</script>", "contribution": 1}])
    html = render_message("staff", "email", BankConfig(), alert=alert).html
    assert html is not None and "<script>" not in html and "&lt;script&gt;" in html


@pytest.mark.parametrize("decision", ["BLOCK", "REVIEW"])
def test_sms_fits_two_segments_even_for_the_longest_inputs(decision):
    worst = make_alert(
        99,
        decision=decision,
        amount_paise=MAX_AMOUNT_PAISE,
        payer_account="9" * 18,
        payee_vpa="p" * 200 + "@" + "h" * 63,
        payee_account=None,
        reasons=[{"code": "LONG", "description": "a very long reason " * 25, "contribution": 1.0}],
    )
    bank = BankConfig(name="State Bank of Example Co-operative", helpline="+91-22-12345678")
    for audience in ("customer", "staff"):
        text = render_message(audience, "sms", bank, alert=worst).text
        assert sms_segments(text) <= 2, text
        assert "Rs.1,00,00,00,000.00" in text
    customer = render_message("customer", "sms", bank, alert=worst).text
    assert customer.endswith("Not you? Call +91-22-12345678. Never share OTP/PIN.")  # never cut
    assert "a very long reason" in customer and "..." in customer  # reason shortened, not dropped
    followup = render_message("customer", "sms", bank, followup=FollowUp("LONG", (worst,) * 30)).text
    assert sms_segments(followup) <= 2 and is_gsm7(followup)


def test_a_rupee_sign_in_a_reason_is_spelt_rs_to_stay_gsm7():
    alert = make_alert(1, reasons=[{"code": "X", "description": "above ₹10,000", "contribution": 1}])
    text = render_message("customer", "sms", BankConfig(), alert=alert).text
    assert "(above Rs.10,000)" in text and is_gsm7(text) and sms_segments(text) <= 2


def test_a_reason_in_another_script_is_dropped_not_the_warning():
    alert = make_alert(1, reasons=[{"code": "X", "description": "असामान्य राशि", "contribution": 1}])
    text = render_message("customer", "sms", BankConfig(), alert=alert).text
    assert "असामान्य" not in text and text.endswith("Never share OTP/PIN.") and sms_segments(text) <= 2


def test_a_template_that_cannot_fit_names_the_fix():
    with pytest.raises(AlertingConfigError, match=r"shorten bank\.name"):
        render_message("customer", "sms", BankConfig(name="B" * 300), alert=make_alert(1))


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("€" * 81, 2),
        ("a" * 152 + "€", 1),
        ("a" * 159 + "€", 2),
        ("अ" * 70, 1),
        ("अ" * 71, 2),
        ("अ" * 134, 2),
        ("अ" * 135, 3),
        ("", 0),
    ],
)
def test_sms_segment_arithmetic(text, segments):
    assert sms_segments(text) == segments


def test_followup_summarises_the_folded_alerts():
    alerts = tuple(make_alert(i, account="500000000001", decision="REVIEW" if i % 4 else "BLOCK") for i in range(20))
    r = render_message("staff", "email", BankConfig(), followup=FollowUp("AMOUNT_SPIKE", alerts))
    assert r.subject == "[txmon] 20 more AMOUNT_SPIKE alerts on XXXXXXXX0001"
    assert "Decisions: 5 BLOCK, 15 REVIEW" in r.text
    assert "Total amount: ₹2,50,001.90" in r.text
    assert r.text.count("TXNT0000000000") == 5  # the five latest are listed


# ------------------------------------------------------------------ digest


def _digest_rows():
    base = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # 05:30 IST
    rows = []
    for i in range(30):
        rows.append(
            {
                "payer_ref": f"{i % 3:032x}",
                "payer_account_masked": f"XXXXXXXX000{i % 3}",
                "decision": "BLOCK" if i % 3 == 0 else "REVIEW",
                "severity": "HIGH",
                "amount_paise": 10_000 * (i + 1),
                "event_time": base + timedelta(minutes=20 * i),
                "reason_codes": ["AMOUNT_SPIKE"] + (["NEW_DEVICE"] if i % 2 else []),
            }
        )
    return rows


def test_digest_counts_top_accounts_and_hours():
    d = summarize(_digest_rows(), date(2026, 1, 5), top_accounts=2)
    assert d.total == 30
    assert d.by_decision == {"BLOCK": 10, "REVIEW": 20}
    assert d.by_rule == [("AMOUNT_SPIKE", 30), ("NEW_DEVICE", 15)]
    assert [a["account"] for a in d.top_accounts] == ["XXXXXXXX0002", "XXXXXXXX0001"]  # tie on count: amount
    assert sum(d.hourly["BLOCK"]) == 10 and sum(d.hourly["REVIEW"]) == 20
    assert d.hourly["BLOCK"][5] == 1 and d.hourly["REVIEW"][5] == 1  # 05:30 and 05:50 IST
    assert d.busiest_hour == "06:00-07:00 IST (3 alerts)"


def test_digest_email_has_chart_and_masked_accounts():
    d = summarize(_digest_rows(), date(2026, 1, 5))
    png = chart_png(d)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    r = render_digest(d, BankConfig())
    assert r.subject == "[txmon] Daily fraud digest 2026-01-05: 30 alerts (10 BLOCK, 20 REVIEW)"
    assert r.html is not None and r.text is not None
    assert f'src="cid:{CHART_CID}"' in r.html
    assert "500000000001" not in r.html + r.text and "XXXXXXXX0001" in r.html
    assert "AMOUNT_SPIKE" in r.text


def test_empty_day_digest():
    d = summarize([], date(2026, 1, 6))
    assert d.total == 0 and d.busiest_hour == "none"
    assert chart_png(d).startswith(b"\x89PNG")
