"""The transactions stream against real Kafka, Spark and Cassandra."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import zlib
from collections import Counter
from datetime import UTC, datetime

import pandas as pd
import pytest

from txmon.infra.kafka_client import client_config
from txmon.infra.process import wait_until
from txmon.infra.readback import (
    account_aggregates,
    account_windows,
    count_landed,
    dead_letters_since,
)
from txmon.ingestion.bad_records import bad_records
from txmon.ingestion.events import CONTRACT_REASONS
from txmon.ingestion.producer import TransactionProducer, clamp_future
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.spark_jobs.transactions_stream import StreamOptions, start_all


def _seed(topic: str) -> int:
    return zlib.crc32(topic.encode())


def _produce(settings, topic, n, seed, bad_every=None):
    """Produce n simulated events (+ optionally bad records); returns (events, bad reasons)."""
    sim = simulator_for(SimulateOptions(seed=seed, count=n, rate=None, n_customers=300, progress=False))
    producer = TransactionProducer(settings, topic=topic)
    events, bad = [], Counter[str]()
    reasons = sorted(CONTRACT_REASONS)
    for i, item in enumerate(sim.generate(n)):
        # As the producer's own loop does (produce_events), in case the simulated clock still
        # passes the wall clock: the stream would dead-letter a future timestamp. Before the
        # live clock followed the diurnal rhythm (ingestion.simulator.live_start_time), these
        # tests failed from ~23:30 UTC (05:00 IST) for that reason.
        event, _ = clamp_future(item.event, datetime.now(UTC))
        producer.send_event(event)
        events.append(event)
        if bad_every and i % bad_every == 0:
            reason = reasons[(i // bad_every) % len(reasons)]
            producer.send_raw(b"bad", bad_records(event)[reason])
            bad[reason] += 1
    producer.close()
    assert producer.summary.failed == 0
    return events, bad


def _options(settings, topic, tmp_path, **kw):
    return StreamOptions.from_settings(
        settings, topic=topic, dlq_topic=f"{topic}_dlq", checkpoint_dir=str(tmp_path / "ckpt"), **kw
    )


def _run_available_now(spark, settings, opts):
    queries = start_all(spark, settings, opts)
    for q in queries:
        q.awaitTermination(timeout=300)
        assert q.exception() is None, q.exception()
        assert not q.isActive


@pytest.fixture
def stream_topic(services, unique_name):
    from txmon.infra.services.kafka import ensure_topics

    name = unique_name("tx")
    ensure_topics(services.kafka.bootstrap, [name, f"{name}_dlq"], services.kafka.partitions)
    return name


def test_every_valid_event_lands_once_and_bad_input_is_dead_lettered(
    services, spark, stream_topic, cassandra_session, tmp_path
):
    events, bad = _produce(services, stream_topic, 3000, _seed(stream_topic), bad_every=100)
    assert set(bad) == set(CONTRACT_REASONS)  # every kind of bad input is in the mix

    _run_available_now(spark, services, _options(services, stream_topic, tmp_path, available_now=True))

    assert count_landed(cassandra_session, [e.txn_id for e in events]) == len(events)
    zero = dict.fromkeys(range(services.kafka.partitions), 0)
    assert dead_letters_since(cassandra_session, stream_topic, zero) == bad

    # Each dead letter keeps its raw payload and a readable detail.
    row = cassandra_session.execute(
        "SELECT raw_value, detail FROM dead_letters WHERE topic = %s AND kafka_partition IN (0,1,2,3) LIMIT 1",
        (stream_topic,),
    ).one()
    assert row.raw_value and row.detail

    # ... and is also published on the dead-letter topic with its coordinates.
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        f"{stream_topic}_dlq",
        bootstrap_servers=services.kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        **client_config(services),
    )
    dlq = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert Counter(d["reason"] for d in dlq) == bad
    assert all({"topic", "kafka_partition", "kafka_offset", "raw_value"} <= set(d) for d in dlq)


def test_window_aggregates_match_an_independent_computation(services, spark, stream_topic, cassandra_session, tmp_path):
    events, _ = _produce(services, stream_topic, 2000, _seed(stream_topic))
    _run_available_now(spark, services, _options(services, stream_topic, tmp_path, available_now=True))

    df = pd.DataFrame(
        {
            "acct": [e.payer.account_number for e in events],
            "t": pd.to_datetime([e.event_time for e in events], utc=True),
            "amt": [e.amount_paise for e in events],
            "payee": [e.payee.account_number or e.payee.vpa for e in events],
        }
    )
    df["minute"] = df["t"].dt.floor("1min")
    expected = df.groupby(["acct", "minute"]).agg(
        n=("amt", "size"), total=("amt", "sum"), mx=("amt", "max"), payees=("payee", "nunique")
    )
    stmt = cassandra_session.prepare(
        "SELECT window_start, txn_count, total_paise, max_paise, distinct_payees FROM account_aggregates "
        "WHERE payer_account = ? AND window_kind = 'tumble_1m'"
    )
    accounts = df["acct"].value_counts().index[:25]
    for acct in accounts:
        got = {
            pd.Timestamp(r.window_start, tz="UTC"): (r.txn_count, r.total_paise, r.max_paise, r.distinct_payees)
            for r in cassandra_session.execute(stmt, (acct,))
        }
        want = {m: tuple(int(v) for v in row) for m, row in expected.loc[acct].iterrows()}
        assert got == want, acct

    # Sliding hour windows, derived when read from the stored 5-minute buckets: every
    # window containing an event counts exactly its events, and no window is missing.
    busiest = accounts[0]
    mine = df[df["acct"] == busiest]
    checked = set()
    for r in account_windows(cassandra_session, busiest, "slide_1h"):
        start, end = pd.Timestamp(r.window_start, tz="UTC"), pd.Timestamp(r.window_end, tz="UTC")
        inside = mine[(mine["t"] >= start) & (mine["t"] < end)]
        assert end - start == pd.Timedelta(hours=1)
        assert (r.txn_count, r.total_paise, r.max_paise, r.distinct_payees) == (
            len(inside),
            int(inside["amt"].sum()),
            int(inside["amt"].max()),
            inside["payee"].nunique(),
        )
        checked.add(start)
    five = mine["t"].dt.floor("5min")
    assert checked == {b - k * pd.Timedelta(minutes=5) for b in five for k in range(12)}

    # What the demo prints: each account's last hour, ending with its newest 5-minute bucket.
    end = mine["t"].max().floor("5min") + pd.Timedelta(minutes=5)
    last_hour = mine[mine["t"] >= end - pd.Timedelta(hours=1)]
    latest = account_aggregates(cassandra_session, [busiest, "NO-SUCH-ACCOUNT"], "slide_1h")
    assert [(w.payer_account, pd.Timestamp(w.window_end, tz="UTC"), w.txn_count, w.total_paise) for w in latest] == [
        (busiest, end, len(last_hour), int(last_hour["amt"].sum()))
    ]


def test_later_micro_batches_reuse_the_code_spark_generated_for_the_first(
    services, spark, stream_topic, cassandra_session, tmp_path
):
    """A micro-batch must not generate new code: the plan of every batch compiles to the
    same Java source, so Spark's codegen cache serves it and the JIT keeps what it compiled.
    (current_timestamp() in the plan made every batch compile 2-3 classes: Janino on the
    stream's critical path, then the JIT compiling the new classes again.)"""
    from txmon.bench.spark_profile import compile_counters

    opts = _options(services, stream_topic, tmp_path, available_now=True, max_offsets_per_trigger=400)
    first, bad = _produce(services, stream_topic, 800, _seed(stream_topic), bad_every=200)
    _run_available_now(spark, services, opts)
    before = compile_counters(spark)
    resumed_at = datetime.now(UTC)
    later, later_bad = _produce(services, stream_topic, 800, _seed(stream_topic) + 1, bad_every=200)
    _run_available_now(spark, services, opts)  # the same query resumed: new micro-batches only
    after = compile_counters(spark)

    assert after["codegen_compilations"] == before["codegen_compilations"]
    # Still everything lands, and landed_at (now stamped by the landing task) is when it landed.
    assert count_landed(cassandra_session, [e.txn_id for e in first + later]) == len(first) + len(later)
    zero = dict.fromkeys(range(services.kafka.partitions), 0)
    assert dead_letters_since(cassandra_session, stream_topic, zero) == bad + later_bad
    stmt = cassandra_session.prepare("SELECT landed_at FROM transactions WHERE txn_id IN ?")
    stamps = [
        r.landed_at.replace(tzinfo=UTC) for r in cassandra_session.execute(stmt, ([e.txn_id for e in later[:50]],))
    ]
    assert len(stamps) == 50 and all(resumed_at <= t <= datetime.now(UTC) for t in stamps)


def test_local_checkpoints_are_written_with_plain_java_io_and_other_file_systems_keep_sparks_choice(
    services, spark, stream_topic, cassandra_session, tmp_path
):
    """Spark's default checkpoint manager (Hadoop's FileContext) forks a ``chmod`` or
    ``readlink`` process for each checkpoint file it writes on a local disk (~19 per
    micro-batch, ~90 ms of the stream's critical path). A local checkpoint is written by
    txmon's manager (plain Java I/O), and the stream lands everything and resumes from it;
    HDFS or an object store keeps Spark's default, and a manager the job chose is kept."""
    from txmon.spark_jobs.session import CHECKPOINT_MANAGER_KEY, LOCAL_CHECKPOINT_MANAGER, checkpoint_location

    opts = _options(services, stream_topic, tmp_path, available_now=True, max_offsets_per_trigger=300)
    first, _ = _produce(services, stream_topic, 600, _seed(stream_topic))
    queries = start_all(spark, services, opts)
    for q in queries:
        q.awaitTermination(timeout=300)
        assert q.exception() is None, q.exception()
    managers = {
        (q.name, log): getattr(q._jsq.streamingQuery(), log)().fileManager().getClass().getName()
        for q in queries
        for log in ("offsetLog", "commitLog")
    }
    assert len(managers) == 4 and set(managers.values()) == {LOCAL_CHECKPOINT_MANAGER}, managers
    later, _ = _produce(services, stream_topic, 300, _seed(stream_topic) + 1)
    _run_available_now(spark, services, opts)  # resumed from the checkpoint those managers wrote
    assert count_landed(cassandra_session, [e.txn_id for e in first + later]) == len(first) + len(later)
    commits = sorted(int(p.name) for p in (tmp_path / "ckpt" / "ingest" / "commits").iterdir() if p.name.isdigit())
    assert len(commits) >= 3 and commits == list(range(len(commits)))

    saved = spark.conf.get(CHECKPOINT_MANAGER_KEY, None)
    try:
        location = "hdfs://namenode:8020/txmon/checkpoints/ingest"
        assert checkpoint_location(spark, location) == location
        assert spark.conf.get(CHECKPOINT_MANAGER_KEY, None) is None  # Spark's default for HDFS
        spark.conf.set(CHECKPOINT_MANAGER_KEY, "com.example.ObjectStoreCheckpointManager")
        for location in (str(tmp_path / "ckpt"), "s3a://bucket/checkpoints"):
            checkpoint_location(spark, location)
            assert spark.conf.get(CHECKPOINT_MANAGER_KEY) == "com.example.ObjectStoreCheckpointManager"
    finally:
        if saved is None:
            spark.conf.unset(CHECKPOINT_MANAGER_KEY)
        else:
            spark.conf.set(CHECKPOINT_MANAGER_KEY, saved)


def test_killed_stream_restarts_from_checkpoint_without_loss_or_double_counting(
    services, stream_topic, cassandra_session, tmp_path
):
    """SIGKILL the spark-submit process mid-run, restart it: exactly N rows, aggregates counted once."""
    from txmon.spark_jobs.session import spark_submit_argv

    n = 12_000
    events, bad = _produce(services, stream_topic, n, _seed(stream_topic), bad_every=500)
    ids = [e.txn_id for e in events]
    args = [
        "--topic",
        stream_topic,
        "--dlq-topic",
        f"{stream_topic}_dlq",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--trigger-seconds",
        "1",
    ]
    env = {**os.environ, "TXMON_SPARK__MAX_OFFSETS_PER_TRIGGER": "1500"}
    log = open(tmp_path / "first-run.log", "w")  # noqa: SIM115 - the child writes to it; closed below
    first = subprocess.Popen(
        spark_submit_argv(services, "spark_jobs/transactions_stream.py", args),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        landed = wait_until(lambda: count_landed(cassandra_session, ids), 240, abort=lambda: first.poll() is not None)
        assert first.poll() is None, (tmp_path / "first-run.log").read_text()[-3000:]
        assert 0 < landed < n, f"kill must happen mid-run, landed={landed}"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        log.close()

    second = subprocess.run(
        spark_submit_argv(services, "spark_jobs/transactions_stream.py", [*args, "--available-now"]),
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]

    assert count_landed(cassandra_session, ids) == n
    zero = dict.fromkeys(range(services.kafka.partitions), 0)
    assert dead_letters_since(cassandra_session, stream_topic, zero) == bad
    # The stateful aggregation resumed from its checkpoint: every valid event counted once.
    per_account = Counter(e.payer.account_number for e in events)
    stmt = cassandra_session.prepare(
        "SELECT txn_count FROM account_aggregates WHERE payer_account = ? AND window_kind = 'tumble_1m'"
    )
    for acct, expected in per_account.most_common(40):
        assert sum(r.txn_count for r in cassandra_session.execute(stmt, (acct,))) == expected, acct
