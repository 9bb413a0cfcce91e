"""The demo's way in to the web application: an API key (scopes score and read) and a
console login, each made once per state directory.

A secret is generated here (``secrets``), stored the usual way (the key's secret and the
password as argon2 hashes in Cassandra) and kept in a file under ``<state_dir>/secrets/``
(mode 0600), so the demo shows it once, the run that made it, and later runs say where
it is. A later run makes a new one only if the kept one no longer works (keyspace wiped,
key revoked, password changed): what is printed always lets the user in.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from txmon.infra.cassandra_schema import connect
from txmon.infra.settings import Settings
from txmon.webapp.api.keys import KeyVerifier, create_key
from txmon.webapp.api.store import ApiStore
from txmon.webapp.console.auth import check_login, hash_password
from txmon.webapp.console.store import ConsoleStore

API_KEY_NAME = "txmon-demo"
API_KEY_SCOPES = ("score", "read")
API_KEY_FILE = "secrets/demo-api-key.txt"
CONSOLE_USER = "demo"
CONSOLE_ROLE = "admin"
CONSOLE_PASSWORD_FILE = "secrets/demo-console-password.txt"
EXAMPLE_EVENT_FILE = "demo/score-example.json"


@dataclass(frozen=True)
class Kept:
    """A demo credential: where it is kept, and its value only when this call made it
    (the one time it is shown)."""

    path: Path
    new_value: str | None = None


@dataclass(frozen=True)
class ConsoleLogin:
    user: str
    password: Kept | None
    """None: a user of that name exists with a password the demo does not hold (made by
    someone else, or disabled); the demo leaves it alone."""


def write_secret(path: Path, value: str) -> None:
    """``value`` into ``path`` readable by the owner only (also when the file existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a file it creates
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_api_key(settings: Settings) -> Kept:
    """The demo's API key: the kept one if it still verifies with both scopes, else a new one."""

    path = settings.state_path / API_KEY_FILE
    store = ApiStore(settings, timeout_s=10)
    try:
        kept = read_secret(path)
        principal = KeyVerifier(store, cache_s=0).verify(kept) if kept else None
        if principal is not None and all(principal.can(s) for s in API_KEY_SCOPES):
            return Kept(path)
        key, _ = create_key(store, API_KEY_NAME, list(API_KEY_SCOPES))
    finally:
        store.close()
    write_secret(path, key)
    return Kept(path, key)


def ensure_console_login(settings: Settings) -> ConsoleLogin:
    """The demo's console user (role admin): kept if its kept password still logs in, made
    with a new password if there is no such user."""

    path = settings.state_path / CONSOLE_PASSWORD_FILE
    cluster, session = connect(settings, settings.cassandra.keyspace)
    try:
        store = ConsoleStore(session)
        kept = read_secret(path)
        if kept and check_login(store, CONSOLE_USER, kept) is not None:
            return ConsoleLogin(CONSOLE_USER, Kept(path))
        if store.user(CONSOLE_USER) is not None:
            return ConsoleLogin(CONSOLE_USER, None)
        password = secrets.token_urlsafe(15)
        store.put_user(CONSOLE_USER, CONSOLE_ROLE, hash_password(password), datetime.now(UTC))
    finally:
        cluster.shutdown()
    write_secret(path, password)
    return ConsoleLogin(CONSOLE_USER, Kept(path, password))


def write_example_event(settings: Settings) -> Path:
    """A valid transaction for the printed curl, rewritten each run so its time stays
    within the age the API accepts (contract.max_event_age_days)."""
    now = datetime.now(UTC)
    event = {
        "schema_version": 1,
        "txn_id": f"demo-curl-{now:%Y%m%d%H%M%S}",
        "event_time": (now - timedelta(seconds=5)).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "channel": "UPI",
        "txn_type": "P2P",
        "payer": {"account_number": "555566667777", "vpa": "asha.k@okaxis"},
        "payee": {"vpa": "kirana.store@okhdfc"},
        "amount_paise": 125_000,
        "currency": "INR",
        "device_id": "demo-device-1",
        "geo": {"city": "Pune", "lat": 18.52, "lon": 73.85},
        "status": "SUCCESS",
    }
    path = settings.state_path / EXAMPLE_EVENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(event, indent=2) + "\n")
    return path
