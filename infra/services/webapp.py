"""txmon's web application (scoring API + fraud-desk console, one ASGI app) as a
background service beside Kafka and Cassandra, for `txmon demo`.

It is `txmon api` on loopback, started detached like the project's other non-JVM
processes (:class:`~txmon.infra.airflow.DetachedCommand`: pid file under
``<state_dir>/run``, ownership proven by an environment marker, output to
``<state_dir>/logs/webapp.out``). Where it listens is recorded beside the pid file
(``run/webapp.json``), so `txmon infra status` and `txmon infra down`, run later from any
shell, find the instance that runs rather than the one today's settings would start.
It is not part of `txmon infra up`: status and down include it only while that record
exists.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

from txmon.infra.airflow import DetachedCommand
from txmon.infra.process import ensure_port_free
from txmon.infra.services.base import Service
from txmon.infra.settings import PROJECT_ROOT, Settings

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 180.0
"""Start-up imports FastAPI, scikit-learn and the champion model: seconds on an idle
machine, much longer on two cores busy with Spark."""


class WebAppService(Service):
    """`txmon api --host 127.0.0.1 --port PORT` as a tracked background process."""

    name = "webapp"
    port_env_hint = "TXMON_API__PORT"

    def __init__(self, settings: Settings, port: int) -> None:
        super().__init__(settings)
        self.detached = DetachedCommand(self.name, settings.state_path)
        self.process = self.detached
        self.port = port

    @classmethod
    def recorded(cls, settings: Settings) -> WebAppService | None:
        """The instance a previous start recorded for this state dir (running or not), or None."""
        try:
            where = json.loads((settings.state_path / "run" / f"{cls.name}.json").read_text())
            return cls(settings, int(where["port"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    @property
    def address_file(self):
        return self.settings.state_path / "run" / f"{self.name}.json"

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> None:
        self.address_file.parent.mkdir(parents=True, exist_ok=True)
        self.address_file.write_text(json.dumps({"host": self.host, "port": self.port}) + "\n")

    def command(self, java: str) -> list[str]:
        # ``java`` is the base class's launcher argument; this service runs on the
        # project's own interpreter instead.
        del java
        return [sys.executable, "-m", "txmon.infra.cli", "api", "--host", self.host, "--port", str(self.port)]

    def start(self) -> bool:
        """Start unless already running (then: False, and the running one is kept)."""
        if self.process.pid() is not None:
            return False
        ensure_port_free(self.name, self.host, self.port, self.port_env_hint)
        self.prepare()
        # The Kafka and Cassandra credentials `infra up` put into this environment are
        # what the app connects with; the flags above win over TXMON_API__HOST/PORT.
        self.detached.start_with_env(self.command(""), cwd=PROJECT_ROOT, env=dict(os.environ))
        return True

    def probe(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                body = json.loads(response.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"/healthz did not answer ({type(exc).__name__})"
        return None if body.get("status") == "ok" else f"/healthz answered {body!r}"

    def bootstrap(self) -> None:
        """Nothing to create: the API's and console's tables are part of the schema `infra up` applies."""

    def stop(self) -> bool:
        stopped = self.detached.stop(timeout=30)
        self.address_file.unlink(missing_ok=True)
        return stopped

    def purge(self) -> None:
        super().purge()
        self.address_file.unlink(missing_ok=True)


def webapp_service(settings: Settings, port: int) -> WebAppService:
    """The running instance of this state dir if there is one (whatever port it took),
    else a new one on ``port``."""
    recorded = WebAppService.recorded(settings)
    if recorded is not None and recorded.process.pid() is not None:
        return recorded
    return WebAppService(settings, port)
