"""Configuration a user can break: the settings and alerting YAML files, their TXMON_*
environment overrides, the secrets file and ``--conf``. Whatever they hold comes back as
the loader's own error, naming the file or variable and the fix, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.verdicts import loads_or_names_the_problem
from txmon.alerting.config import load_alerting_config
from txmon.alerting.errors import AlertingConfigError
from txmon.infra import credentials
from txmon.infra.airflow import parse_conf
from txmon.infra.errors import AirflowApiError, ConfigError
from txmon.infra.settings import load_settings

DEEP = b"[" * 5000 + b"]" * 5000
ALERTING = b"recipients:\n  fraud_desk: {email: [d@bank.example]}\n"

# (file content, what the message says besides the file's name)
BROKEN_SETTINGS = [
    (b"kafka: [1, 2\n", "not valid YAML"),
    (b"kafka:\n\tport: 1\n", "cannot start any token"),
    (b"- a\n- b\n", "must hold a mapping"),
    (b"hello\n", "must hold a mapping"),
    (b"42\n", "must hold a mapping"),
    (b"1: 2\n", "key 1 is not a section name"),
    (b"~: 2\n", "key None is not a section name"),
    (b"kafka:\n  host: \xff\xfe\n", "not UTF-8"),
    (b"kafka:\n  host: a\x00b\n", "unacceptable character"),
    (b"kafka:\n  port: 1\n---\nkafka:\n  port: 2\n", "single document"),
    (b"kafka: !foo bar\n", "'!foo'"),
    (b"kafka: !!python/object:os.system {}\n", "python/object"),
    (b"kafka:\n  <<: 5\n", "merging"),
    (b"? [a, b]\n: 1\n", "unhashable key"),
    (b"kafka: " + DEEP + b"\n", "nests too deeply"),
    (b"kafka:\n  host: 2020-13-01\n", "month must be in 1..12"),
]


@pytest.mark.parametrize(("content", "problem"), BROKEN_SETTINGS)
def test_a_broken_settings_file_is_named_with_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, problem: str
) -> None:
    path = tmp_path / "txmon.yaml"
    path.write_bytes(content)
    monkeypatch.setenv("TXMON_CONFIG", str(path))
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert str(path) in message and problem in message
    assert "fix the file" in message or "save it as UTF-8" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TXMON_KAFKA", "hello"),
        ("TXMON_KAFKA", "{bad"),
        ("TXMON_AIRFLOW__OPERATOR_EMAIL", "a@b.c"),
        ("TXMON_KAFKA__TOPICS", "{bad"),
    ],
)
def test_a_settings_variable_that_is_not_json_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"environment variable {variable} cannot be parsed" in str(err.value)
    assert "as JSON" in str(err.value)


def test_a_settings_variable_nested_too_deeply_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TXMON_KAFKA", "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match=r"a TXMON_\* environment variable cannot be parsed \(maximum recursion"):
        load_settings()


def test_environment_then_file_then_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "txmon.yaml"
    path.write_text("kafka:\n  port: 1234\n  host: broker.example\n")
    monkeypatch.setenv("TXMON_CONFIG", str(path))
    monkeypatch.setenv("TXMON_KAFKA__PORT", "2345")
    kafka = load_settings().kafka
    assert (kafka.port, kafka.host, kafka.partitions) == (2345, "broker.example", 4)


BROKEN_ALERTING = [
    (b"smtp: [\n", "not valid YAML"),
    (b"- 1\n", "must hold a mapping"),
    (b"hello\n", "must hold a mapping"),
    (b"1: 2\n", "key 1 is not a section name"),
    (ALERTING + b"# \xff\n", "not UTF-8"),
    (b"smtp: " + DEEP + b"\n", "nests too deeply"),
    (ALERTING + b"---\nsmtp: {}\n", "single document"),
    (ALERTING + b"smtp:\n  port: !x 587\n", "'!x'"),
    (ALERTING + b"retry: {initial_s: 100, max_s: 1}\n", "max_s (1.0) must be at least initial_s (100.0)"),
    (ALERTING + b'smtp:\n  from_address: "a@b.c\\nBcc: evil@x.y"\n', "smtp.from_address: must be one line"),
]


@pytest.mark.parametrize(("content", "problem"), BROKEN_ALERTING)
def test_a_broken_alerting_file_is_named_with_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, problem: str
) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_bytes(content)
    monkeypatch.setenv("TXMON_ALERTING_CONFIG", str(path))
    with pytest.raises(AlertingConfigError) as err:
        load_alerting_config()
    assert str(path) in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TXMON_ALERTING__SMTP", "abc"),
        ("TXMON_ALERTING__RECIPIENTS", "{bad"),
        ("TXMON_ALERTING__ROUTES", "[bad"),
    ],
)
def test_an_alerting_variable_that_is_not_json_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.delenv("TXMON_ALERTING_CONFIG", raising=False)
    monkeypatch.setenv(variable, value)
    with pytest.raises(AlertingConfigError, match=f"environment variable {variable} cannot be parsed"):
        load_alerting_config()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(), st.binary()))
def test_any_settings_file_loads_or_names_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | bytes
) -> None:
    path = tmp_path / "txmon.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    monkeypatch.setenv("TXMON_CONFIG", str(path))
    loads_or_names_the_problem(load_settings, ConfigError)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(), st.binary()))
def test_any_alerting_file_loads_or_names_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | bytes
) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    monkeypatch.setenv("TXMON_ALERTING_CONFIG", str(path))
    loads_or_names_the_problem(load_alerting_config, AlertingConfigError)


def test_a_secrets_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_bytes(b"TXMON_KAFKA_USER=txmon\nTXMON_KAFKA_PASSWORD=caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        credentials.read_file(path)
    assert str(path) in str(err.value) and "not UTF-8" in str(err.value)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_conf_nested_too_deeply_is_refused(text: str) -> None:
    with pytest.raises(AirflowApiError, match="--conf nests too deeply"):
        parse_conf(text)


def test_a_secrets_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.mkdir()
    with pytest.raises(ConfigError, match=f"cannot read secrets file {path}"):
        credentials.read_file(path)


@pytest.mark.parametrize("name", ["dc1'", "dc1': 3, 'x", "", " dc1", "dc\n1"])
def test_a_datacenter_name_that_could_change_the_keyspace_cql_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The datacenter goes into CREATE KEYSPACE's replication map as text (DDL has no bind
    markers): a quote in it would end the string and write CQL of its own."""
    monkeypatch.setenv("TXMON_CASSANDRA__DATACENTER", name)
    with pytest.raises(ConfigError, match=r"cassandra\.datacenter"):
        load_settings()
    monkeypatch.setenv("TXMON_CASSANDRA__DATACENTER", "datacenter1")
    assert load_settings().cassandra.datacenter == "datacenter1"
