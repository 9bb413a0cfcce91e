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
    return {"stream": stream, "backtest": backtest, "version": version, "featured": featured, "rules": rules}


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


def test_the_pandas_rules_pass_equals_the_streams(both):
    """Training's rules (models.rule_engine, no Spark) fire as the stream's did on the
    same events: the same rule score and fired rules, row by row."""
    from txmon.models.rule_engine import compile_rules
    from txmon.spark_jobs.rules import RULE_COLUMNS

    featured, stream = both["featured"], both["stream"]
    score, fired = compile_rules(load_rules(both["rules"]), RULE_COLUMNS).hits(featured)
    ours = pd.DataFrame(
        {"rule_score": score, "rules_fired": [";".join(f) for f in fired]}, index=featured["txn_id"]
    ).sort_index()
    assert list(ours.index) == list(stream.index)
    np.testing.assert_array_equal(ours["rule_score"].to_numpy(), stream["rule_score"].to_numpy(dtype=float))
    assert (ours["rules_fired"] == stream["rules_fired"].map(lambda f: ";".join(f or []))).all()
    assert (ours["rules_fired"] != "").sum() > 20


EDGE_RULES = """
version: 3
rules:
  - {id: NOT_ABOVE, description: negation meets NULL, condition: NOT (payer_count_5m > 2), score: 7, severity: LOW}
  - {id: NO_MCC, description: is null, condition: mcc IS NULL AND amount_paise >= 3, score: 11, severity: LOW}
  - id: IN_LIST
    description: in with a NULL item
    condition: txn_type NOT IN ('P2M', NULL) OR channel IN ('CARD_POS')
    score: 13
    severity: LOW
  - id: ARITH
    description: arithmetic, between, functions
    condition: >-
      coalesce(amount_to_mean, 0) * 2 + payer_count_1h % 3 BETWEEN 1.5 AND 9
      AND greatest(payer_count_5m, payee_payers_1h) <> least(payer_count_5m, payee_payers_1h)
      AND lower(coalesce(channel, 'x')) <> 'neft'
    score: 17
    severity: LOW
  - id: CARDS
    description: channels restriction
    condition: abs(amount_zscore) >= 0.5 OR payer_history_count IS NULL
    channels: [CARD_POS, CARD_ECOM]
    score: 90
    severity: HIGH
  - {id: NEVER_SEEN, description: a column training frames lack, condition: currency = 'INR', score: 5, severity: LOW}
"""


def test_the_pandas_rules_pass_equals_spark_on_missing_values_and_every_operator(spark, tmp_path):
    """Missing values (NaN, None) are NULL to both, a column the frame lacks is NULL to
    both, and the cap, the file order of fired rules and every operator kind agree."""
    from txmon.models.features import FEATURES, INTEGER_FEATURES
    from txmon.models.rule_engine import compile_rules
    from txmon.models.rules import parse_rules
    from txmon.models.testing import planted_frame
    from txmon.spark_jobs import backtest as bt
    from txmon.spark_jobs.rules import RULE_COLUMNS

    rng = np.random.default_rng(5)
    frame = planted_frame(n=3000, seed=5)
    frame["event_time"] = frame["event_time"].dt.floor("us")  # the stream's timestamps are microseconds
    n = len(frame)
    frame["channel"] = rng.choice(np.array(["UPI", "CARD_POS", "CARD_ECOM", "NEFT", None], dtype=object), n)
    frame["txn_type"] = rng.choice(np.array(["P2P", "P2M", "COLLECT", None], dtype=object), n)
    frame["mcc"] = rng.choice(np.array(["5411", None], dtype=object), n)
    frame["status"] = "SUCCESS"
    for name in FEATURES:  # a tenth of every feature missing: NaN in pandas, null in Spark
        values = frame[name].astype(float).where(rng.random(n) >= 0.1)
        frame[name] = values.astype("Int64") if name in INTEGER_FEATURES else values
    ruleset = parse_rules(EDGE_RULES, "edge")
    score, fired = compile_rules(ruleset, RULE_COLUMNS).hits(frame)
    spark_score, spark_fired = bt.rule_hits(frame, ruleset, spark)
    np.testing.assert_array_equal(score, spark_score)
    assert fired == spark_fired
    assert score.max() == 100.0 and len({tuple(f) for f in fired}) > 10  # capped, and many combinations
    assert not any("NEVER_SEEN" in f for f in fired)
