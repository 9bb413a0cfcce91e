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
"""
from __future__ import annotations

import importlib

PRELOAD = (
    "numpy", "pandas", "pyarrow", "pyarrow.compute", "scipy.special",
    "sklearn.ensemble", "sklearn.pipeline", "sklearn.preprocessing",
    "pydantic", "cassandra.cluster", "cassandra.concurrent", "kafka",
    "models.bundle", "alerting.contract", "ingestion.events",
    "spark_jobs.features", "spark_jobs.detection", "spark_jobs.profile_store",
    "spark_jobs.validation", "spark_jobs.kafka_sink",
)


def preload() -> list[str]:
    """Import what the stream's workers need; returns what could not be imported (a worker
    then imports it itself, as without the daemon)."""
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # never keep Spark from starting its workers
            missing.append(name)
    return missing


if __name__ == "__main__":
    preload()
    from pyspark.daemon import manager

    manager()
