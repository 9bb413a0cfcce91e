"""Spark wiring shared by every job and test: one place builds the session.

The Kafka connector is not inside pyspark; its jars come from Maven (``txmon infra
fetch``) and are passed with ``spark.jars``, with txmon's own scorer jar (built from
spark_jobs/jvm by infra/jars.py). Workers must run the project's own
interpreter (``PYSPARK_PYTHON``) or pandas/Arrow code fails in them.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from txmon.infra.jars import classpath, scoring_jar
from txmon.infra.settings import PROJECT_ROOT, Settings, load_settings


def spark_conf(settings: Settings, app_name: str, master: str | None = None) -> dict[str, str]:
    """Every Spark setting txmon relies on, as plain key/values (for builder or --conf)."""
    # The Kafka connector, and txmon's JVM code: the model scorer (spark_jobs/jvm_scoring.py)
    # and the local checkpoint manager (checkpoint_location below).
    jars = ",".join(str(j) for j in [*classpath(settings, "spark-kafka"), scoring_jar(settings)[0]])
    sp = settings.spark
    return {
        "spark.app.name": app_name,
        "spark.master": master or sp.master,
        "spark.jars": jars,
        "spark.driver.memory": sp.driver_memory,
        # Used on a cluster (infra/spark_cluster.py workers); ignored by local[N].
        "spark.executor.memory": sp.cluster.executor_memory,
        "spark.sql.shuffle.partitions": str(sp.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        # Local temp data under the state dir, not /tmp of whoever runs the job.
        "spark.local.dir": str(settings.state_path / "spark" / "local"),
        # Timestamps are UTC end to end (JVM, Python workers, Cassandra driver).
        "spark.executorEnv.TZ": "UTC",
        # One OpenMP thread per Python worker: Spark already runs one worker per core, and
        # scikit-learn's OpenMP pools spin-waiting against each other made in-Spark scoring
        # ~5x slower (bench/stream_scoring_bench.py).
        "spark.executorEnv.OMP_NUM_THREADS": "1",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Python workers are forked from a daemon that has already imported pandas,
        # scikit-learn, the drivers...: a new worker does not spend seconds importing them
        # in the middle of a micro-batch (spark_jobs/worker_daemon.py).
        "spark.python.daemon.module": "txmon.spark_jobs.worker_daemon",
        "spark.driver.bindAddress": sp.host,
        "spark.driver.host": sp.host,
    }


def local_ip_env(settings: Settings) -> dict[str, str]:
    """``SPARK_LOCAL_IP`` for a driver JVM: Spark's web UI binds to it, and to every
    interface without it (spark.driver.bindAddress does not apply to the UI)."""
    return {"SPARK_LOCAL_IP": settings.spark.host}


def build_session(
    settings: Settings, app_name: str, master: str | None = None, extra_conf: dict[str, str] | None = None
):
    """A SparkSession with txmon's wiring (creates the JVM on first call); ``extra_conf``
    overrides or adds Spark settings (bench/stream_at_rate.py's ``--conf``)."""
    # pyspark only to build a session: txmon spark-submit builds its command line without it.
    from pyspark.sql import SparkSession

    os.environ["TZ"] = "UTC"  # Python workers inherit it: naive datetimes mean UTC
    time.tzset()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # The JVM pyspark launches inherits it (a JVM started by spark-submit already has it:
    # spark_submit_env).
    os.environ.update(local_ip_env(settings))
    (settings.state_path / "spark" / "local").mkdir(parents=True, exist_ok=True)
    conf = {**spark_conf(settings, app_name, master), **(extra_conf or {})}
    if master is None and "PYSPARK_GATEWAY_PORT" in os.environ:
        # Launched by spark-submit: its --master chose where the job runs (a cluster, say);
        # setting spark.master here would silently pull the job back to local[N].
        conf.pop("spark.master")
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


CHECKPOINT_MANAGER_KEY = "spark.sql.streaming.checkpointFileManagerClass"
LOCAL_CHECKPOINT_MANAGER = "io.txmon.checkpoint.LocalCheckpointFileManager"  # spark_jobs/jvm, in txmon's jar


def checkpoint_location(spark, location: str) -> str:
    """``location``, for a streaming writer's ``checkpointLocation``, once Spark is set to
    write that checkpoint's files the cheap way for where it is.

    Spark's default checkpoint manager goes through Hadoop's FileContext, which on the local
    file system without Hadoop's native library (pyspark ships none) forks a ``chmod`` for
    every file it creates and a ``readlink`` for every rename: ~19 processes per micro-batch
    for the offset and commit logs, which made ``walCommit`` and ``commitOffsets`` ~40-50 ms
    each on the stream's critical path (JFR of the driver JVM, ``jdk.ProcessStart``;
    docs/performance.md). On a local path txmon's manager (spark_jobs/jvm/io/txmon/checkpoint) writes
    the same files with plain Java I/O: Spark's FileSystem-based manager, creating files
    without setting a permission. The logs never overwrite a file, and rename(2) is atomic
    on a local file system, so restarts from the checkpoint are as safe. Other file systems
    (HDFS, object stores) keep Spark's default or whatever manager the job was given."""
    local = urlparse(location).scheme in ("", "file")
    chosen = spark.conf.get(CHECKPOINT_MANAGER_KEY, None)
    if local and chosen is None:
        spark.conf.set(CHECKPOINT_MANAGER_KEY, LOCAL_CHECKPOINT_MANAGER)
    elif not local and chosen == LOCAL_CHECKPOINT_MANAGER:
        spark.conf.unset(CHECKPOINT_MANAGER_KEY)
    return location


def spark_submit_bin() -> str:
    """The spark-submit that ships with the installed pyspark."""
    beside = Path(sys.executable).with_name("spark-submit")
    if beside.exists():
        return str(beside)
    found = shutil.which("spark-submit")
    if found is None:
        # lazy: pyspark (755 ms to import); txmon.infra.smoke_run imports this module without it
        import pyspark

        return str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    return found


def spark_submit_env(base: dict[str, str] | None = None, settings: Settings | None = None) -> dict[str, str]:
    """Environment for a ``spark-submit`` subprocess: its launcher scripts find Spark and
    Python through these, which a shell without the venv activated lacks (the script asks
    whichever ``python3`` is first on PATH where Spark lives); and the address the
    driver's web UI binds to (:func:`local_ip_env`)."""
    # lazy: pyspark (755 ms to import); txmon.infra.smoke_run imports this module without it
    import pyspark

    env = dict(os.environ if base is None else base)
    env.update(local_ip_env(settings or load_settings()))
    env.setdefault("SPARK_HOME", str(Path(pyspark.__file__).parent))
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def spark_submit_argv(
    settings: Settings,
    job: str,
    job_args: list[str],
    app_name: str | None = None,
    master: str | None = None,
) -> list[str]:
    """The full ``spark-submit`` command line for a job file under spark_jobs/."""
    job_path = Path(job)
    if not job_path.is_absolute():
        job_path = PROJECT_ROOT / job_path
    conf = spark_conf(settings, app_name or job_path.stem, master)
    argv = [
        spark_submit_bin(),
        "--master",
        conf.pop("spark.master"),
        "--jars",
        conf.pop("spark.jars"),
        "--driver-memory",
        conf.pop("spark.driver.memory"),
    ]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, str(job_path), *job_args]
