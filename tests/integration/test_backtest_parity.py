"""`txmon backtest` scores a transaction exactly as the stream does.

The same simulated events go once through the real stream (Kafka -> Spark -> Cassandra,
the champion scored in the JVM) and once through backtest's scoring
(spark_jobs/backtest.score_window: the same features, the same rules through apply_rules,
models/scoring.score_frame); every risk score, decision and fired rule must agree.
"""

from __future__ import annotations

import shutil
import zlib

import numpy as np
import pandas as pd
import pytest

from tests.integration.streams import stream_options, stream_topics
from txmon.infra.settings import PROJECT_ROOT
from txmon.ingestion.producer import TransactionProducer
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.models.rules import load_rules
from txmon.spark_jobs.transactions_stream import start_all

RULES = PROJECT_ROOT / "config" / "rules.yaml"
EVENTS = 4_000


def _champion(registry_root):
    """A model from backtest's own fit on separate simulated history, promoted."""
    from txmon.models.dataset import features_in_chunks
    from txmon.models.features import FEATURES
    from txmon.models.metadata import ModelMetadata, SplitCounts, TimeWindow, library_versions
    from txmon.models.registry import Registry
    from txmon.models.training import TrainingConfig, fit
    from txmon.spark_jobs import backtest as bt

    history = features_in_chunks(bt.simulated(30_000, seed=4243).transactions, 10_000)
    fitted = fit(history, TrainingConfig(seed=1, max_iter=80, iforest_estimators=40, seed_spread=False))
    # The stream and backtest must both follow the bundle's choice to leave the Isolation
    # Forest out of the risk score (keeping it is how every older bundle scores).
    fitted.bundle.anomaly_in_risk = False
    window = TimeWindow(
        start=history["event_time"].min().to_pydatetime(), end=history["event_time"].max().to_pydatetime()
    )
    meta = ModelMetadata(
        features=FEATURES,
        train_window=window,
        holdout_window=window,
        rows=SplitCounts(train=len(history), holdout=0),
        frauds=SplitCounts(train=int(history["is_fraud"].sum()), holdout=0),
        metrics={},
        calibration=fitted.calibration,
        libraries=library_versions(),
        data_source="parity",
        seed=1,
        params=fitted.info,
    )
    registry = Registry(registry_root)
    version = registry.register(fitted.bundle, meta)
    registry.promote(version)
    return fitted.bundle, version


@pytest.fixture(scope="module")
def both(services, spark, cassandra_session, tmp_path_factory):
    from txmon.models.dataset import features_in_chunks
    from txmon.spark_jobs import backtest as bt

    tmp = tmp_path_factory.mktemp("parity")
    names = stream_topics(services, f"parity_{zlib.crc32(str(tmp).encode()):x}")
    rules = tmp / "rules.yaml"
    shutil.copy(RULES, rules)
    bundle, version = _champion(tmp / "models")
    cassandra_session.execute("TRUNCATE feature_profiles")  # profiles of these accounts from earlier runs
    cassandra_session.execute("TRUNCATE payee_fraud_labels")
    # A seed no other stream test of the session uses: the simulator's txn_ids follow from
    # the seed, and the stream rightly treats a txn_id it has landed before as a duplicate.
    sim = simulator_for(
        SimulateOptions(
            seed=20261206, count=EVENTS, rate=None, fraud_rate=0.08, n_customers=800, live=False, progress=False
        )
    )
    items = list(sim.generate(EVENTS))
    producer = TransactionProducer(services, topic=names["tx"])
    for item in items:
        producer.send_event(item.event)
    producer.close()
    opts = stream_options(
        services,
        names,
        tmp,
        available_now=True,
        rules_path=str(rules),
    )
    for q in start_all(spark, services, opts):
        q.awaitTermination(timeout=900)
        assert q.exception() is None, q.exception()
    ids = [i.event.txn_id for i in items]
    stmt = cassandra_session.prepare(
        "SELECT txn_id, risk_score, decision, rule_score, rules_fired, fraud_probability, anomaly_score, "
        "model_version FROM scored_transactions WHERE txn_id IN ?"
    )
    rows = []
    for i in range(0, len(ids), 100):
        rows += [r._asdict() for r in cassandra_session.execute(stmt, (ids[i : i + 100],))]
    stream = pd.DataFrame(rows).set_index("txn_id").sort_index()

    # The stream was sent no labels, so none is known to it: backtest's labels arrive after the end.
    events = [i.event for i in items]
    never = events[-1].event_time + pd.Timedelta(days=3650)
    source = bt._event_frame(
        events,
        list(range(1, len(events) + 1)),
        [(i.label.is_fraud, i.label.scenario) for i in items],
        [never] * len(events),
    )
    featured = features_in_chunks(source, 1_500)
    backtest = bt.score_window(featured, bundle, load_rules(rules), spark).set_index("txn_id").sort_index()
    return {"stream": stream, "backtest": backtest, "version": version}


def test_every_event_is_scored_by_both(both):
    assert len(both["stream"]) == len(both["backtest"]) == EVENTS
    assert (both["stream"]["model_version"] == both["version"]).all()


def test_risk_decision_and_rules_equal_the_streams(both):
    stream, backtest = both["stream"], both["backtest"]
    np.testing.assert_allclose(backtest["fraud_probability"], stream["fraud_probability"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(backtest["anomaly"], stream["anomaly_score"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(backtest["rule_score"].to_numpy(), stream["rule_score"].to_numpy(dtype=float))
    fired = stream["rules_fired"].map(lambda f: ";".join(f or []))
    assert (backtest["rules_fired"] == fired).all()
    assert (backtest["risk_score"] == stream["risk_score"]).all()
    assert (backtest["decision"] == stream["decision"]).all()
    # Not a vacuous match: rules fire and some transactions are flagged.
    assert (fired != "").sum() > 20 and (stream["decision"] != "APPROVE").sum() > 20
