"""Outage drills against the real stack: the stream runs as users run it (``txmon stream``
or ``txmon stream --supervise`` in a subprocess), Kafka or Cassandra or the stream itself
is killed with SIGKILL mid-run, and the stream carries on by itself.

Each drill produces events before and during the outage and proves, from Cassandra:
every event produced landed in ``transactions`` and was scored in ``scored_transactions``,
and none was counted twice (each account's 1-minute windows add up to exactly its events:
a micro-batch applied twice would count its events twice).

The outage lasts TXMON_TEST_OUTAGE_S seconds (default 60, as in the drill that found the
stream dying the same second); the stream's recovery backoff is capped lower than its
default (30 s) only so a drill does not spend half a minute asleep after the service is back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from txmon.infra.cassandra_schema import connect
from txmon.infra.kafka_client import client_config
from txmon.infra.process import wait_until
from txmon.infra.readback import count_landed
from txmon.infra.services.cassandra import CassandraService
from txmon.infra.services.kafka import KafkaService, ensure_topics
from txmon.ingestion.events import kafka_key, to_json
from txmon.ingestion.producer import clamp_future
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.spark_jobs.checkpoint_lock import CheckpointLock
from txmon.spark_jobs.heartbeat import heartbeat_path, read_heartbeat
from txmon.spark_jobs.supervisor import restarts, stream_process

OUTAGE_S = float(os.environ.get("TXMON_TEST_OUTAGE_S", "60"))
EVENTS = 3000  # half before the outage, half during it (or after a kill)
CATCH_UP_S = 300  # after the service is back: recover, replay, score everything
TXMON = str(Path(sys.executable).with_name("txmon"))


@pytest.fixture
def stream_topic(services, unique_name):
    name = unique_name("out")
    ensure_topics(services.kafka.bootstrap, [name, f"{name}_dlq"], services.kafka.partitions)
    return name


@pytest.fixture
def stream_env(services, tmp_path):
    """The environment a user's shell would have, plus: small micro-batches (so the outage
    lands mid-run), a recovery cap of 5 s, a supervisor that looks every 2 s, and a Spark UI
    port of the drills' own (SPARK_CONF_DIR is read by every spark-submit, including the one
    pyspark starts)."""
    conf = tmp_path / "spark-conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text("spark.ui.port 25040\n")
    heartbeat_path(services.state_path).unlink(missing_ok=True)
    return {
        **os.environ,
        "SPARK_CONF_DIR": str(conf),
        "TXMON_SPARK__MAX_OFFSETS_PER_TRIGGER": "400",
        "TXMON_RECOVERY__RESTART_MAX_S": "5",
        "TXMON_RECOVERY__SUPERVISE_POLL_S": "2",
        "TXMON_RECOVERY__SUPERVISE_RESTART_INITIAL_S": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def _kill(service) -> None:
    """SIGKILL a service's process: an abrupt outage."""
    pid = service.process.pid()
    assert pid is not None, "the service is not running"
    os.kill(pid, signal.SIGKILL)


def _holder_pid(ckpt: Path) -> int:
    """The pid of the process holding the checkpoint (the stream's driver)."""
    holder = CheckpointLock(str(ckpt)).holder()
    assert holder is not None, "nobody holds the checkpoint"
    return holder["pid"]


def _events(topic: str, n: int = EVENTS):
    sim = simulator_for(
        SimulateOptions(seed=zlib.crc32(topic.encode()), count=n, rate=None, n_customers=300, progress=False)
    )
    return [item.event for item in sim.generate(n)]


def _produce(settings, topic: str, events) -> None:
    """Every event acknowledged by the broker (acks=all), keyed and encoded as txmon's
    producer does."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        acks="all",
        linger_ms=20,
        max_in_flight_requests_per_connection=1,
        client_id="txmon-drill",
        **client_config(settings),
    )
    now = datetime.now(UTC)
    futures = [
        producer.send(topic, key=kafka_key(event), value=to_json(clamp_future(event, now)[0])) for event in events
    ]
    producer.flush(timeout=120)
    assert all(f.get(timeout=60) for f in futures)
    producer.close()


@contextmanager
def _cassandra(settings):
    """A fresh driver connection: one opened before an outage may take minutes to notice
    the node is back (the driver's default reconnection schedule)."""
    cluster, session = connect(settings, settings.cassandra.keyspace)
    try:
        yield session
    finally:
        cluster.shutdown()


def _landed(settings, ids, table="transactions") -> int:
    try:
        with _cassandra(settings) as session:
            return count_landed(session, ids, table)
    except Exception:  # noqa: BLE001 - Cassandra down or still starting: nothing readable yet
        return -1


class Stream:
    """A ``txmon stream ...`` subprocess in its own process group, output to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - the child writes to it until stop() closes it
        self.proc = subprocess.Popen(
            [TXMON, "stream", *args], env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 90) -> int:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # Whatever is left in its group (the Spark JVM of a stream that was not told).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._out.close()
        return self.proc.returncode


def _args(topic: str, ckpt: Path) -> list[str]:
    return ["--topic", topic, "--dlq-topic", f"{topic}_dlq", "--checkpoint-dir", str(ckpt), "--trigger-seconds", "1"]


def _wait_for_some(settings, stream: Stream, ids, what: str) -> int:
    landed = 0

    def some() -> bool:
        nonlocal landed
        landed = _landed(settings, ids)
        return landed > 0

    assert wait_until(some, timeout=240, interval=1, abort=lambda: not stream.alive()), (
        f"nothing landed before {what}:\n{stream.tail()}"
    )
    return landed


def _settled_counts(settings, ids) -> tuple[int, int]:
    """Landed and scored counts, read again when a read fails: the stream still writes
    its last batches' side tables while the test reads, and one read timing out on this
    2-core machine (-1) says nothing about what landed."""
    counts = (-1, -1)
    for _ in range(10):
        counts = (_landed(settings, ids), _landed(settings, ids, "scored_transactions"))
        if -1 not in counts:
            break
        time.sleep(2)
    return counts


def _assert_exactly_once(settings, events, stream: Stream) -> dict:
    """Produced = landed = scored, and no event counted twice. Returns the counts and how
    long the stream took from here to score everything."""
    ids = [e.txn_id for e in events]
    started = time.monotonic()
    done = wait_until(
        lambda: _landed(settings, ids, "scored_transactions") == len(ids),
        timeout=CATCH_UP_S,
        interval=2,
        abort=lambda: not stream.alive(),
    )
    landed, scored = _settled_counts(settings, ids)
    assert done and (landed, scored) == (len(ids), len(ids)), (
        f"produced {len(ids)}, landed {landed}, scored {scored}; stream alive: {stream.alive()}\n{stream.tail()}"
    )
    per_account = Counter(e.payer.account_number for e in events)
    with _cassandra(settings) as session:
        stmt = session.prepare(
            "SELECT txn_count FROM account_aggregates WHERE payer_account = ? AND window_kind = 'tumble_1m'"
        )
        counted = {acct: sum(r.txn_count for r in session.execute(stmt, (acct,))) for acct in per_account}
    assert counted == dict(per_account)
    return {
        "produced": len(ids),
        "landed": landed,
        "scored": scored,
        "accounts_checked": len(counted),
        "caught_up_s": round(time.monotonic() - started),
    }


def _report(drill: str, **figures) -> None:
    """One line per drill with its figures (shown with ``pytest -s``; docs/operations.md)."""
    print(f"\nDRILL {drill}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def _recovery(settings) -> dict:
    return (read_heartbeat(heartbeat_path(settings.state_path)) or {}).get("recovery") or {}


def test_stream_waits_out_a_cassandra_outage_and_loses_or_doubles_nothing(services, stream_topic, stream_env, tmp_path):
    events = _events(stream_topic)
    first, during = events[: EVENTS // 2], events[EVENTS // 2 :]
    _produce(services, stream_topic, first)
    stream = Stream(_args(stream_topic, tmp_path / "ckpt"), stream_env, tmp_path / "stream.log")
    cassandra = CassandraService(services)
    try:
        landed = _wait_for_some(services, stream, [e.txn_id for e in first], "the outage")
        _kill(cassandra)
        killed_at = time.monotonic()
        assert wait_until(cassandra.process.exited, timeout=30)
        _produce(services, stream_topic, during)  # Kafka is up: the stream has work all through the outage
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed_at)))
        assert stream.alive(), f"the stream exited during the Cassandra outage:\n{stream.tail()}"
        assert landed < len(first), f"the kill must happen mid-run, landed={landed}"
        waiting = _recovery(services)
        outage_s = time.monotonic() - killed_at
        assert cassandra.start()
        ready_after_s = cassandra.wait_ready(services.cassandra.ready_timeout_s)

        figures = _assert_exactly_once(services, events, stream)
        assert stream.alive()
        recovery = _recovery(services)
        # The wait was visible while it lasted, and the stream restarted its queries itself.
        assert waiting.get("state") == "waiting" and "cassandra" in waiting.get("last_error", "").lower(), waiting
        assert recovery["state"] == "running" and recovery["restarts"] >= 1, recovery
        _report(
            "cassandra killed",
            outage_s=round(outage_s),
            cassandra_ready_after_s=round(ready_after_s),
            landed_before_kill=landed,
            query_restarts=recovery["restarts"],
            restart_attempts=recovery["attempt"],
            **figures,
        )
    finally:
        stream.stop()
        if cassandra.process.pid() is None:  # leave the session's stack as it was found
            cassandra.start()
            cassandra.wait_ready(services.cassandra.ready_timeout_s)


def test_stream_carries_on_after_kafka_is_killed_and_restarted(services, stream_topic, stream_env, tmp_path):
    events = _events(stream_topic)
    before, after = events[: EVENTS // 2], events[EVENTS // 2 :]
    _produce(services, stream_topic, before)
    stream = Stream(_args(stream_topic, tmp_path / "ckpt"), stream_env, tmp_path / "stream.log")
    kafka = KafkaService(services)
    try:
        landed = _wait_for_some(services, stream, [e.txn_id for e in before], "the outage")
        _kill(kafka)
        killed_at = time.monotonic()
        assert wait_until(kafka.process.exited, timeout=30)
        assert landed < len(before), f"the kill must happen mid-run, landed={landed}"
        time.sleep(OUTAGE_S)
        assert stream.alive(), f"the stream exited during the Kafka outage:\n{stream.tail()}"
        outage_s = time.monotonic() - killed_at
        assert kafka.start()
        ready_after_s = kafka.wait_ready(services.kafka.ready_timeout_s)
        _produce(services, stream_topic, after)

        figures = _assert_exactly_once(services, events, stream)
        assert stream.alive()
        recovery = _recovery(services)
        _report(
            "kafka killed",
            outage_s=round(outage_s),
            kafka_ready_after_s=round(ready_after_s),
            landed_before_kill=landed,
            query_restarts=recovery.get("restarts", 0),
            **figures,
        )
    finally:
        stream.stop()
        if kafka.process.pid() is None:
            kafka.start()
            kafka.wait_ready(services.kafka.ready_timeout_s)


def test_supervisor_restarts_a_stream_killed_with_sigkill(services, stream_topic, stream_env, tmp_path):
    ckpt = tmp_path / "ckpt"
    events = _events(stream_topic)
    before, after = events[: EVENTS // 2], events[EVENTS // 2 :]
    _produce(services, stream_topic, before)
    recorded = len(restarts(services))
    supervisor = Stream(["--supervise", *_args(stream_topic, ckpt)], stream_env, tmp_path / "supervisor.log")
    try:
        _wait_for_some(services, supervisor, [e.txn_id for e in before], "the kill")
        (started,) = restarts(services)[recorded:]
        assert started["triggered_by"] == "txmon stream --supervise" and started["reason"].startswith("dead")
        victim = _holder_pid(ckpt)  # the stream's driver: it holds the checkpoint
        landed = _landed(services, [e.txn_id for e in before])
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        _produce(services, stream_topic, after)

        assert wait_until(
            lambda: len(restarts(services)) > recorded + 1,
            timeout=120,
            interval=1,
            abort=lambda: not supervisor.alive(),
        ), supervisor.tail()
        restarted_after_s = time.monotonic() - killed_at
        restart = restarts(services)[recorded + 1]
        assert restart["reason"].startswith("dead") and restart["pid"] != started["pid"], restart
        figures = _assert_exactly_once(services, events, supervisor)
        _report(
            "stream killed -9 under txmon stream --supervise",
            landed_before_kill=landed,
            restarted_after_s=round(restarted_after_s),
            **figures,
        )
        assert _holder_pid(ckpt) != victim
        assert supervisor.alive() and "started pid" in supervisor.tail()
    finally:
        code = supervisor.stop()
    # Stopping the supervisor stops the stream it runs.
    assert code == 0 and stream_process(services).pid() is None and CheckpointLock(str(ckpt)).holder() is None


def test_a_second_stream_on_the_same_checkpoint_is_refused_and_the_first_keeps_running(
    services, stream_topic, stream_env, tmp_path
):
    ckpt = tmp_path / "ckpt"
    events = _events(stream_topic, 1000)
    _produce(services, stream_topic, events[:500])
    first = Stream(_args(stream_topic, ckpt), stream_env, tmp_path / "first.log")
    try:
        _wait_for_some(services, first, [e.txn_id for e in events[:500]], "the second start")
        second = subprocess.run(
            [TXMON, "stream", *_args(stream_topic, ckpt)],
            env=stream_env,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0] == (
            f"txmon: another stream is already running on checkpoint {ckpt} (pid {first.proc.pid}, since "
            f"{json.loads((ckpt / 'stream.lock').read_text())['started_at']}): stop it first "
            f"(kill {first.proc.pid}), or give this one its own --checkpoint-dir"
        )
        _produce(services, stream_topic, events[500:])
        figures = _assert_exactly_once(services, events, first)
        assert first.alive()
        _report("second stream on the same checkpoint", refused_exit_code=second.returncode, **figures)
    finally:
        first.stop()
