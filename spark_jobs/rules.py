"""Detection rules: loading, checking, hot reload, and applying them in Spark.

Rules live in YAML (config/rules.yaml). A condition is a Spark SQL expression over the
feature and transaction columns, evaluated by Spark itself (never Python ``eval``).
A file that fails to parse, names an unknown column, or is not boolean is rejected
with the rule id and the problem; the stream keeps scoring with the last good rules.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from txmon.infra.errors import ConfigError
from txmon.infra.settings import PROJECT_ROOT
from txmon.models.risk import RiskPolicy, Severity

log = logging.getLogger(__name__)

DEFAULT_RULES = PROJECT_ROOT / "config" / "rules.yaml"
# Spark SQL functions that reach into the JVM: never allowed in a rule.
_FORBIDDEN = re.compile(r"\b(reflect|java_method|try_reflect|java_call)\s*\(", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{([a-z_0-9]+)\}")


class RulesError(ConfigError):
    """The rules file is invalid; the message names the rule and the problem."""


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")
    description: str = Field(min_length=3, max_length=200)
    condition: str = Field(min_length=1)
    score: float = Field(ge=0, le=100)
    severity: Severity
    reason: str | None = Field(None, max_length=200)
    scenario: str | None = None
    enabled: bool = True
    # The payment rails the rule is written for (None: every channel). A card rule's
    # thresholds mean nothing on UPI transfers, and the reverse.
    channels: tuple[str, ...] | None = Field(None, min_length=1)

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from txmon.ingestion.events import CHANNELS

        unknown = [c for c in value or () if c not in CHANNELS]
        if unknown:
            raise ValueError(f"unknown channels {unknown}; use some of {list(CHANNELS)}")
        return value

    @property
    def effective_condition(self) -> str:
        """The condition as Spark evaluates it: restricted to :attr:`channels` if set.

        >>> Rule(id="R1", description="big", condition="amount_paise > 5", score=1, severity="LOW",
        ...      channels=("CARD_POS", "CARD_ECOM")).effective_condition
        "(amount_paise > 5) AND channel IN ('CARD_POS', 'CARD_ECOM')"
        """
        if not self.channels:
            return self.condition
        return f"({self.condition}) AND channel IN ({', '.join(repr(c) for c in self.channels)})"

    @field_validator("condition")
    @classmethod
    def _safe(cls, value: str) -> str:
        if _FORBIDDEN.search(value):
            raise ValueError("calls a JVM reflection function (reflect/java_method), which rules may not use")
        return value

    def placeholders(self) -> list[str]:
        """Columns the reason template names, e.g. ['payer_count_5m']."""
        return _PLACEHOLDER.findall(self.reason or "")

    def reason_text(self, values: dict) -> str:
        """The reason in plain words with this transaction's values filled in."""
        template = self.reason or self.description

        def fill(match: re.Match) -> str:
            value = values.get(match.group(1))
            if isinstance(value, float):
                return f"{value:,.1f}"
            return f"{value:,}" if isinstance(value, int) else str(value)

        return _PLACEHOLDER.sub(fill, template)


class RuleSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1)
    policy: RiskPolicy = RiskPolicy()
    rules: tuple[Rule, ...] = Field(min_length=1)
    label: str = ""  # "v<version>-<content hash>", set by the loader

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        seen = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id} appears twice; ids must be unique")
            seen.add(rule.id)
        return rules

    @property
    def active(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def by_id(self, rule_id: str) -> Rule:
        return next(r for r in self.rules if r.id == rule_id)


def parse_rules(text: str, source: str = "rules") -> RuleSet:
    """YAML text -> RuleSet (structure only; conditions are checked by :func:`check_conditions`)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML ({exc}); fix the file") from None
    if not isinstance(data, dict):
        raise RulesError(f"{source}: expected a mapping with 'version', 'policy' and 'rules'")
    try:
        ruleset = RuleSet(**data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            where = ".".join(str(p) for p in loc)
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
                rules = data.get("rules") or []
                rid = rules[loc[1]].get("id", f"#{loc[1] + 1}") if loc[1] < len(rules) and isinstance(rules[loc[1]], dict) else f"#{loc[1] + 1}"
                where = f"rule {rid}: " + ".".join(str(p) for p in loc[2:])
            problems.append(f"{where} {err['msg']}")
        raise RulesError(f"{source}: " + "; ".join(problems)) from None
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return ruleset.model_copy(update={"label": f"v{ruleset.version}-{digest}"})


def load_rules(path: Path | str = DEFAULT_RULES) -> RuleSet:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RulesError(f"rules file {path} not found: pass an existing YAML file (see config/rules.yaml)") from None
    return parse_rules(text, source=str(path))


def check_conditions(spark, ruleset: RuleSet, schema) -> None:
    """Let Spark's analyser check every condition against the columns it will see."""
    from pyspark.errors import AnalysisException, ParseException
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    empty = spark.createDataFrame([], schema)
    for rule in ruleset.rules:
        try:
            dtype = empty.select(F.expr(rule.effective_condition).alias("c")).schema["c"].dataType
        except (ParseException, AnalysisException) as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise RulesError(f"rule {rule.id}: condition `{rule.condition}` is invalid: {first}") from None
        if not isinstance(dtype, BooleanType):
            raise RulesError(f"rule {rule.id}: condition `{rule.condition}` is {dtype.simpleString()}, "
                             "not true/false; compare it with something (e.g. `>= 3`)")
    for rule in ruleset.rules:
        for name in rule.placeholders():
            if name not in schema.fieldNames():
                raise RulesError(f"rule {rule.id}: reason uses {{{name}}}, which is not a column; "
                                 f"use one of the feature columns")


def rule_columns(ruleset: RuleSet) -> dict:
    """``rules_fired`` (array of ids) and ``rule_score`` (capped at 100) as Spark columns.

    Unresolved expressions, so the stream's plan, built when the rules change, serves every
    micro-batch until then (spark_jobs/detection.Detector.plan): building them goes through
    py4j a few times per rule and cost the driver 77-118 ms per micro-batch when it was done
    for each (13 rules, measured on an empty frame of the scored schema).
    """
    from pyspark.sql import functions as F

    rules = ruleset.active
    if not rules:
        return {"rules_fired": F.array().cast("array<string>"), "rule_score": F.lit(0.0)}
    hits = [F.coalesce(F.expr(r.effective_condition), F.lit(False)) for r in rules]
    fired = F.filter(F.array(*[F.when(h, F.lit(r.id)) for h, r in zip(hits, rules)]), lambda x: x.isNotNull())
    score = sum((F.when(h, F.lit(float(r.score))).otherwise(F.lit(0.0)) for h, r in zip(hits, rules)),
                F.lit(0.0))
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
