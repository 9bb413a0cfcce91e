"""Detection rules as data: the rules file's model, loading and checking its structure.

Rules live in YAML (config/rules.yaml, :data:`txmon.infra.settings.DEFAULT_RULES`). A
condition is a Spark SQL expression over the feature and transaction columns; Spark
evaluates and checks it (spark_jobs/rules.py), never Python ``eval``. This module has no
Spark in it, so training, the scoring API and the stream read the same rules and policy.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pydantic import ConfigDict, Field, ValidationError, field_validator

from txmon.infra.errors import ConfigError, YamlError
from txmon.infra.settings import DEFAULT_RULES, PROJECT_ROOT
from txmon.infra.yaml_loading import WrittenModel, load_yaml
from txmon.ingestion.events import CHANNELS
from txmon.models.risk import RiskPolicy, Severity

# Spark SQL functions that reach into the JVM: never allowed in a rule.
_FORBIDDEN = re.compile(r"\b(reflect|java_method|try_reflect|java_call)\s*\(", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{([a-z_0-9]+)\}")


class RulesError(ConfigError):
    """The rules file is invalid; the message names the rule and the problem."""


class Rule(WrittenModel):
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


class RuleSet(WrittenModel):
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
        data = load_yaml(text)
    except YamlError as exc:
        raise RulesError(f"{source} {exc}; fix the file") from None
    if not isinstance(data, dict):
        raise RulesError(f"{source}: expected a mapping with 'version', 'policy' and 'rules'")
    try:
        # model_validate, not RuleSet(**data): a key that is not a name (`1: 2`) is then a
        # validation problem named below, not a TypeError out of the call.
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            where = ".".join(str(p) for p in loc)
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
                rules = data.get("rules") or []
                entry = rules[loc[1]] if loc[1] < len(rules) else None
                rid = entry.get("id", f"#{loc[1] + 1}") if isinstance(entry, dict) else f"#{loc[1] + 1}"
                where = f"rule {rid}: " + ".".join(str(p) for p in loc[2:])
            problems.append(f"{where} {err['msg']}")
        raise RulesError(f"{source}: " + "; ".join(problems)) from None
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return ruleset.model_copy(update={"label": f"v{ruleset.version}-{digest}"})


def load_rules(path: Path | str = DEFAULT_RULES) -> RuleSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"rules file {path} not found: pass an existing YAML file (see config/rules.yaml)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # a directory, unreadable, not UTF-8, a NUL in the path
        raise RulesError(f"cannot read rules file {path} ({exc}); it must be a UTF-8 YAML file") from None
    return parse_rules(text, source=str(path))


def stream_policy(path: Path = DEFAULT_RULES) -> tuple[RiskPolicy, str]:
    """The risk policy the stream uses: the rules file's `policy` section, and where it
    came from (the defaults if there is no rules file)."""
    if not path.is_file():
        return RiskPolicy(), "defaults"
    return load_rules(path).policy, rules_source(path)


def rules_source(path: Path) -> str:
    """How reports name a rules file: relative to the project when inside it."""
    return str(path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path)
