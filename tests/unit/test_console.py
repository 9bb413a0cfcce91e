"""The console's pure parts: who may do what, the queue's filter from a query string,
what a viewer sees of an identifier, label ids, charts. Pages, Cassandra and Kafka are
covered in tests/integration/test_console_browser.py."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txmon.webapp.console import auth, cases, charts, dashboard, queries
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


NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TOPIC = "transactions"


def _beat(age_s: float, status: str = "progress", progress_age_s: float | None = 1.0, done=None, **extra):
    """A heartbeat as spark_jobs.heartbeat writes it: the ingest query (reading TOPIC, with
    the offsets it processed) and the labels query (reading another topic)."""
    at = lambda s: (NOW - timedelta(seconds=s)).isoformat().replace("+00:00", "Z")
    ingest = {"status": status, "end_offsets": {TOPIC: done if done is not None else {"0": 10, "1": 5}}}
    if progress_age_s is not None:
        ingest["last_progress_at"] = at(progress_age_s)
    labels = {"status": "idle", "end_offsets": {"labels": {"0": 99}}, "last_progress_at": at(1)}
    return {"written_at": at(age_s), "queries": {"labels": labels, "ingest": ingest}, **extra}


def _kafka(offsets):
    def end_offsets(topic: str) -> dict[int, int]:
        assert topic == TOPIC  # the ingest query's topic, not the labels query's
        return offsets

    return end_offsets


def _down(topic: str) -> dict[int, int]:
    raise OSError("Kafka away")


def test_stream_status_of_a_live_stream_counts_its_lag_per_partition():
    # Partition 2 was never read by the query: all of it is behind.
    s = dashboard.stream_status(_beat(3), TOPIC, NOW, 300, _kafka({0: 12, 1: 5, 2: 4}))
    assert (s["state"], s["lag"], s["status"]) == ("live", 2 + 0 + 4, "progress")
    assert s["last_progress_at"] == NOW - timedelta(seconds=1) and s["age_s"] == 3


def test_stream_status_without_a_heartbeat_says_so():
    s = dashboard.stream_status(None, TOPIC, NOW, 300, _down)
    assert s["state"] == "none" and s["lag"] is None


def test_an_old_heartbeat_is_stale_whatever_it_says():
    for status in ("progress", "idle", "terminated"):
        s = dashboard.stream_status(_beat(301, status), TOPIC, NOW, 300, _kafka({0: 10, 1: 7}))
        assert s["state"] == "stale" and "no heartbeat for 301 s (limit 300 s)" in s["reason"], status
        assert s["lag"] == 2  # still shown: how far behind it was left


def test_stream_status_stopped_waiting_and_stalled_with_a_fresh_heartbeat():
    stopped = dashboard.stream_status(_beat(5, "terminated"), TOPIC, NOW, 300, _kafka({0: 10, 1: 5}))
    assert stopped["state"] == "stopped" and stopped["lag"] == 0
    waiting = _beat(5, recovery={"state": "waiting", "since": "x", "last_error": "Cassandra away"})
    assert dashboard.stream_status(waiting, TOPIC, NOW, 300, _down)["state"] == "waiting"
    # No progress for longer than the limit: stalled only if Kafka holds unread records.
    assert dashboard.stream_status(_beat(5, "idle", 400), TOPIC, NOW, 300, _kafka({0: 10, 1: 5}))["state"] == "live"
    stalled = dashboard.stream_status(_beat(5, "idle", 400), TOPIC, NOW, 300, _kafka({0: 11, 1: 5}))
    assert stalled["state"] == "stale" and "1 unread records" in stalled["reason"]
    assert dashboard.stream_status(_beat(5, "idle", 400), TOPIC, NOW, 300, _down)["lag"] is None


@given(age=st.floats(0, 10_000), stall=st.floats(1, 5_000))
def test_a_heartbeat_is_stale_exactly_when_older_than_the_limit(age, stall):
    s = dashboard.stream_status(_beat(age), TOPIC, NOW, stall, _kafka({0: 10, 1: 5}))
    assert (s["state"] == "stale") == (s["age_s"] > stall)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=8,
)
QUERY = st.fixed_dictionaries(
    {},
    optional={
        "status": JSON,
        "last_progress_at": JSON | st.just("2026-12-06T11:59:00Z"),
        "exception": JSON,
        "end_offsets": JSON | st.fixed_dictionaries({TOPIC: JSON | st.dictionaries(st.sampled_from("012"), JSON)}),
    },
)
HEARTBEAT = st.fixed_dictionaries(
    {},
    optional={
        "written_at": JSON | st.sampled_from(["2026-12-06T11:59:58Z", "2026-12-06T11:00:00", "not a time"]),
        "queries": JSON | st.dictionaries(st.text(max_size=4), QUERY | JSON, max_size=2),
        "recovery": JSON | st.fixed_dictionaries({"state": st.just("waiting")}),
    },
)


@given(beat=HEARTBEAT | JSON)
def test_stream_status_survives_any_heartbeat_file(beat):
    # The file is the stream's, but the page must render whatever a half-written or
    # foreign JSON document holds.
    s = dashboard.stream_status(beat, TOPIC, NOW, 300, _kafka({0: 10, 1: 5}))
    assert s["state"] in dashboard.STREAM_STATES
    assert s["lag"] is None or s["lag"] >= 0


def test_a_case_splits_its_reasons_into_rules_fired_and_what_moved_the_model():
    from txmon.alerting.contract import Reason
    from txmon.infra.settings import DEFAULT_RULES
    from txmon.models.rules import load_rules
    from txmon.spark_jobs.detection import alert_reasons

    rules = {r.id: r for r in load_rules(DEFAULT_RULES).rules}
    row = {"payer_count_5m": 5, "payer_payees_5m": 3, "amount_to_mean": 7.25, "payee_count_1h": 9}
    # The stream's own reasons (spark_jobs.detection.alert_reasons): a rule, then the
    # model's explanation; a feature that did not raise the probability is left out.
    stored = alert_reasons(
        row,
        ["VELOCITY_BURST"],
        rules,
        [("amount_to_mean", 0.31234), ("payee_count_1h", 0.05), ("payer_count_5m", 0.0)],
        "BLOCK",
        0.9,
    )
    fired, model = queries.split_reasons([Reason(**r) for r in stored])
    assert [(r.code, r.value) for r in fired] == [("VELOCITY_BURST", "payer_count_5m=5, payer_payees_5m=3")]
    assert [(m["feature"], m["value"], m["drop"]) for m in model] == [
        ("amount_to_mean", "7.25", 0.3123),
        ("payee_count_1h", "9", 0.05),
    ]
    # A flagged transaction that nothing else explains: the model's score, no feature.
    alone = alert_reasons({}, [], rules, [], "REVIEW", 0.61)
    assert queries.split_reasons([Reason(**r) for r in alone]) == (
        [],
        [{"code": "MODEL_SCORE", "feature": None, "description": "model risk score", "value": "0.610", "drop": 0.61}],
    )


def test_spending_band_segments_are_the_batch_jobs_bands_and_nothing_else():
    from txmon.spark_jobs.spending_insights import SEGMENTS, SPEND_BANDS
    from txmon.webapp.console import insights

    assert "spend" in SEGMENTS
    assert list(insights.SPEND_BANDS) == [band for band, _ in SPEND_BANDS]  # the words follow the job's bands
    for band in insights.SPEND_BANDS:
        assert insights.SEGMENT.fullmatch(f"spend:{band}")
    for bad in ("spend:", "spend:huge", "spend:low;drop", "spend:LOW", "band:low"):
        assert not insights.SEGMENT.fullmatch(bad), bad


def test_the_job_and_the_console_share_one_definition_of_the_spending_bands():
    from txmon.spark_jobs import spend_bands, spending_insights

    assert spending_insights.SPEND_BANDS is spend_bands.SPEND_BANDS


@given(st.integers(0, 10**13), st.integers(1, 600))
def test_an_accounts_band_is_its_spend_per_month_paid_in_cut_at_the_edges(total, months):
    from txmon.spark_jobs.spend_bands import band_of

    monthly = total / months
    expected = "low" if monthly < 10_000_00 else "mid" if monthly < 1_00_000_00 else "high"
    assert band_of(total, months) == expected
    # More months for the same spend never raise the band; more spend never lowers it.
    order = {"low": 0, "mid": 1, "high": 2, None: -1}
    assert 0 <= order[band_of(total, months + 1)] <= order[expected]
    assert order[band_of(total + 1, months)] >= order[expected]


def test_an_account_page_names_the_band_from_the_stored_months_and_years():
    from types import SimpleNamespace as Row

    from txmon.webapp.console import insights

    # 12,000 + 2,000 + 1,000 rupees over three months paid in: 5,000 a month, low,
    # although one month alone was over 10,000.
    months = [{"count": 3, "total": 12_000_00}, {"count": 1, "total": 2_000_00}, {"count": 2, "total": 1_000_00}]
    years = [{"count": 4, "total": 14_000_00}, {"count": 2, "total": 1_000_00}]
    assert insights.months_cover_years(months, years)
    assert insights.account_band(months, years) == ("low", 5_000_00)
    assert insights.account_band(months[:1], [years[0] | {"count": 3, "total": 12_000_00}]) == ("mid", 12_000_00)
    assert insights.account_band([], []) == (None, None)  # not seen by the job
    # A month older than the months read: its transactions are in the years only.
    assert not insights.months_cover_years(months[1:], years)

    book = [
        Row(dimension="all", key="", txn_count=10, total_paise=10_000),
        Row(dimension="spend", key="low", txn_count=3, total_paise=900),  # two years of the band
        Row(dimension="spend", key="low", txn_count=1, total_paise=301),
        Row(dimension="spend", key="mid", txn_count=6, total_paise=8_800),
        Row(dimension="channel", key="low", txn_count=1, total_paise=10**9),  # not a band
    ]
    assert insights.band_average(book, "low") == 300  # 1,201 / 4, rounded
    assert insights.band_average(book, "mid") == 1_467
    assert insights.band_average(book, "high") is None and insights.band_average(book, None) is None


def test_the_dashboards_end_offsets_reader_gives_up_quickly_and_waits_before_asking_again(monkeypatch):
    import socket

    # Credentials of its own: a unit run before any `txmon infra up` has no secrets file
    # (nothing listens on the port, so they are never checked).
    monkeypatch.setenv("TXMON_KAFKA_USER", "txmon")
    monkeypatch.setenv("TXMON_KAFKA_PASSWORD", "not-checked")

    from txmon.infra.readback import EndOffsetsReader

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = EndOffsetsReader(f"127.0.0.1:{port}", timeout_ms=1000, retry_after_s=3600)
    from kafka.errors import KafkaTimeoutError

    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        reader("transactions")
    assert reader._consumer is None  # closed after the failure
    with pytest.raises(TimeoutError, match="did not answer"):  # within retry_after_s: not asked again
        reader("transactions")
    reader.retry_after_s = 0
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):  # past it: asked again
        reader("transactions")


def test_kept_end_offsets_consumers_are_closed_and_forgotten_at_shutdown():
    # A kept consumer left open at exit keeps a daemon network thread logging while the
    # interpreter shuts down (a test session hung on it): close_end_offsets_readers,
    # registered with atexit, closes every one and forgets them.
    from txmon.infra import readback

    class Consumer:
        closed = 0

        def close(self, timeout_ms=None):
            Consumer.closed += 1

    reader = readback.end_offsets_reader("127.0.0.1:1")
    assert readback.end_offsets_reader("127.0.0.1:1") is reader  # one per broker and process
    reader._consumer = Consumer()
    readback.close_end_offsets_readers()
    assert Consumer.closed == 1 and reader._consumer is None
    assert readback.end_offsets_reader("127.0.0.1:1") is not reader  # forgotten: a new one next time
