"""Detection rules in Spark: checking their conditions, hot reload, applying them.

The rules file's model and loader are txmon.models.rules (no Spark). A condition is a
Spark SQL expression over the feature and transaction columns, evaluated by Spark itself
(never Python ``eval``). A file that fails to parse, names an unknown column, or is not
boolean is rejected with the rule id and the problem; the stream keeps scoring with the
last good rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from txmon.models.features import FEATURES
from txmon.models.rule_conditions import ConditionError, guarded_sql
from txmon.models.rule_engine import CompiledRules, compile_rules
from txmon.models.rules import Rule, RulesError, RuleSet, load_rules
from txmon.spark_jobs.validation import TYPED_FIELDS

log = logging.getLogger(__name__)

_KINDS = {"string": "text", "int": "number", "long": "number", "double": "number", "timestamp": "time"}
RULE_COLUMN_KINDS: dict[str, str] = {
    **{name: _KINDS[spark_type] for name, spark_type in TYPED_FIELDS},
    "payee_key": "text",
    **dict.fromkeys(FEATURES, "number"),
}
"""What a rule may read, and the kind of each value: the landed transaction's columns,
payee_key and every feature, as in the stream's scored frame. The Python evaluations of
the rules (the scoring API, training: txmon.models.rule_engine) compile them against
these, and refuse a condition that mixes kinds (models.rule_conditions)."""
RULE_COLUMNS = frozenset(RULE_COLUMN_KINDS)


def python_rules(ruleset: RuleSet) -> CompiledRules:
    """``ruleset`` compiled for the Python evaluations of the stream's rules (the scoring
    API, training, retraining), against the columns the stream's frame gives them."""
    return compile_rules(ruleset, RULE_COLUMNS, RULE_COLUMN_KINDS)


def spark_condition(rule: Rule) -> str:
    """The rule's condition as the stream evaluates it: its arithmetic through Spark's
    ``try_`` functions (models.rule_conditions.guarded_sql), so a zero divisor or an
    overflow on one row is NULL for that row instead of failing the micro-batch. A
    condition the Python parser cannot read (refused by the watcher before it reaches the
    stream) is left as written, for Spark's analyser to judge."""
    try:
        return guarded_sql(rule.effective_condition, RULE_COLUMNS)
    except ConditionError:
        return rule.effective_condition


def check_conditions(spark, ruleset: RuleSet, schema) -> None:
    """Let Spark's analyser check every condition against the columns it will see."""
    # pyspark on first use, as in spark_jobs/detection.py.
    from pyspark.errors import AnalysisException, ParseException
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    empty = spark.createDataFrame([], schema)
    for rule in ruleset.rules:
        try:
            dtype = empty.select(F.expr(spark_condition(rule)).alias("c")).schema["c"].dataType
        except (ParseException, AnalysisException) as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise RulesError(f"rule {rule.id}: condition `{rule.condition}` is invalid: {first}") from None
        if not isinstance(dtype, BooleanType):
            raise RulesError(
                f"rule {rule.id}: condition `{rule.condition}` is {dtype.simpleString()}, "
                "not true/false; compare it with something (e.g. `>= 3`)"
            )
    for rule in ruleset.rules:
        for name in rule.placeholders():
            if name not in schema.fieldNames():
                raise RulesError(
                    f"rule {rule.id}: reason uses {{{name}}}, which is not a column; use one of the feature columns"
                )


def rule_columns(ruleset: RuleSet) -> dict:
    """``rules_fired`` (array of ids) and ``rule_score`` (capped at 100) as Spark columns.

    Unresolved expressions, so the stream's plan, built when the rules change, serves every
    micro-batch until then (spark_jobs/detection.Detector.plan): building them goes through
    py4j a few times per rule and cost the driver 77-118 ms per micro-batch when it was done
    for each (13 rules, measured on an empty frame of the scored schema).
    """
    # lazy: pyspark (747 ms to import); the scoring API imports this module without it
    from pyspark.sql import functions as F

    rules = ruleset.active
    if not rules:
        return {"rules_fired": F.array().cast("array<string>"), "rule_score": F.lit(0.0)}
    hits = [F.coalesce(F.expr(spark_condition(r)), F.lit(False)) for r in rules]
    fired = F.filter(F.array(*[F.when(h, F.lit(r.id)) for h, r in zip(hits, rules)]), lambda x: x.isNotNull())
    score = sum((F.when(h, F.lit(float(r.score))).otherwise(F.lit(0.0)) for h, r in zip(hits, rules)), F.lit(0.0))
    return {"rules_fired": fired, "rule_score": F.least(score, F.lit(100.0))}


def apply_rules(df, ruleset: RuleSet):
    """Add ``rules_fired`` and ``rule_score`` (:func:`rule_columns`) to a DataFrame or a
    PreparedPlan (spark_jobs/prepared_plan.py)."""
    return df.withColumns(rule_columns(ruleset))


@dataclass
class RulesWatcher:
    """Reloads the rules file when it changes; keeps the last good rules on error."""

    path: Path
    current: RuleSet | None = None
    last_error: str | None = None
    _stamp: tuple | None = None

    def refresh(self, spark, schema) -> bool:
        """Check the file; returns True if new rules were taken into use."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and self.current is not None:
            return False
        self._stamp = stamp
        try:
            candidate = load_rules(self.path)
            # The Python compilation too: the stream takes only rules the scoring API and
            # training can evaluate the same way, and it refuses mixed kinds that Spark would
            # cast on every row and, in ANSI mode, fail the micro-batch over.
            python_rules(candidate)
            check_conditions(spark, candidate, schema)
        except RulesError as exc:
            self.last_error = str(exc)
            if self.current is None:
                raise
            log.error("rules reload rejected, still scoring with %s: %s", self.current.label, exc)
            return False
        changed = self.current is None or candidate.label != self.current.label
        self.current, self.last_error = candidate, None
        if changed:
            log.warning("rules %s loaded from %s (%d active)", candidate.label, self.path, len(candidate.active))
        return changed
