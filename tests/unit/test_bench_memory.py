"""bench/memory.stack_processes: each process in exactly one group."""

import os
import subprocess
import sys
import types

import psutil

import txmon.infra.stack as stack_module
from txmon.bench.memory import stack_processes
from txmon.infra.settings import load_settings


def test_services_started_by_this_process_are_not_counted_as_the_spark_jvm(tmp_path, monkeypatch):
    # A child named "java", as Kafka and Cassandra are when the bench started the stack.
    java = tmp_path / "java"
    java.symlink_to(sys.executable)
    service = subprocess.Popen([str(java), "-c", "import time; time.sleep(30)"])
    spark = subprocess.Popen([str(java), "-c", "import time; time.sleep(30)"])
    producer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fake = types.SimpleNamespace(name="cassandra", process=types.SimpleNamespace(pid=lambda: service.pid))
        monkeypatch.setattr(stack_module, "services", lambda settings: [fake])
        groups = stack_processes(settings=load_settings())
        pids = {name: {p.pid for p in procs} for name, procs in groups.items()}
        assert pids["cassandra"] == {service.pid}
        # The test session may have java children of its own (the test stack, a Spark JVM).
        assert spark.pid in pids["Spark driver JVM"]
        assert service.pid not in pids["Spark driver JVM"]
        assert pids["bench + Spark driver (Python)"] == {os.getpid()}
        assert producer.pid in pids["producer (Python)"]
        assert not pids["producer (Python)"] & (pids["Spark driver JVM"] | {service.pid})
        assert psutil.Process(spark.pid).name() == "java"
    finally:
        for child in (service, spark, producer):
            child.kill()
            child.wait()
