from __future__ import annotations

import pytest
from pydantic import ValidationError

from txmon.infra.errors import ConfigError
from txmon.infra.settings import PROJECT_ROOT, load_settings


def test_environment_overrides_yaml(monkeypatch):
    monkeypatch.setenv("TXMON_KAFKA__PORT", "29999")
    monkeypatch.setenv("TXMON_SPARK__SHUFFLE_PARTITIONS", "8")
    s = load_settings()
    assert s.kafka.port == 29999 and s.kafka.bootstrap.endswith(":29999")
    assert s.spark.shuffle_partitions == 8
    assert s.cassandra.heap_mb == 1024  # from config/txmon.yaml


def test_unknown_keys_are_rejected(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  prot: 1\n")
    monkeypatch.setenv("TXMON_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"kafka\.prot"):
        load_settings()


def test_relative_state_dir_is_under_the_project(monkeypatch):
    monkeypatch.setenv("TXMON_STATE_DIR", "some/where")
    assert load_settings().state_path == PROJECT_ROOT / "some" / "where"


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.kafka.port = 1  # type: ignore[misc]
