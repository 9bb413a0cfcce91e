"""The bench report's rows: CPU per transaction of the latency phase, and old results."""

from txmon.bench.report import markdown, rows


def _result(latency_extra: dict) -> dict:
    pct = {"n": 10, "p50": 1.0, "p95": 2.0, "p99": 2.5, "max": 3.0}
    return {
        "started": "2026-11-24T00:00:00+00:00",
        "mode": {},
        "steps": [],
        "detect_backlog_duration_ms": {},
        "machine": {"cpus": 2, "memory_gib": 23.5, "commit": "abc1234"},
        "loadavg": {"start": (0.1, 0.2, 0.3), "end": (1.0, 2.0, 3.0)},
        "baselines": [],
        "scoring": {},
        "sustained_tx_s": 2500,
        "latency": {
            "rate": 1250,
            "transactions": 50_000,
            "landed_s": pct,
            "scored_s": pct,
            "alert_s": pct,
            **latency_extra,
        },
        "memory_peak_mb": {},
        "memory_total_peak_mb": 5000,
        "ratios": {},
    }


def test_the_latency_phase_cpu_is_reported_per_process_group_with_the_rate_it_allows():
    cpu = {
        "cassandra": {"cpu_s": 27.0, "ms_per_tx": 0.54},
        "Spark driver JVM": {"cpu_s": 30.0, "ms_per_tx": 0.6},
        "all": {"cpu_s": 87.5, "ms_per_tx": 1.75},
    }
    table = dict(rows(_result({"cpu": cpu})))
    assert table["CPU per transaction at 1,250 tx/s: cassandra"] == "0.540 ms (27.0 s)"
    assert table["CPU per transaction at 1,250 tx/s: Spark driver JVM"] == "0.600 ms (30.0 s)"
    # 2 cores / 1.75 ms per transaction
    assert table["CPU per transaction at 1,250 tx/s: all processes"].endswith(
        "at most 1,143 tx/s at this micro-batch size"
    )
    assert "| CPU per transaction at 1,250 tx/s: cassandra | 0.540 ms (27.0 s) |" in markdown(_result({"cpu": cpu}))


def test_results_recorded_before_the_cpu_was_measured_still_render():
    table = dict(rows(_result({})))
    assert not [k for k in table if k.startswith("CPU per transaction")]
    assert table["pipeline: highest sustained rate"] == "2,500 tx/s"
