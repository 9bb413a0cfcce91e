"""The scoring API against the real Kafka, Cassandra and stream: score, ingest, read back,
label (to the drift monitor), keys, auth failures, bad input, and a Cassandra outage
answered with 503 and recovered from without a restart. Also ``txmon api`` itself,
served by uvicorn in a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.integration.streams import stream_options, stream_topics
from txmon.infra.process import wait_until
from txmon.infra.settings import PROJECT_ROOT, KafkaTopics
from txmon.spark_jobs.transactions_stream import start_all


@contextmanager
def api_client(
    services,
    tmp: Path,
    *,
    rules_path=None,
    registry_root=None,
    topics: dict | None = None,
    scopes=("score", "read", "label"),
    cache_s: float = 30.0,
):
    """(TestClient of an app on the real Cassandra and Kafka, a new key with ``scopes``).
    ``topics``: {"tx", "labels", ...} the API publishes to (default: the configured ones)."""
    from txmon.infra.cassandra_schema import apply_schema
    from txmon.webapp.api.config import ApiSettings
    from txmon.webapp.api.keys import create_key
    from txmon.webapp.api.services import ApiServices
    from txmon.webapp.app import create_app

    apply_schema(services)  # the API's tables, on a stack started before they existed
    settings = services
    if topics:
        kafka = services.kafka.model_copy(
            update={
                "topics": KafkaTopics(
                    transactions=topics["tx"],
                    labels=topics["labels"],
                    alerts=topics.get("alerts", "alerts"),
                    dead_letter=topics.get("dlq", "transactions_dlq"),
                )
            }
        )
        settings = services.model_copy(update={"kafka": kafka})
    api = ApiSettings(
        rules_path=rules_path or PROJECT_ROOT / "config" / "rules.yaml",
        registry_root=registry_root or tmp / "no-models",
        key_cache_s=cache_s,
        rate_per_s=10_000,
        burst=10_000,
    )
    built = ApiServices.build(settings, api)
    key, _ = create_key(built.store, "integration", list(scopes))
    with TestClient(create_app(settings, services=built)) as client:
        yield client, key


def _interrupt(child: subprocess.Popen, log) -> None:
    """Stop a ``txmon api`` child as Ctrl-C does (killed if it has not exited in 30 s)."""
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
    log.close()


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _event(txn_id: str, payer: str = "555566667777", amount: int = 250_000) -> dict:
    return {
        "schema_version": 1,
        "txn_id": txn_id,
        "event_time": (datetime.now(UTC) - timedelta(seconds=30)).isoformat().replace("+00:00", "Z"),
        "channel": "UPI",
        "txn_type": "P2P",
        "payer": {"account_number": payer},
        "payee": {"vpa": "merchant.one@okhdfc"},
        "amount_paise": amount,
        "currency": "INR",
        "device_id": "dev-int-1",
        "geo": {"city": "Pune", "lat": 18.52, "lon": 73.85},
        "status": "SUCCESS",
    }


@pytest.fixture(scope="module")
def topics(services, tmp_path_factory):
    return stream_topics(services, f"api_{zlib.crc32(str(tmp_path_factory.mktemp('api')).encode()):x}")


def _stream_once(spark, services, topics, tmp: Path) -> None:
    opts = stream_options(services, topics, tmp, registry="no-models", available_now=True)
    for q in start_all(spark, services, opts):
        q.awaitTermination(timeout=600)
        assert q.exception() is None, q.exception()


def _records(services, topic: str) -> int:
    from txmon.infra.readback import kafka_end_offsets

    return sum(kafka_end_offsets(services.kafka.bootstrap, topic).values())


def test_score_ingest_read_back_and_label(services, spark, cassandra_session, topics, tmp_path):
    txn_id = f"api-int-{os.getpid()}-{int(time.time())}"
    payer = f"5555{int(time.time() * 1000) % 10**8:08d}"  # an account no earlier run has a profile for
    body = _event(txn_id, payer=payer)
    with api_client(services, tmp_path, topics=topics) as (client, key):
        scored = client.post("/v1/score", json=body, headers=_bearer(key))
        assert scored.status_code == 200, scored.text
        first = client.post("/v1/score?ingest=true", json=body, headers=_bearer(key)).json()
        again = client.post("/v1/score?ingest=true", json=body, headers=_bearer(key)).json()
        assert first["ingested"] and not first["duplicate"] and again["duplicate"]
        assert (again["risk_score"], again["decision"]) == (first["risk_score"], first["decision"])
        assert _records(services, topics["tx"]) == 1  # published once, whatever the retries

        _stream_once(spark, services, topics, tmp_path)
        read = client.get(f"/v1/transactions/{txn_id}", headers=_bearer(key)).json()
        assert read["transaction"]["payer_account"] == "XXXXXXXX" + payer[-4:]  # no `clear` scope
        assert read["stream"]["decision"] in ("APPROVE", "REVIEW", "BLOCK")
        assert read["api"]["risk_score"] == first["risk_score"] and read["decision_of_record"] == "api"
        # Nothing saved by scoring alone: the stream folded this transaction exactly once.
        assert read["stream"]["risk_score"] == first["risk_score"]
        windows = client.get(f"/v1/accounts/{payer}/windows?kind=tumble_5m", headers=_bearer(key)).json()
        assert windows["account"] == "XXXXXXXX" + payer[-4:] and sum(w["txn_count"] for w in windows["windows"]) == 1
        summary = client.get(f"/v1/accounts/{payer}/summary", headers=_bearer(key)).json()
        assert summary["latest"]["tumble_1m"]["txn_count"] == 1
        alerts = client.get("/v1/alerts?limit=5", headers=_bearer(key))
        assert alerts.status_code == 200 and "next_page" in alerts.json()

        label = {"label_id": f"cb-{txn_id}", "txn_id": txn_id, "is_fraud": True, "scenario": "chargeback"}
        assert client.post("/v1/labels", json=label, headers=_bearer(key)).status_code == 202
        assert client.post("/v1/labels", json=label, headers=_bearer(key)).json()["duplicate"] is True
        assert _records(services, topics["labels"]) == 1  # exactly once per label id

    _stream_once(spark, services, topics, tmp_path)  # the labels query: labels table and drift monitor
    row = cassandra_session.execute(
        cassandra_session.prepare("SELECT is_fraud FROM labels WHERE txn_id = ?"), (txn_id,)
    ).one()
    assert row is not None and row.is_fraud is True
    drift = cassandra_session.execute(
        cassandra_session.prepare("SELECT applied_batch FROM drift_state WHERE stream = ? AND part = 'labels'"),
        (topics["tx"],),
    ).one()
    assert drift is not None and drift.applied_batch >= 0


def test_auth_failures_and_bad_input(services, tmp_path):
    with api_client(services, tmp_path, scopes=["read"]) as (client, key):
        assert client.post("/v1/score", json=_event("api-int-auth-1")).status_code == 401
        assert (
            client.post("/v1/score", json=_event("api-int-auth-1"), headers=_bearer(key[:-3] + "abc")).status_code
            == 401
        )
        forbidden = client.post("/v1/score", json=_event("api-int-auth-1"), headers={"X-API-Key": key})
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
        assert client.get("/readyz", headers=_bearer(key)).json()["checks"]["cassandra"]["ok"] is True
    with api_client(services, tmp_path, scopes=["score"]) as (client, key):
        bad = client.post("/v1/score", json={**_event("api-int-bad-1"), "channel": "TELEGRAM"}, headers=_bearer(key))
        assert bad.status_code == 422 and bad.json()["field"] == "channel"
        stale = client.post(
            "/v1/score", json={**_event("api-int-bad-2"), "event_time": "2001-01-01T00:00:00Z"}, headers=_bearer(key)
        )
        assert stale.status_code == 422 and stale.json()["reason"] == "stale_timestamp"


def test_keys_cli_creates_lists_and_revokes(services, tmp_path):
    from typer.testing import CliRunner

    from txmon.infra.cli import app

    runner = CliRunner()
    created = runner.invoke(app, ["api", "keys", "create", "cli-test", "--scope", "score"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    key_id = key.split("_")[1]
    listed = runner.invoke(app, ["api", "keys", "list"])
    assert key_id in listed.output and key not in listed.output  # the key itself is never shown again
    with api_client(services, tmp_path, cache_s=0) as (client, _):
        assert client.post("/v1/score", json=_event("api-int-cli-1"), headers=_bearer(key)).status_code == 200
        assert runner.invoke(app, ["api", "keys", "revoke", key_id]).exit_code == 0
        assert client.post("/v1/score", json=_event("api-int-cli-1"), headers=_bearer(key)).status_code == 401
    assert "revoked" in runner.invoke(app, ["api", "keys", "list"]).output
    unknown = runner.invoke(app, ["api", "keys", "revoke", "000000000000"])
    assert unknown.exit_code != 0 and "no API key" in str(unknown.exception)  # main() prints it as one line


def test_cassandra_down_is_503_and_the_api_recovers_without_restart(services, tmp_path):
    from txmon.infra.services.cassandra import CassandraService

    cassandra = CassandraService(services)
    with api_client(services, tmp_path) as (client, key):
        assert client.post("/v1/score", json=_event("api-int-down-1"), headers=_bearer(key)).status_code == 200
        pid = cassandra.process.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        try:
            assert wait_until(cassandra.process.exited, timeout=30)
            down = client.post("/v1/score", json=_event("api-int-down-2"), headers=_bearer(key))
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "cassandra_unavailable" and down.headers["retry-after"] == "1"
            assert client.get("/readyz", headers=_bearer(key)).status_code in (503, 401)  # 401 only if key uncached
        finally:
            assert cassandra.start()
            cassandra.wait_ready(services.cassandra.ready_timeout_s)
        scored = wait_until(
            lambda: client.post("/v1/score", json=_event("api-int-down-3"), headers=_bearer(key)).status_code == 200,
            120,
            interval=1,
        )
        assert scored  # the same app, no restart
        assert client.get("/readyz", headers=_bearer(key)).json()["checks"]["cassandra"]["ok"] is True


def test_txmon_api_serves_on_loopback(services, tmp_path):
    from txmon.webapp.api.keys import create_key
    from txmon.webapp.api.store import ApiStore

    store = ApiStore(services, timeout_s=10)
    try:
        key, _ = create_key(store, "served", ["score"])
    finally:
        store.close()
    port = 23300
    log = open(tmp_path / "api.log", "w")  # noqa: SIM115 - the child writes to it until it stops
    child = subprocess.Popen(
        [sys.executable, "-m", "txmon.infra.cli", "api", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TXMON_API__REGISTRY_ROOT": str(tmp_path / "no-models")},
    )
    try:

        def healthz() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except httpx.TransportError:
                return None

        health = wait_until(healthz, 120, abort=lambda: child.poll() is not None)
        assert health and health.json() == {"status": "ok"}, (tmp_path / "api.log").read_text()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/score",
            headers=_bearer(key),
            timeout=30,
            content=json.dumps(_event("api-int-served-1")),
        )
        assert answer.status_code == 200 and answer.json()["txn_id"] == "api-int-served-1"
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=10).status_code == 200
    finally:
        _interrupt(child, log)


def test_alert_pages_follow_the_driver_and_refuse_tokens_they_did_not_issue(services, cassandra_session, tmp_path):
    """Paging through a day's alerts in the real Cassandra, and the page tokens that must
    not reach it: altered, a bare driver paging state (what any base64 was taken for
    before), of another day or of other filters: each a 422 naming ``page``."""
    from base64 import urlsafe_b64decode, urlsafe_b64encode

    from txmon.alerting.store import AlertStore
    from txmon.alerting.testing import make_alert
    from txmon.infra.cassandra_schema import apply_schema

    apply_schema(services)
    # A day of this run's own: no other test's alerts are in its partition.
    run = int(time.time() * 1000) % 100_000
    day = datetime(1990, 1, 1, tzinfo=UTC) + timedelta(days=run % 9000)
    store = AlertStore(cassandra_session)
    made = [
        make_alert(n, txn_id=f"TXNPAGE{run:05d}{n:03d}", event_time=day + timedelta(hours=6, seconds=n))
        for n in range(5)
    ]
    for alert in made:
        store.save_alert(alert)

    def refused(answer) -> None:
        assert answer.status_code == 422, answer.text
        assert (answer.json()["error"], answer.json()["field"]) == ("invalid_page", "page")

    with api_client(services, tmp_path, scopes=["read"]) as (client, key):
        ids, page, tokens = [], None, []
        while True:
            params = {"day": day.date().isoformat(), "limit": 2, **({"page": page} if page else {})}
            answer = client.get("/v1/alerts", params=params, headers=_bearer(key))
            assert answer.status_code == 200, answer.text
            ids += [a["alert_id"] for a in answer.json()["alerts"]]
            page = answer.json()["next_page"]
            if page is None:
                break
            tokens.append(page)
        assert sorted(ids) == sorted(str(a.alert_id) for a in made) and len(tokens) >= 2

        token = tokens[0]
        state = urlsafe_b64decode(token + "=" * (-len(token) % 4))[1 + 16 + 4 :]  # the driver's paging state
        # The same day without naming it: the token carries it.
        assert client.get("/v1/alerts", params={"limit": 2, "page": token}, headers=_bearer(key)).status_code == 200
        base = {"day": day.date().isoformat(), "limit": 2}
        for page in (
            token[:10] + ("A" if token[10] != "A" else "B") + token[11:],  # altered
            urlsafe_b64encode(state).decode(),  # a bare paging state, as earlier versions issued
            token + "AAAA",
        ):
            refused(client.get("/v1/alerts", params={**base, "page": page}, headers=_bearer(key)))
        other_day = (day + timedelta(days=1)).date().isoformat()
        refused(client.get("/v1/alerts", params={**base, "day": other_day, "page": token}, headers=_bearer(key)))
        refused(client.get("/v1/alerts", params={**base, "decision": "BLOCK", "page": token}, headers=_bearer(key)))
        refused(client.get("/v1/alerts", params={**base, "min_risk": 90, "page": token}, headers=_bearer(key)))
