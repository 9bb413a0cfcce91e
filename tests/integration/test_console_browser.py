"""The fraud-desk console in a real browser (Debian's chromium through chromedriver), over
alerts that simulated traffic raised through the real stream: log in, work an alert to a
fraud disposition whose label reaches the labels topic once and then the stream's labels
query (labels table, payee fraud labels, drift monitor), role restrictions and masking,
CSRF refusal, new alerts appearing without a reload, a case's rules and model explanation,
the stream's state and lag on the dashboard. Saves docs/console-*.png."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.console_alerts import hand_made_alert
from tests.integration.history import train_champion
from tests.integration.streams import stream_options, stream_topics
from txmon.alerting.store import AlertStore
from txmon.infra.masking import mask_account, mask_phone, mask_vpa
from txmon.infra.process import wait_until
from txmon.infra.settings import PROJECT_ROOT
from txmon.ingestion.events import IST
from txmon.webapp.console import insights

SEED = 20261206
EVENTS = 2_000
DOCS = PROJECT_ROOT / "docs"
PASSWORDS = {"alice": "alice-analyst-pw-1", "sam": "sam-supervisor-pw-1", "victor": "victor-viewer-pw-1"}
ROLES = {"alice": "analyst", "sam": "supervisor", "victor": "viewer"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_stream(spark, settings, names, tmp: Path) -> None:
    from txmon.spark_jobs.transactions_stream import start_all

    opts = stream_options(
        settings,
        names,
        tmp,
        available_now=True,
    )
    for q in start_all(spark, settings, opts):
        q.awaitTermination(timeout=900)
        assert q.exception() is None, q.exception()


def _train_champion(registry_root: Path):
    """A small model on other simulated history, promoted in the run's own registry, so
    that alerts carry the model's explanation beside the rules."""
    return train_champion(registry_root, n=20_000, seed=4243)[1]


@pytest.fixture(scope="module")
def streamed(services, spark, cassandra_session, tmp_path_factory):
    """Live-clocked simulated traffic (ending about now, so today's queue holds it) run
    once through the full stream, rules and a champion model."""
    from txmon.ingestion.producer import TransactionProducer
    from txmon.ingestion.simulate import SimulateOptions, simulator_for

    tmp = tmp_path_factory.mktemp("console")
    base = f"console_{zlib.crc32(str(tmp).encode()):x}"
    names = stream_topics(services, base)
    # Features from this traffic alone, and a queue of this run's alerts only.
    for table in (
        "feature_profiles",
        "alerts",
        "alerts_by_day",
        "alerts_by_rank",
        "alerts_by_party",
        "account_transactions",
        "case_state",
        "case_actions",
        "case_labels",
        "labels",
        "fraud_labels_by_day",
    ):
        cassandra_session.execute(f"TRUNCATE {table}")
    # A seed of this run's own: its transactions, alerts, cases and labels are new, so no
    # earlier session's case state or label in the same keyspace can make a check pass.
    seed = SEED + zlib.crc32(str(tmp).encode())
    sim = simulator_for(
        SimulateOptions(seed=seed, count=EVENTS, rate=None, fraud_rate=0.1, n_customers=300, live=True, progress=False)
    )
    items = list(sim.generate(EVENTS))
    producer = TransactionProducer(services, topic=names["tx"], labels_topic=names["labels"])
    for item in items:
        producer.send_event(item.event)
    producer.close()
    bundle = _train_champion(tmp / "models")  # the registry stream_options points the stream at
    _run_stream(spark, services, names, tmp)
    yield {
        "names": names,
        "events": {i.event.txn_id: i.event for i in items},
        "bundle": bundle,
        "seed": seed,
        "tmp": tmp,
        "rerun": lambda: _run_stream(spark, services, names, tmp),
    }
    shutil.rmtree(tmp / "ckpt", ignore_errors=True)


@pytest.fixture(scope="module")
def console(streamed, services, cassandra_session):
    """The web application served by uvicorn on a loopback port, with three users."""
    import uvicorn
    from fastapi import FastAPI

    from txmon.webapp.console.auth import hash_password
    from txmon.webapp.console.store import ConsoleStore
    from txmon.webapp.console.web import Backend, console_router

    store = ConsoleStore(cassandra_session)
    now = datetime.now(UTC)
    for name, role in ROLES.items():
        store.put_user(name, role, hash_password(PASSWORDS[name]), now)
    app = FastAPI()
    backend = Backend(services, labels_topic=streamed["names"]["labels"], stream_topic=streamed["names"]["tx"])
    router = console_router(services, backend=backend)
    app.include_router(router)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, 30, interval=0.1), "console did not start"
    yield {"url": f"http://127.0.0.1:{port}/console", "store": store}
    server.should_exit = True
    thread.join(timeout=10)
    backend.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1500,1100",
        "--disable-gpu",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _found(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text``, which must be there."""
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not on the page"
    return match.group(1)


class _NothingPublished:
    """A label sink for a disposition that must be refused before anything is published."""

    def send(self, claim) -> None:
        raise AssertionError(f"published {claim}")


def _wait(condition, timeout: float = 20, what: str = "condition"):
    value = wait_until(condition, timeout, interval=0.2)
    assert value, f"timed out waiting for {what}"
    return value


def _navigate(driver, click) -> None:
    """Click something that loads a new page, and wait until the new page is there (a
    find right after a click could still read the old one)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    old = driver.find_element(By.TAG_NAME, "html")
    click()

    def gone() -> bool:
        try:
            old.tag_name  # noqa: B018 - raises once the old page is replaced
            return False
        except StaleElementReferenceException:
            pass
        except WebDriverException as exc:
            # Chromium sometimes reports the replaced page's node this way instead of as
            # stale, when the lookup races the navigation.
            if "does not belong to the document" not in str(exc.msg):
                raise
        return driver.execute_script("return document.readyState") == "complete"

    _wait(gone, timeout=60, what="the next page")


def _press(driver, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    _navigate(driver, lambda: driver.find_element(By.ID, element_id).click())


def _login(driver, url: str, name: str, password: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{url}/login")
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password or PASSWORDS[name])
    _press(driver, "login")


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def _retry_stale(action, attempts: int = 5):
    """The queue swaps its rows in when they change (polling): an element found just
    before a swap is stale, so find it again."""
    from selenium.common.exceptions import StaleElementReferenceException

    for attempt in range(attempts):
        try:
            return action()
        except StaleElementReferenceException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)


def _open_case(driver, index: int = 0) -> None:
    from selenium.webdriver.common.by import By

    href = _retry_stale(
        lambda: driver.find_elements(By.CSS_SELECTOR, "tr.alert-row a.case-link")[index].get_attribute("href")
    )
    driver.get(href)


def _cookies(driver) -> dict[str, str]:
    return {c["name"]: c["value"] for c in driver.get_cookies()}


def _labels_on(services, topic: str) -> list[tuple[bytes, bytes]]:
    from kafka import KafkaConsumer

    from txmon.infra.kafka_client import client_config

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=services.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"console-test-{uuid.uuid4().hex[:8]}",
        consumer_timeout_ms=8_000,
        **client_config(services),
    )
    try:
        return [(r.key, r.value) for r in consumer]
    finally:
        consumer.close()


def _ms(t: datetime) -> int:
    """An instant as Cassandra keeps it (whole milliseconds; integer arithmetic, no float)."""
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _recent_expected(events: dict, txn_id: str) -> list[str]:
    """The case page's recent transactions of the alert ``txn_id``, from the events sent:
    the payer's transactions up to the alert's, newest first (ties by txn id, as the
    table clusters them), at most 20."""
    alert = events[txn_id]
    mine = [
        (-_ms(e.event_time), e.txn_id)
        for e in events.values()
        if e.payer.account_number == alert.payer.account_number and _ms(e.event_time) <= _ms(alert.event_time)
    ]
    return [t for _, t in sorted(mine)[:20]]


def _recent_shown(driver) -> list[tuple[str, str]]:
    """(txn id, payee as shown) of the case page's recent transactions."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#recent-transactions tr[data-txn]")
    return [(r.get_attribute("data-txn"), r.find_elements(By.TAG_NAME, "td")[3].text) for r in rows]


def _payee_key(event) -> str:
    """The payee as the stream keys it (account, else VPA)."""
    return event.payee.account_number or event.payee.vpa


def test_only_the_login_page_answers_without_a_session(console, browser):
    url = console["url"]
    browser.delete_all_cookies()
    for page in ("/", "/cases/" + str(uuid.uuid4()), "/queue/rows"):
        browser.get(url + page)
        assert browser.current_url.endswith("/console/login"), page
    _login(browser, url, "alice", "wrong-password-123")
    assert "Wrong user name or password" in _text(browser, "login-error")
    assert "txmon_console" not in _cookies(browser)


def test_analyst_sees_the_queue_highest_risk_first(console, browser, streamed):
    from selenium.webdriver.common.by import By

    _login(browser, console["url"], "alice")
    assert _text(browser, "who") == "alice (analyst)"
    risks = _retry_stale(
        lambda: [int(td.text) for td in browser.find_elements(By.CSS_SELECTOR, "tr.alert-row td.risk")]
    )
    assert len(risks) >= 5, "the stream raised alerts"
    assert risks == sorted(risks, reverse=True)
    browser.save_screenshot(str(DOCS / "console-queue.png"))
    # A login page is not shown to someone logged in.
    browser.get(console["url"] + "/login")
    assert browser.current_url.rstrip("/").endswith("/console")


def test_analyst_works_an_alert_to_fraud_and_the_label_reaches_the_stream(
    console, browser, streamed, services, cassandra_session
):
    from selenium.webdriver.common.by import By

    from txmon.webapp.console import cases

    url = console["url"]
    _login(browser, url, "alice")
    _open_case(browser)
    txn_id = _text(browser, "txn-id")
    event = streamed["events"][txn_id]
    assert _text(browser, "payer-account") == event.payer.account_number  # analysts see the clear number
    # The account's recent scored transactions, up to this one, newest first, payees in clear.
    shown = _recent_shown(browser)
    assert [t for t, _ in shown] == _recent_expected(streamed["events"], txn_id)
    assert all(payee == _payee_key(streamed["events"][t]) for t, payee in shown)
    assert browser.find_element(By.CSS_SELECTOR, "#recent-transactions tr.this-txn").get_attribute("data-txn") == txn_id
    _press(browser, "assign")
    assert "assigned" in _text(browser, "case-status")
    browser.find_element(By.ID, "comment-text").send_keys("Mule pattern: new payee, night-time, drained.")
    _press(browser, "comment")
    _press(browser, "dispose-confirmed_fraud")
    assert _text(browser, "case-status") == "closed · confirmed_fraud"
    history = _text(browser, "history")
    for words in ("alice (analyst) assign to alice", "Mule pattern", "disposition: confirmed_fraud", "label published"):
        assert words in history
    assert "published" in _text(browser, "label-state")
    assert not browser.find_elements(By.ID, "dispose-confirmed_fraud")  # closed: no more dispositions
    browser.set_window_size(1500, 1400)  # tall enough for the reasons, the model's included
    browser.save_screenshot(str(DOCS / "console-case.png"))
    browser.set_window_size(1500, 1100)

    # A second disposition, straight to the handler, is refused and publishes nothing.
    alert_id = uuid.UUID(browser.current_url.rsplit("/", 1)[1])
    with pytest.raises(cases.ActionRefused):
        cases.dispose(
            console["store"],
            _NothingPublished(),
            alert_id,
            txn_id,
            "alice",
            "analyst",
            "legitimate",
            datetime.now(UTC),
        )
    labels = _labels_on(services, streamed["names"]["labels"])
    import json

    ours = [json.loads(v) for k, v in labels if k == txn_id.encode()]
    assert len(ours) == 1 and ours[0]["is_fraud"] is True and ours[0]["scenario"] == "analyst"

    # The stream's labels query takes it: labels table, the payee's fraud labels, the drift monitor.
    streamed["rerun"]()
    row = cassandra_session.execute("SELECT is_fraud, scenario FROM labels WHERE txn_id = %s", (txn_id,)).one()
    assert row is not None and row.is_fraud and row.scenario == "analyst"
    payee = cassandra_session.execute("SELECT payee_key FROM scored_transactions WHERE txn_id = %s", (txn_id,)).one()
    assert (
        cassandra_session.execute(
            "SELECT txn_id FROM payee_fraud_labels WHERE payee_key = %s AND txn_id = %s", (payee.payee_key, txn_id)
        ).one()
        is not None
    )
    drift = cassandra_session.execute(
        "SELECT applied_batch FROM drift_state WHERE stream = %s AND part = 'labels'", (streamed["names"]["tx"],)
    ).one()
    assert drift is not None and drift.applied_batch >= 0


def _phone_of(account: str) -> str:
    """A distinct Indian mobile number per account, so that any of them on a page is found."""
    return f"+9197{zlib.crc32(account.encode()) % 10**8:08d}"


def test_viewer_sees_masked_identifiers_and_cannot_act(console, browser, streamed, cassandra_session):
    # Every payer of this run has a phone on file, so any page that showed one would show one.
    accounts = {e.payer.account_number for e in streamed["events"].values() if e.payer.account_number}
    AlertStore(cassandra_session).save_contacts([(a, _phone_of(a), None, None) for a in accounts], datetime.now(UTC))
    try:
        _viewer_sees_masked_identifiers_and_cannot_act(console, browser, streamed, accounts)
    finally:
        for a in accounts:
            cassandra_session.execute("DELETE FROM customer_contacts WHERE account = %s", (a,))


def _viewer_sees_masked_identifiers_and_cannot_act(console, browser, streamed, accounts: set[str]) -> None:
    from selenium.webdriver.common.by import By

    url = console["url"]
    _login(browser, url, "victor")
    # No page a viewer reaches shows a phone number in clear (with or without +91).
    nationals = [_phone_of(a)[3:] for a in accounts]
    _open_case(browser)
    event = streamed["events"][_text(browser, "txn-id")]
    case_url = browser.current_url
    assert _text(browser, "phone") == mask_phone(_phone_of(event.payer.account_number))
    alert_id = case_url.rsplit("/", 1)[1]
    for page in ("/", "/queue/rows", "/dashboard?hours=168", f"/insights?alert={alert_id}", f"/cases/{alert_id}"):
        browser.get(url + page)
        assert page == "/queue/rows" or _text(browser, "who") == "victor (viewer)", page  # rows: a fragment
        shown = browser.page_source
        assert not [n for n in nationals if n in shown], page
    assert _text(browser, "payer-account") == mask_account(event.payer.account_number)
    if event.payee.vpa:
        assert _text(browser, "payee-vpa") == mask_vpa(event.payee.vpa)
    assert event.payer.account_number not in browser.page_source
    # Recent transactions: the same rows an analyst sees, each payee masked.
    shown = _recent_shown(browser)
    assert [t for t, _ in shown] == _recent_expected(streamed["events"], event.txn_id)
    for t, payee in shown:
        key = _payee_key(streamed["events"][t])
        assert payee == (mask_vpa(key) if "@" in key else mask_account(key)) and key not in browser.page_source
    assert "cannot act" in _text(browser, "read-only")
    assert not browser.find_elements(By.ID, "assign") and not browser.find_elements(By.ID, "bulk-close")
    # Forged from outside the page, with the viewer's own valid session and token: refused.
    csrf = _found(r'name="csrf_token" value="([^"]+)"', browser.page_source)
    r = httpx.post(
        case_url + "/disposition",
        data={"csrf_token": csrf, "disposition": "legitimate"},
        cookies=_cookies(browser),
        follow_redirects=False,
    )
    assert r.status_code == 403 and "viewer role may not" in r.text


def test_a_form_without_the_session_csrf_token_is_refused(console, browser):
    from selenium.webdriver.common.by import By

    _login(browser, console["url"], "alice")
    _open_case(browser, -1)
    before = _text(browser, "history")
    browser.execute_script("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.value = 'forged');")
    browser.find_element(By.ID, "comment-text").send_keys("should not be saved")
    _press(browser, "comment")
    assert "CSRF token missing or wrong" in browser.find_element(By.TAG_NAME, "body").text
    _navigate(browser, browser.back)
    _navigate(browser, browser.refresh)
    assert _text(browser, "history") == before


def test_new_alerts_appear_without_a_reload_and_a_supervisor_closes_in_bulk(
    console, browser, services, cassandra_session
):
    from selenium.webdriver.common.by import By

    _login(browser, console["url"], "sam")
    browser.find_element(By.ID, "queue")  # the queue page, polling
    now = datetime.now(UTC)
    alert = hand_made_alert(
        services,
        "console",
        now,
        event_time=now - timedelta(seconds=5),
        payer_vpa="late.payer@okaxis",
        payee_vpa="fresh.shop@ybl",
        amount_paise=9_999_900,
        risk_score=100,
        decision="BLOCK",
        severity="CRITICAL",
    )
    AlertStore(cassandra_session).save_alert(alert)
    _wait(lambda: str(alert.alert_id) in browser.page_source, timeout=30, what="the new alert in the queue")
    first = _retry_stale(lambda: browser.find_element(By.CSS_SELECTOR, "tr.alert-row").get_attribute("data-alert"))
    assert first == str(alert.alert_id)  # risk 100 sorts first
    _retry_stale(lambda: browser.find_element(By.CSS_SELECTOR, f"input[value='{alert.alert_id}']").click())
    _press(browser, "bulk-close")
    assert str(alert.alert_id) not in browser.page_source  # closed leaves the active queue
    state = console["store"].case(alert.alert_id)
    assert state is not None and state.status == "closed" and state.disposition is None
    assert [a.action for a in console["store"].actions(alert.alert_id)] == ["bulk_close"]


def test_dashboard_and_insights_render_what_the_stream_and_the_batch_job_stored(
    console, browser, streamed, services, spark, cassandra_session
):
    from selenium.webdriver.common.by import By

    from txmon.spark_jobs.spending_insights import run

    result = run(services, datetime.now(UTC) + timedelta(minutes=5), spark, splits=4)
    assert result["rows"] > 0 and result["segment_rows"] > 0 and "all" in result["segments"]

    def count_of(summary: str) -> int:
        return int(_found(r"Transactions \(batch, all time\) (\d+)", summary))

    url = console["url"]
    _login(browser, url, "alice")
    browser.get(url + "/dashboard?hours=168")
    assert int(_text(browser, "total")) > 0
    for name in ("volume", "decisions", "rules", "dead_letters", "workload"):
        assert browser.find_element(By.ID, f"chart-{name}").get_attribute("src").startswith("data:image/svg+xml")
    assert "alice" in _text(browser, "workload")  # the case worked above
    fired = cassandra_session.execute(
        "SELECT count(*) FROM drift_events WHERE stream = %s", (streamed["names"]["tx"],)
    ).one()[0]
    shown = browser.find_elements(By.CSS_SELECTOR, "#drift tr")[1:]  # after the header
    assert len(shown) == max(1, min(10, fired)) and (fired > 0) == ("None." not in _text(browser, "drift"))
    # Frauds caught: this run's labels (the analyst's above), each fraud's decision read here.
    expected: dict[str, list[str]] = {}
    for r in cassandra_session.execute("SELECT txn_id, is_fraud, scenario FROM labels"):
        if not r.is_fraud:
            continue
        scored = cassandra_session.execute("SELECT decision FROM scored_transactions WHERE txn_id = %s", (r.txn_id,))
        decision = scored.one()
        row = expected.setdefault(r.scenario or "unknown", ["0", "0", "0"])
        if decision is None:
            row[2] = str(int(row[2]) + 1)
        else:
            row[0] = str(int(row[0]) + 1)
            row[1] = str(int(row[1]) + (decision.decision in ("REVIEW", "BLOCK")))
    caught = {
        tr.get_attribute("data-scenario"): [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, "#caught tr[data-scenario]")
    }
    assert "analyst" in expected
    assert {k: [v[1], v[2], v[4]] for k, v in caught.items()} == expected

    browser.get(url + "/")
    _open_case(browser)
    event = streamed["events"][_text(browser, "txn-id")]
    _press(browser, "insights-link")
    account_page = browser.current_url
    assert _text(browser, "insights-account") == event.payer.account_number
    mine = [e for e in streamed["events"].values() if e.payer.account_number == event.payer.account_number]
    summary = _text(browser, "insights-summary")
    total = sum(e.amount_paise for e in mine)
    assert f"Transactions (batch, all time) {len(mine)}" in summary
    assert f"₹{total / 100:,.2f}" in summary
    for name in ("daily", "monthly", "channels", "mcc", "payees"):
        assert browser.find_element(By.ID, f"chart-{name}").get_attribute("src").startswith("data:image/svg+xml")
    browser.save_screenshot(str(DOCS / "console-insights.png"))

    # The segment of all accounts: at least this run's traffic (the keyspace keeps earlier runs').
    _press(browser, "segment-all")
    assert _text(browser, "insights-account") == "all accounts"
    assert count_of(_text(browser, "insights-summary")) >= len(streamed["events"])

    # A channel's segment: what the batch job counted equals the keyspace's transactions on
    # that channel (earlier runs' included), and its accounts those of its latest IST year.
    channel = event.channel.value
    until = datetime.fromisoformat(result["until"]).astimezone(UTC).replace(tzinfo=None)  # naive UTC, as read
    _press(browser, f"segment-channel-{channel}")
    assert _text(browser, "insights-account") == f"channel {channel}"
    on_channel = [
        (r.payer_account, r.amount_paise, r.event_time.replace(tzinfo=UTC).astimezone(IST).year)
        for r in cassandra_session.execute("SELECT channel, payer_account, amount_paise, event_time FROM transactions")
        if r.channel == channel and r.payer_account is not None and r.event_time is not None and r.event_time < until
    ]
    summary = _text(browser, "insights-summary")
    assert count_of(summary) == len(on_channel)
    assert f"₹{sum(a for _, a, _ in on_channel) / 100:,.2f}" in summary
    latest = max(y for _, _, y in on_channel)
    assert int(_text(browser, "accounts")) == len({p for p, _, y in on_channel if y == latest})
    assert 1 <= len(browser.find_elements(By.CSS_SELECTOR, "#payees tr")) - 1 <= 10
    for name in ("daily", "monthly", "mcc", "spend", "payees"):
        assert browser.find_element(By.ID, f"chart-{name}").get_attribute("src").startswith("data:image/svg+xml")
    browser.save_screenshot(str(DOCS / "console-segment.png"))

    # Spending bands: each payer's band from its own spend per IST month it paid in,
    # computed here from the keyspace's transactions; each band's segment holds exactly
    # its payers' transactions, and the book's page shows them by band.
    months: dict[str, set[str]] = {}
    spent: dict[str, list] = {}  # account -> [(amount, IST year)]
    for r in cassandra_session.execute("SELECT payer_account, amount_paise, event_time FROM transactions"):
        if r.payer_account is None or r.event_time is None or r.event_time >= until:
            continue
        ist = r.event_time + timedelta(hours=5, minutes=30)
        months.setdefault(r.payer_account, set()).add(ist.strftime("%Y-%m"))
        spent.setdefault(r.payer_account, []).append((r.amount_paise, ist.year))

    def band(account: str) -> str:
        monthly = sum(a for a, _ in spent[account]) / len(months[account])
        return "low" if monthly < 10_000_00 else "mid" if monthly < 1_00_000_00 else "high"

    bands: dict[str, list[int]] = {}
    for account, payments in spent.items():
        per_band = bands.setdefault(band(account), [0, 0])
        per_band[0] += len(payments)
        per_band[1] += sum(a for a, _ in payments)
    assert {f"spend:{b}" for b in bands} <= set(result["segments"])
    browser.get(url + "/insights?segment=all")
    shown_bands = {
        tr.get_attribute("data-band"): [td.text for td in tr.find_elements(By.TAG_NAME, "td")[1:]]
        for tr in browser.find_elements(By.CSS_SELECTOR, "#bands tr[data-band]")
    }
    assert shown_bands == {b: [str(c), f"₹{t / 100:,.2f}"] for b, (c, t) in bands.items()}
    assert browser.find_element(By.ID, "chart-spend").get_attribute("src").startswith("data:image/svg+xml")
    payer_band = band(event.payer.account_number)
    _press(browser, f"segment-spend-{payer_band}")
    assert _text(browser, "insights-account").startswith("spending ")
    summary = _text(browser, "insights-summary")
    assert count_of(summary) == bands[payer_band][0] and f"₹{bands[payer_band][1] / 100:,.2f}" in summary
    assert not browser.find_elements(By.ID, "chart-spend")  # a band's own band would be one bar

    # The account's own page names its band (the one computed here), its spend a month,
    # and the band's average beside its own; the band's link leads to that segment's page,
    # which shows the same average.
    account = event.payer.account_number
    browser.get(account_page)
    assert browser.find_element(By.ID, "band").get_attribute("data-band") == payer_band
    own = [a for a, _ in spent[account]]
    monthly = round(sum(own) / len(months[account]))
    n = len(months[account])
    assert f"₹{monthly / 100:,.2f} a month over {n} month{'' if n == 1 else 's'} paid in" in _text(browser, "band")
    own_average, band_average = round(sum(own) / len(own)), round(bands[payer_band][1] / bands[payer_band][0])
    assert _text(browser, "band-average") == (
        f"₹{band_average / 100:,.2f} (this account {own_average / band_average:.2f} times)"
    )
    _press(browser, "band-link")
    assert _text(browser, "insights-account") == insights.segment_label(f"spend:{payer_band}")
    assert _text(browser, "average") == f"₹{band_average / 100:,.2f}"


def _shown_number(text: str) -> float:
    return float(text.replace(",", ""))


def test_a_case_shows_the_rules_fired_and_what_moved_the_model(console, browser, streamed, cassandra_session):
    """The case page of an alert that both rules and the model explain: every rule the
    stream recorded as fired, with the values that fired it, and the features the
    champion itself says lowered the fraud probability most when set to their usual value
    (recomputed here from the transaction's stored features), with their values."""
    import json

    import pandas as pd
    from selenium.webdriver.common.by import By

    from txmon.infra.settings import DEFAULT_RULES
    from txmon.models.features import FEATURE_OF_REASON, FEATURES
    from txmon.models.rules import load_rules

    rules = {r.id: r for r in load_rules(DEFAULT_RULES).rules}
    both = [
        r
        for r in cassandra_session.execute("SELECT alert_id, txn_id, reasons FROM alerts")  # this run's only
        if r.txn_id in streamed["events"]
        and {c["code"] for c in json.loads(r.reasons)} & set(rules)
        and {c["code"] for c in json.loads(r.reasons)} & set(FEATURE_OF_REASON)
    ]
    assert both, "an alert explained by a rule and by the model"
    alert = min(both, key=lambda r: r.txn_id)
    scored = cassandra_session.execute(
        "SELECT rules_fired, features_json, model_version FROM scored_transactions WHERE txn_id = %s", (alert.txn_id,)
    ).one()
    features = json.loads(scored.features_json)

    _login(browser, console["url"], "alice")
    browser.get(f"{console['url']}/cases/{alert.alert_id}")
    assert _text(browser, "txn-id") == alert.txn_id

    # Rules fired: each one the stream recorded, each placeholder of its reason with this
    # transaction's value of that feature.
    shown_rules = {
        tr.get_attribute("data-code"): tr.find_element(By.CSS_SELECTOR, "td.values").text
        for tr in browser.find_elements(By.CSS_SELECTOR, "#rule-reasons tr[data-code]")
    }
    assert set(shown_rules) == set(scored.rules_fired) and shown_rules
    for code, values in shown_rules.items():
        pairs = [pair.split("=", 1) for pair in values.split(", ")] if values else []
        assert [name for name, _ in pairs] == rules[code].placeholders(), code
        for name, value in pairs:
            assert abs(_shown_number(value) - features[name]) <= 0.005, (code, name, value, features[name])

    # What moved the model: the champion's own explanation of the stored features.
    frame = pd.DataFrame([{f: features.get(f) for f in FEATURES}])
    expected = [(name, round(drop, 4)) for name, drop in streamed["bundle"].explain(frame, top_k=3)[0]]
    assert expected, "the model names at least one feature for this alert"
    rows = browser.find_elements(By.CSS_SELECTOR, "#model-reasons tr[data-feature]")
    shown_model = [
        (
            tr.find_element(By.CSS_SELECTOR, "b.feature").text,
            tr.find_element(By.CSS_SELECTOR, "td.value").text,
            tr.find_element(By.CSS_SELECTOR, "td.drop").text,
        )
        for tr in rows
    ]
    assert [(name, f"{drop:.4f}") for name, drop in expected] == [(n, d) for n, _, d in shown_model]
    for name, value, _ in shown_model:
        assert abs(_shown_number(value) - features[name]) <= 0.005, (name, value, features[name])


def _stream_shown(driver, url: str) -> tuple[str, str, str]:
    """(data-state, the stream's line, the lag's line) of the dashboard."""
    driver.get(url + "/dashboard?hours=1")
    cell = driver.find_element("id", "stream")
    return cell.get_attribute("data-state"), cell.text, _text(driver, "stream-lag")


def test_dashboard_shows_the_stream_live_then_behind_then_stale(console, browser, streamed, services, spark):
    """The real stream with its real heartbeat listener: live and caught up while it
    runs, stopped and exactly as many records behind as were produced after it stopped,
    stale once its heartbeat is older than the supervisor's limit."""
    from txmon.ingestion.producer import TransactionProducer
    from txmon.ingestion.simulate import SimulateOptions, simulator_for
    from txmon.spark_jobs.heartbeat import heartbeat_path, read_heartbeat, register, write_json_atomic
    from txmon.spark_jobs.transactions_stream import start_all

    url, names = console["url"], streamed["names"]
    path = heartbeat_path(services.state_path)
    path.unlink(missing_ok=True)
    _login(browser, url, "alice")
    assert _stream_shown(browser, url)[0] == "none"

    def produce(count: int, seed: int) -> None:
        sim = simulator_for(
            SimulateOptions(
                seed=seed, count=count, rate=None, fraud_rate=0.0, n_customers=50, live=True, progress=False
            )
        )
        producer = TransactionProducer(services, topic=names["tx"], labels_topic=names["labels"])
        for item in sim.generate(count):
            producer.send_event(item.event)
        producer.close()

    listener = register(spark, services)
    try:
        opts = stream_options(services, names, streamed["tmp"], trigger_seconds=1.0)
        queries = start_all(spark, services, opts)
        try:
            produce(25, streamed["seed"] + 1)

            def live_and_caught_up():
                shown = _stream_shown(browser, url)
                return shown if shown[0] == "live" and shown[2].startswith("0 records") else None

            shown = _wait(live_and_caught_up, timeout=300, what="the dashboard to show the stream live and caught up")
            assert "heartbeat" in shown[1] and "last progress" in shown[2]
            browser.get(url + "/dashboard?hours=168")  # the week, with the stream running, for the docs
            assert browser.find_element("id", "stream").get_attribute("data-state") == "live"
            browser.save_screenshot(str(DOCS / "console-dashboard.png"))
        finally:
            for q in queries:
                q.stop()
        _wait(lambda: _stream_shown(browser, url)[0] == "stopped", timeout=60, what="the stream shown stopped")
        produce(7, streamed["seed"] + 2)
        state, line, lag = _stream_shown(browser, url)
        assert state == "stopped" and lag.startswith("7 records in Kafka not yet processed"), (line, lag)

        # The same heartbeat, older than the limit the supervisor restarts a stalled stream at.
        beat = read_heartbeat(path)
        assert beat is not None
        limit = services.airflow.stream_stall_after_s
        beat["written_at"] = (datetime.now(UTC) - timedelta(seconds=limit + 60)).isoformat()
        write_json_atomic(path, beat)
        state, line, lag = _stream_shown(browser, url)
        assert state == "stale" and "no heartbeat for" in line and f"(limit {limit:.0f} s)" in line, line
        assert lag.startswith("7 records")
    finally:
        spark.streams.removeListener(listener)
        path.unlink(missing_ok=True)
