"""The rules file's active rules, compiled once, applied to one row or to a pandas frame.

The stream applies the rules with Spark (spark_jobs/rules.apply_rules). Two places score
without a Spark session and use this module instead, with the conditions compiled by
:mod:`txmon.models.rule_conditions` (Spark SQL's semantics, held to the stream's by the
parity tests):

- the scoring API, one transaction per request (webapp/api/scorer.py);
- training (``txmon train``, retraining), whose blend weight and hold-out metrics are
  judged on the risk the stream serves, rules included (:func:`models.training.train_frame`).

What the rules add is the stream's: the fired rules' scores summed in file order, capped
at 100 (``rule_score``), which :mod:`models.risk`'s noisy-OR then combines with the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from txmon.models.rule_conditions import ConditionError, compile_condition, condition_columns
from txmon.models.rules import Rule, RulesError, RuleSet

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_RULE_SCORE", "CompiledRules", "compile_rules"]

MAX_RULE_SCORE = 100.0
"""The cap on the summed rule score (the stream's, spark_jobs/rules.rule_columns)."""


@dataclass(frozen=True)
class CompiledRules:
    ruleset: RuleSet
    conditions: tuple[tuple[Rule, Callable[[dict], Any]], ...]
    """(rule, evaluator) of the active rules, in file order."""
    reads: tuple[str, ...] = ()
    """Every column some active condition reads: all a frame's rows are built from."""

    @cached_property
    def by_id(self) -> dict:
        return {r.id: r for r in self.ruleset.rules}

    @property
    def label(self) -> str:
        """The rules file's ``v<version>-<content hash>`` (the stream's rules_version)."""
        return self.ruleset.label

    def hits(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
        """(rule_score, rules_fired) of every row of ``frame``, in its order, as
        spark_jobs/rules.apply_rules gives them for the same rows: a column the frame
        lacks, and a missing value (None, NaN, NaT), is NULL to the conditions."""
        n = len(frame)
        rows = _rows(frame, self.reads)
        total = np.zeros(n)
        masks = []
        for rule, condition in self.conditions:
            fired = np.fromiter((condition(row) is True for row in rows), dtype=bool, count=n)
            masks.append(fired)
            # Summed in file order from 0.0 as the stream's column sums them: the same doubles.
            total = total + np.where(fired, float(rule.score), 0.0)
        names: list[list[str]] = [[] for _ in range(n)]
        for (rule, _), fired in zip(self.conditions, masks):
            for i in np.flatnonzero(fired):
                names[i].append(rule.id)
        return np.minimum(total, MAX_RULE_SCORE), names

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """The rule score of every row of ``frame``: a :data:`models.scoring.RuleScores` callable."""
        return self.hits(frame)[0]


def compile_rules(ruleset: RuleSet, columns: Iterable[str], kinds: Mapping[str, str] | None = None) -> CompiledRules:
    """Every active rule's condition compiled against ``columns`` (what a rule may read)
    and their ``kinds`` (see :func:`models.rule_conditions.compile_condition`); RulesError
    naming the rule if one cannot be, or if a reason names another column."""
    allowed = frozenset(columns)
    compiled: list[tuple[Rule, Callable[[dict], Any]]] = []
    reads: set[str] = set()
    for rule in ruleset.active:
        try:
            compiled.append((rule, compile_condition(rule.effective_condition, allowed, kinds)))
            reads |= condition_columns(rule.effective_condition, allowed)
        except ConditionError as exc:
            raise RulesError(f"rule {rule.id}: condition `{rule.condition}`: {exc}") from None
    for rule in ruleset.rules:
        for name in rule.placeholders():
            if name not in allowed:
                raise RulesError(f"rule {rule.id}: reason uses {{{name}}}, which is not a column")
    return CompiledRules(ruleset, tuple(compiled), tuple(sorted(reads)))


def _rows(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[dict]:
    """One dict per row of ``frame`` holding ``columns`` as plain Python values, missing
    ones None: the shape of the row the compiled conditions read (the API's row)."""
    n = len(frame)
    if not columns:
        return [{} for _ in range(n)]
    values = [_python_values(frame[c]) if c in frame.columns else [None] * n for c in columns]
    return [dict(zip(columns, row)) for row in zip(*values)]


def _python_values(column: pd.Series) -> list:
    """``column`` as Python values (numpy's scalars converted), missing ones None. NaN is
    NULL in the stream's frame (Arrow's conversion from pandas), and a NaN left in would
    compare false where SQL's NULL makes the whole condition NULL (``NOT x > 1``)."""
    values = column.tolist()
    missing = column.isna().to_numpy()
    if not missing.any():
        return values
    return [None if m else v for v, m in zip(values, missing)]
