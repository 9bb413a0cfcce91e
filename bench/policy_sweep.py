"""Risk-policy sweep: legitimate alert rate and fraud recall for several policies.

Scores N simulated events offline with the champion model and the rules in
config/rules.yaml (Spark evaluates the rule conditions, as in the stream), then combines
them under each policy. Needs a champion (`txmon train`).

    .venv/bin/python bench/policy_sweep.py [--events 60000] [--seed 7]
"""

from __future__ import annotations

import argparse

import pandas as pd

from txmon.infra.settings import load_settings
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.models.config import models_dir
from txmon.models.features import FEATURES, MemoryProfileStore, add_features, transactions_frame
from txmon.models.registry import Registry
from txmon.models.risk import RiskPolicy, decisions, risk_scores
from txmon.models.rules import load_rules
from txmon.spark_jobs.rules import apply_rules
from txmon.spark_jobs.session import build_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    sim = simulator_for(
        SimulateOptions(
            seed=args.seed,
            count=args.events,
            rate=1000,
            fraud_rate=0.01,
            n_customers=10_000,
            progress=False,
            live=False,
        )
    )
    items = list(sim.generate(args.events))
    frame = transactions_frame([i.event for i in items])
    frame["scenario"] = [i.label.scenario or "legit" for i in items]
    feats = add_features(frame, MemoryProfileStore())
    registry = Registry(models_dir())
    bundle = registry.load()
    prob, anomaly = bundle.score(feats[list(FEATURES)])
    spark = build_session(load_settings(), "policy-sweep")
    sdf = spark.createDataFrame(feats.assign(event_time=feats.event_time.dt.tz_localize(None)))
    rules = load_rules()
    ruled = apply_rules(sdf, rules).select("txn_id", "rule_score").toPandas()
    feats = feats.merge(ruled, on="txn_id")
    legit = (feats["scenario"] == "legit").to_numpy()
    print(f"model {registry.champion()}, rules {rules.label}, {args.events:,} events, {int((~legit).sum())} fraud")
    print(f"{'review_at':>9} {'block_at':>8} {'model_w':>7} {'anomaly_w':>9} {'legit alerts':>12} {'recall':>7}")
    for review_at, anomaly_w in [(50, 0.3), (50, 0.1), (60, 0.3), (60, 0.1), (50, 0.0)]:
        policy = RiskPolicy(
            model_weight=rules.policy.model_weight,
            anomaly_weight=anomaly_w,
            review_at=review_at,
            block_at=max(rules.policy.block_at, review_at),
        )
        flagged = decisions(risk_scores(feats["rule_score"], prob, anomaly, policy), policy) != "APPROVE"
        print(
            f"{review_at:>9} {policy.block_at:>8} {policy.model_weight:>7} {anomaly_w:>9} "
            f"{flagged[legit].mean():>12.2%} {flagged[~legit].mean():>7.1%}"
        )
    recall = pd.Series(flagged[~legit]).groupby(feats["scenario"][~legit].to_numpy()).mean()
    print("recall by scenario at the last policy:", recall.round(2).to_dict())


if __name__ == "__main__":
    main()
