"""Feature profiles in the real Cassandra: a replayed micro-batch starts from the same profiles."""

from __future__ import annotations

import uuid

from txmon.spark_jobs.cassandra_sink import CassandraTarget
from txmon.spark_jobs.profile_store import CassandraProfileStore


def test_a_replayed_batch_starts_from_the_profiles_before_it(services):
    target = CassandraTarget.from_settings(services)
    kind = "payer"
    fresh, kept = f"acct-{uuid.uuid4().hex[:8]}", f"acct-{uuid.uuid4().hex[:8]}"

    first = CassandraProfileStore(target, "q:1")
    assert first.load(kind, [fresh, kept]) == {}
    first.save(kind, {fresh: '{"n": 1}', kept: '{"n": 10}'})

    second = CassandraProfileStore(target, "q:2")
    assert second.load(kind, [fresh, kept]) == {fresh: '{"n": 1}', kept: '{"n": 10}'}
    second.save(kind, {fresh: '{"n": 2}'})  # batch 2 touched only `fresh`, then failed

    replay = CassandraProfileStore(target, "q:2")  # Spark replays batch 2 with the same input
    # `fresh` was written by this very batch: start again from what it held before (prev_state);
    # `kept` was not: its state is current.
    assert replay.load(kind, [fresh, kept]) == {fresh: '{"n": 1}', kept: '{"n": 10}'}
    replay.save(kind, {fresh: '{"n": 2}'})

    third = CassandraProfileStore(target, "q:3")
    assert third.load(kind, [fresh, kept, "never-seen"]) == {fresh: '{"n": 2}', kept: '{"n": 10}'}


def test_a_replay_of_a_first_batch_starts_empty(services):
    target = CassandraTarget.from_settings(services)
    key = f"acct-{uuid.uuid4().hex[:8]}"
    CassandraProfileStore(target, "q:7").save("payee", {key: '{"n": 1}'})
    assert CassandraProfileStore(target, "q:7").load("payee", [key]) == {}
    assert CassandraProfileStore(target, "q:8").load("payee", [key]) == {key: '{"n": 1}'}
