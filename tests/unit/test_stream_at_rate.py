"""bench/stream_at_rate.py: argument handling and the CPU arithmetic (the run itself needs
the bench stack; it is exercised by running it, see its docstring)."""

import pytest

from txmon.bench.cpu_split import cpu_per_transaction
from txmon.bench.stream_at_rate import main, parse_conf


def test_conf_pairs_become_spark_settings():
    assert parse_conf(["spark.sql.adaptive.enabled=false", "x.y=a=b"]) == {
        "spark.sql.adaptive.enabled": "false",
        "x.y": "a=b",
    }


@pytest.mark.parametrize("bad", ["spark.sql.adaptive.enabled", "=false"])
def test_a_conf_without_key_and_value_is_refused_with_the_form_to_use(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--conf", bad])
    assert exc.value.code == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_a_rate_of_zero_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--rate", "0"])
    assert "--rate and --seconds must be > 0" in capsys.readouterr().err


def test_cpu_per_transaction_matches_processes_by_pid():
    before = {"kafka": {1: 10.0}, "spark driver JVM": {2: 20.0}, "python workers": {3: 5.0, 4: 7.0}}
    # worker 4 ended during the phase (lost); worker 5 started during it (counts whole)
    after = {"kafka": {1: 10.5}, "spark driver JVM": {2: 22.0}, "python workers": {3: 5.5, 5: 1.0}}
    r = cpu_per_transaction(before, after, 500)
    assert r["kafka"] == {"cpu_s": 0.5, "ms_per_tx": 1.0}
    assert r["python workers"] == {"cpu_s": 1.5, "ms_per_tx": 3.0}
    assert r["all"] == {"cpu_s": 4.0, "ms_per_tx": 8.0}


def test_compile_work_is_reported_per_micro_batch():
    from txmon.bench.spark_profile import compile_delta

    before = {"codegen_compilations": 10, "jit_compile_ms": 500}
    after = {"codegen_compilations": 33, "jit_compile_ms": 1700}
    assert compile_delta(before, after, 10) == {
        "codegen_compilations": 23,
        "codegen_per_batch": 2.3,
        "jit_compile_ms": 1200,
        "jit_ms_per_batch": 120.0,
    }
    # a period without micro-batches reports totals, not a division by zero
    assert compile_delta(before, before, 0)["codegen_per_batch"] == 0.0


def test_the_printed_result_has_latency_and_compile_work():
    from txmon.bench.stream_at_rate import format_result

    r = {
        "label": "new",
        "commit": "abc1234",
        "rate": 1000.0,
        "seconds": 60.0,
        "produced": 60_000,
        "produce_rate": 1000.0,
        "max_lag": 4096,
        "drain_seconds": 1.5,
        "micro_batches": 40,
        "batch_rows_mean": 1500.0,
        "batch_seconds_mean": 1.5,
        "duration_ms": {"addBatch": 1400.0},
        "driver_ms": {"plan": 90.0, "run": 1200.0, "drift": 60.0},
        "batch_seconds": {"p50": 1.4, "p95": 2.6, "p99": 3.1, "max": 3.3},
        "loadavg_after": (4.0, 3.0, 2.0),
        "compiles": {
            "codegen_compilations": 0,
            "codegen_per_batch": 0.0,
            "jit_compile_ms": 8000,
            "jit_ms_per_batch": 200.0,
        },
        "latency_s": {
            "landed_s": {"n": 60_000, "p50": 1.1, "p95": 1.9, "p99": 2.4},
            "scored_s": {"n": 60_000, "p50": 2.0, "p95": 2.9, "p99": 3.4},
            "alert_s": {},
        },  # no alerts in the phase: shown as nan, not a KeyError
        "cpu": cpu_per_transaction({"kafka": {1: 1.0}}, {"kafka": {1: 2.0}}, 60_000),
        "peak_pss_mib": {"kafka": 400, "whole stack": 400},
    }
    text = format_result(r)
    assert "0 whole-stage codegen per micro-batch, JIT 200 ms per micro-batch" in text
    assert "1.50 s each (p50 / p95 / max 1.40 / 2.60 / 3.30 s; addBatch 1,400 ms)" in text
    assert "1.10 / 1.90 / 2.40; 2.00 / 2.90 / 3.40; nan / nan / nan" in text
    assert "foreachBatch, ms per micro-batch: plan 90, run 1,200, drift 60" in text


def test_driver_phases_average_only_the_measured_micro_batches():
    from txmon.bench.stream_at_rate import driver_phases

    timings = [
        {"batch_id": 7, "plan_s": 0.5, "run_s": 5.0, "drift_s": 0.5},  # warm-up: not measured
        {"batch_id": 8, "plan_s": 0.1, "run_s": 1.0, "drift_s": 0.02},
        {"batch_id": 9, "plan_s": 0.3, "run_s": 2.0, "drift_s": 0.04},
    ]
    assert driver_phases(timings, {8, 9}) == {"plan": 200.0, "run": 1500.0, "drift": 30.0}
    # no timings (ingest-only stream, or none in the phase): zeros, not a division by zero
    assert driver_phases(timings, {42}) == {"plan": 0.0, "run": 0.0, "drift": 0.0}
