"""User mistakes get one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from txmon.infra.settings import load_settings


def _txmon(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "txmon.infra.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_every_command():
    result = _txmon("--help")
    assert result.returncode == 0
    for command in ("infra", "smoke", "spark-submit", "airflow"):
        assert command in result.stdout
    infra_help = _txmon("infra", "--help").stdout
    for command in ("fetch", "up", "status", "down"):
        assert command in infra_help


def test_invalid_config_value_is_one_line(tmp_path):
    result = _txmon("infra", "status", TXMON_KAFKA__PORT="not-a-port")
    _assert_one_line_error(result, "kafka.port", "TXMON_")


def test_missing_config_file_is_one_line(tmp_path):
    result = _txmon("infra", "status", TXMON_CONFIG=str(tmp_path / "nope.yaml"))
    _assert_one_line_error(result, "not found", "TXMON_CONFIG")


def test_port_in_use_is_reported_with_the_fix(tmp_path):
    if not load_settings().jars_path.joinpath("kafka").is_dir():
        pytest.fail("jars not fetched: run `make install` (or `txmon infra fetch`) first")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = _txmon("infra", "up", TXMON_STATE_DIR=str(tmp_path), TXMON_KAFKA__PORT=str(port))
    _assert_one_line_error(result, f"127.0.0.1:{port}", "already in use", "TXMON_KAFKA__PORT")


def test_java_missing_is_reported_with_the_fix(tmp_path):
    result = _txmon(
        "infra",
        "up",
        TXMON_STATE_DIR=str(tmp_path),
        PATH=str(tmp_path),
        JAVA_HOME="",
        TXMON_KAFKA__PORT="29092",
        TXMON_KAFKA__CONTROLLER_PORT="29093",
    )
    _assert_one_line_error(result, "java not found", "JAVA_HOME")


def test_missing_jars_are_reported_with_the_fix(tmp_path):
    result = _txmon("spark-submit", "--print", "spark_jobs/smoke.py", TXMON_JARS_DIR=str(tmp_path / "empty"))
    _assert_one_line_error(result, "no spark-kafka jars", "txmon infra fetch")


def test_spark_submit_command_carries_the_wiring():
    result = _txmon("spark-submit", "--print", "spark_jobs/smoke.py", "--topic", "x")
    assert result.returncode == 0, result.stderr
    cmd = result.stdout.strip()
    assert "spark-sql-kafka-0-10_2.13-4.2.0.jar" in cmd
    assert f"spark.pyspark.python={sys.executable}" in cmd
    assert cmd.endswith("spark_jobs/smoke.py --topic x")
