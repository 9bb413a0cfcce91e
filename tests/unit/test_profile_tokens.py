"""The stream's profile stores are tied to the micro-batch their task runs in
(spark_jobs/detection.cassandra_profiles)."""
from __future__ import annotations

import pytest

from spark_jobs.cassandra_sink import CassandraTarget
from spark_jobs.detection import BATCH_ID_PROPERTY, cassandra_profiles

TARGET = CassandraTarget("127.0.0.1", 1, "ks")


class _Context:
    def __init__(self, properties):
        self.properties = properties

    def getLocalProperty(self, key):
        return self.properties.get(key)


def test_a_store_carries_the_query_and_the_micro_batch_of_its_task(monkeypatch):
    import pyspark

    import spark_jobs.profile_store as profile_store

    made = []
    monkeypatch.setattr(profile_store, "CassandraProfileStore", lambda target, token: made.append((target, token)))
    make = cassandra_profiles(TARGET, "/ckpt/ingest")
    for batch_id in ("7", "8"):
        monkeypatch.setattr(pyspark.TaskContext, "get", classmethod(lambda cls, b=batch_id: _Context({BATCH_ID_PROPERTY: b})))
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
