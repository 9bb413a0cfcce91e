"""One source per shape: table columns come from infra/schema.cql, decisions and
severities from models/risk.py."""

from __future__ import annotations

import pytest

from txmon.alerting.contract import ALERT_BY_DAY_COLUMNS, ALERT_COLUMNS
from txmon.infra.cassandra_schema import table_columns
from txmon.models.risk import ALERT_DECISIONS, DECISIONS, SEVERITIES, Severity


def test_alert_decisions_are_the_decisions_that_flag():
    assert tuple(d for d in DECISIONS if d != "APPROVE") == ALERT_DECISIONS


def test_severities_are_ordered_low_to_high():
    assert SEVERITIES == ("LOW", "MEDIUM", "HIGH", "CRITICAL")
    assert max((Severity.MEDIUM, Severity.CRITICAL, Severity.LOW), key=SEVERITIES.index) is Severity.CRITICAL


def test_alert_columns_are_the_tables_but_the_version_1_clear_ones():
    assert set(table_columns("alerts")) - set(ALERT_COLUMNS) == {
        "payer_account",
        "payer_vpa",
        "payee_account",
        "payee_vpa",
    }
    assert set(table_columns("alerts_by_day")) - set(ALERT_BY_DAY_COLUMNS) == {"payer_account"}


def test_a_column_in_create_and_alter_is_listed_once():
    assert table_columns("scored_transactions")[-1] == "scored_at"
    assert table_columns("scored_transactions").count("features_json") == 1


def test_an_unknown_table_is_named():
    with pytest.raises(KeyError, match="no table 'nope'"):
        table_columns("nope")
