"""Who may do what in the console, and how they prove who they are.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's low-memory
profile); sessions are random tokens whose SHA-256 keys a Cassandra row with an expiry;
every form carries the session's CSRF token, compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from txmon.webapp.console.store import ROLES, ConsoleStore, Session

Permission = Literal["read", "see_clear", "work", "assign_others", "bulk_close"]

_ALLOWED: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "analyst": frozenset({"read", "see_clear", "work"}),
    "supervisor": frozenset({"read", "see_clear", "work", "assign_others", "bulk_close"}),
    "admin": frozenset({"read", "see_clear", "work", "assign_others", "bulk_close"}),
}
assert set(_ALLOWED) == set(ROLES)


def allowed(role: str, permission: Permission) -> bool:
    """>>> allowed("viewer", "work"), allowed("analyst", "work"), allowed("analyst", "bulk_close")
    (False, True, False)
    """
    return permission in _ALLOWED.get(role, frozenset())


def _hasher():
    # lazy: argon2 (20 ms to import); the scoring API imports this module without it
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    # lazy: argon2 (20 ms to import); the scoring API imports this module without it
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# Verified against when the user does not exist, so a wrong name costs as long as a wrong
# password and response times do not tell which names exist.
_DUMMY_HASH: str | None = None


def check_login(store: ConsoleStore, username: str, password: str) -> str | None:
    """The user's role if the name and password match an enabled user, else None."""
    global _DUMMY_HASH
    user = store.user(username)
    if user is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password) or user.disabled:
        return None
    return user.role


@dataclass(frozen=True)
class NewSession:
    token: str
    session: Session


def open_session(store: ConsoleStore, username: str, role: str, now: datetime, ttl: timedelta) -> NewSession:
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    store.put_session(token, username, role, csrf, now, ttl)
    return NewSession(token, Session(username, role, csrf, now + ttl))


def csrf_ok(expected: str | None, given: str | None) -> bool:
    """>>> csrf_ok("abc", "abc"), csrf_ok("abc", "abd"), csrf_ok("abc", None), csrf_ok(None, None)
    (True, False, False, False)
    >>> csrf_ok("abc", "é"), csrf_ok("é", "é")
    (False, True)
    """
    if not expected or not given:
        return False
    # Compared as bytes: hmac.compare_digest refuses str holding non-ASCII (TypeError), and
    # both sides come from the client (the form field; the login cookie). surrogatepass: a
    # lone surrogate is still some bytes, never an error.
    return hmac.compare_digest(
        str(expected).encode("utf-8", "surrogatepass"), str(given).encode("utf-8", "surrogatepass")
    )


MIN_PASSWORD_LENGTH = 12


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None.

    >>> password_problem("short"), password_problem("a-long-enough-one")
    ('at least 12 characters, please', None)
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters, please"
    return None
