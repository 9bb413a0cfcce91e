"""Configuration a user can break: the settings and alerting YAML files, their TXMON_*
environment overrides, the secrets file and ``--conf``. Whatever they hold comes back as
the loader's own error, naming the file or variable and the fix, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.verdicts import loads_or_names_the_problem
from txmon.alerting.config import AlertingConfig, load_alerting_config
from txmon.alerting.errors import AlertingConfigError
from txmon.infra import credentials
from txmon.infra.airflow import parse_conf
from txmon.infra.errors import AirflowApiError, ConfigError
from txmon.infra.settings import Settings, load_settings

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


def _leaves(model: Any, loc: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], tuple[Any, ...], Any]]:
    """(key path, the types a value may have, default) of every setting below the sections."""
    for name, info in model.model_fields.items():
        wanted = info.annotation
        if isinstance(wanted, type) and hasattr(wanted, "model_fields"):
            yield from _leaves(wanted, (*loc, name))
        else:
            choices = get_args(wanted) if get_origin(wanted) in (Union, UnionType) else (wanted,)
            yield (*loc, name), choices, info.default


def _nested(loc: tuple[str, ...], value: object) -> dict[str, object]:
    return {loc[0]: _nested(loc[1:], value) if len(loc) > 1 else value}


def _numbers(model: Any) -> list[tuple[str, ...]]:
    return [loc for loc, choices, _ in _leaves(model) if {int, float} & set(choices)]


def _paths(model: Any) -> list[tuple[str, ...]]:
    return [loc for loc, choices, _ in _leaves(model) if Path in choices]


@pytest.fixture
def no_txmon_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test session's TXMON_* overrides outrank the file: without them the file's own
    value is the one validated."""
    for name in [n for n in os.environ if n.upper().startswith("TXMON_")]:
        monkeypatch.delenv(name)


def test_the_settings_have_numbers_and_paths_to_check() -> None:
    assert {("kafka", "port"), ("spark", "trigger_seconds"), ("recovery", "supervise_max_failed_starts")} <= set(
        _numbers(Settings)
    )
    assert {("state_dir",), ("jars_dir",), ("airflow", "landing_mapping"), ("kafka", "ssl_cafile")} <= set(
        _paths(Settings)
    )


@pytest.mark.usefixtures("no_txmon_variables")
@pytest.mark.parametrize("loc", _numbers(Settings), ids=".".join)
def test_a_boolean_for_a_number_in_the_settings_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loc: tuple[str, ...]
) -> None:
    """Lax pydantic would read ``port: true`` as port 1."""
    path = tmp_path / "txmon.yaml"
    monkeypatch.setenv("TXMON_CONFIG", str(path))
    for value in (True, False):
        path.write_text(yaml.safe_dump(_nested(loc, value)))
        with pytest.raises(ConfigError) as err:
            load_settings()
        message = str(err.value)
        assert f"{'.'.join(loc)}: Value error, expected a number, not the boolean {str(value).lower()}" in message
        assert str(path) in message


@pytest.mark.usefixtures("no_txmon_variables")
@pytest.mark.parametrize("loc", _numbers(Settings), ids=".".join)
def test_a_number_as_text_still_loads_from_a_variable_or_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loc: tuple[str, ...]
) -> None:
    """Every TXMON_* variable is text: ``TXMON_KAFKA__PORT=5`` must stay port 5."""
    choices, default = next((choices, default) for where, choices, default in _leaves(Settings) if where == loc)
    text, kind = str(default if default is not None else 1), int if int in choices else float
    path = tmp_path / "txmon.yaml"
    path.write_text(yaml.safe_dump(_nested(loc, text)))
    monkeypatch.setenv("TXMON_CONFIG", str(path))
    assert _value(load_settings(), loc) == kind(text)
    path.write_text("")
    monkeypatch.setenv("TXMON_" + "__".join(loc).upper(), text)
    assert _value(load_settings(), loc) == kind(text)


def _value(settings: object, loc: tuple[str, ...]) -> Any:
    for name in loc:
        settings = getattr(settings, name)
    return settings


@pytest.mark.usefixtures("no_txmon_variables")
@pytest.mark.parametrize("loc", _paths(Settings), ids=".".join)
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_path_in_the_settings_file_or_a_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loc: tuple[str, ...], empty: str
) -> None:
    """``Path('')`` is ``.``: ``state_dir: ''`` would put the state in the project root."""
    path = tmp_path / "txmon.yaml"
    path.write_text(yaml.safe_dump(_nested(loc, empty)))
    monkeypatch.setenv("TXMON_CONFIG", str(path))
    with pytest.raises(ConfigError, match=f"{'.'.join(loc)}: Value error, an empty path") as err:
        load_settings()
    assert str(path) in str(err.value)
    path.write_text("")
    variable = "TXMON_" + "__".join(loc).upper()
    monkeypatch.setenv(variable, empty)
    with pytest.raises(ConfigError, match=f"an empty path.*the environment variable {variable}"):
        load_settings()


@pytest.mark.parametrize("loc", _numbers(AlertingConfig), ids=".".join)
def test_a_boolean_for_a_number_in_the_alerting_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loc: tuple[str, ...]
) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_bytes(ALERTING + yaml.safe_dump(_nested(loc, True)).encode())
    monkeypatch.setenv("TXMON_ALERTING_CONFIG", str(path))
    monkeypatch.delenv("TXMON_ALERTING__" + "__".join(loc).upper(), raising=False)
    with pytest.raises(AlertingConfigError, match=f"{'.'.join(loc)}: expected a number, not the boolean true"):
        load_alerting_config()


def test_two_routes_of_one_name_are_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "alerting.yaml"
    route = b"  - name: desk\n    deliver: [{channel: email, to: fraud_desk}]\n"
    path.write_bytes(ALERTING + b"routes:\n" + route + route.replace(b"desk\n", b"other\n") + route)
    monkeypatch.setenv("TXMON_ALERTING_CONFIG", str(path))
    with pytest.raises(
        AlertingConfigError, match="routes: route name 'desk' appears twice; route names must be unique"
    ):
        load_alerting_config()
    path.write_bytes(ALERTING + b"routes:\n" + route + route.replace(b"desk\n", b"other\n"))
    assert [r.name for r in load_alerting_config().routes] == ["desk", "other"]
