"""The filesystem model registry: versions, champion pointer, promote, rollback, errors."""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.unit.verdicts import loads_or_names_the_problem
from txmon.infra.cli import app
from txmon.models import registry as registry_module
from txmon.models.errors import NoChampionError, NothingToRollBackError, RegistryError, UnknownVersionError
from txmon.models.features import FEATURES
from txmon.models.registry import CHAMPION_FILE, METADATA_FILE, MODEL_FILE, Registry
from txmon.models.testing import planted_frame
from txmon.models.training import TrainingConfig, train_frame

NOW = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def trained():
    return train_frame(
        planted_frame(n=1500, seed=2),
        TrainingConfig(seed=2, max_iter=10, iforest_estimators=5),
        data_source="planted n=1500",
    )


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "models")


def test_empty_registry_says_what_to_do(registry):
    assert registry.versions() == [] and registry.champion() is None
    with pytest.raises(NoChampionError, match="run `txmon train` first"):
        registry.load()
    with pytest.raises(NoChampionError, match="txmon train"):
        registry.rollback()


def test_register_load_round_trip(registry, trained):
    version = registry.register(trained.bundle, trained.metadata, now=NOW)
    assert version == "v0001"
    assert sorted(p.name for p in (registry.root / version).iterdir()) == [METADATA_FILE, MODEL_FILE]
    loaded = registry.load(version)
    frame = trained.holdout
    for original, copy in zip(trained.bundle.score(frame), loaded.score(frame)):
        np.testing.assert_array_equal(original, copy)
    assert [p.name for p in registry.root.iterdir()] == ["v0001"]  # no staging left behind


def test_metadata_fields(registry, trained):
    version = registry.register(trained.bundle, trained.metadata, now=NOW)
    raw = json.loads((registry.root / version / METADATA_FILE).read_text())
    assert raw["version"] == "v0001" and raw["created_at"].startswith("2025-02-01T12:00:00")
    assert tuple(raw["features"]) == FEATURES
    for window in ("train_window", "holdout_window"):
        assert set(raw[window]) == {"start", "end"}
    assert raw["train_window"]["end"] < raw["holdout_window"]["start"]
    assert raw["rows"]["train"] + raw["rows"]["holdout"] == 1500
    assert raw["frauds"]["train"] > 0 and raw["frauds"]["holdout"] >= 0
    assert set(raw["libraries"]) == {"python", "sklearn", "numpy", "pandas"}
    assert raw["seed"] == 2 and raw["data_source"] == "planted n=1500"
    assert "model_average_precision" in raw["metrics"] and "average_precision" in raw["metrics"]
    assert registry.versions()[0] == registry.metadata("v0001")


def test_promote_and_rollback(registry, trained):
    v1 = registry.register(trained.bundle, trained.metadata)
    v2 = registry.register(trained.bundle, trained.metadata)
    assert (v1, v2) == ("v0001", "v0002")
    with pytest.raises(NoChampionError, match="txmon models promote"):
        registry.load()
    registry.promote(v1)
    assert registry.champion() == v1
    registry.promote(v2)
    registry.promote(v2)  # already live: no second history entry
    assert [h["version"] for h in registry.champion_history()] == [v1, v2]
    assert isinstance(registry.load(), type(trained.bundle))
    assert registry.rollback() == v1 and registry.champion() == v1
    with pytest.raises(NothingToRollBackError, match="nothing to roll back"):
        registry.rollback()
    assert registry.champion() == v1


def test_unknown_version(registry, trained):
    registry.register(trained.bundle, trained.metadata)
    with pytest.raises(UnknownVersionError, match=r"v0009.*known: v0001.*txmon models list"):
        registry.promote("v0009")
    with pytest.raises(UnknownVersionError):
        registry.load("../etc")


def test_champion_pointer_is_replaced_atomically(registry, trained, monkeypatch):
    v1 = registry.register(trained.bundle, trained.metadata)
    v2 = registry.register(trained.bundle, trained.metadata)
    registry.promote(v1)
    before = (registry.root / CHAMPION_FILE).read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(registry_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        registry.promote(v2)
    monkeypatch.undo()
    assert (registry.root / CHAMPION_FILE).read_bytes() == before  # old pointer intact
    assert registry.champion() == v1
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".")]  # temp file cleaned up


def test_concurrent_registration_gets_the_next_id(registry, trained):
    registry.register(trained.bundle, trained.metadata)
    os.mkdir(registry.root / "v0002")  # another process claimed v0002 and is still writing it
    assert registry.register(trained.bundle, trained.metadata) == "v0003"
    assert [m.version for m in registry.versions()] == ["v0001", "v0003"]  # unfinished v0002 is not listed


def test_failed_registration_leaves_nothing(registry, trained, monkeypatch):
    def broken_dump(*args, **kwargs):
        raise OSError("no space left")

    monkeypatch.setattr(registry_module.joblib, "dump", broken_dump)
    with pytest.raises(OSError, match="no space left"):
        registry.register(trained.bundle, trained.metadata)
    assert list(registry.root.iterdir()) == []


# ------------------------------------------------------------------ damaged files


@pytest.fixture
def promoted(registry, trained):
    """A registry whose v0001 is the champion."""
    registry.promote(registry.register(trained.bundle, trained.metadata, now=NOW))
    return registry


def _writes(content: str | bytes) -> Callable[[Path], object]:
    data = content.encode() if isinstance(content, str) else content
    return lambda path: path.write_bytes(data)


DAMAGED_POINTERS = [
    pytest.param(_writes('{"history": [{}]}'), id="entry without a version"),
    pytest.param(_writes('{"history": [1, 2]}'), id="entries not objects"),
    pytest.param(_writes('{"history": [null]}'), id="null entry"),
    pytest.param(_writes('{"history": "v0001"}'), id="history a string"),
    pytest.param(_writes('{"history": {"version": "v0001"}}'), id="history an object"),
    pytest.param(_writes('{"history": [{"version": 1}]}'), id="version a number"),
    pytest.param(_writes('{"history": [{"version": null}]}'), id="version null"),
    pytest.param(_writes('{"history": [{"version": "../v0001"}]}'), id="version not an id"),
    pytest.param(_writes('{"history": [5, {"version": "v0001"}]}'), id="earlier entry damaged"),
    pytest.param(_writes("[" * 100_000 + "]" * 100_000), id="nested too deep"),
    pytest.param(Path.mkdir, id="a directory"),
]


@pytest.mark.parametrize("damage", DAMAGED_POINTERS)
def test_a_damaged_champion_pointer_is_named_with_the_fix(promoted, damage, monkeypatch):
    pointer = promoted.root / CHAMPION_FILE
    pointer.unlink()
    damage(pointer)
    before = pointer.read_bytes() if pointer.is_file() else None
    uses = {
        "champion": promoted.champion,
        "history": promoted.champion_history,
        "load": promoted.load,
        "promote": lambda: promoted.promote("v0001"),
        "rollback": promoted.rollback,
    }
    for use, call in uses.items():
        with pytest.raises(RegistryError) as err:
            call()
        message = str(err.value)
        assert f"{pointer} is damaged" in message and "fix or remove it" in message, (use, message)
    monkeypatch.setenv("TXMON_MODELS_DIR", str(promoted.root))
    listed = CliRunner().invoke(app, ["models", "list"])
    assert listed.exit_code != 0 and isinstance(listed.exception, RegistryError)
    assert f"{pointer} is damaged" in str(listed.exception)
    assert (pointer.read_bytes() if pointer.is_file() else None) == before  # left for the operator to fix


def _flip(data: bytes, at: int = 50) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        pytest.param(lambda good: b"hello world", "UnpicklingError", id="not a pickle"),
        pytest.param(lambda good: good[:100], "UnpicklingError", id="truncated"),
        pytest.param(_flip, "decompressing", id="a flipped byte"),
        pytest.param(lambda good: b"cnosuchmodule\nThing\n.", "No module named 'nosuchmodule'", id="unknown class"),
        pytest.param(lambda good: b'{"history": []}', "KeyError", id="json text"),
        pytest.param(lambda good: pickle.dumps(5), "does not hold a ModelBundle", id="another object"),
    ],
)
def test_a_damaged_model_file_is_named(promoted, damage, problem):
    path = promoted.root / "v0001" / MODEL_FILE
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RegistryError) as err:
        promoted.load()
    message = str(err.value)
    assert str(path) in message and problem in message and "retrain with `txmon train`" in message


DAMAGED_VERDICTS = [
    pytest.param("[1]", "JSON list, not an object", id="a list"),
    pytest.param("{}", "'promote' is missing or of the wrong type", id="empty"),
    pytest.param(
        '{"promote": "yes", "reason": "r"}', "'promote' is missing or of the wrong type", id="promote a string"
    ),
    pytest.param('{"promote": true, "reason": ["r"]}', "'reason' is missing or of the wrong type", id="reason a list"),
    pytest.param("[" * 100_000 + "]" * 100_000, "cannot read", id="nested too deep"),
    pytest.param('{"promote": tr', "cannot read", id="truncated"),
]


@pytest.mark.parametrize(("content", "problem"), DAMAGED_VERDICTS)
def test_models_list_shows_a_damaged_verdict_and_every_version(registry, trained, monkeypatch, content, problem):
    v1 = registry.register(trained.bundle, trained.metadata, now=NOW)
    v2 = registry.register(trained.bundle, trained.metadata, now=NOW)
    registry.promote(v1)
    damaged = registry.root / v1 / "retraining.json"
    damaged.write_text(content, encoding="utf-8")
    registry.annotate(v2, "retraining", {"promote": False, "reason": "worse by 0.1", "champion_version": v1})
    monkeypatch.setenv("TXMON_MODELS_DIR", str(registry.root))
    listed = CliRunner().invoke(app, ["models", "list"])
    assert listed.exit_code == 0, (listed.output, listed.exception)
    lines = listed.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"* {v1}"))
    assert "retraining annotation damaged" in lines[at + 1] and str(damaged) in lines[at + 1]
    assert problem in lines[at + 1] and "delete it" in lines[at + 1]
    assert lines[at + 2].startswith(f"  {v2}")
    assert f"challenger vs {v1}: kept out (worse by 0.1)" in lines[at + 3]
    assert lines[-1] == f"champion: {v1}"


@pytest.fixture(scope="module")
def one_version(trained, tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("models"))
    registry.register(trained.bundle, trained.metadata, now=NOW)
    return registry


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_ENTRY = st.fixed_dictionaries({"version": st.sampled_from(["v0001", "v0002", "v1", "", "v0001\n"]) | _JSON})
POINTERS = st.one_of(
    _JSON.map(json.dumps),
    st.lists(_ENTRY | _JSON, max_size=3).map(lambda history: json.dumps({"history": history})),
    st.binary(max_size=64),
)


@settings(max_examples=200, deadline=None)
@given(POINTERS)
def test_any_champion_pointer_is_read_or_named_as_damaged(one_version, content):
    pointer = one_version.root / CHAMPION_FILE
    pointer.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    # in a list: None is a champion() answer (nothing promoted), not the helper's "refused"
    live = loads_or_names_the_problem(lambda: [one_version.champion()], RegistryError)
    assert live is None or live[0] is None or re.fullmatch(r"v\d{4,}", live[0])
    versions = loads_or_names_the_problem(one_version.versions, RegistryError)
    assert versions is not None and [m.version for m in versions] == ["v0001"]
