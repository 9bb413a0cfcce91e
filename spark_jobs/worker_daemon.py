"""PySpark's Python worker daemon, with txmon's heavy imports done once before it forks.

Spark runs Python code in workers forked from one daemon process per executor
(``spark.python.daemon.module``, set in spark_jobs/session.py). A worker is reused for
later tasks, but every NEW worker starts with only pyspark imported, and the first task
that scores in it pays for pandas, pyarrow, scikit-learn (unpickling the model bundle),
pydantic, the Cassandra and Kafka clients: 1-5 s of CPU per worker on this machine
(py-spy on the stream's workers: imports were most of the Python time of its first
minute). A micro-batch runs up to six Python steps at once on two cores, so a fresh
stream, or one whose idle workers Spark retired, stalls for many seconds. Importing here,
in the daemon, gives every forked worker those modules already loaded (copy-on-write).

Only imports: no threads, sockets or sessions are created before the fork (the Cassandra
session and Kafka producer are made per worker, in spark_jobs/cassandra_sink.py and
spark_jobs/kafka_sink.py).

Then everything imported is frozen out of the garbage collector (``gc.freeze``). PySpark's
daemon runs a full ``gc.collect()`` in a reused worker after EVERY task, and with these
modules loaded (~185k tracked objects) each collection took 120-270 ms of CPU: ten Python
tasks per micro-batch made it the largest fixed cost of a micro-batch (py-spy dumps of the
stream's workers showed ``gc_collect`` under pyspark/daemon.py). Frozen objects are never
scanned, and the collector no longer writes to their pages, so forked workers also keep
sharing them copy-on-write (the use the Python docs give for ``gc.freeze``). Frozen
objects are still freed by reference counting; only reference cycles among the imported
modules' objects would never be collected, and modules live for the whole process.
"""

from __future__ import annotations

import gc
import importlib

PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.compute",
    "scipy.special",
    "sklearn.ensemble",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "pydantic",
    "cassandra.cluster",
    "cassandra.concurrent",
    "kafka",
    "txmon.models.bundle",
    "txmon.alerting.contract",
    "txmon.ingestion.events",
    "txmon.models.features",
    "txmon.spark_jobs.detection",
    "txmon.spark_jobs.profile_store",
    "txmon.spark_jobs.validation",
    "txmon.spark_jobs.kafka_sink",
)


def preload() -> list[str]:
    """Import what the stream's workers need; returns what could not be imported (a worker
    then imports it itself, as without the daemon)."""
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - never keep Spark from starting its workers
            missing.append(name)
    return missing


def prepare() -> list[str]:
    """:func:`preload`, then freeze every object the daemon holds so far out of the garbage
    collector (see the module docstring); returns what could not be imported."""
    missing = preload()
    import pyspark.daemon  # noqa: F401  (and pyspark.worker, which it imports): frozen too

    gc.collect()  # garbage left by the imports is freed, not frozen
    gc.freeze()
    return missing


if __name__ == "__main__":
    prepare()
    from pyspark.daemon import manager

    manager()
