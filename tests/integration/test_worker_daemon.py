"""Spark's Python workers come from spark_jobs/worker_daemon.py: modules preloaded and
frozen out of the garbage collector (pyspark runs gc.collect() after every task)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _worker_gc_state(_):
    import gc
    import sys

    import sklearn.ensemble

    new = [object()]  # made after the fork
    tracked = {id(o) for o in gc.get_objects()}
    yield {
        "frozen": gc.get_freeze_count(),
        "sklearn_preloaded": "sklearn.ensemble" in sys.modules,
        # a class defined by a preloaded module: frozen, so no collection scans it
        "preloaded_class_tracked": id(sklearn.ensemble.IsolationForest) in tracked,
        # objects made after the fork are collected as usual
        "new_object_tracked": id(new) in tracked,
        "gc_enabled": gc.isenabled(),
    }


def test_workers_start_with_preloaded_modules_frozen_out_of_gc(spark):
    rdd = spark.sparkContext.parallelize(range(4), 2)
    states = rdd.mapPartitions(_worker_gc_state).collect()
    assert len(states) == 2
    for state in states:
        assert state["sklearn_preloaded"]
        assert state["frozen"] > 50_000, state  # the preloaded libraries' objects
        assert not state["preloaded_class_tracked"]
        assert state["new_object_tracked"]
        assert state["gc_enabled"]
