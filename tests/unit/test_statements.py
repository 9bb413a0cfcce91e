"""Every CQL statement in txmon.infra.statements names tables and columns that
schema.cql defines, binds as many values as it names columns, and is used; and no
product module writes a statement of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from txmon.infra import statements
from txmon.infra.cassandra_schema import table_columns

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("alerting", "infra", "ingestion", "models", "spark_jobs", "webapp", "dags")
VERB = re.compile(r"^(SELECT|INSERT INTO|UPDATE|DELETE FROM) ")


def _named_statements() -> dict[str, str]:
    found = {
        name: value
        for name, value in vars(statements).items()
        if not name.startswith("_") and isinstance(value, str) and VERB.match(value)
    }
    found.update({f"API[{key}]": value for key, value in statements.API.items()})
    return found


NAMED = _named_statements()


def _table(cql: str) -> str:
    match = re.search(r"\b(?:FROM|INTO|UPDATE) (\w+(?:\.\w+)?)", cql)
    assert match, cql
    return match.group(1)


def _columns(cql: str) -> set[str]:
    """The column names a statement mentions: its select list, insert list, SET and
    WHERE terms (bind markers, literals, functions and keywords left out)."""
    names: set[str] = set()
    if select := re.match(r"SELECT (.*?) FROM ", cql):
        names |= {c.strip() for c in select.group(1).split(",") if c.strip() != "count(*)"}
    if insert := re.match(r"INSERT INTO \w+ \((.*?)\) VALUES", cql):
        names |= {c.strip() for c in insert.group(1).split(",")}
    names |= set(re.findall(r"(?:SET|,|WHERE|AND) (\w+) (?:=|>=|<=|>|<|IN) ", cql))
    names |= set(re.findall(r"token\((\w+)\)", cql))
    return names


@pytest.mark.parametrize("name", sorted(NAMED))
def test_statement_names_what_the_schema_defines(name):
    cql = NAMED[name]
    table = _table(cql)
    if table.startswith("system"):
        return  # Cassandra's own tables: not in schema.cql
    unknown = _columns(cql) - set(table_columns(table))
    assert not unknown, f"{name}: {sorted(unknown)} not columns of {table} in schema.cql: {cql}"


@pytest.mark.parametrize("name", sorted(n for n, cql in NAMED.items() if cql.startswith("INSERT")))
def test_insert_binds_each_column_it_names(name):
    cql = NAMED[name]
    columns = re.match(r"INSERT INTO \w+ \((.*?)\) VALUES \((.*?)\)", cql)
    assert columns, cql
    assert len(columns.group(1).split(",")) == len(columns.group(2).split(",")), cql


def test_derived_statements_follow_the_schema():
    """Whole-row statements take their columns from schema.cql, in its order."""
    columns = table_columns("alert_deliveries")
    expected = f"INSERT INTO alert_deliveries ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    assert expected == statements.DELIVERY_INSERT
    assert statements.CASE_LABEL_GET.startswith(f"SELECT {', '.join(table_columns('case_labels'))} FROM case_labels")
    assert "payer_account" not in statements.ALERT_COLUMNS  # version-1 clear columns are never written
    assert statements.ALERT_GET.startswith("SELECT alert_id, schema_version, txn_id")  # but read back


def test_a_wrong_column_is_caught():
    """The check above can fail: a statement naming a column the table lacks."""
    assert _columns("SELECT nope FROM labels WHERE txn_id = ?") - set(table_columns("labels")) == {"nope"}
    assert _columns("UPDATE labels SET nope = ?, scenario = ? WHERE txn_id = ?") == {"nope", "scenario", "txn_id"}


def test_every_statement_is_used():
    source = "\n".join(
        p.read_text()
        for folder in PRODUCT
        for p in (ROOT / folder).rglob("*.py")
        if p != ROOT / "infra" / "statements.py"
    )
    api = set(statements.API.values())  # the API's store prepares the whole dict
    unused = [n for n, cql in NAMED.items() if cql not in api and not re.search(rf"\b{n}\b", source)]
    assert not unused, f"statements no module uses: {unused}"


def test_no_product_module_writes_its_own_statement():
    """A CQL statement in a string literal outside txmon.infra.statements (schema DDL and
    role changes stay with cassandra_schema)."""
    literal = re.compile(r"""["'](SELECT [\w{*]|INSERT INTO [\w{]|UPDATE \w+ SET |DELETE FROM [\w{])""")
    found = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for folder in PRODUCT
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p.name not in ("statements.py", "cassandra_schema.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert not found, "statements written outside txmon.infra.statements:\n" + "\n".join(found)
