"""`txmon train`, `txmon evaluate`, `txmon models list|promote|rollback`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from txmon.infra.cli import app

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = [
    "--replay",
    str(ROOT / "ingestion/samples/card_transactions_sample.csv"),
    "--mapping",
    str(ROOT / "config/replay/card_transactions.yaml"),
]


def test_models_list_on_an_empty_registry_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "txmon.infra.cli", "models", "list"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "TXMON_MODELS_DIR": str(tmp_path / "models")},
        timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "run `txmon train` first" in lines[0], result.stderr


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("TXMON_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("TXMON_STATE_DIR", str(tmp_path / "state"))
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(app, list(args))
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    return run


def test_train_then_evaluate_on_the_sample_file(cli, tmp_path):
    first = cli("train", *SAMPLE)
    assert "hold-out: 59 rows, 0 fraud" in first.output
    assert "no fraud" in first.output  # said plainly, not a crash
    assert "registered v0001" in first.output and "promoted" in first.output

    second = cli("train", *SAMPLE)  # a champion exists: register only
    assert "registered v0002" in second.output and "champion stays v0001" in second.output

    evaluated = cli("evaluate", *SAMPLE)
    assert "scoring only its hold-out window" in evaluated.output
    assert "v0001 on 59 transactions" in evaluated.output
    report = tmp_path / "state" / "reports" / "v0001"
    assert {p.name for p in report.iterdir()} == {"report.md", "pr_curve.png", "metrics.json"}

    listed = cli("models", "list")
    rows = [line for line in listed.output.splitlines() if "v000" in line and "replay" in line]
    assert rows[0].startswith("* v0001") and rows[1].startswith("  v0002")

    assert "champion: v0002 (was v0001)" in cli("models", "promote", "v0002").output
    assert "champion: v0001 (rolled back from v0002)" in cli("models", "rollback").output
    refused = cli("models", "rollback", ok=False)
    assert refused.exit_code != 0 and "nothing to roll back" in str(refused.exception)


def test_source_options_are_checked(cli):
    result = cli("train", "--replay", "x.csv", ok=False)
    assert "--replay needs --mapping" in str(result.exception)
    result = cli("train", "--simulate", "1000", *SAMPLE, ok=False)
    assert "choose one source" in str(result.exception)


def test_evaluate_without_a_champion_says_what_to_do(cli):
    result = cli("evaluate", *SAMPLE, ok=False)
    assert "run `txmon train` first" in str(result.exception)


def _card_simulated_file(tmp_path: Path) -> Path:
    """A small generated file of the simulated card layout, plus two broken rows (one fraud)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_card_simulated", ROOT / "ingestion/samples/make_card_simulated.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.write(
        tmp_path / "cards.csv",
        customers=60,
        terminals=30,
        days=30,
        seed=5,
        card_compromise_rate=0.01,
        terminal_compromise_rate=0.003,
    )
    with path.open("a", encoding="utf-8") as out:
        out.write("900001,2018-04-20 10:00:00,1,2,-12.5,0,0,1,3\n")  # negative, labelled fraud
        out.write("900002,2018-04-31 10:00:00,1,2,10.1,0,0,0,0\n")  # no 31 April
    return path


def test_train_on_generated_card_data_reports_and_writes_rejects(cli, tmp_path):
    cards = _card_simulated_file(tmp_path)
    rejects = tmp_path / "out" / "rejects.csv"
    result = cli(
        "train",
        "--replay",
        str(cards),
        "--mapping",
        str(ROOT / "config/replay/card_simulated.yaml"),
        "--rejects-out",
        str(rejects),
    )
    assert f"2 rows rejected (1 of them labelled fraud); details in {rejects}" in result.output
    assert "registered v0001" in result.output
    lines = rejects.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "row_number,reason,detail,is_fraud,scenario,raw" and len(lines) == 3
    assert ",non_positive_amount," in lines[1] and ",1,scenario_3," in lines[1]
    assert ",unparsable_value," in lines[2]

    again = cli("train", "--replay", str(cards), "--mapping", str(ROOT / "config/replay/card_simulated.yaml"))
    default = tmp_path / "state" / "rejects" / "cards.csv.card_simulated.rejects.csv"
    assert f"details in {default}" in again.output and default.is_file()


def test_rejects_out_goes_with_replay(cli):
    result = cli("train", "--simulate", "1000", "--rejects-out", "r.csv", ok=False)
    assert "--rejects-out goes with --replay" in str(result.exception)


def test_evaluate_online_records_the_policy_of_the_rules_file_given(cli, tmp_path, monkeypatch):
    """--online judges the stream's own decisions; --rules names the file the stream ran
    with, so the report records that file's policy, not the default's."""
    import json

    import numpy as np
    import yaml

    from txmon.infra.settings import DEFAULT_RULES
    from txmon.models import online
    from txmon.models.risk import decisions
    from txmon.models.rules import load_rules
    from txmon.models.testing import planted_frame

    frame = planted_frame(n=1000, seed=3)
    risk = np.where(frame["is_fraud"], 70, 10) + np.random.default_rng(0).integers(0, 30, len(frame))
    frame = frame.assign(risk_score=risk, decision=decisions(risk, load_rules(DEFAULT_RULES).policy))
    frame = frame.assign(model_version="v0001", fraud_probability=risk / 100, anomaly=0.0, rule_score=0.0)
    # Cassandra's read of scored_transactions joined with labels is what is replaced here.
    monkeypatch.setattr(online, "online_frame", lambda settings, labels_file: frame)
    text = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))
    text["policy"]["review_at"] = 42
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(text), encoding="utf-8")
    out = tmp_path / "online"
    result = cli("evaluate", "--online", "--rules", str(rules), "--report-dir", str(out))
    assert f"policy from {rules}" in result.output
    assert json.loads((out / "metrics.json").read_text())["policy"]["review_at"] == 42
    cli("evaluate", "--online", "--report-dir", str(out))
    assert (
        json.loads((out / "metrics.json").read_text())["policy"]["review_at"]
        == load_rules(DEFAULT_RULES).policy.review_at
    )
