"""The filesystem model registry: versions, champion pointer, promote, rollback, errors."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import numpy as np
import pytest

from txmon.models import registry as registry_module
from txmon.models.errors import NoChampionError, NothingToRollBackError, UnknownVersionError
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
