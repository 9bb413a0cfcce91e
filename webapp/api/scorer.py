"""One transaction -> risk, decision and reasons, exactly as the stream would score it.

The stream (spark_jobs/detection.py) folds each micro-batch onto the profiles it saved in
Cassandra, applies the rules file with Spark and scores the champion in the JVM. For a
synchronous answer the same pieces run here in Python on one row:

1. features: the folds of :mod:`txmon.models.features` (the one definition), called as
   the stream's ``add_features`` calls them, onto the profiles the stream last saved
   (:class:`SnapshotStore`), folding this transaction *without saving* anything: the
   stream stays the only writer of profiles, so a scored-only transaction is never
   counted, and an ingested one is counted once, by the stream;
2. rules: the same rules file, reloaded when it changes (:class:`RuleBook`), its
   conditions evaluated by :mod:`txmon.models.rule_conditions` with Spark SQL's semantics;
3. models: the registry's champion, reloaded when ``champion.json`` changes
   (:class:`Champion`), scored by :class:`txmon.models.bundle.ModelBundle` (the JVM
   scorer equals it to 1e-12: tests/integration/test_jvm_scoring.py);
4. risk and decision: :func:`txmon.models.risk.risk_scores` / ``decisions``; reasons:
   the stream's own ``alert_reasons``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from txmon.infra.settings import DEFAULT_RULES
from txmon.ingestion.events import TransactionEvent
from txmon.models.features import (
    FEATURES,
    INTEGER_FEATURES,
    LABEL_FEATURES,
    PAYEE_FEATURES,
    PAYER_FEATURES,
    PayeeState,
    PayerState,
    ProfileStore,
    add_features,
    payee_fold,
    payee_label_features,
    payer_fold,
)
from txmon.models.risk import decisions, risk_scores
from txmon.models.rule_engine import CompiledRules
from txmon.models.rules import RulesError, load_rules
from txmon.spark_jobs.rules import python_rules
from txmon.spark_jobs.validation import TRANSACTION_COLUMNS, event_values

if TYPE_CHECKING:
    from txmon.models.bundle import ModelBundle

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NO_MODEL = "none"  # the stream's model_version without a champion (spark_jobs/detection.NO_MODEL)


@dataclass(frozen=True)
class Profiles:
    """What the stream last saved about one transaction's payer and payee."""

    payer: str | None = None
    """PayerState JSON (feature_profiles, kind 'payer'), None for an account never seen."""
    payee: str | None = None
    """PayeeState JSON (kind 'payee')."""
    frauds: tuple[tuple[int, int], ...] = ()
    """The payee's confirmed frauds received so far: (label time µs, transaction time µs)."""


class RuleBook:
    """The rules file, reloaded when its modification time or size changes; a file that
    fails to load keeps the last good rules (as the stream's RulesWatcher does)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or DEFAULT_RULES)
        self.current: CompiledRules | None = None
        self.last_error: str | None = None
        self._stamp: tuple | None = None
        self._lock = threading.Lock()

    def _file_stamp(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def loaded(self) -> bool:
        """True if :meth:`get` would return the rules it holds without reading the file."""
        return self.current is not None and self._file_stamp() == self._stamp

    def get(self) -> CompiledRules:
        stamp = self._file_stamp()
        if stamp == self._stamp and self.current is not None:
            return self.current
        with self._lock:
            if stamp != self._stamp or self.current is None:
                self._stamp = stamp
                try:
                    candidate = python_rules(load_rules(self.path))
                except RulesError as exc:
                    self.last_error = str(exc)
                    if self.current is None:
                        raise
                    log.error("rules reload rejected, still scoring with %s: %s", self.current.ruleset.label, exc)
                else:
                    if self.current is None or candidate.ruleset.label != self.current.ruleset.label:
                        log.warning("rules %s loaded from %s", candidate.ruleset.label, self.path)
                    self.current, self.last_error = candidate, None
        assert self.current is not None
        return self.current


class Champion:
    """The registry's champion bundle, reloaded when ``champion.json`` changes. A champion
    that cannot be loaded (or that the stream's JVM scorer could not score) is refused and
    the last one keeps scoring, as in the stream (spark_jobs/detection.ModelHolder)."""

    def __init__(self, registry_root: Path | None) -> None:
        self.root = None if registry_root is None else Path(registry_root)
        self.version = NO_MODEL
        self.bundle: ModelBundle | None = None
        self.last_error: str | None = None
        self._stamp: tuple | None = None
        self._lock = threading.Lock()

    def _champion_stamp(self) -> tuple | None:
        if self.root is None:
            return None
        # lazy: pandas (3.1 s to import); the web app's workers load this module without it
        from txmon.models.registry import CHAMPION_FILE

        try:
            stat = (self.root / CHAMPION_FILE).stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def loaded(self) -> bool:
        """True if :meth:`get` would return the champion it holds without loading one."""
        return self._champion_stamp() == self._stamp

    def get(self) -> tuple[str, ModelBundle | None]:
        stamp = self._champion_stamp()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._reload()
        return self.version, self.bundle

    def _reload(self) -> None:
        # lazy: pandas (3.1 s to import); the web app's workers load this module without it
        from txmon.models.registry import Registry
        from txmon.models.tree_export import tree_bytes

        if self.root is None:  # no registry: the stamp stays None, so get() does not come here
            return
        try:
            registry = Registry(self.root)
            champion = registry.champion()
            if champion is None or champion == self.version:
                return
            bundle = registry.load(champion)
            tree_bytes(bundle, champion)  # the stream refuses a bundle its JVM scorer cannot score: so do we
        except Exception as exc:  # noqa: BLE001 - a bad champion must not stop scoring with the good one
            self.last_error = f"model registry {self.root}: {exc}"
            log.error("champion not loaded (%s); keeping model %s", exc, self.version)
            return
        bundle.probability(np.zeros((1, len(FEATURES))))  # build lazily made parts now, not on a request
        bundle.anomaly(np.zeros((1, len(FEATURES))))
        log.warning("model %s now scoring (was %s)", champion, self.version)
        self.version, self.bundle, self.last_error = champion, bundle, None


@dataclass
class Verdict:
    """What the API answers for one transaction."""

    txn_id: str
    risk_score: int
    decision: str
    rule_score: float
    fraud_probability: float
    anomaly_score: float
    rules_fired: list[str]
    reasons: list[dict]
    model_version: str
    rules_version: str
    features: dict[str, float | int]
    row: dict = field(repr=False, default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "txn_id": self.txn_id,
            "risk_score": self.risk_score,
            "decision": self.decision,
            "rule_score": self.rule_score,
            "fraud_probability": self.fraud_probability,
            "anomaly_score": self.anomaly_score,
            "rules_fired": self.rules_fired,
            "reasons": self.reasons,
            "model_version": self.model_version,
            "rules_version": self.rules_version,
            "features": self.features,
        }


def transaction_row(event: TransactionEvent) -> dict:
    """The landed transaction's columns (spark_jobs/validation.TYPED_FIELDS, without the
    Kafka coordinates) plus ``payee_key``, as the stream's frame holds them."""
    row = dict(zip(TRANSACTION_COLUMNS, event_values(event)))
    row["payee_key"] = event.payee.account_number or event.payee.vpa
    return row


class SnapshotStore(ProfileStore):
    """The saved profiles of one request as a read-only :class:`ProfileStore`: the feature
    folds run exactly as in the stream (``add_features``), and what they would save is
    dropped."""

    def __init__(self, profiles: Profiles, payer: str, payee: str | None) -> None:
        self._profiles = {("payer", payer): profiles.payer, ("payee", payee): profiles.payee}
        self._frauds = {payee: sorted(profiles.frauds)} if payee is not None and profiles.frauds else {}

    def load(self, kind, keys):
        return {k: v for k in keys if (v := self._profiles.get((kind, k))) is not None}

    def save(self, kind, profiles):
        pass  # the stream is the only writer of profiles

    def fraud_label_times(self, payees):
        return {p: self._frauds[p] for p in payees if p in self._frauds}

    def save_windows(self, rows):
        pass


def feature_row(event: TransactionEvent, profiles: Profiles) -> dict:
    """:func:`transaction_row` plus every feature of this transaction, folded onto the saved
    profiles (nothing is saved).

    The stream's ``add_payee_features`` then ``add_payer_features`` for one row, calling the
    same folds with the same arguments, without their pandas frame: the frame path costs
    ~100x more per single row (dtype casts per column), a request's whole budget. The copy
    of their few lines of glue is held to :func:`frame_feature_row` (the frame path itself)
    by tests/unit/test_api_features.py."""
    row = transaction_row(event)
    store = SnapshotStore(profiles, row["payer_account"], row["payee_key"])
    t_us = _micros(event)
    payee, payer = row["payee_key"], row["payer_account"]
    payee_state = PayeeState.from_json(profiles.payee) if profiles.payee else PayeeState()
    delay = int(store.label_delay_us)
    folded, matured = payee_fold(payee_state, t_us, payer, delay)
    frauds = store.fraud_label_times([payee]).get(payee, [])
    labels = payee_label_features(frauds, [f[0] for f in frauds], t_us, matured, delay)
    payer_state = PayerState.from_json(profiles.payer) if profiles.payer else PayerState()
    lat, lon = row["lat"], row["lon"]
    payer_values = payer_fold(
        payer_state,
        t_us,
        payee,
        int(row["amount_paise"]),
        row["device_id"],
        None if lat is None else float(lat),
        None if lon is None else float(lon),
        row["status"] == "FAILED",
    )
    for names, values in ((PAYEE_FEATURES, folded), (LABEL_FEATURES, labels), (PAYER_FEATURES, payer_values)):
        for name, value in zip(names, values):
            # The stream's frame types: bigint or double columns (features.INTEGER_FEATURES).
            row[name] = int(value) if name in INTEGER_FEATURES else float(value)
    return row


def frame_feature_row(event: TransactionEvent, profiles: Profiles) -> dict:
    """:func:`feature_row` the stream's way: :func:`add_features` over a one-row frame and a
    read-only store of the saved profiles. The reference the fast path is tested against."""
    # lazy: pandas (2.2 s to import); the web app's workers load this module without it
    import pandas as pd

    row = transaction_row(event)
    frame = pd.DataFrame([row])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    values = add_features(frame, SnapshotStore(profiles, row["payer_account"], row["payee_key"])).iloc[0]
    for name in FEATURES:
        if name != "amount_paise":
            row[name] = int(values[name]) if name in INTEGER_FEATURES else float(values[name])
    return row


def _micros(event: TransactionEvent) -> int:
    """Event time in epoch microseconds, as the stream's frame holds it (models.features.epoch_micros)."""
    return (event.event_time - _EPOCH) // timedelta(microseconds=1)


class Scorer:
    """Scores transactions with the current rules and champion (both hot-reloaded)."""

    def __init__(self, rules_path: Path | None = None, registry_root: Path | None = None) -> None:
        self.rules = RuleBook(rules_path)
        self.champion = Champion(registry_root)

    def ready(self) -> dict[str, Any]:
        """Loads both now; what /readyz reports of them."""
        rules = self.rules.get()
        version, bundle = self.champion.get()
        return {
            "rules_version": rules.ruleset.label,
            "model_version": version,
            "model_loaded": bundle is not None,
            "rules_error": self.rules.last_error,
            "model_error": self.champion.last_error,
        }

    def loaded(self) -> bool:
        """True if scoring now reads no file and loads no model: a request then costs
        under a millisecond of CPU and can be scored on the event loop; a reload (seconds
        for a champion) belongs in a thread."""
        return self.current() is not None

    def current(self) -> tuple[CompiledRules, str, ModelBundle | None] | None:
        """(rules, model version, champion) to score with if neither file changed since they
        were loaded, else None (then :meth:`score` without them reloads, in a thread). Passed
        on to :meth:`score`, each file is looked at once per request, not twice."""
        rules = self.rules.current
        if rules is None or not self.rules.loaded() or not self.champion.loaded():
            return None
        return rules, self.champion.version, self.champion.bundle

    def score(
        self,
        event: TransactionEvent,
        profiles: Profiles,
        current: tuple[CompiledRules, str, ModelBundle | None] | None = None,
    ) -> Verdict:
        """The verdict of ``event`` on ``profiles``; ``current``: :meth:`current`'s answer
        (default: the rules and champion as they are now, reloaded if their files changed)."""
        # lazy: pandas (3.1 s to import); the web app's workers load this module without it
        from txmon.spark_jobs.detection import alert_reasons

        if current is None:
            compiled = self.rules.get()
            version, bundle = self.champion.get()
        else:
            compiled, version, bundle = current
        row = feature_row(event, profiles)
        fired = [rule.id for rule, condition in compiled.conditions if condition(row) is True]
        rule_score = min(sum(float(r.score) for r, c in compiled.conditions if r.id in fired), 100.0)
        x = np.array([[row[f] for f in FEATURES]], dtype=np.float64)
        if bundle is None:
            probability, anomaly = 0.0, 0.0
        else:
            probability, anomaly = float(bundle.probability(x)[0]), float(bundle.anomaly(x)[0])
        policy = compiled.ruleset.policy if bundle is None else bundle.risk_policy(compiled.ruleset.policy)
        risk = int(risk_scores([rule_score], [probability], [anomaly], policy)[0])
        decision = str(decisions([risk], policy)[0])
        explanation: list = []
        if bundle is not None and decision != "APPROVE":
            # The matrix a one-row frame would give (bundle.matrix), without building the frame.
            explanation = bundle.explain_matrix(x, top_k=3)[0]
        reasons = alert_reasons(row, fired, compiled.by_id, explanation, decision, probability)
        return Verdict(
            txn_id=event.txn_id,
            risk_score=risk,
            decision=decision,
            rule_score=rule_score,
            fraud_probability=probability,
            anomaly_score=anomaly,
            rules_fired=fired,
            reasons=reasons,
            model_version=version,
            rules_version=compiled.ruleset.label,
            features={f: row[f] for f in FEATURES},
            row=row,
        )


def timed_score(scorer: Scorer, event: TransactionEvent, profiles: Profiles) -> tuple[Verdict, float]:
    """(verdict, milliseconds spent scoring)."""
    start = time.perf_counter()
    verdict = scorer.score(event, profiles)
    return verdict, (time.perf_counter() - start) * 1000
