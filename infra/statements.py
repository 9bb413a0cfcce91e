"""Every CQL statement the product sends, beside the schema they run against.

The tables and their columns are defined once, in ``schema.cql`` (read by
:func:`txmon.infra.cassandra_schema.table_columns`). A statement that writes or reads a
whole row derives its column list from there, so a column the schema adds reaches the
statements that mean "all of them"; a statement that names a subset spells it out.
Grouped by table, in the schema's order. Callers prepare each one (values are always
bound, never formatted in); tests/unit/test_statements.py checks every table and column
named here against schema.cql.
"""

from __future__ import annotations

from collections.abc import Sequence

from txmon.infra.cassandra_schema import table_columns


def insert(table: str, columns: Sequence[str] | None = None, suffix: str = "") -> str:
    """An INSERT binding every column of ``table`` (schema order), or ``columns``.

    >>> insert("labels")
    'INSERT INTO labels (txn_id, is_fraud, scenario, label_time, received_at) VALUES (?, ?, ?, ?, ?)'
    >>> insert("api_keys", ("key_id", "name"), "IF NOT EXISTS")
    'INSERT INTO api_keys (key_id, name) VALUES (?, ?) IF NOT EXISTS'
    """
    names = table_columns(table) if columns is None else tuple(columns)
    text = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    return f"{text} {suffix}" if suffix else text


def select(table: str, columns: Sequence[str] | None = None, where: str = "") -> str:
    """A SELECT of every column of ``table`` (schema order), or ``columns``.

    >>> select("customer_contacts", where="account = ?")
    'SELECT account, phone, email, name, updated_at FROM customer_contacts WHERE account = ?'
    """
    names = table_columns(table) if columns is None else tuple(columns)
    text = f"SELECT {', '.join(names)} FROM {table}"
    return f"{text} WHERE {where}" if where else text


def ids_present(table: str) -> str:
    """Which of a list of txn_ids ``table`` holds (readback of a run's output)."""
    return select(table, ("txn_id",), "txn_id IN ?")


def token_range(table: str, columns: Sequence[str], key: str) -> str:
    """One token range of ``table`` (a whole-table read split the way the ring is)."""
    return select(table, columns, f"token({key}) > ? AND token({key}) <= ?")


# ---------------------------------------------------------------- the node itself
PING = "SELECT release_version FROM system.local"

# ---------------------------------------------------------------- smoke_events
SMOKE_COUNT = "SELECT count(*) FROM smoke_events WHERE run_id = ?"
SMOKE_SAMPLE = "SELECT id, kafka_partition, kafka_offset, landed_at FROM smoke_events WHERE run_id = ? LIMIT 3"

# ---------------------------------------------------------------- transactions
_TRANSACTIONS = table_columns("transactions")
TRANSACTION_CONTENT_COLUMNS = _TRANSACTIONS[: _TRANSACTIONS.index("status") + 1]
"""What a payment says (everything up to ``status``; after it, where it was read and when)."""
TRANSACTION_VERSIONS_IN = select(
    "transactions", (*TRANSACTION_CONTENT_COLUMNS, "kafka_partition", "kafka_offset"), "txn_id IN ?"
)
TRANSACTION_PAYEES_IN = select("transactions", ("txn_id", "payee_account", "payee_vpa", "event_time"), "txn_id IN ?")
# The one read of a clear account number on the alert path (docs/security-pii.md).
TRANSACTION_PAYER = select("transactions", ("payer_account",), "txn_id = ?")
TRANSACTION_PAYER_INSERT = insert("transactions", ("txn_id", "payer_account"))
TRANSACTION_API = select(
    "transactions",
    (
        "txn_id",
        "event_time",
        "channel",
        "txn_type",
        "payer_account",
        "payer_vpa",
        "payee_account",
        "payee_vpa",
        "amount_paise",
        "status",
        "landed_at",
    ),
    "txn_id = ?",
)
# A case page shows what the payment says, but for its schema version and coordinates.
TRANSACTION_CASE = select(
    "transactions",
    tuple(c for c in TRANSACTION_CONTENT_COLUMNS if c not in ("schema_version", "lat", "lon")),
    "txn_id = ?",
)

# ---------------------------------------------------------------- dead_letters
DEAD_LETTER_INSERT = insert("dead_letters")
DEAD_LETTER_REASONS_SINCE = (
    "SELECT reason FROM dead_letters WHERE topic = ? AND kafka_partition = ? AND kafka_offset >= ?"
)
# The console's dashboard: a partition's newest dead letters, at most a page of them.
DEAD_LETTERS_NEWEST = (
    "SELECT reason, landed_at FROM dead_letters WHERE topic = ? AND kafka_partition = ? "
    "ORDER BY kafka_offset DESC LIMIT ?"
)

# ---------------------------------------------------------------- account_aggregates
ACCOUNT_WINDOWS = (
    "SELECT window_start, window_end, txn_count, total_paise, max_paise, distinct_payees, payees "
    "FROM account_aggregates WHERE payer_account = ? AND window_kind = ? AND window_start >= ? AND window_start <= ?"
)
ACCOUNT_NEWEST_WINDOW = (
    "SELECT window_start FROM account_aggregates WHERE payer_account = ? AND window_kind = ? LIMIT 1"
)

# ---------------------------------------------------------------- account_transactions
ACCOUNT_TXN_COLUMNS = table_columns("account_transactions")
"""The columns of ``account_transactions`` in the order its writers bind them."""
ACCOUNT_TXN_INSERT = insert("account_transactions")
ACCOUNT_TXNS_UNTIL = select(
    "account_transactions",
    ("txn_id", "event_time", *ACCOUNT_TXN_COLUMNS[4:]),  # infra.readback.AccountTxn's order
    "payer_account = ? AND month = ? AND event_time <= ? LIMIT ?",
)

# ---------------------------------------------------------------- feature_profiles
PROFILES_IN = "SELECT key, state, applied_batch FROM feature_profiles WHERE kind = ? AND key IN ?"
PROFILES_PREVIOUS_IN = "SELECT key, prev_state FROM feature_profiles WHERE kind = ? AND key IN ?"
PROFILE_INSERT = (
    "INSERT INTO feature_profiles (kind, key, state, prev_state, applied_batch, updated_at) "
    "VALUES (?, ?, ?, ?, ?, toTimestamp(now()))"
)
PAYER_PROFILE = "SELECT state FROM feature_profiles WHERE kind = 'payer' AND key = ?"
PAYEE_PROFILE = "SELECT state FROM feature_profiles WHERE kind = 'payee' AND key = ?"

# ---------------------------------------------------------------- payee_fraud_labels
PAYEE_FRAUDS_IN = "SELECT payee_key, label_time, event_time FROM payee_fraud_labels WHERE payee_key IN ?"
PAYEE_FRAUDS = "SELECT label_time, event_time FROM payee_fraud_labels WHERE payee_key = ?"
PAYEE_FRAUD_TXNS = "SELECT txn_id FROM payee_fraud_labels WHERE payee_key = ?"

# ---------------------------------------------------------------- labels
LABELS = "SELECT txn_id, is_fraud, scenario FROM labels"  # the online evaluation's whole-table read
# What a batch of labels replaces (infra/fraud_label_days.py reads it before the write).
LABELS_IN = "SELECT txn_id, is_fraud, scenario, received_at FROM labels WHERE txn_id IN ?"
LABELS_RECEIVED = "SELECT txn_id, is_fraud, scenario, received_at FROM labels"  # `console reindex`: whole table

# ---------------------------------------------------------------- fraud_labels_by_day
FRAUD_DAY_INSERT = insert("fraud_labels_by_day")
FRAUD_DAY_DELETE = "DELETE FROM fraud_labels_by_day WHERE day = ? AND scenario = ? AND outcome = ? AND txn_id = ?"
# Cassandra counts the day's partition and answers a row per (scenario, outcome).
FRAUD_DAY_COUNTS = (
    "SELECT scenario, outcome, count(*) FROM fraud_labels_by_day WHERE day = ? GROUP BY scenario, outcome"
)
FRAUD_DAY_OUTCOME = select("fraud_labels_by_day", ("txn_id",), "day = ? AND scenario = ? AND outcome = ? LIMIT ?")
FRAUD_DAY_ROWS = select("fraud_labels_by_day", ("scenario", "outcome", "txn_id"), "day = ?")  # reindex only

# ---------------------------------------------------------------- scored_transactions
SCORED_EVALUATION_COLUMNS = (
    "txn_id",
    "payer_account",
    "event_time",
    "risk_score",
    "decision",
    "fraud_probability",
    "anomaly_score",
    "model_version",
    "rules_version",
)
"""What the online evaluation of the live decisions reads of each scored transaction."""
SCORED_EVALUATION = select("scored_transactions", SCORED_EVALUATION_COLUMNS)
SCORED_HOURS = "SELECT event_time, decision, model_version FROM scored_transactions"
# What account_transactions keeps of each scored row (its backfill), in that table's order.
SCORED_BY_ACCOUNT = select("scored_transactions", tuple(c for c in ACCOUNT_TXN_COLUMNS if c != "month"))
SCORED_DECISIONS_IN = "SELECT txn_id, decision, model_version FROM scored_transactions WHERE txn_id IN ?"
SCORED_DEMO_IN = (
    "SELECT txn_id, decision, risk_score, rules_fired, reasons, payer_account "
    "FROM scored_transactions WHERE txn_id IN ?"
)
SCORED_API = select(
    "scored_transactions",
    tuple(c for c in table_columns("scored_transactions") if c not in ("features_json", "kafka_timestamp")),
    "txn_id = ?",
)
SCORED_CASE = select(
    "scored_transactions",
    (
        "risk_score",
        "decision",
        "rule_score",
        "fraud_probability",
        "anomaly_score",
        "rules_fired",
        "reasons",
        "model_version",
        "rules_version",
        "features_json",
        "payee_key",
    ),
    "txn_id = ?",
)

# ---------------------------------------------------------------- alerts and their views
ALERT_V1_COLUMNS = ("payer_account", "payer_vpa", "payee_account", "payee_vpa")
"""Clear columns of ``alerts`` that only version-1 rows have filled: read, never written."""
ALERT_COLUMNS = tuple(c for c in table_columns("alerts") if c not in ALERT_V1_COLUMNS)
"""Columns of ``alerts`` written for an alert."""
ALERT_BY_DAY_COLUMNS = tuple(c for c in table_columns("alerts_by_day") if c not in ALERT_V1_COLUMNS)
"""Columns of ``alerts_by_day`` written for an alert."""
ALERT_BY_RANK_COLUMNS = table_columns("alerts_by_rank")
ALERT_BY_PARTY_COLUMNS = table_columns("alerts_by_party")

ALERT_INSERT = insert("alerts", ALERT_COLUMNS)
ALERT_BY_DAY_INSERT = insert("alerts_by_day", ALERT_BY_DAY_COLUMNS)
ALERT_BY_RANK_INSERT = insert("alerts_by_rank")
ALERT_BY_PARTY_INSERT = insert("alerts_by_party")
# Every column is read back, the written ones and the clear ones of version-1 rows.
ALERT_GET = select("alerts", where="alert_id = ?")
ALERTS_OF_DAY = select("alerts_by_day", where="day = ?")
ALERTS_OF_DAY_API = select(
    "alerts_by_day",
    (
        "alert_id",
        "event_time",
        "created_at",
        "payer_account_masked",
        "decision",
        "severity",
        "risk_score",
        "amount_paise",
        "reason_codes",
    ),
    "day = ?",
)
ALERTS_BY_RANK_OF_DAY = select(
    "alerts_by_rank",
    (
        "alert_id",
        "event_time",
        "created_at",
        "risk_score",
        "decision",
        "severity",
        "channel",
        "txn_type",
        "payer_account_masked",
        "payee_masked",
        "amount_paise",
        "reason_codes",
    ),
    "day = ?",
)
ALERTS_OF_PARTY = select(
    "alerts_by_party",
    (
        "alert_id",
        "txn_id",
        "event_time",
        "risk_score",
        "decision",
        "severity",
        "amount_paise",
        "payer_account_masked",
        "reason_codes",
    ),
    "party = ? AND event_time >= ? AND event_time <= ? LIMIT ?",
)

# ---------------------------------------------------------------- console_hourly
HOURLY_INSERT = insert("console_hourly")
HOURLY_ROW = (
    "SELECT batch_token, counts, previous FROM console_hourly WHERE day = ? AND hour = ? AND query = ? AND part = ?"
)
HOURLY_RANGE = "SELECT hour, counts FROM console_hourly WHERE day = ? AND hour >= ? AND hour <= ?"
HOURLY_ALL = "SELECT hour, query FROM console_hourly"

# ---------------------------------------------------------------- alert delivery
DELIVERY_LATEST = (
    "SELECT attempt, status FROM alert_deliveries WHERE alert_id = ? AND channel = ? AND recipient_key = ? LIMIT 1"
)
DELIVERY_ATTEMPTS = select("alert_deliveries", where="alert_id = ?")
DELIVERY_INSERT = insert("alert_deliveries")
FAILURE_INSERT = insert("alert_delivery_failures")
FAILURE_DELETE = (
    "DELETE FROM alert_delivery_failures WHERE day = ? AND alert_id = ? AND channel = ? AND recipient_key = ?"
)
FAILURES_OF_DAY = select("alert_delivery_failures", where="day = ?")
CONTACT_GET = select("customer_contacts", ("account", "phone", "email"), "account = ?")
CONTACT_INSERT = insert("customer_contacts")
THROTTLE_WINDOWS = select(
    "alert_throttle",
    tuple(c for c in table_columns("alert_throttle") if c != "scope"),
    "scope = ?",
)
THROTTLE_INSERT = insert("alert_throttle")
THROTTLE_DELETE = "DELETE FROM alert_throttle WHERE scope = ? AND throttle_key = ?"
FOLDS = "SELECT throttle_key, alert_id, window_start FROM alert_folds WHERE scope = ?"
FOLD_INSERT = insert("alert_folds")
FOLD_DELETE = "DELETE FROM alert_folds WHERE scope = ? AND throttle_key = ? AND alert_id = ?"

# ---------------------------------------------------------------- drift
DRIFT_STATE_GET = "SELECT state, applied_batch, last_notified_at FROM drift_state WHERE stream = ? AND part = ?"
DRIFT_STATE_INSERT = insert("drift_state")
DRIFT_EVENTS_RECENT = (
    "SELECT part, signal, detected_at, mean_before, mean_after, model_version, notified "
    "FROM drift_events WHERE stream = ? LIMIT 200"
)

# ---------------------------------------------------------------- the console
USER_GET = "SELECT username, role, password_hash, disabled FROM console_users WHERE username = ?"
USERS = "SELECT username, role, password_hash, disabled FROM console_users"
USER_INSERT = insert("console_users")
USER_SET_DISABLED = "UPDATE console_users SET disabled = ?, updated_at = ? WHERE username = ?"
SESSION_INSERT = insert("console_sessions", suffix="USING TTL ?")
SESSION_GET = "SELECT username, role, csrf_token, expires_at FROM console_sessions WHERE token_hash = ?"
SESSION_DELETE = "DELETE FROM console_sessions WHERE token_hash = ?"
_CASE_STATE = "SELECT alert_id, status, assignee, disposition, updated_at, updated_by, opened_at FROM case_state"
CASE_GET = _CASE_STATE + " WHERE alert_id = ?"
CASES_IN = _CASE_STATE + " WHERE alert_id IN ?"
CASE_UPDATE = (
    "UPDATE case_state SET status = ?, assignee = ?, disposition = ?, updated_at = ?, updated_by = ? WHERE alert_id = ?"
)
CASE_OPEN = "UPDATE case_state SET opened_at = ? WHERE alert_id = ?"
CASE_ACTION_INSERT = insert("case_actions")
# A case's history and a day's audit grow with the analysts' work: each read is one page,
# newest first.
CASE_ACTIONS = select("case_actions", where="alert_id = ? ORDER BY at DESC LIMIT ?")
CASE_ACTIONS_BEFORE = select("case_actions", where="alert_id = ? AND at < ? ORDER BY at DESC LIMIT ?")
AUDIT_INSERT = insert("console_audit")
AUDIT_OF_DAY = "SELECT alert_id, at, actor, role, action, detail FROM console_audit WHERE day = ? LIMIT ?"
AUDIT_BETWEEN = (
    "SELECT alert_id, at, actor, role, action, detail FROM console_audit "
    "WHERE day = ? AND at >= minTimeuuid(?) AND at <= maxTimeuuid(?) LIMIT ?"
)
CASE_LABEL_CLAIM = insert(
    "case_labels", tuple(c for c in table_columns("case_labels") if c != "published_at"), "IF NOT EXISTS"
)
CASE_LABELS_IN = select("case_labels", where="alert_id IN ?")
CASE_LABEL_GET = select("case_labels", where="alert_id = ?")
CASE_LABEL_PUBLISHED = "UPDATE case_labels SET published_at = ? WHERE alert_id = ?"
_SPENDING = ("period_kind", "period", "dimension", "key", "txn_count", "total_paise", "max_paise", "avg_paise")
# An account's months from a given one on, and its years: bounded by the months asked for.
ACCOUNT_SPENDING_MONTHS = select(
    "account_spending", (*_SPENDING, "computed_until"), "payer_account = ? AND period_kind = 'month' AND period >= ?"
)
ACCOUNT_SPENDING_YEARS = select(
    "account_spending", (*_SPENDING, "computed_until"), "payer_account = ? AND period_kind = 'year'"
)
# A segment's days, months or years from a given period on ('' for all of them).
SEGMENT_SPENDING = select(
    "segment_spending",
    (*_SPENDING, "label", "accounts", "computed_until"),
    "segment = ? AND period_kind = ? AND period >= ?",
)

# ---------------------------------------------------------------- the scoring API
API_KEY_GET = select("api_keys", where="key_id = ?")
API_KEY_INSERT = insert("api_keys", tuple(c for c in table_columns("api_keys") if c != "revoked_at"), "IF NOT EXISTS")
API_KEYS = "SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys"
API_KEY_REVOKE = "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? IF EXISTS"
API_DECISION_CLAIM = insert(
    "api_decisions", ("txn_id", "content_hash", "verdict", "decided_at", "key_id"), "IF NOT EXISTS"
)
API_DECISION_GET = "SELECT txn_id, content_hash, verdict, decided_at, published_at FROM api_decisions WHERE txn_id = ?"
API_DECISION_PUBLISHED = "UPDATE api_decisions SET published_at = ? WHERE txn_id = ?"
API_LABEL_CLAIM = (
    "INSERT INTO api_labels (label_id, content_hash, txn_id, state, received_at, key_id) "
    "VALUES (?, ?, ?, 'pending', ?, ?) IF NOT EXISTS"
)
API_LABEL_SENT = "UPDATE api_labels SET state = 'sent' WHERE label_id = ?"

API = {
    "payer_profile": PAYER_PROFILE,
    "payee_profile": PAYEE_PROFILE,
    "payee_frauds": PAYEE_FRAUDS,
    "key_get": API_KEY_GET,
    "key_insert": API_KEY_INSERT,
    "key_list": API_KEYS,
    "key_revoke": API_KEY_REVOKE,
    "decision_claim": API_DECISION_CLAIM,
    "decision_get": API_DECISION_GET,
    "decision_published": API_DECISION_PUBLISHED,
    "label_claim": API_LABEL_CLAIM,
    "label_sent": API_LABEL_SENT,
    "scored_get": SCORED_API,
    "transaction_get": TRANSACTION_API,
    "alerts_by_day": ALERTS_OF_DAY_API,
    "ping": PING,
}
"""The scoring API's statements by the name its store prepares them under."""
