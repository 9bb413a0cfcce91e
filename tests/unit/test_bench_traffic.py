"""The bench's traffic plan: one timeline long enough for the longest possible bench."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from txmon.bench.pipeline_bench import BenchConfig
from txmon.ingestion.simulate import SimulateOptions, simulator_for


@pytest.mark.parametrize("cfg", [BenchConfig.quick(), BenchConfig.full()], ids=["quick", "full"])
def test_planned_events_cover_warmup_every_step_and_latency_at_the_top_rate(cfg):
    ramp = sum(cfg.rates) * cfg.step_seconds
    assert (
        cfg.planned_events()
        >= cfg.rates[0] * cfg.warmup_seconds + ramp + max(cfg.rates) * cfg.latency_fraction * cfg.latency_seconds
    )


def test_the_planned_timeline_starts_far_enough_back_to_end_before_the_wall_clock():
    cfg = BenchConfig.quick()
    planned = cfg.planned_events()
    sim = simulator_for(SimulateOptions(seed=9, count=planned, rate=1000.0, progress=False))
    events = [s.event for s in sim.generate(planned)]
    assert events[-1].event_time < datetime.now(UTC)
    assert events == sorted(events, key=lambda e: e.event_time)  # one timeline, never back in time
