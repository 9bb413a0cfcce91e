"""The scoring API decides exactly as the stream does, for the same events and state.

Simulated history goes through the real stream (Kafka -> Spark -> Cassandra profiles).
Then later events whose payers and payees all differ from each other are scored by the
API (POST /v1/score: the saved profiles read from Cassandra, nothing saved) and, after
that, sent through the same stream: each of them meets the same saved profiles in both,
so risk, decision, fired rules and model outputs must agree.
"""

from __future__ import annotations

import shutil
import zlib

import numpy as np
import pytest

from tests.integration.streams import stream_options, stream_topics
from tests.integration.test_backtest_parity import _champion
from txmon.infra.settings import PROJECT_ROOT
from txmon.ingestion.events import to_json
from txmon.ingestion.producer import TransactionProducer
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.spark_jobs.transactions_stream import start_all

HISTORY = 2_500
LATER = 1_500


def _run_stream(spark, services, opts) -> None:
    for q in start_all(spark, services, opts):
        q.awaitTermination(timeout=900)
        assert q.exception() is None, q.exception()


def _distinct_parties(events) -> list:
    """Events none of whose payer or payee appears in another chosen one."""
    seen: set = set()
    chosen = []
    for e in events:
        keys = {("payer", e.payer.account_number), ("payee", e.payee.account_number or e.payee.vpa)}
        if keys & seen:
            continue
        seen |= keys
        chosen.append(e)
    return chosen


def _send(services, topic: str, events) -> None:
    producer = TransactionProducer(services, topic=topic)
    for e in events:
        producer.send_event(e)
    summary = producer.close()
    assert summary.failed == 0, summary.line()


@pytest.fixture(scope="module")
def both(services, spark, cassandra_session, tmp_path_factory):
    from tests.integration.test_api import api_client

    tmp = tmp_path_factory.mktemp("api_parity")
    names = stream_topics(services, f"apiparity_{zlib.crc32(str(tmp).encode()):x}")
    rules = tmp / "rules.yaml"
    shutil.copy(PROJECT_ROOT / "config" / "rules.yaml", rules)
    _, version = _champion(tmp / "models")
    cassandra_session.execute("TRUNCATE feature_profiles")  # profiles of these accounts from earlier runs
    cassandra_session.execute("TRUNCATE payee_fraud_labels")
    # A seed of its own: the stream treats a txn_id landed before (same seed) as a duplicate.
    sim = simulator_for(
        SimulateOptions(
            seed=20261207,
            count=HISTORY + LATER,
            rate=None,
            fraud_rate=0.08,
            n_customers=600,
            live=False,
            progress=False,
        )
    )
    events = [item.event for item in sim.generate(HISTORY + LATER)]
    history, later = events[:HISTORY], _distinct_parties(events[HISTORY:])
    opts = stream_options(
        services,
        names,
        tmp,
        available_now=True,
        rules_path=str(rules),
    )
    _send(services, names["tx"], history)
    _run_stream(spark, services, opts)

    with api_client(
        services, tmp, rules_path=rules, registry_root=tmp / "models", topics=names, scopes=["score", "read"]
    ) as (client, key):
        api = {}
        for e in later:
            answer = client.post("/v1/score", content=to_json(e), headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200, answer.text
            api[e.txn_id] = answer.json()

    _send(services, names["tx"], later)
    _run_stream(spark, services, opts)
    stmt = cassandra_session.prepare(
        "SELECT txn_id, risk_score, decision, rule_score, rules_fired, fraud_probability, anomaly_score, "
        "model_version, rules_version, reasons FROM scored_transactions WHERE txn_id IN ?"
    )
    ids = [e.txn_id for e in later]
    stream = {}
    for i in range(0, len(ids), 100):
        stream.update({r.txn_id: r for r in cassandra_session.execute(stmt, (ids[i : i + 100],))})
    return {"api": api, "stream": stream, "version": version, "ids": ids}


def test_the_api_scores_every_later_event_and_the_stream_too(both):
    assert len(both["ids"]) > 100
    assert set(both["stream"]) == set(both["api"]) == set(both["ids"])
    assert all(v["model_version"] == both["version"] for v in both["api"].values())


def test_risk_decision_rules_and_model_outputs_equal_the_streams(both):
    api, stream = both["api"], both["stream"]
    ids = both["ids"]
    np.testing.assert_allclose(
        [api[i]["fraud_probability"] for i in ids], [stream[i].fraud_probability for i in ids], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        [api[i]["anomaly_score"] for i in ids], [stream[i].anomaly_score for i in ids], rtol=0, atol=1e-12
    )
    assert [api[i]["rule_score"] for i in ids] == [stream[i].rule_score for i in ids]
    assert [api[i]["rules_fired"] for i in ids] == [list(stream[i].rules_fired or []) for i in ids]
    assert [api[i]["risk_score"] for i in ids] == [stream[i].risk_score for i in ids]
    assert [api[i]["decision"] for i in ids] == [stream[i].decision for i in ids]
    assert [api[i]["rules_version"] for i in ids] == [stream[i].rules_version for i in ids]
    # Not a vacuous match: the later events have history, fire rules and some are flagged.
    assert sum(1 for i in ids if api[i]["features"]["payer_history_count"] > 0) > len(ids) // 2
    assert sum(1 for i in ids if api[i]["rules_fired"]) >= 3
    assert sum(1 for i in ids if api[i]["decision"] != "APPROVE") >= 3


def test_reasons_equal_the_streams(both):
    import json

    api, stream = both["api"], both["stream"]
    flagged = [i for i in both["ids"] if api[i]["decision"] != "APPROVE" or api[i]["rules_fired"]]
    assert flagged
    for i in flagged:
        assert api[i]["reasons"] == json.loads(stream[i].reasons), i
