"""What the stream's detection tasks do in a Python worker (spark_jobs/detection.py): tie
their profile stores to the micro-batch they run in, and unpickle the model bundle once."""

from __future__ import annotations

import pytest

from txmon.spark_jobs import detection
from txmon.spark_jobs.cassandra_sink import CassandraTarget
from txmon.spark_jobs.detection import BATCH_ID_PROPERTY, cassandra_profiles

TARGET = CassandraTarget("127.0.0.1", 1, "ks")


class _Context:
    def __init__(self, properties):
        self.properties = properties

    def getLocalProperty(self, key):
        return self.properties.get(key)


def test_a_store_carries_the_query_and_the_micro_batch_of_its_task(monkeypatch):
    import pyspark

    made = []
    monkeypatch.setattr(detection, "CassandraProfileStore", lambda target, token: made.append((target, token)))
    make = cassandra_profiles(TARGET, "/ckpt/ingest")
    for batch_id in ("7", "8"):
        monkeypatch.setattr(
            pyspark.TaskContext, "get", classmethod(lambda cls, b=batch_id: _Context({BATCH_ID_PROPERTY: b}))
        )
        make()
    assert made == [(TARGET, "/ckpt/ingest#7"), (TARGET, "/ckpt/ingest#8")]


def test_outside_a_streaming_task_the_store_refuses_and_says_what_to_use(monkeypatch):
    import pyspark

    make = cassandra_profiles(TARGET, "/ckpt/ingest")
    with pytest.raises(RuntimeError, match="MemoryProfileStore"):
        make()  # no task at all
    monkeypatch.setattr(pyspark.TaskContext, "get", classmethod(lambda cls: _Context({})))
    with pytest.raises(RuntimeError, match=BATCH_ID_PROPERTY):
        make()  # a task of a batch job


class _Broadcast:
    """A worker's view of a broadcast: every ``value`` read unpickles it again."""

    def __init__(self, value):
        self._value, self.reads = value, 0

    @property
    def value(self):
        self.reads += 1
        return dict(self._value)  # a new object, as unpickling gives


def test_a_worker_unpickles_each_broadcast_bundle_once_and_a_new_one_replaces_it(monkeypatch):
    monkeypatch.setattr(detection, "_bundle_in_worker", None)
    first, second = _Broadcast({"model": "v0001"}), _Broadcast({"model": "v0001 of another registry"})
    kept = detection._worker_bundle(first, "v0001-a")
    assert all(detection._worker_bundle(first, "v0001-a") is kept for _ in range(3))
    assert first.reads == 1
    assert detection._worker_bundle(second, "v0001-b") == {"model": "v0001 of another registry"}
    assert second.reads == 1
    assert detection._worker_bundle(None, None) is None  # no model yet
