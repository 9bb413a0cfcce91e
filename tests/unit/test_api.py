"""The scoring API's HTTP behaviour with FastAPI's TestClient: keys and scopes, bad
input, body and rate limits, masking, ingest and label idempotency, 503 and recovery,
and hot reload of rules and champion. Cassandra and Kafka are stood in for by in-memory
objects with the store's and producer's methods; tests/integration/test_api.py runs the
same routes against the real services."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from txmon.infra.settings import PROJECT_ROOT, load_settings
from txmon.webapp.api.config import ApiSettings
from txmon.webapp.api.keys import KeyVerifier, create_key
from txmon.webapp.api.limits import TokenBuckets
from txmon.webapp.api.scorer import Profiles, Scorer
from txmon.webapp.api.services import ApiServices
from txmon.webapp.api.store import StoreUnavailable
from txmon.webapp.app import create_app

KeyRow = namedtuple("KeyRow", "key_id name scopes secret_hash created_at revoked_at")
DecisionRow = namedtuple("DecisionRow", "txn_id content_hash verdict decided_at published_at")
LabelRow = namedtuple("LabelRow", "label_id content_hash state")
TxnRow = namedtuple(
    "TxnRow",
    "txn_id event_time channel txn_type payer_account payer_vpa payee_account payee_vpa amount_paise status landed_at",
)


class MemoryStore:
    """The ApiStore's methods over dicts; ``down = True`` makes every call fail like a
    Cassandra that cannot be reached."""

    def __init__(self) -> None:
        self.down = False
        self.keys_by_id: dict[str, KeyRow] = {}
        self.decisions: dict[str, DecisionRow] = {}
        self.labels: dict[str, LabelRow] = {}
        self.txns: dict[str, TxnRow] = {}
        self.profile_rows: dict[tuple[str, str], str] = {}

    def _up(self):
        if self.down:
            raise StoreUnavailable("Cassandra unavailable (NoHostAvailable); retry shortly")

    def profiles(self, payer, payee):
        self._up()
        return Profiles(payer=self.profile_rows.get(("payer", payer)), payee=self.profile_rows.get(("payee", payee)))

    def key(self, key_id):
        self._up()
        return self.keys_by_id.get(key_id)

    def add_key(self, key_id, name, scopes, secret_hash):
        self._up()
        self.keys_by_id[key_id] = KeyRow(key_id, name, scopes, secret_hash, datetime.now(), None)
        return True

    def revoke_key(self, key_id):
        self.keys_by_id[key_id] = self.keys_by_id[key_id]._replace(revoked_at=datetime.now())
        return True

    def decision(self, txn_id):
        self._up()
        return self.decisions.get(txn_id)

    def claim_decision(self, txn_id, content_hash, verdict, key_id):
        self._up()
        if txn_id in self.decisions:
            return False, self.decisions[txn_id]
        self.decisions[txn_id] = DecisionRow(txn_id, content_hash, verdict, datetime.now(), None)
        return True, None

    def decision_published(self, txn_id):
        self.decisions[txn_id] = self.decisions[txn_id]._replace(published_at=datetime.now())

    def claim_label(self, label_id, content_hash, txn_id, key_id):
        self._up()
        if label_id in self.labels:
            return False, self.labels[label_id]
        self.labels[label_id] = LabelRow(label_id, content_hash, "pending")
        return True, None

    def label_sent(self, label_id):
        self.labels[label_id] = self.labels[label_id]._replace(state="sent")

    def transaction(self, txn_id):
        self._up()
        return self.txns.get(txn_id)

    def scored(self, txn_id):
        self._up()

    def ping(self):
        self._up()
        return "5.0"

    # No alerts or windows here: their routes run against Cassandra in tests/integration/test_api.py.
    def alerts_page(self, day, limit, paging_state):
        self._up()
        return [], None

    def account_windows(self, account, kind, since):
        self._up()
        return []


class Summary:
    failed = 0


class MemoryProducer:
    def __init__(self) -> None:
        self.events: list = []
        self.labels: list = []
        self.summary = Summary()

    def send_event(self, event):
        self.events.append(event)

    def send_label(self, key, value):
        self.labels.append((key, value))

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def event(txn_id: str = "api-unit-0001", **changes) -> dict:
    body = {
        "schema_version": 1,
        "txn_id": txn_id,
        "event_time": (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "channel": "UPI",
        "txn_type": "P2P",
        "payer": {"account_number": "123456789012"},
        "payee": {"vpa": "asha@oksbi"},
        "amount_paise": 150000,
        "currency": "INR",
        "device_id": "dev-1",
        "status": "SUCCESS",
    }
    body.update(changes)
    return body


def cheap_hasher():
    """argon2 with its smallest cost: the real parameters spend ~50 ms (seconds on a busy
    machine) per hash by design, and the API's unit tests make keys by the dozen."""
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    from txmon.webapp.api import keys

    monkeypatch.setattr(keys, "_hasher", cheap_hasher)


def memory_services(
    store: Any,
    producer: Any,
    api: ApiSettings,
    folder: Path,
    *,
    rules: Path | None = None,
    key_ttl_s: float = 3600,
    max_age: timedelta | None = timedelta(days=30),
    **extra: Any,
) -> ApiServices:
    """The API's services on in-memory stand-ins for Cassandra and Kafka, scoring with the
    shipped rules (copied into ``folder`` unless ``rules`` names a file) and no champion."""
    if rules is None:
        rules = folder / "rules.yaml"
        shutil.copy(PROJECT_ROOT / "config" / "rules.yaml", rules)
    return ApiServices(
        settings=load_settings(),
        api=api,
        store=store,
        scorer=Scorer(rules, folder / "models"),
        verifier=KeyVerifier(store, key_ttl_s),
        buckets=TokenBuckets(api.rate_per_s, api.burst),
        max_age=max_age,
        producer_factory=lambda: producer,
        **extra,
    )


@pytest.fixture
def rules_file(tmp_path) -> Path:
    path = tmp_path / "rules.yaml"
    shutil.copy(PROJECT_ROOT / "config" / "rules.yaml", path)
    return path


@pytest.fixture
def world(tmp_path, rules_file):
    """(client, store, producer, keys by scope set, services)."""
    store, producer = MemoryStore(), MemoryProducer()
    api = ApiSettings(rate_per_s=1000, burst=1000, max_body_bytes=4096, batch_max=3)
    services = memory_services(store, producer, api, tmp_path, rules=rules_file, key_ttl_s=30)
    keys = {
        name: create_key(store, name, scopes)[0]
        for name, scopes in {
            "score": ["score"],
            "read": ["read"],
            "clear": ["read", "clear"],
            "label": ["label"],
            "all": ["score", "read", "label"],
        }.items()
    }
    client = TestClient(create_app(load_settings(), services=services))
    return client, store, producer, keys, services


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_healthz_needs_no_key(world):
    client, *_ = world
    assert client.get("/healthz").json() == {"status": "ok"}


def test_score_answers_risk_decision_reasons_and_versions(world):
    client, _, producer, keys, _ = world
    answer = client.post("/v1/score", json=event(), headers=auth(keys["score"]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert 0 <= body["risk_score"] <= 100 and body["decision"] in ("APPROVE", "REVIEW", "BLOCK")
    assert body["model_version"] == "none" and body["rules_version"].startswith("v1-")
    assert body["latency_ms"] > 0 and body["features"]["payer_history_count"] == 0
    assert producer.events == []  # scoring alone publishes nothing


def test_the_key_may_come_as_x_api_key(world):
    client, _, _, keys, _ = world
    assert client.post("/v1/score", json=event(), headers={"X-API-Key": keys["score"]}).status_code == 200


def test_a_fired_rule_is_a_reason_with_its_value(world):
    client, _, _, keys, _ = world
    # A new device on an account with history, moving Rs 50,000: NEW_DEVICE_DRAIN.
    state = json.dumps([3, 100000.0, 0.0, None, None, None, [], {}, {"old-phone": [0, 0]}, None, {}])
    world[1].profile_rows[("payer", "123456789012")] = state
    body = client.post("/v1/score", json=event(amount_paise=5_000_000), headers=auth(keys["score"])).json()
    assert "NEW_DEVICE_DRAIN" in body["rules_fired"]
    reason = next(r for r in body["reasons"] if r["code"] == "NEW_DEVICE_DRAIN")
    assert reason["contribution"] > 0 and reason["description"]


def test_no_key_is_401_with_a_challenge(world):
    client, *_ = world
    answer = client.post("/v1/score", json=event())
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["error"] == "unauthenticated"


def test_a_wrong_or_revoked_key_is_401(world):
    client, store, _, keys, services = world
    key_id = keys["score"].split("_")[1]
    assert client.post("/v1/score", json=event(), headers=auth(keys["score"][:-2] + "xx")).status_code == 401
    assert client.post("/v1/score", json=event(), headers=auth("txk_nonsense")).status_code == 401
    store.revoke_key(key_id)
    services.verifier.cache_s = 0  # the revocation is seen once the worker's cache entry expires
    assert client.post("/v1/score", json=event(), headers=auth(keys["score"])).status_code == 401


def test_a_key_without_the_scope_is_403(world):
    client, _, _, keys, _ = world
    answer = client.post("/v1/score", json=event(), headers=auth(keys["read"]))
    assert answer.status_code == 403 and "score" in answer.json()["detail"]
    assert client.get("/v1/transactions/x-00000001", headers=auth(keys["score"])).status_code == 403
    assert (
        client.post(
            "/v1/labels", json={"txn_id": "x-00000001", "is_fraud": True}, headers=auth(keys["read"])
        ).status_code
        == 403
    )


def test_bad_input_is_422_naming_the_field(world):
    client, _, _, keys, _ = world
    answer = client.post("/v1/score", json=event(amount_paise=-5), headers=auth(keys["score"]))
    assert answer.status_code == 422
    assert answer.json()["field"] == "amount_paise" and answer.json()["reason"] == "non_positive_amount"
    missing = event()
    del missing["payer"]
    assert client.post("/v1/score", json=missing, headers=auth(keys["score"])).json()["field"] == "payer"
    assert client.post("/v1/score", content=b"{not json", headers=auth(keys["score"])).status_code == 422


def test_a_body_over_the_limit_is_413(world):
    client, _, _, keys, _ = world
    answer = client.post("/v1/score", content=b"x" * 5000, headers=auth(keys["score"]))
    assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"


def test_a_key_over_its_rate_is_429(world):
    client, _, _, keys, services = world
    services.buckets = TokenBuckets(rate_per_s=0.001, burst=2)
    codes = [client.post("/v1/score", json=event(), headers=auth(keys["score"])).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    # Per key: another key still has its own bucket.
    assert client.post("/v1/score", json=event(), headers=auth(keys["all"])).status_code == 200


def test_cassandra_down_is_503_then_recovers(world):
    client, store, _, keys, _ = world
    store.down = True
    answer = client.post("/v1/score", json=event(), headers=auth(keys["score"]))
    assert answer.status_code == 503 and answer.json()["error"] == "cassandra_unavailable"
    assert answer.headers["retry-after"] == "1"
    store.down = False
    assert client.post("/v1/score", json=event(), headers=auth(keys["score"])).status_code == 200


def test_ingest_publishes_once_and_a_retry_gets_the_same_verdict(world):
    client, _, producer, keys, _ = world
    body = event("api-unit-ingest1")
    first = client.post("/v1/score?ingest=true", json=body, headers=auth(keys["score"])).json()
    retry = client.post("/v1/score?ingest=true", json=body, headers=auth(keys["score"])).json()
    assert first["ingested"] and not first["duplicate"] and retry["duplicate"]
    assert (retry["risk_score"], retry["decision"]) == (first["risk_score"], first["decision"])
    assert [e.txn_id for e in producer.events] == ["api-unit-ingest1"]


def test_ingest_with_a_reused_txn_id_and_other_content_is_409(world):
    client, _, producer, keys, _ = world
    body = event("api-unit-conflict")
    assert client.post("/v1/score?ingest=true", json=body, headers=auth(keys["score"])).status_code == 200
    body["amount_paise"] += 100
    answer = client.post("/v1/score?ingest=true", json=body, headers=auth(keys["score"]))
    assert answer.status_code == 409 and answer.json()["error"] == "conflicting_duplicate"
    assert len(producer.events) == 1


def test_a_label_is_published_once_per_label_id(world):
    client, _, producer, keys, _ = world
    label = {
        "label_id": "cb-1",
        "txn_id": "api-unit-0001",
        "is_fraud": True,
        "scenario": "chargeback",
        "label_time": "2026-01-01T00:00:00Z",
    }
    first = client.post("/v1/labels", json=label, headers=auth(keys["label"]))
    second = client.post("/v1/labels", json=label, headers=auth(keys["label"]))
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["duplicate"] is True and len(producer.labels) == 1
    key, value = producer.labels[0]
    assert key == b"api-unit-0001" and json.loads(value)["is_fraud"] is True
    undated = {"txn_id": "api-unit-0002", "is_fraud": True}  # label_time defaults to now: still one label
    assert [client.post("/v1/labels", json=undated, headers=auth(keys["label"])).status_code for _ in range(2)] == [
        202,
        200,
    ]
    assert len(producer.labels) == 2
    changed = client.post("/v1/labels", json={**label, "is_fraud": False}, headers=auth(keys["label"]))
    assert changed.status_code == 409
    bad = client.post("/v1/labels", json={"txn_id": "api-unit-0001", "is_fraud": "maybe"}, headers=auth(keys["label"]))
    assert bad.status_code == 422 and bad.json()["field"] == "is_fraud"


def test_account_numbers_are_masked_without_the_clear_scope(world):
    client, store, _, keys, _ = world
    store.txns["api-unit-0001"] = TxnRow(
        "api-unit-0001",
        datetime(2026, 1, 1),
        "UPI",
        "P2P",
        "123456789012",
        None,
        None,
        "asha@oksbi",
        150000,
        "SUCCESS",
        datetime(2026, 1, 1),
    )
    masked = client.get("/v1/transactions/api-unit-0001", headers=auth(keys["read"])).json()["transaction"]
    clear = client.get("/v1/transactions/api-unit-0001", headers=auth(keys["clear"])).json()["transaction"]
    assert masked["payer_account"] == "XXXXXXXX9012" and masked["payee_vpa"] == "as***@oksbi"
    assert clear["payer_account"] == "123456789012" and clear["payee_vpa"] == "asha@oksbi"
    assert client.get("/v1/transactions/nope-0000001", headers=auth(keys["read"])).status_code == 404


def test_batch_scores_each_and_names_bad_items(world):
    client, _, _, keys, _ = world
    answer = client.post(
        "/v1/score/batch",
        json={"transactions": [event("b-000001"), event("b-000002", mcc="54")]},
        headers=auth(keys["score"]),
    )
    results = answer.json()["results"]
    assert results[0]["txn_id"] == "b-000001" and results[1]["field"] == "mcc" and results[1]["index"] == 1
    too_many = client.post("/v1/score/batch", json={"transactions": [event()] * 4}, headers=auth(keys["score"]))
    assert too_many.status_code == 422


def test_rules_reload_when_the_file_changes(world, rules_file):
    client, _, _, keys, _ = world
    before = client.post("/v1/score", json=event(), headers=auth(keys["score"])).json()
    rules_file.write_text(
        rules_file.read_text()
        + """
  - id: EVERY_UPI_PAYMENT
    description: A test rule that fires on every UPI payment
    condition: channel = 'UPI' AND amount_paise > 0
    score: 60
    severity: LOW
"""
    )
    after = client.post("/v1/score", json=event(), headers=auth(keys["score"])).json()
    assert after["rules_version"] != before["rules_version"]
    assert "EVERY_UPI_PAYMENT" in after["rules_fired"] and after["decision"] == "REVIEW"
    rules_file.write_text("rules: [not valid")  # a broken file keeps the last good rules
    kept = client.post("/v1/score", json=event(), headers=auth(keys["score"])).json()
    assert kept["rules_version"] == after["rules_version"]


@pytest.mark.parametrize(
    "broken",
    [
        b"version: 1\n1: 2\nrules: []\n",  # a key that is not a name (was a TypeError)
        b"version: 1\nrules:\n  - id: X\xff\n",  # not UTF-8 (was a UnicodeDecodeError)
        b"version: " + b"[" * 5000 + b"]" * 5000,  # nested past PyYAML's recursion (RecursionError)
        None,  # the path is now a directory (IsADirectoryError)
    ],
)
def test_a_hostile_rules_edit_keeps_the_last_good_rules(world, rules_file, broken):
    client, _, _, keys, _ = world
    before = client.post("/v1/score", json=event(), headers=auth(keys["score"])).json()
    good = rules_file.read_text()
    rules_file.unlink()
    if broken is None:
        rules_file.mkdir()
    else:
        rules_file.write_bytes(broken)
    kept = client.post("/v1/score", json=event(), headers=auth(keys["score"]))
    assert kept.status_code == 200 and kept.json()["rules_version"] == before["rules_version"]
    for condition in ("amount_paise > 'abc'", "(" * 150 + "amount_paise > 1" + ")" * 150):
        if rules_file.is_dir():
            rules_file.rmdir()
        rules_file.write_text(good.replace("    condition: ", f"    condition: {condition} OR ", 1))
        kept = client.post("/v1/score", json=event(), headers=auth(keys["score"]))
        assert kept.status_code == 200 and kept.json()["rules_version"] == before["rules_version"]


def test_champion_reloads_when_promoted(world, tmp_path):
    from txmon.models.registry import Registry
    from txmon.models.testing import planted_frame
    from txmon.models.training import TrainingConfig, train_frame

    client, _, _, keys, _ = world
    assert client.post("/v1/score", json=event(), headers=auth(keys["score"])).json()["model_version"] == "none"
    trained = train_frame(
        planted_frame(n=800, seed=5), TrainingConfig(seed=3, max_iter=20, iforest_estimators=10), data_source="planted"
    )
    registry = Registry(tmp_path / "models")
    registry.promote(registry.register(trained.bundle, trained.metadata))
    body = client.post("/v1/score", json=event(), headers=auth(keys["score"])).json()
    assert body["model_version"] == "v0001" and 0 < body["fraud_probability"] < 1


def test_metrics_count_requests_and_decisions(world):
    client, _, _, keys, _ = world
    client.post("/v1/score", json=event(), headers=auth(keys["score"]))
    text = client.get("/metrics", headers=auth(keys["read"])).text
    assert 'txmon_api_requests_total{method="POST",route="/v1/score",status="200"} 1.0' in text
    assert "txmon_api_decisions_total" in text and "txmon_api_request_seconds_bucket" in text
    assert client.get("/metrics").status_code == 401


def test_openapi_documents_the_event_contract(world):
    client, *_ = world
    schema = client.get("/openapi.json").json()
    assert "TransactionEvent" in schema["components"]["schemas"]
    assert "/v1/score" in schema["paths"]


def test_score_answers_the_same_through_its_fast_path_and_the_router(world):
    """POST /v1/score without a query string is served by routes.ScoreFastPath; with one
    (``?ingest=false``) by FastAPI's router. Both must answer alike: a verdict, a refused
    event (422 naming the field), no key (401 and its challenge), a key without the scope
    (403), a body that is not JSON, and Cassandra away (503)."""
    client, store, _, keys, _ = world
    served_by: list = []

    class Recorder:  # outermost: sees the scope after the request, whoever served it
        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope, receive, send):
            await self.app(scope, receive, send)
            if scope["type"] == "http":
                served_by.append("router" if "endpoint" in scope else "fast path")

    client.app.add_middleware(Recorder)
    cases: list[dict] = [
        {"json": event(), "headers": auth(keys["score"])},
        {"json": event(amount_paise=-5), "headers": auth(keys["score"])},
        {"json": event()},
        {"json": event(), "headers": auth(keys["read"])},
        {"content": b"{not json", "headers": {**auth(keys["score"]), "Content-Type": "application/json"}},
    ]

    def answer(path: str, case: dict) -> tuple:
        response = client.post(path, **case)
        body = response.json()
        if isinstance(body, dict):
            body.pop("latency_ms", None)
        headers = {
            k: v for k, v in response.headers.items() if k in ("content-type", "www-authenticate", "retry-after")
        }
        return response.status_code, headers, body

    statuses = []
    for case in cases:
        fast = answer("/v1/score", case)
        assert fast == answer("/v1/score?ingest=false", case)
        statuses.append(fast[0])
    assert statuses == [200, 422, 401, 403, 422]
    store.down = True
    down: dict = {"json": event(), "headers": auth(keys["score"])}
    fast, routed = answer("/v1/score", down), answer("/v1/score?ingest=false", down)
    assert fast == routed and fast[0] == 503 and fast[2]["error"] == "cassandra_unavailable"
    assert served_by == ["fast path", "router"] * (len(cases) + 1)


def test_a_started_worker_keeps_what_it_loaded_out_of_the_cyclic_collector(world):
    import gc

    client, *_ = world
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        with client:  # runs the lifespan: rules and champion loaded, then frozen
            assert gc.get_freeze_count() > 0
            assert client.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()  # the rest of this test session collects as before
