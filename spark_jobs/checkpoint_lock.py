"""One stream per checkpoint: an OS lock on a file in the checkpoint directory.

Two streams on one checkpoint both append to its offset and commit logs and both fold
the same feature profiles: each replays or skips the other's micro-batches, and nothing
tells the operator. The stream takes ``<checkpoint_dir>/stream.lock`` with ``flock``
before any query starts; a second stream fails at once, naming the pid that holds it.

``flock`` belongs to the open file, so the kernel drops the lock when the holder exits
for any reason (kill -9, OOM, a crash): there is never a stale lock to clean up. The
file itself stays (deleting it would let a third process lock a new file while the
second still holds the old one); it records who holds it, for the message only. The
descriptor is not inherited by child processes (Python opens files non-inheritable),
so the Spark JVM the stream starts cannot keep the lock alive after the stream died.

A checkpoint on HDFS or an object store has no local file to lock: there the lock is
skipped (and said so), as those deployments run the stream under a cluster manager
that starts one driver per application.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from txmon.infra.errors import StreamLockedError

LOCK_FILE = "stream.lock"
log = logging.getLogger("txmon.stream")

__all__ = ["LOCK_FILE", "CheckpointLock", "local_checkpoint_dir"]


def local_checkpoint_dir(checkpoint_dir: str) -> Path | None:
    """The local directory of a checkpoint location, or None if it is not on this machine's
    file system.

    >>> local_checkpoint_dir("/data/ckpt"), local_checkpoint_dir("file:///data/ckpt")
    (PosixPath('/data/ckpt'), PosixPath('/data/ckpt'))
    >>> local_checkpoint_dir("s3a://bucket/ckpt") is None
    True
    """
    parsed = urlparse(checkpoint_dir)
    if parsed.scheme == "":
        return Path(checkpoint_dir)
    if parsed.scheme == "file":
        return Path(parsed.path)
    return None


class CheckpointLock:
    """``with CheckpointLock(checkpoint_dir):`` holds the checkpoint for this process."""

    def __init__(self, checkpoint_dir: str) -> None:
        self.checkpoint_dir = checkpoint_dir
        local = local_checkpoint_dir(checkpoint_dir)
        self.path: Path | None = None if local is None else local / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> CheckpointLock:
        """Take the lock or raise :class:`StreamLockedError` at once (never waits)."""
        if self.path is None:
            log.warning(
                "checkpoint %s is not on a local file system: no lock against a second stream on it",
                self.checkpoint_dir,
            )
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise StreamLockedError(self._message(holder)) from None
        except BaseException:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (pid, host, started_at, argv), or None if nobody does."""
        if self.path is None or not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read(fd) or {"pid": None}
            return None
        finally:
            os.close(fd)  # also drops the shared lock taken to look

    def _message(self, holder: dict[str, Any]) -> str:
        pid = holder.get("pid")
        who = f"pid {pid}" if pid else "another process"
        since = f", since {holder['started_at']}" if holder.get("started_at") else ""
        host = holder.get("host")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        stop = f"stop it first (kill {pid})" if pid and not where else "stop it first"
        return (
            f"another stream is already running on checkpoint {self.checkpoint_dir} ({who}{where}{since}): "
            f"{stop}, or give this one its own --checkpoint-dir"
        )

    def __enter__(self) -> CheckpointLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 64 * 1024, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
