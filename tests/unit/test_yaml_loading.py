"""The one YAML loader every config file goes through (infra/yaml_loading.py): it reads
what PyYAML's safe loader reads, except a mapping that names a key twice, which it refuses
with the key and both lines instead of keeping the last one."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txmon.alerting.config import load_alerting_config
from txmon.alerting.errors import AlertingConfigError
from txmon.infra.errors import ConfigError, YamlError
from txmon.infra.settings import (
    DEFAULT_ALERTING_CONFIG,
    DEFAULT_CONFIG,
    DEFAULT_RULES,
    PROJECT_ROOT,
    REPLAY_MAPPINGS,
    load_settings,
)
from txmon.infra.yaml_loading import load_yaml
from txmon.ingestion.replay import ReplayMappingError, load_mapping
from txmon.models.rules import RulesError, load_rules

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), NAMES)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=25,
)
TOP = st.dictionaries(NAMES, DATA, min_size=1, max_size=5)


def _mappings(node: yaml.Node) -> list[yaml.MappingNode]:
    """Every non-empty mapping node in the tree, outermost first."""
    found: list[yaml.MappingNode] = []
    if isinstance(node, yaml.MappingNode):
        found += [node] if node.value else []
        for key, value in node.value:
            found += _mappings(key) + _mappings(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _mappings(item)
    return found


def _twice(node: yaml.MappingNode) -> tuple[int, int] | None:
    """1-based lines of the first scalar key this mapping holds twice, as composed."""
    first: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode):
            if (key.tag, key.value) in first:
                return first[key.tag, key.value], key.start_mark.line + 1
            first[key.tag, key.value] = key.start_mark.line + 1
    return None


@settings(max_examples=300, deadline=None)
@given(TOP, st.booleans())
def test_a_mapping_without_a_repeated_key_loads_as_safe_load_reads_it(data: dict[str, Any], flow: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    assert load_yaml(text) == yaml.safe_load(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_loads_as_safe_load_reads_it_or_is_a_yaml_error(text: str) -> None:
    """Nothing but YamlError comes out, and whatever loads is what PyYAML would give."""
    try:
        data, problem = load_yaml(text), None
    except YamlError as exc:
        data, problem = None, str(exc)
    if problem is None:
        assert data == yaml.safe_load(text) or data != data  # NaN is not equal to itself
    else:
        assert problem


@settings(max_examples=300, deadline=None)
@given(TOP, st.booleans(), st.data())
def test_a_key_given_twice_at_any_depth_is_refused_naming_it_and_both_lines(
    data: dict[str, Any], flow: bool, draw: st.DataObject
) -> None:
    root = yaml.compose(yaml.safe_dump(data, default_flow_style=flow))
    mapping = draw.draw(st.sampled_from(_mappings(root)))
    where = draw.draw(st.integers(min_value=0, max_value=len(mapping.value) - 1))
    key = mapping.value[where][0]
    after = draw.draw(st.integers(min_value=where + 1, max_value=len(mapping.value)))
    # A fresh node: the same one twice would be written as an anchor and an alias.
    mapping.value.insert(after, (copy.copy(key), yaml.ScalarNode("tag:yaml.org,2002:str", "again")))
    text = yaml.serialize(root, Dumper=yaml.SafeDumper)

    # Where the two keys are, found without constructing anything (so not by the loader).
    lines = next(filter(None, map(_twice, _mappings(yaml.compose(text)))))
    with pytest.raises(YamlError) as err:
        load_yaml(text)
    message = str(err.value)
    assert f"the key {yaml.safe_load(yaml.serialize(key))!r} twice in one mapping" in message
    if lines[0] == lines[1]:
        assert f"both on line {lines[0]}" in message
    else:
        assert f"on lines {lines[0]} and {lines[1]}" in message
    assert yaml.safe_load(text) is not None  # PyYAML itself reads it, keeping the last


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("threshold: 5\nname: big\nthreshold: 50\n", "'threshold'", "on lines 1 and 3"),
        ("rules:\n  - id: A\n    score: 1\n    score: 2\n", "'score'", "on lines 3 and 4"),
        ("a: {x: 1, y: 2, x: 3}\n", "'x'", "both on line 1"),
        ("a: 1\n'a': 2\n", "'a'", "on lines 1 and 2"),
        ("1: a\n0x1: b\n", "1", "on lines 1 and 2"),  # one key to the dict they go into
        ("c:\n  <<: {x: 1}\n  <<: {y: 1}\n", "'<<'", "on lines 2 and 3"),  # merge a list instead
        ("!!set {a, a}\n", "'a'", "both on line 1"),
    ],
)
def test_a_repeated_key_is_named_with_its_lines(text: str, key: str, lines: str) -> None:
    with pytest.raises(YamlError, match=re.escape(f"has the key {key} twice in one mapping, {lines}")):
        load_yaml(text)


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {port: 1, host: a}\nkafka:\n  <<: *b\n  port: 2\n",
        "a: &a {x: 1}\nb: &b {x: 2, y: 3}\nc:\n  <<: [*a, *b]\n  z: 4\n",
        "a: &a {x: 1}\nb:\n  - <<: *a\n  - <<: *a\n    x: 5\n",
    ],
)
def test_merge_keys_work_and_a_written_key_overrides_a_merged_one(text: str) -> None:
    assert load_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1]: x\n", "found unhashable key"),
        ("? [a, b]\n: 1\n", "found unhashable key"),
        ("{a: 1}: x\n", "found unhashable key"),
        ("a: {b: [1]}\n? !!set {c}\n: 1\n", "found unhashable key"),
        ("<<: 5\n", "merging"),
        ("a: 1\n---\nb: 2\n", "single document"),
        ("a: !!python/object:os.system {}\n", "python/object"),
        ("a: 2020-13-01\n", "a value YAML cannot read (month must be in 1..12)"),
        ("a: !!int abc\n", "a value YAML cannot read"),
        ("a: " + "[" * 5000 + "]" * 5000, "nests too deeply to be read"),
    ],
)
def test_what_safe_load_cannot_read_is_a_yaml_error_too(text: str, problem: str) -> None:
    with pytest.raises(YamlError, match=re.escape(problem)):
        load_yaml(text)


# ------------------------------------------------------------ each file's own loader


def _settings_loader(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], object]:
    def load(path: Path) -> object:
        monkeypatch.setenv("TXMON_CONFIG", str(path))
        return load_settings()

    return load


def _alerting_loader(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], object]:
    def load(path: Path) -> object:
        monkeypatch.setenv("TXMON_ALERTING_CONFIG", str(path))
        return load_alerting_config()

    return load


# (the shipped file, its loader given the test's monkeypatch, the error it raises)
LOADERS: list[tuple[Path, Callable[[pytest.MonkeyPatch], Callable[[Path], object]], type[Exception]]] = [
    (DEFAULT_CONFIG, _settings_loader, ConfigError),
    (DEFAULT_ALERTING_CONFIG, _alerting_loader, AlertingConfigError),
    (DEFAULT_RULES, lambda _: load_rules, RulesError),
    *((path, lambda _: load_mapping, ReplayMappingError) for path in sorted(REPLAY_MAPPINGS.glob("*.yaml"))),
]
LOADER_IDS = [path.relative_to(PROJECT_ROOT).as_posix() for path, _, _ in LOADERS]


def _shipped_yaml() -> list[Path]:
    """Every YAML file in the repository outside hidden folders (the venv, state dirs)."""
    tops = [p for p in PROJECT_ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(p for top in tops for pattern in ("*.yaml", "*.yml") for p in top.rglob(pattern))


def test_every_yaml_file_the_repo_ships_loads_as_safe_load_reads_it() -> None:
    """No shipped file repeats a key: each reads exactly as PyYAML's safe loader reads it."""
    files = _shipped_yaml()
    assert {path for path, _, _ in LOADERS} <= set(files)
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert load_yaml(text) == yaml.safe_load(text), path


@pytest.mark.parametrize(("shipped", "loader", "error"), LOADERS, ids=LOADER_IDS)
def test_every_shipped_config_file_loads_with_its_loader(
    monkeypatch: pytest.MonkeyPatch, shipped: Path, loader: Any, error: type[Exception]
) -> None:
    assert loader(monkeypatch)(shipped) is not None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data())
@pytest.mark.parametrize(("shipped", "loader", "error"), LOADERS, ids=LOADER_IDS)
def test_a_shipped_file_with_any_key_given_twice_is_refused_by_its_own_loader(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shipped: Path,
    loader: Any,
    error: type[Exception],
    draw: st.DataObject,
) -> None:
    """The operator's slip: a second ``threshold:`` (or any key, at any depth) pasted into
    a file that worked. Its loader refuses it naming the file, the key and both lines."""
    root = yaml.compose(shipped.read_text(encoding="utf-8"))
    mapping = draw.draw(st.sampled_from(_mappings(root)))
    where = draw.draw(st.integers(min_value=0, max_value=len(mapping.value) - 1))
    key = mapping.value[where][0]
    after = draw.draw(st.integers(min_value=where + 1, max_value=len(mapping.value)))
    mapping.value.insert(after, (copy.copy(key), copy.deepcopy(mapping.value[where][1])))
    path = tmp_path / shipped.name
    path.write_text(yaml.serialize(root, Dumper=yaml.SafeDumper), encoding="utf-8")

    lines = next(filter(None, map(_twice, _mappings(yaml.compose(path.read_text(encoding="utf-8"))))))
    with pytest.raises(error) as err:
        loader(monkeypatch)(path)
    message = str(err.value)
    assert str(path) in message and f"the key {key.value!r} twice" in message
    assert f"lines {lines[0]} and {lines[1]}" in message or f"both on line {lines[0]}" in message


@pytest.mark.parametrize(
    "content",
    [
        b"[1]: x\n",
        b"{a: 1}: x\n",
        b"kafka: {? [a]: 1}\n",
        b"a: 1\na: 1\n",
        b"a: 2020-13-01\n",
        b"a: !!int abc\n",
        b"a: " + b"[" * 5000 + b"]" * 5000,
        b"a: caf\xe9\n",
    ],
)
@pytest.mark.parametrize(("shipped", "loader", "error"), LOADERS[:4], ids=LOADER_IDS[:4])
def test_a_file_no_loader_can_read_is_each_loaders_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, shipped: Path, loader: Any, error: type[Exception]
) -> None:
    """Keys no dict can hold, scalars PyYAML's constructors choke on, nesting deeper than
    its recursion, bytes that are not UTF-8: the loader's own error naming the file."""
    path = tmp_path / shipped.name
    path.write_bytes(content)
    with pytest.raises(error, match=re.escape(str(path))):
        loader(monkeypatch)(path)
