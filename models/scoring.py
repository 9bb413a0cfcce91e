"""Features -> risk: model outputs and rule scores combined by :mod:`models.risk`.

One function for every path that scores a frame (offline evaluation, the stream), so
the combination lives in one place: :func:`models.risk.risk_scores` and
:func:`models.risk.decisions` (the vectorised forms of ``risk_score`` / ``decide``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from txmon.models.bundle import ModelBundle
from txmon.models.risk import RiskPolicy, decisions, risk_values

__all__ = ["SCORE_COLUMNS", "RuleScores", "rule_scores_for", "score_frame"]

SCORE_COLUMNS = ("fraud_probability", "anomaly", "rule_score", "risk_score", "decision")

RuleScores: TypeAlias = (
    Callable[[pd.DataFrame], npt.ArrayLike] | Mapping[str, float] | pd.Series | np.ndarray | list | None
)
"""Where per-row rule scores (0-100) come from:

- None: no rules engine, every rule score is 0;
- a callable ``(features_frame) -> array-like``, one score per row in the frame's order
  (the rules engine's natural shape: rules read the feature columns);
- a Mapping or Series keyed by txn_id (rows it does not name score 0);
- an array-like already aligned with the frame's rows.
"""


def rule_scores_for(frame: pd.DataFrame, rules: RuleScores) -> np.ndarray:
    """Resolve ``rules`` into one float per row of ``frame``."""
    if rules is None:
        return np.zeros(len(frame))
    if callable(rules) and not isinstance(rules, (pd.Series, Mapping)):
        values = np.asarray(rules(frame), dtype=np.float64)
    elif isinstance(rules, (pd.Series, Mapping)):
        values = pd.Series(rules, dtype="float64").reindex(frame["txn_id"]).fillna(0.0).to_numpy()
    else:
        values = np.asarray(rules, dtype=np.float64)
    if values.shape != (len(frame),):
        raise ValueError(f"rule scores have shape {values.shape}, expected one per row ({len(frame)})")
    return values


def score_frame(
    features: pd.DataFrame, bundle: ModelBundle, policy: RiskPolicy, rules: RuleScores = None
) -> pd.DataFrame:
    """A copy of ``features`` with SCORE_COLUMNS added (risk_score 0-100, decision), and
    ``risk_exact``, the risk before rounding, which rankings use. The risk combines the
    scores under ``bundle.risk_policy(policy)`` (no anomaly where the bundle left it out)."""
    policy = bundle.risk_policy(policy)
    probability, anomaly = bundle.score(features)
    rule = rule_scores_for(features, rules)
    exact = risk_values(rule, probability, anomaly, policy)
    risk = np.rint(exact).astype(np.int64)  # models.risk.risk_scores, without computing it twice
    out = features.copy()
    out["fraud_probability"] = probability
    out["anomaly"] = anomaly
    out["rule_score"] = rule
    out["risk_score"] = risk
    out["risk_exact"] = exact
    out["decision"] = decisions(risk, policy).astype(object)
    return out
