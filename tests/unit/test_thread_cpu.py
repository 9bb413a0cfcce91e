"""bench/thread_cpu.py on this very process: a busy thread shows up under its pool's name."""

import os
import threading
import time

import pytest

from txmon.bench.thread_cpu import cpu_by_group, main, thread_cpu


def test_a_busy_thread_is_charged_to_its_pool():
    stop, started = threading.Event(), threading.Event()
    tids = []

    def spin():
        tids.append(str(threading.get_native_id()))
        started.set()
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin, daemon=True)
    before = thread_cpu(os.getpid())
    worker.start()
    started.wait()
    deadline = time.monotonic() + 60  # however loaded the machine, until the spinner has used 0.2 s
    while time.monotonic() < deadline:
        after = thread_cpu(os.getpid())  # while the thread lives: an ended thread is no longer in /proc
        if after[tids[0]][1] - before.get(tids[0], ("", 0.0))[1] >= 0.2:
            break
        time.sleep(0.05)
    stop.set()
    worker.join()
    spinner_name, spinner_cpu = after[tids[0]]
    assert spinner_cpu - before.get(tids[0], (spinner_name, 0.0))[1] >= 0.2
    groups = cpu_by_group(before, after)
    assert sum(groups.values()) >= spinner_cpu - before.get(tids[0], (spinner_name, 0.0))[1]


def test_a_missing_process_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["999999999", "1"])
    assert exc.value.code == 2
    assert "no process 999999999" in capsys.readouterr().err
