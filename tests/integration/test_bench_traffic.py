"""The bench's producer runs in a process of its own and keeps one timeline across phases."""

from __future__ import annotations

import json

import psutil

from tests.integration.test_ingestion import _consume
from txmon.bench.memory import stack_processes
from txmon.bench.pipeline_bench import BenchTraffic


def test_bench_traffic_produces_from_its_own_process_and_continues_one_timeline(services, unique_name):
    from txmon.infra.services.kafka import ensure_topics

    names = {"topic": unique_name("bench_tx"), "labels_topic": unique_name("bench_labels")}
    ensure_topics(services.kafka.bootstrap, list(names.values()), services.kafka.partitions)
    traffic = BenchTraffic(services, names, seed=5, planned_events=2_000)
    try:
        assert traffic.pid != psutil.Process().pid
        assert traffic.pid in {p.pid for p in stack_processes(services)["producer (Python)"]}
        first = traffic.produce(200.0, 1.0)
        second, ids = traffic.produce(200.0, 1.0, collect_ids=True)
    finally:
        traffic.close()
    assert not psutil.pid_exists(traffic.pid) or psutil.Process(traffic.pid).status() == psutil.STATUS_ZOMBIE
    assert first.sent > 0 and second.sent == len(ids) > 0
    assert first.failed == second.failed == 0
    events = [json.loads(r.value) for r in _consume(services, names["topic"])]
    assert len(events) == first.sent + second.sent
    # The second phase continues the first's population and clock: no id twice, the ids it
    # reports are the events it sent, and its events come after the first phase's.
    produced = [e["txn_id"] for e in events]
    assert len(set(produced)) == len(produced)
    assert set(ids) <= set(produced)
    first_phase = [e for e in events if e["txn_id"] not in set(ids)]
    assert max(e["event_time"] for e in first_phase) <= min(e["event_time"] for e in events if e["txn_id"] in set(ids))
