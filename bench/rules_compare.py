"""Two rule files scored on the same simulated traffic: legitimate alert rate, fraud recall
by scenario, and how often each rule that differs fired on legitimate and fraud rows.

Features come from :func:`models.dataset.labelled_features`, which counts each fraud's
label once its label time has passed (so ``payee_fraud_reports`` is what the stream sees
when labels arrive ``--label-delay`` seconds after the fraud); the champion model scores
them; Spark evaluates each file's conditions (:func:`spark_jobs.rules.apply_rules`); the
decision is each file's own policy (:mod:`models.risk`). Needs a champion (`txmon train`).

    git show 26a67bc:config/rules.yaml > /tmp/rules-before.yaml
    .venv/bin/python -m txmon.bench.rules_compare /tmp/rules-before.yaml config/rules.yaml [--events 150000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from txmon.infra.settings import load_settings
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.models.config import models_dir
from txmon.models.dataset import labelled_features
from txmon.models.features import FEATURES
from txmon.models.registry import Registry
from txmon.models.risk import RiskPolicy, decisions, risk_scores
from txmon.models.rules import load_rules
from txmon.spark_jobs.rules import apply_rules
from txmon.spark_jobs.session import build_session


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rules", nargs=2, type=Path, help="two rules files (YAML), e.g. before and after a change")
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--label-delay", type=float, default=300.0, help="seconds from a fraud to its label")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    for path in args.rules:
        if not path.is_file():
            parser.error(f"rules file {path} not found: pass two existing YAML files (see config/rules.yaml)")

    sim = simulator_for(
        SimulateOptions(
            seed=args.seed,
            count=args.events,
            rate=1000,
            fraud_rate=0.01,
            n_customers=args.customers,
            label_delay_seconds=args.label_delay,
            progress=False,
            live=False,
        )
    )
    items = list(sim.generate(args.events))
    feats = labelled_features([i.event for i in items], [i.label for i in items])
    scenario = feats["scenario"].fillna("legit")
    legit = (scenario == "legit").to_numpy()
    registry = Registry(models_dir())
    prob, anomaly = registry.load().score(feats[list(FEATURES)])
    spark = build_session(load_settings(), "rules-compare")
    naive = {c: feats[c].dt.tz_localize(None) for c in ("event_time", "label_time")}
    sdf = spark.createDataFrame(feats.assign(**naive))
    print(
        f"model {registry.champion()}, {args.events:,} events, {int((~legit).sum()):,} fraud, "
        f"labels after {args.label_delay:g} s"
    )
    fired_by_file = []
    for path in args.rules:
        rules = load_rules(path)
        ruled = feats[["txn_id"]].merge(
            apply_rules(sdf, rules).select("txn_id", "rule_score", "rules_fired").toPandas(), on="txn_id"
        )
        policy = RiskPolicy(
            model_weight=rules.policy.model_weight,
            anomaly_weight=rules.policy.anomaly_weight,
            review_at=rules.policy.review_at,
            block_at=rules.policy.block_at,
        )
        flagged = decisions(risk_scores(ruled["rule_score"], prob, anomaly, policy), policy) != "APPROVE"
        recall = pd.Series(flagged[~legit]).groupby(scenario[~legit].to_numpy()).mean().round(3).to_dict()
        print(
            f"{path} ({rules.label}): legit alerts {flagged[legit].mean():.2%}, "
            f"fraud recall {flagged[~legit].mean():.1%}; by scenario {recall}"
        )
        fired_by_file.append(
            {
                r.id: ruled["rules_fired"].map(lambda f, i=r.id: f is not None and i in list(f)).to_numpy()
                for r in rules.rules
            }
        )
    for rule_id in sorted(set(fired_by_file[0]) | set(fired_by_file[1])):
        counts = [
            (int(f[rule_id][legit].sum()), int(f[rule_id][~legit].sum())) if rule_id in f else None
            for f in fired_by_file
        ]
        if counts[0] != counts[1]:
            print(
                f"  {rule_id}: fired on legit / fraud rows "
                + " -> ".join("absent" if c is None else f"{c[0]:,} / {c[1]:,}" for c in counts)
            )


if __name__ == "__main__":
    main()
