"""Run Airflow's components as ``txmon airflow up`` starts them: one parent, four children.

``airflow standalone`` would do the same, but it starts the scheduler and the triggerer
with their task-log servers, which bind every interface (``airflow.utils.serve_logs``
passes ``host=""`` and has no setting for it). Here both run with ``--skip-serve-logs``:
the API server reads task logs from the same ``AIRFLOW_HOME`` on this disk, so nothing
is lost but the log servers, and the only listening socket left is the API server's, on
``[api] host`` (loopback by default).

Run as ``python -m txmon.infra.airflow_components`` with Airflow's environment (see
:func:`txmon.infra.airflow.airflow_env`). The parent migrates the metadata DB, starts the
components in its own process group, prefixes their output with the component's name
(as ``airflow standalone`` does), and on SIGINT or SIGTERM stops them all. If one
component exits by itself, the others are stopped too and the parent exits with its
code: a half-running Airflow would look healthy to nobody and confuse everybody.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

COMPONENTS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
    # The API server generates the simple auth manager's password file on first start.
    "api-server": ("api-server",),
}
STOP_TIMEOUT_S = 30.0


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _say(name: str, line: str) -> None:
    sys.stdout.write(f"{name:13} | {line}\n")
    sys.stdout.flush()


def _pump(name: str, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        _say(name, raw.decode("utf-8", errors="replace").rstrip())


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    _say("components", "migrating the metadata database")
    migrate = subprocess.run(
        [_airflow(), "db", "migrate"],
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    for line in migrate.stdout.decode("utf-8", errors="replace").splitlines()[-5:]:
        _say("db migrate", line)
    if migrate.returncode != 0:
        return migrate.returncode

    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, args in COMPONENTS.items():
        procs[name] = subprocess.Popen(
            [_airflow(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=_pump, args=(name, procs[name]), daemon=True).start()
        _say(
            "components",
            f"started {name} (pid {procs[name].pid}): airflow {' '.join(args)}",
        )

    code = 0
    while not stop.wait(0.5):
        exited = {name: proc.returncode for name, proc in procs.items() if proc.poll() is not None}
        if exited:
            name, code = next(iter(exited.items()))
            _say(
                "components",
                f"{name} exited with code {code}; stopping the other components",
            )
            code = code or 1
            break
    _say("components", "stopping")
    _stop(procs)
    _say("components", "stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
