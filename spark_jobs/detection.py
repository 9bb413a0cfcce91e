"""Scoring a micro-batch: features -> rules -> models -> risk, decision, reasons -> outputs.

Runs inside the transactions stream's foreachBatch on the batch's valid transactions:

1. payee features, then payer features, folded per key from Cassandra profiles that
   are versioned by micro-batch (spark_jobs/profile_store.py): exactly-once features;
   the payer fold also writes each payer's windows to ``account_aggregates``
   (models/features.payer_windows);
2. rules from config/rules.yaml as Spark SQL expressions (hot-reloaded between batches);
3. the champion model bundle (registry checked between batches, broadcast once per
   version) scored in the JVM (spark_jobs/jvm_scoring.py): fraud probability and
   anomaly score, with no Python round trip;
4. risk 0-100 and decision as Spark SQL columns (models/risk.py);
5. in the write step (Python, for the rows that need them): reasons, i.e. the rules that
   fired with their values and the features that pushed the model most, and alerts;
   every scored transaction to ``scored_transactions``; every REVIEW/BLOCK as an alert
   (alerting/contract.py) to Cassandra ``alerts``/``alerts_by_day`` and Kafka ``alerts``,
   its account numbers and VPAs masked and the payer pseudonymised (docs/security-pii.md).
   All keyed by txn id / alert id: a replayed batch creates no duplicate.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from txmon.alerting.contract import (
    ALERT_BY_DAY_COLUMNS,
    ALERT_BY_PARTY_COLUMNS,
    ALERT_BY_RANK_COLUMNS,
    ALERT_COLUMNS,
    alert_party_rows,
    alert_rank_row,
    alert_row,
    build_alert,
    from_json,
    kafka_key,
    to_json,
)
from txmon.infra import hourly_counts
from txmon.infra.cassandra_schema import table_columns
from txmon.infra.masking import pii_token_key
from txmon.infra.readback import txn_month
from txmon.infra.settings import DEFAULT_RULES, Settings
from txmon.infra.statements import ACCOUNT_TXN_COLUMNS
from txmon.models.features import (
    FEATURES,
    INTEGER_FEATURES,
    LABEL_FEATURES,
    MODEL_SCORE_REASON,
    PAYEE_FEATURES,
    PAYER_FEATURES,
    add_payee_features,
    add_payer_features,
    feature_words,
    model_reason_code,
)
from txmon.models.registry import Registry
from txmon.models.risk import SEVERITIES, Severity, decision_column, risk_column
from txmon.spark_jobs.cassandra_sink import CassandraTarget, arrow_rows, prepared, retried, session_for, write_rows
from txmon.spark_jobs.jvm_scoring import broadcast_trees, with_model_scores
from txmon.spark_jobs.kafka_sink import publish
from txmon.spark_jobs.profile_store import CassandraProfileStore
from txmon.spark_jobs.rules import RulesWatcher, apply_rules

log = logging.getLogger(__name__)

NO_MODEL = "none"
SCORED_COLUMNS = table_columns("scored_transactions")
OUTCOME_COLUMNS = (
    "txn_id",
    "event_time",
    "hour_ist",
    "fraud_probability",
    "anomaly_score",
    "amount_paise",
    "payer_count_1h",
    "days_since_first_seen",
    "model_version",
)
"""What a micro-batch returns to the driver per transaction: exactly the drift monitor's
inputs (spark_jobs/drift_stream.py reads this list; detection must not import it, as
the workers import this module)."""


def _arrow_schema(spark_schema):
    # lazy: pyspark (1.4 s to import); the scoring API imports this module without it
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(spark_schema, timezone="UTC")


def with_feature_fields(schema, names, integer=INTEGER_FEATURES):
    """``schema`` with the feature columns ``names`` (re)added in their stream types."""
    # lazy: pyspark (747 ms to import); the scoring API imports this module without it
    from pyspark.sql import types as T

    fields = [f for f in schema.fields if f.name not in names]
    for name in names:
        fields.append(T.StructField(name, T.LongType() if name in integer else T.DoubleType()))
    return T.StructType(fields)


BATCH_ID_PROPERTY = "streaming.sql.batchId"
"""The local property Spark's micro-batch execution sets to the running micro-batch's id on
the thread that runs it; the jobs that thread starts pass it to their tasks."""


def cassandra_profiles(target: CassandraTarget, query_key: str):
    """Store factory for the stream: profiles in Cassandra, versioned by micro-batch.

    Each task's store carries the token ``<query_key>#<micro-batch id>``: profile updates are
    tied to this micro-batch of this query, so a replay of the batch starts from the same
    profiles (spark_jobs/profile_store.py). The task reads the id from
    :data:`BATCH_ID_PROPERTY`, so one factory, and the plan that holds it, serve every
    micro-batch (spark_jobs/prepared_plan.py)."""

    def make():
        # lazy: pyspark (747 ms to import); the scoring API imports this module without it
        from pyspark import TaskContext

        context = TaskContext.get()
        batch_id = context and context.getLocalProperty(BATCH_ID_PROPERTY)
        if batch_id is None:
            raise RuntimeError(
                "cassandra_profiles serves a streaming query's micro-batches only: this task "
                f"has no {BATCH_ID_PROPERTY}; use MemoryProfileStore outside a stream"
            )
        return CassandraProfileStore(target, f"{query_key}#{batch_id}")

    return make


def _partition_fold(fold, make_store, out_schema):
    """mapInArrow function: fold a whole partition (all rows of its keys) with profiles."""
    arrow_schema = _arrow_schema(out_schema)

    def run(batches: Iterator) -> Iterator:
        nonempty = [b for b in batches if b.num_rows]
        if not nonempty:  # empty partitions are normal (few keys, many partitions)
            return
        out = fold(pa.Table.from_batches(nonempty).to_pandas(), make_store())
        yield from pa.Table.from_pandas(out[arrow_schema.names], schema=arrow_schema, preserve_index=False).to_batches()

    return run


def add_features_to_batch(df, make_store, partitions: int):
    """Payee phase (partitioned by payee) then payer phase (partitioned by payer).

    ``df``: a DataFrame or a PreparedPlan (the stream's, spark_jobs/prepared_plan.py).
    ``make_store`` builds each task's ProfileStore: :func:`cassandra_profiles` in the
    stream; ``MemoryProfileStore`` (fresh, empty) for batch runs over history, where
    every key's whole history is in one partition.
    """
    # lazy: pyspark (747 ms to import); the scoring API imports this module without it
    from pyspark.sql import functions as F

    df = df.withColumn("payee_key", F.coalesce("payee_account", "payee_vpa"))
    payee_schema = with_feature_fields(df.schema, (*PAYEE_FEATURES, *LABEL_FEATURES))
    with_payee = df.repartition(partitions, "payee_key").mapInArrow(
        _partition_fold(add_payee_features, make_store, payee_schema), payee_schema
    )
    payer_schema = with_feature_fields(with_payee.schema, PAYER_FEATURES)
    return with_payee.repartition(partitions, "payer_account").mapInArrow(
        _partition_fold(add_payer_features, make_store, payer_schema), payer_schema
    )


@dataclass
class ModelHolder:
    """The champion bundle, re-checked between micro-batches (hot swap)."""

    registry_root: Path | None
    version: str = NO_MODEL
    broadcast: Any = None  # a pyspark Broadcast (pyspark is untyped here)
    """The bundle for Python workers (explanations of flagged rows)."""
    broadcast_key: str | None = None
    """Names ``broadcast`` for good, unlike the version (two registries can both have a
    v0001): what workers keep their unpickled copy under (:func:`_worker_bundle`)."""
    trees: Any = None
    """The same models for the JVM scorer (spark_jobs/jvm_scoring.py)."""
    _checked: str | None = field(default=None, repr=False)

    def refresh(self, spark) -> bool:
        if self.registry_root is None:
            return False
        try:
            registry = Registry(self.registry_root)
            champion = registry.champion()
        except Exception as exc:  # noqa: BLE001 - registry unreadable: keep scoring with what we have
            log.error("model registry unreadable (%s); keeping model %s", exc, self.version)
            return False
        if champion is None or champion == self.version:
            return False

        try:
            bundle = registry.load(champion)
            trees = broadcast_trees(spark, bundle, champion)
        except Exception as exc:  # noqa: BLE001 - e.g. models.tree_export.UnsupportedModelError: say why, keep the old model
            log.error("model %s cannot be scored in the stream (%s); keeping model %s", champion, exc, self.version)
            return False
        if self.broadcast is not None:
            self.broadcast.unpersist()
            self.trees.unpersist()
        self.broadcast = spark.sparkContext.broadcast(bundle)
        self.broadcast_key = f"{champion}-{uuid.uuid4().hex}"
        self.trees = trees
        log.warning("model %s now scoring (was %s)", champion, self.version)
        self.version = champion
        return True

    def risk_policy(self, policy):
        """``policy`` as the live bundle combines its scores under it (ModelBundle.risk_policy)."""
        return policy if self.broadcast is None else self.broadcast.value.risk_policy(policy)

    def drift_reference(self):
        """The live bundle's per-hour score reference (models.drift), from the driver's copy
        of the broadcast; None without a model or for bundles trained before it existed."""
        return None if self.broadcast is None else getattr(self.broadcast.value, "drift_reference", None)


def score_ruled(ruled, trees, model_version: str, ruleset, spark, policy):
    """A ruled batch plus ``fraud_probability``, ``anomaly_score`` (both models in the JVM,
    spark_jobs/jvm_scoring.py), ``risk_score``, ``decision`` (models/risk.py's columns),
    ``model_version`` and ``rules_version``: no Python step. ``ruled``: a DataFrame or a
    PreparedPlan. ``policy``: the rules file's policy as the model's bundle applies it
    (ModelBundle.risk_policy), required: the rules file's own would keep an anomaly weight
    the bundle may leave out."""
    # lazy: pyspark (747 ms to import); the scoring API imports this module without it
    from pyspark.sql import functions as F

    scored = with_model_scores(ruled, trees, spark or ruled.sparkSession)
    risk = risk_column("rule_score", "fraud_probability", "anomaly_score", policy)
    # One withColumns: the driver analyses the whole plan again for every DataFrame step
    # (the optimizer collapses the projections either way).
    return scored.withColumns(
        {
            "risk_score": risk,
            "decision": decision_column(risk, policy),
            "model_version": F.lit(model_version),
            "rules_version": F.lit(ruleset.label),
        }
    )


def with_explanations(batch, bundle, rules: dict, model_version: str, rules_label: str, now, pii_key: bytes):
    """The scored Arrow batch plus ``reasons`` and ``alert_json`` columns (:func:`_explain_batch`)."""

    reasons, alert_json = _explain_batch(batch, bundle, rules, model_version, rules_label, now, pii_key)
    return pa.RecordBatch.from_arrays(
        [*batch.columns, pa.array(reasons, pa.string()), pa.array(alert_json, pa.string())],
        names=[*batch.schema.names, "reasons", "alert_json"],
    )


def _explain_batch(batch, bundle, rules: dict, model_version: str, rules_label: str, now, pii_key: bytes):
    """(reasons JSON per row, alert JSON or None per row) of one scored Arrow batch.

    Built row by row only for rows that need them (a rule fired or the decision is not
    APPROVE; ~4 % of the bench's traffic); every other row's reasons are ``[]``. The
    model explanation (:meth:`ModelBundle.explain`) runs on the flagged rows only.
    """

    n = batch.num_rows
    decision = np.asarray(batch.column("decision").to_pylist(), dtype=object)
    flagged = decision != "APPROVE"
    fired_any = pc.fill_null(pc.list_value_length(batch.column("rules_fired")), 0).to_numpy(zero_copy_only=False) > 0
    need = np.flatnonzero(flagged | fired_any)
    reasons_col = np.full(n, "[]", dtype=object)
    alerts_col = np.full(n, None, dtype=object)
    if not len(need):
        return reasons_col, alerts_col

    flagged_idx = np.flatnonzero(flagged)
    explanations = {}
    if bundle is not None and len(flagged_idx):
        x = bundle.matrix(batch.take(pa.array(flagged_idx)))
        explanations = dict(zip(flagged_idx, bundle.explain(pd.DataFrame(x, columns=list(FEATURES)), top_k=3)))
    records = batch.take(pa.array(need)).to_pandas().to_dict("records")
    for i, row in zip(need, records):
        fired = list(row["rules_fired"]) if row["rules_fired"] is not None else []
        reasons = alert_reasons(row, fired, rules, explanations.get(i, []), decision[i], row["fraud_probability"])
        reasons_col[i] = json.dumps(reasons, separators=(",", ":"))
        if flagged[i]:
            alerts_col[i] = _alert_json(
                row,
                int(row["risk_score"]),
                str(decision[i]),
                reasons,
                fired,
                rules,
                model_version,
                rules_label,
                now,
                pii_key,
            )
    return reasons_col, alerts_col


def alert_reasons(row: dict, fired: list[str], rules: dict, explanation, decision: str, prob: float) -> list[dict]:
    """The rules that fired with their values, then the model's strongest features."""
    reasons = [
        {
            "code": rid,
            "description": rules[rid].reason_text(row),
            "value": _value_text(row, rules[rid]),
            "contribution": rules[rid].score / 100.0,
        }
        for rid in fired
        if rid in rules
    ]
    for name, contribution in explanation:
        if contribution > 0:
            reasons.append(
                {
                    "code": model_reason_code(name),
                    "description": f"model: {feature_words(name)}",
                    "value": _fmt(row.get(name)),
                    "contribution": round(float(contribution), 4),
                }
            )
    if decision != "APPROVE" and not reasons:
        reasons.append(
            {
                "code": MODEL_SCORE_REASON,
                "description": "model risk score",
                "value": f"{prob:.3f}",
                "contribution": float(prob),
            }
        )
    return reasons


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _value_text(row: dict, rule) -> str:
    return ", ".join(f"{n}={_fmt(row.get(n))}" for n in rule.placeholders())[:200]


def _alert_json(row, risk, decision, reasons, fired, rules, model_version, rules_label, now, pii_key) -> str:
    """The alert of one flagged row, masked and pseudonymised here, once per alert: the
    clear identifiers stay in the transactions table (docs/security-pii.md)."""
    severities = [rules[r].severity for r in fired if r in rules]
    severity = max(severities, key=SEVERITIES.index) if severities else ("HIGH" if decision == "BLOCK" else "MEDIUM")
    if decision == "BLOCK" and SEVERITIES.index(severity) < SEVERITIES.index(Severity.HIGH):
        severity = "HIGH"
    event_time = row["event_time"]
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=UTC)

    def text(name):  # missing values arrive as None or NaN depending on the column's path
        value = row.get(name)
        return value if isinstance(value, str) and value else None

    alert = build_alert(
        key=pii_key,
        txn_id=row["txn_id"],
        created_at=now,
        event_time=event_time,
        payer_account=row["payer_account"],
        payer_vpa=text("payer_vpa"),
        payee_account=text("payee_account"),
        payee_vpa=text("payee_vpa"),
        amount_paise=int(row["amount_paise"]),
        channel=row["channel"],
        txn_type=row["txn_type"],
        risk_score=risk,
        decision=decision,
        severity=severity,
        reasons=reasons,
        model_version=model_version,
        rules_version=rules_label,
    )
    return to_json(alert).decode()


class Detector:
    """Per-stream scoring state: rules watcher, model holder, output targets, and the plan
    from a micro-batch's records to its outcome, rebuilt when the rules or model change."""

    def __init__(
        self,
        settings: Settings,
        target: CassandraTarget,
        landed,
        query_key: str,
        rules_path: Path | None = None,
        registry_root: Path | None = None,
        alerts_topic: str | None = None,
    ) -> None:
        """``landed``: the stream's PreparedPlan to its landed valid transactions
        (transactions_stream.landing_plan); ``query_key``: names the query in profile
        tokens (:func:`cassandra_profiles`)."""
        self.settings = settings
        self.target = target
        self.rules = RulesWatcher(Path(rules_path or DEFAULT_RULES))
        self.models = ModelHolder(registry_root)
        self.alerts_topic = alerts_topic or settings.kafka.topics.alerts
        self.query_key = query_key

        # Read on the driver and shipped in the outputs closure, so executors need neither
        # the variable nor the state directory (docs/security-pii.md).
        self.pii_key = pii_token_key(settings.state_path)
        self._featured = add_features_to_batch(
            landed, cassandra_profiles(target, query_key), settings.spark.shuffle_partitions
        )
        # The plan for the current model and rules, and the (model version, rules label) it
        # was built for: a new model comes with a new version, new rules with a new label.
        self._plan = None
        self._plan_for: tuple | None = None

    def plan(self, spark):
        """Check the rules file and the model registry, then give the plan for this
        micro-batch: features, rules, both models, risk and decision (everything after the
        feature folds in the JVM: rules as Spark SQL, the models through
        spark_jobs/jvm_scoring.py, risk and decision as models/risk.py's columns), then the
        outputs step. Written from the tasks; the plan's frame is, per transaction, the
        OUTCOME_COLUMNS the driver collects for the drift monitor."""
        self.rules.refresh(spark, self._featured.schema)
        self.models.refresh(spark)
        rules = self.rules.current
        assert rules is not None  # refresh() loads a rule set or raises
        built_for = (self.models.version, rules.label)
        if self._plan_for != built_for:
            # lazy: pyspark (747 ms to import); the scoring API imports this module without it
            from pyspark.sql import functions as F
            from pyspark.sql import types as T

            ruled = apply_rules(self._featured, rules)
            scored = score_ruled(
                ruled, self.models.trees, self.models.version, rules, spark, self.models.risk_policy(rules.policy)
            )
            # What scored_transactions keeps of the features: one JSON object built in the JVM.
            # As a CQL map, building each row's dict and binding its 26 entries was half the
            # cost of binding a scored row in the outputs step, and each entry was a Cassandra
            # cell (docs/performance.md). Here, not in score_ruled: it is output, not scoring.
            scored = scored.withColumn("features_json", F.to_json(F.struct(*FEATURES)))
            fields = {f.name: f for f in scored.schema.fields}
            outcome_schema = T.StructType([fields[c] for c in OUTCOME_COLUMNS])
            self._plan = scored.mapInArrow(
                _outputs_partition(
                    self.target,
                    self.settings.kafka.bootstrap,
                    self.alerts_topic,
                    outcome_schema,
                    self.models.broadcast,
                    self.models.broadcast_key,
                    self.models.version,
                    self.rules.current,
                    self.pii_key,
                    self.query_key,
                ),
                outcome_schema,
            )
            self._plan_for = built_for
        return self._plan


_bundle_in_worker: tuple[str | None, Any] | None = None
"""(broadcast key, bundle) last unpickled in this Python worker: see :func:`_worker_bundle`."""


def _worker_bundle(bundle_bc, bundle_key: str | None):
    """The champion bundle in a Python worker, unpickled once per broadcast
    (``ModelHolder.broadcast_key``).

    A reused worker keeps a broadcast's value only until it runs a task that does not use
    that broadcast: Spark then tells it to drop the broadcast, and the next outputs task
    gets it again and unpickles it again. The landing and feature tasks, which use none,
    run on the same workers in every micro-batch, so most outputs tasks unpickled the
    bundle (py-spy of the workers at 200 tx/s: 159 of 2,012 samples in txmon's steps were
    ``Broadcast.load``; a /tmp job alternating two UDFs on one worker shows the value gone).
    A new champion comes with a new broadcast and key, and replaces the kept one."""
    global _bundle_in_worker
    if bundle_bc is None:
        return None
    if _bundle_in_worker is None or _bundle_in_worker[0] != bundle_key:
        _bundle_in_worker = (bundle_key, bundle_bc.value)
    return _bundle_in_worker[1]


def _outputs_partition(
    target: CassandraTarget,
    bootstrap: str,
    alerts_topic: str,
    outcome_schema,
    bundle_bc,
    bundle_key: str | None,
    model_version: str,
    ruleset,
    pii_key: bytes,
    query_key: str = "",
):
    """mapInArrow function: reasons and alert JSON for the rows that need them
    (:func:`_explain_batch`), then each scored row to ``scored_transactions`` (and its
    account's ``account_transactions``), each alert to
    ``alerts``/``alerts_by_day``/``alerts_by_rank``/``alerts_by_party`` and the alerts
    topic, from the task; at the task's end its counts per IST hour to ``console_hourly``
    (infra/hourly_counts.py: one read and one write per hour touched); yield the outcome
    columns. (One Spark job per micro-batch: see transactions_stream.land_partition.)"""
    names = list(outcome_schema.names)
    carried = [c for c in SCORED_COLUMNS if c != "scored_at"]  # scored_at: stamped here
    # account_transactions rows are picked out of the scored rows (no second Arrow pass).
    by_account = [carried.index(c) for c in ACCOUNT_TXN_COLUMNS if c != "month"]
    account_at, time_at = carried.index("payer_account"), carried.index("event_time")
    rules = {r.id: r for r in ruleset.rules}

    def run(batches: Iterator) -> Iterator:
        bundle = _worker_bundle(bundle_bc, bundle_key)
        per_hour: dict = {}
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            now_utc = datetime.now(UTC)
            now = now_utc.replace(tzinfo=None)  # naive UTC: see arrow_rows
            batch = with_explanations(batch, bundle, rules, model_version, ruleset.label, now_utc, pii_key)
            rows = [(*row, now) for row in arrow_rows(batch, carried)]
            # 16 rows per batch: a scored row is ~2 KB, so 32 crossed the 64 KiB warn threshold
            # (infra/services/cassandra.py) and Cassandra logged every such batch; 16 and 32
            # measured the same within noise, 8 was ~2x slower (micro-bench of write_rows).
            write_rows(target, "scored_transactions", (*carried, "scored_at"), rows, batch_rows=16)
            write_rows(
                target,
                "account_transactions",
                ACCOUNT_TXN_COLUMNS,
                (
                    (row[account_at], txn_month(row[time_at]), *(row[i] for i in by_account[1:]))
                    for row in rows
                    if row[account_at] is not None and row[time_at] is not None
                ),
            )
            alerts = [a for a in batch.column("alert_json").to_pylist() if a is not None]
            raised = []
            if alerts:
                main, by_day, by_rank, by_party, messages = [], [], [], [], []
                for text in alerts:
                    alert = from_json(text)
                    row = alert_row(alert)
                    main.append(tuple(row[c] for c in ALERT_COLUMNS))
                    by_day.append(tuple(row[c] for c in ALERT_BY_DAY_COLUMNS))
                    by_rank.append(alert_rank_row(alert))
                    by_party.extend(alert_party_rows(alert))
                    messages.append((kafka_key(alert), text.encode()))
                    raised.append((alert.event_time, alert.reason_codes, alert.created_at))
                write_rows(target, "alerts", ALERT_COLUMNS, main, batch_rows=8)
                write_rows(target, "alerts_by_day", ALERT_BY_DAY_COLUMNS, by_day)
                write_rows(target, "alerts_by_rank", ALERT_BY_RANK_COLUMNS, by_rank)
                write_rows(target, "alerts_by_party", ALERT_BY_PARTY_COLUMNS, by_party)
                publish(bootstrap, alerts_topic, messages)
            counts = hourly_counts.arrow_counts(
                batch.column("event_time"), batch.column("decision"), batch.column("model_version"), raised
            )
            for hour, c in counts.items():
                per_hour[hour] = hourly_counts.merge(per_hour[hour], c) if hour in per_hour else c
            yield batch.select(names)
        if per_hour:
            _write_hourly(target, query_key, per_hour)

    return run


def _write_hourly(target: CassandraTarget, query_key: str, per_hour: dict) -> None:
    """This task's counts per hour into ``console_hourly``, keyed by its micro-batch and
    partition (infra/hourly_counts.py): written once per task, after its last row."""
    # lazy: pyspark (747 ms to import); the scoring API imports this module without it
    from pyspark import TaskContext

    context = TaskContext.get()
    batch_id = context and context.getLocalProperty(BATCH_ID_PROPERTY)
    if context is None or batch_id is None:
        return  # not a streaming micro-batch (a batch run over history): no running counts
    token = f"{query_key}#{batch_id}"
    retried(
        target,
        f"writing the counts of {len(per_hour)} hour(s) to console_hourly",
        lambda: hourly_counts.write_batch(
            session_for(target), prepared, query_key, context.partitionId(), token, per_hour
        ),
    )
