"""The landing folder for historical batch drops, replayed into Kafka by the ingestion DAG.

Layout under ``<state_dir>/landing`` (:attr:`infra.settings.Settings.landing_path`)::

    landing/drop.csv                 replayed with airflow.landing_mapping
    landing/paysim/june.parquet      replayed with config/replay/paysim.yaml (folder = mapping)
    landing/done/<YYYY-MM-DD>/...    files replayed in full, moved here
    landing/rejects/<file>.rejects.csv   rows that could not be sent, with row number and reason

A file moves to ``done/`` only after every valid event was acknowledged by Kafka, so a
failed replay is retried with the file still in place. Replayed txn ids are derived
from file name and row (see :mod:`ingestion.replay`), so a second replay of a file
upserts the same rows downstream instead of adding new ones.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from txmon.infra.errors import TxmonError
from txmon.infra.masking import redact
from txmon.infra.settings import PROJECT_ROOT, REPLAY_MAPPINGS, Settings
from txmon.ingestion.producer import TransactionProducer
from txmon.ingestion.replay import replay_file

log = logging.getLogger("txmon.ingestion")

SUFFIXES = (".csv", ".parquet")
RESERVED = ("done", "rejects")

__all__ = ["LandedFile", "LandingError", "find_landed", "ingest_file", "resolve_mapping"]


class LandingError(TxmonError):
    """A landed file or its mapping cannot be used as given."""


@dataclass(frozen=True)
class LandedFile:
    path: Path
    mapping: Path

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "mapping": str(self.mapping)}


def resolve_mapping(settings: Settings, name_or_path: str | Path | None) -> Path:
    """A mapping by path (absolute or relative to the project) or by name
    (``paysim`` -> config/replay/paysim.yaml); None is ``airflow.landing_mapping``."""
    if name_or_path is None or str(name_or_path) == "":
        candidate = settings.airflow.landing_mapping
    else:
        candidate = Path(name_or_path)
        if candidate.suffix not in (".yaml", ".yml") and len(candidate.parts) == 1:
            candidate = REPLAY_MAPPINGS / f"{candidate}.yaml"
    path = candidate if candidate.is_absolute() else PROJECT_ROOT / candidate
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in REPLAY_MAPPINGS.glob("*.yaml")))
        raise LandingError(
            f"replay mapping {path} not found; use one of config/replay/*.yaml ({known}) or a path to your own"
        )
    return path


def find_landed(settings: Settings) -> list[LandedFile]:
    """Files waiting in the landing folder (oldest first), each with its mapping."""
    root = settings.landing_path
    if not root.is_dir():
        return []
    found: list[LandedFile] = []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith("."):
            found.append(LandedFile(path, resolve_mapping(settings, None)))
        elif path.is_dir() and path.name not in RESERVED and not path.name.startswith("."):
            files = [
                f
                for f in sorted(path.iterdir())
                if f.is_file() and f.suffix.lower() in SUFFIXES and not f.name.startswith(".")
            ]
            if files:
                mapping = resolve_mapping(settings, path.name)
                found.extend(LandedFile(f, mapping) for f in files)
    return sorted(found, key=lambda f: (f.path.stat().st_mtime, str(f.path)))


def ingest_file(
    settings: Settings,
    path: str | Path,
    mapping: str | Path | None,
    *,
    day: date,
    topic: str | None = None,
    producer: Any = None,
) -> dict[str, Any]:
    """Replay one file into Kafka; write its rejects file; move it to ``done/<day>/`` if it
    lies in the landing folder and every event was delivered. Returns what happened
    (counts, reject reasons with a masked example each, where the file and rejects went).
    Raises if events could not be delivered (the file stays for the retry)."""
    path = Path(path)
    if not path.is_absolute():
        in_landing = settings.landing_path / path
        path = in_landing if in_landing.exists() else PROJECT_ROOT / path
    if not path.is_file():
        raise LandingError(f"{path} not found: give a file in {settings.landing_path} or an absolute path")
    mapping_path = resolve_mapping(settings, mapping)
    rejects_dir = settings.landing_path / "rejects"
    rejects_dir.mkdir(parents=True, exist_ok=True)
    rejects = rejects_dir / f"{path.name}.rejects.csv"
    own = producer is None
    producer = producer or TransactionProducer(settings, topic=topic)
    try:
        summary = replay_file(path, mapping_path, producer=producer, rejects_path=rejects)
    finally:
        if own:
            producer.close()
    log.info("%s", summary.line())
    for reason, count in sorted(summary.rejected_by_reason.items()):
        log.warning(
            "%s: %d row(s) rejected as %s, e.g. %s",
            path.name,
            count,
            reason,
            redact(summary.reject_examples.get(reason, "")),
        )
    if summary.rejected:
        log.warning("%s: every rejected row, with its reason and raw values, is in %s", path.name, rejects)
    if summary.delivery_failed:
        raise TxmonError(
            f"{path.name}: {summary.delivery_failed} events were not acknowledged by Kafka; the file "
            "stays in the landing folder and is replayed again (same txn ids) by the retry"
        )
    moved_to = None
    if settings.landing_path in path.parents:
        target_dir = settings.landing_path / "done" / day.isoformat()
        target_dir.mkdir(parents=True, exist_ok=True)
        moved_to = target_dir / path.name
        shutil.move(str(path), moved_to)
    return {
        "file": path.name,
        "mapping": str(mapping_path),
        "rows_read": summary.rows_read,
        "sent": summary.events_sent,
        "rejected": summary.rejected,
        "rejected_by_reason": dict(summary.rejected_by_reason),
        "rejects_file": str(rejects) if summary.rejected else None,
        "moved_to": str(moved_to) if moved_to else None,
    }
