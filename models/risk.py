"""Risk score and decision: how rule hits and model outputs become 0-100 and an action.

Combination is a noisy-OR, so each signal can only raise the risk and the score stays
explainable: ``risk = 100 * (1 - (1 - r) * (1 - w_m * p) * (1 - w_a * a))`` with
``r`` the rule score (sum of fired rules' contributions, capped at 100, as a fraction),
``p`` the supervised fraud probability and ``a`` the anomaly score (both 0-1).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

from pydantic import ConfigDict, Field, model_validator

from txmon.infra.yaml_loading import WrittenModel

Decision = Literal["APPROVE", "REVIEW", "BLOCK"]
"""What is done with a transaction, by its risk score (:func:`decide`)."""
DECISIONS: tuple[str, ...] = get_args(Decision)

AlertDecision = Literal["REVIEW", "BLOCK"]
"""The decisions that raise an alert: every :data:`Decision` but APPROVE."""
ALERT_DECISIONS: tuple[str, ...] = get_args(AlertDecision)


class Severity(StrEnum):
    """How urgent an alert is: a rule's own, or raised for a block (ordered, low to high)."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


SEVERITIES: tuple[str, ...] = tuple(s.value for s in Severity)


class RiskPolicy(WrittenModel):
    """Weights and thresholds (config/rules.yaml, section `policy`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_weight: float = Field(0.9, ge=0, le=1)
    anomaly_weight: float = Field(0.3, ge=0, le=1)
    review_at: int = Field(50, ge=1, le=100)
    block_at: int = Field(80, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> RiskPolicy:
        if self.block_at < self.review_at:
            raise ValueError("block_at must be >= review_at")
        return self


def risk_values(rule_score, fraud_probability, anomaly, policy: RiskPolicy):
    """The risk before rounding (float array, 0-100): what rankings use (backtest, hold-out
    reports, precision@k). Rounding to whole points ties thousands of transactions that
    the model tells apart, and a tie at the top of a daily review list is decided by
    nothing; the unrounded value keeps the model's order wherever no rule fired.

    >>> import numpy as np
    >>> risk_values(np.array([0, 0, 60]), np.array([.0101, .0102, .5]), np.zeros(3), RiskPolicy()).round(3).tolist()
    [0.909, 0.918, 78.0]
    """
    # lazy: numpy (273 ms to import); the DAG processor parses this file every 30 s
    import numpy as np

    r = np.clip(np.asarray(rule_score, dtype=float), 0.0, 100.0) / 100.0
    keep = (
        (1 - r)
        * (1 - policy.model_weight * np.asarray(fraud_probability, dtype=float))
        * (1 - policy.anomaly_weight * np.asarray(anomaly, dtype=float))
    )
    return 100 * (1 - keep)


def risk_scores(rule_score, fraud_probability, anomaly, policy: RiskPolicy):
    """Vectorised risk (numpy arrays in, int array out): :func:`risk_values` rounded, half
    to even. Decisions, alerts and the stream use this integer.

    >>> import numpy as np
    >>> risk_scores(np.array([0, 60, 60, 250]), np.array([0, 0, .5, 0]), np.zeros(4), RiskPolicy()).tolist()
    [0, 60, 78, 100]
    """
    # lazy: numpy (273 ms to import); the DAG processor parses this file every 30 s
    import numpy as np

    return np.rint(risk_values(rule_score, fraud_probability, anomaly, policy)).astype(int)


def risk_score(rule_score: float, fraud_probability: float, anomaly: float, policy: RiskPolicy) -> int:
    """
    >>> p = RiskPolicy()
    >>> risk_score(0, 0.0, 0.0, p), risk_score(60, 0.0, 0.0, p), risk_score(60, 0.5, 0.0, p)
    (0, 60, 78)
    """
    return int(risk_scores([rule_score], [fraud_probability], [anomaly], policy)[0])


def decisions(scores, policy: RiskPolicy):
    """Vectorised :func:`decide`."""
    # lazy: numpy (273 ms to import); the DAG processor parses this file every 30 s
    import numpy as np

    scores = np.asarray(scores)
    return np.where(scores >= policy.block_at, "BLOCK", np.where(scores >= policy.review_at, "REVIEW", "APPROVE"))


def risk_column(rule_score, fraud_probability, anomaly, policy: RiskPolicy):
    """:func:`risk_scores` as a Spark column (the stream scores in the JVM).

    The same double operations in the same order as the NumPy form (clip, ``/ 100``, the
    three factors multiplied left to right, ``rint``, half to even in both), so both give
    the same integer for the same inputs; tests/integration/test_jvm_scoring.py checks it on a grid.
    """
    # lazy: pyspark (750 ms to import); the web app's workers load this module without it
    from pyspark.sql import functions as F

    def col(c):
        return F.col(c) if isinstance(c, str) else c

    r = F.least(F.greatest(col(rule_score).cast("double"), F.lit(0.0)), F.lit(100.0)) / F.lit(100.0)
    keep = (
        (F.lit(1.0) - r)
        * (F.lit(1.0) - F.lit(float(policy.model_weight)) * col(fraud_probability))
        * (F.lit(1.0) - F.lit(float(policy.anomaly_weight)) * col(anomaly))
    )
    return F.rint(F.lit(100.0) * (F.lit(1.0) - keep)).cast("int")


def decision_column(risk, policy: RiskPolicy):
    """:func:`decisions` as a Spark column."""
    # lazy: pyspark (750 ms to import); the web app's workers load this module without it
    from pyspark.sql import functions as F

    risk = F.col(risk) if isinstance(risk, str) else risk
    return (
        F.when(risk >= policy.block_at, F.lit("BLOCK"))
        .when(risk >= policy.review_at, F.lit("REVIEW"))
        .otherwise(F.lit("APPROVE"))
    )


def decide(score: int, policy: RiskPolicy) -> Decision:
    """
    >>> p = RiskPolicy()
    >>> decide(10, p), decide(50, p), decide(80, p)
    ('APPROVE', 'REVIEW', 'BLOCK')
    """
    if score >= policy.block_at:
        return "BLOCK"
    if score >= policy.review_at:
        return "REVIEW"
    return "APPROVE"
