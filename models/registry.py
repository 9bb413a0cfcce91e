"""Versioned model artifacts on the local filesystem, with a champion pointer.

Layout under the root (default ``<state_dir>/models``, or ``$TXMON_MODELS_DIR``)::

    v0001/model.joblib        the ModelBundle
    v0001/metadata.json       ModelMetadata (version, created_at, windows, counts, metrics, ...)
    v0001/retraining.json     annotations added later (e.g. the champion/challenger comparison)
    v0002/...
    champion.json             {"history": [{"version": "v0001", "promoted_at": ...}, ...]}

The champion is the last entry of the history; ``rollback`` drops it and the previous
one is live again. Writes are atomic: a version is written into a temporary directory
and renamed into place (a rename onto an existing version fails, so two concurrent
registrations get different ids), and ``champion.json`` is replaced with ``os.replace``
of a fully written temporary file, so readers never see half a model or half a pointer.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import joblib

from txmon.models.bundle import ModelBundle
from txmon.models.errors import NoChampionError, NothingToRollBackError, RegistryError, UnknownVersionError
from txmon.models.metadata import ModelMetadata

__all__ = ["CHAMPION_FILE", "METADATA_FILE", "MODEL_FILE", "Registry"]

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
CHAMPION_FILE = "champion.json"
_VERSION = re.compile(r"^v(\d{4,})$")
_ANNOTATION = re.compile(r"^[a-z][a-z_]{0,40}$")
_MAX_CLAIM_ATTEMPTS = 100
# What joblib.load raises on a damaged model file. Its unpickler is pickle's pure-Python one,
# so a flipped, missing or foreign byte fails as the opcode it lands on fails: a memo key or
# stack slot that is not there (KeyError, IndexError), a short binary field (struct.error),
# a call with the wrong arguments (TypeError, AttributeError, OverflowError), a class name
# that does not import (ImportError), a nesting too deep (RecursionError); and zlib.error in
# the compressed stream. OSError, EOFError, ValueError: the file missing or ending early.
_DAMAGED_MODEL = (
    OSError,
    EOFError,
    ValueError,
    pickle.UnpicklingError,
    zlib.error,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    ImportError,
    RecursionError,
)


class Registry:
    """``Registry(root)``: register, promote, load and roll back model versions."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ----------------------------------------------------------------- versions

    def _ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p.name)
            for p in self.root.iterdir()
            if p.is_dir() and (m := _VERSION.match(p.name)) and (p / METADATA_FILE).is_file()
        ]
        return [name for _, name in sorted(found)]

    def register(self, bundle: ModelBundle, metadata: ModelMetadata, *, now: datetime | None = None) -> str:
        """Store a bundle as the next version (not live until promoted); return its id."""
        self.root.mkdir(parents=True, exist_ok=True)
        created = (now or datetime.now(UTC)).astimezone(UTC)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            joblib.dump(bundle, staging / MODEL_FILE, compress=3)
            for _ in range(_MAX_CLAIM_ATTEMPTS):
                numbers = [int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION.match(p.name))]
                version = f"v{max(numbers, default=0) + 1:04d}"
                final = metadata.model_copy(update={"version": version, "created_at": created})
                (staging / METADATA_FILE).write_text(final.model_dump_json(indent=2), encoding="utf-8")
                try:
                    os.mkdir(self.root / version)  # claim the id; fails if someone else took it
                except FileExistsError:
                    continue
                os.replace(staging, self.root / version)  # onto our own empty directory
                return version
            raise RegistryError(f"could not claim a new version id in {self.root}; check its contents")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def versions(self) -> list[ModelMetadata]:
        """Metadata of every version, oldest first."""
        return [self.metadata(v) for v in self._ids()]

    def metadata(self, version: str) -> ModelMetadata:
        path = self._dir(version) / METADATA_FILE
        try:
            return ModelMetadata.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"cannot read {path} ({exc}); the version is damaged: "
                f"delete {path.parent} or train a new one with `txmon train`"
            ) from None

    def _dir(self, version: str) -> Path:
        path = self.root / version
        if not _VERSION.match(version) or not (path / METADATA_FILE).is_file():
            known = ", ".join(self._ids()) or "none yet"
            raise UnknownVersionError(
                f"no model version {version!r} in {self.root} (known: {known}); see `txmon models list`"
            )
        return path

    def load(self, version: str | None = None) -> ModelBundle:
        """The bundle of ``version`` (default: the champion)."""
        version = version or self.require_champion()
        path = self._dir(version) / MODEL_FILE
        try:
            bundle = joblib.load(path)
        except _DAMAGED_MODEL as exc:
            raise RegistryError(
                f"cannot load {path} ({type(exc).__name__}: {exc}); the file is damaged: retrain with `txmon train`"
            ) from None
        if not isinstance(bundle, ModelBundle):
            raise RegistryError(f"{path} does not hold a ModelBundle; retrain with `txmon train`")
        return bundle

    def annotate(self, version: str, name: str, data: dict) -> None:
        """Attach a JSON document to a version (metadata stays immutable), replacing
        any earlier one of the same name; e.g. ``retraining``: how it fared against
        the champion when it was a challenger."""
        if not _ANNOTATION.match(name) or name in ("metadata", "model"):
            raise RegistryError(f"annotation name {name!r} must be lower-case letters/underscores")
        directory = self._dir(version)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2, default=str)
            os.replace(tmp, directory / f"{name}.json")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def annotation(
        self, version: str, name: str, fields: Mapping[str, type | tuple[type, ...]] | None = None
    ) -> dict | None:
        """The document :meth:`annotate` attached, or None. It is a JSON object holding
        ``fields`` (name: the type(s) its value must have), else RegistryError."""
        path = self._dir(version) / f"{name}.json"
        if not path.is_file():
            return None
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
            raise RegistryError(f"cannot read {path} ({exc}); delete it") from None
        if not isinstance(document, dict):
            raise RegistryError(
                f"{path} is damaged: it holds a JSON {type(document).__name__}, not an object; delete it"
            )
        for field, kind in (fields or {}).items():
            if not isinstance(document.get(field), kind):
                raise RegistryError(f"{path} is damaged: its {field!r} is missing or of the wrong type; delete it")
        return document

    # ----------------------------------------------------------------- champion

    def _history(self) -> list[dict]:
        """The promotions in champion.json; every reader of the pointer goes through here,
        so an entry is known to be a dict with a version id from then on."""
        path = self.root / CHAMPION_FILE
        if not path.exists():  # a directory in its place is damage, not "nothing promoted"
            return []
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
            raise _damaged_pointer(path, f"unreadable: {exc}") from None
        history = document.get("history") if isinstance(document, dict) else None
        if not isinstance(history, list):
            raise _damaged_pointer(path, 'not {"history": [...]}')
        for i, entry in enumerate(history):
            version = entry.get("version") if isinstance(entry, dict) else None
            if not isinstance(version, str) or not _VERSION.fullmatch(version):
                raise _damaged_pointer(path, f'history entry {i} is not {{"version": "v0001", ...}}')
        return history

    def _write_history(self, history: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".champion-", suffix=".json", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"history": history}, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.root / CHAMPION_FILE)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def champion(self) -> str | None:
        """The live version, or None when nothing has been promoted."""
        history = self._history()
        return history[-1]["version"] if history else None

    def champion_history(self) -> list[dict]:
        """Promotions, oldest first: ``{"version", "promoted_at"}``; the last is live."""
        return self._history()

    def require_champion(self) -> str:
        version = self.champion()
        if version is None:
            hint = "promote one with `txmon models promote VERSION`" if self._ids() else "run `txmon train` first"
            raise NoChampionError(f"no champion model in {self.root}: {hint}")
        return version

    def promote(self, version: str, *, now: datetime | None = None) -> str:
        """Make ``version`` live (no-op if it already is); return it."""
        self._dir(version)
        history = self._history()
        if history and history[-1]["version"] == version:
            return version
        at = (now or datetime.now(UTC)).astimezone(UTC)
        self._write_history([*history, {"version": version, "promoted_at": at.isoformat()}])
        return version

    def rollback(self) -> str:
        """Return to the previous champion; return its id."""
        history = self._history()
        if not history:
            raise NoChampionError(f"no champion model in {self.root} to roll back from: run `txmon train` first")
        if len(history) < 2:
            raise NothingToRollBackError(
                f"{history[-1]['version']} is the only champion there has been; "
                "nothing to roll back to (promote another with `txmon models promote VERSION`)"
            )
        self._write_history(history[:-1])
        return history[-2]["version"]


def _damaged_pointer(path: Path, why: str) -> RegistryError:
    return RegistryError(
        f"champion pointer {path} is damaged ({why}); fix or remove it, "
        "then promote a version with `txmon models promote VERSION`"
    )
