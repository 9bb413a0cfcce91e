"""The streaming job's heartbeat: each query's last progress, in a JSON file.

A :class:`HeartbeatListener` registered on the session writes
``<state_dir>/stream/heartbeat.json`` (atomically: temp file + rename) on every query
start, progress, idle tick and termination, and whenever the stream's recovery
(spark_jobs/recovery.keep_running) waits for Kafka or Cassandra or restarts its queries.
The supervisor (``txmon stream --supervise``, the ``stream_supervisor`` DAG) reads it to
tell a live, progressing job from a dead or stalled one, and both from one that waits
out an outage (see :mod:`spark_jobs.supervisor`). Shape::

    {"pid": 123, "written_at": "...Z", "queries": {"<name>": {
        "id": "...", "run_id": "...", "status": "progress|idle|started|terminated",
        "batch_id": 41, "input_rows": 1200, "batch_timestamp": "...Z",
        "last_progress_at": "...Z", "updated_at": "...Z",
        "end_offsets": {"<topic>": {"0": 1234, ...}}, "exception": null}},
     "recovery": {"state": "running|waiting|gave_up", "restarts": 2, "attempt": 3,
        "since": "...Z", "last_error": "...", "next_attempt_at": "...Z", "updated_at": "...Z"}}
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener

__all__ = ["HeartbeatListener", "heartbeat_path", "read_heartbeat", "register", "write_json_atomic"]


def heartbeat_path(state_dir: Path) -> Path:
    return state_dir / "stream" / "heartbeat.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    """The heartbeat, or None if the job never wrote one (or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _offsets(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


class HeartbeatListener(StreamingQueryListener):
    """Writes every query's latest state to the heartbeat file (driver side, cheap:
    one small JSON file per event)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._queries: dict[str, dict[str, Any]] = {}
        self._names: dict[str, str] = {}
        self._recovery: dict[str, Any] = {}

    def _write(self) -> None:
        data: dict[str, Any] = {"pid": os.getpid(), "written_at": _now(), "queries": self._queries}
        if self._recovery:
            data["recovery"] = self._recovery
        write_json_atomic(self.path, data)

    def recovery(self, **fields: Any) -> None:
        """Record the state of the stream's recovery (replacing the previous one); the
        query restarts so far stay counted in ``restarts``."""
        with self._lock:
            self._recovery = {**fields, "updated_at": _now()}
            self._write()

    def _update(self, query_id: str, name: str | None, **fields: Any) -> None:
        with self._lock:
            key = name or self._names.get(query_id) or query_id
            self._names[query_id] = key
            entry = self._queries.setdefault(key, {"id": query_id})
            entry.update(fields, updated_at=_now())
            self._write()

    def onQueryStarted(self, event: Any) -> None:
        self._update(str(event.id), event.name, run_id=str(event.runId), status="started", exception=None)

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        end_offsets: dict[str, Any] = {}
        for source in p.sources:
            offsets = _offsets(source.endOffset)
            if isinstance(offsets, dict):
                end_offsets.update(offsets)
        self._update(
            str(p.id),
            p.name,
            run_id=str(p.runId),
            status="progress",
            batch_id=p.batchId,
            input_rows=p.numInputRows,
            batch_timestamp=p.timestamp,
            last_progress_at=_now(),
            end_offsets=end_offsets or None,
        )

    def onQueryIdle(self, event: Any) -> None:
        self._update(str(event.id), None, run_id=str(event.runId), status="idle")

    def onQueryTerminated(self, event: Any) -> None:
        self._update(str(event.id), None, run_id=str(event.runId), status="terminated", exception=event.exception)


def register(spark: Any, settings: Any) -> HeartbeatListener:
    """Attach a heartbeat listener writing under ``settings.state_path``."""
    listener = HeartbeatListener(heartbeat_path(settings.state_path))
    spark.streams.addListener(listener)
    return listener
