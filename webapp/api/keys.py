"""API keys: one per client system, with scopes, stored only as an argon2 hash.

A key reads ``txk_<key id>_<secret>``: the id finds the row (``api_keys``), the secret is
checked against its argon2 hash. The key is printed once, by ``txmon api keys create``.

Scopes: ``score`` (POST /v1/score, /v1/score/batch), ``read`` (transactions, accounts,
alerts), ``label`` (POST /v1/labels), ``clear`` (responses show account numbers and VPAs
unmasked; without it they are masked by :mod:`txmon.infra.masking`).

argon2 is slow on purpose (tens of milliseconds), too slow for every request of a
payment switch: a key that verified is remembered in this worker for ``cache_s`` seconds
(by the SHA-256 of the whole key, never the key itself). A revoked key therefore stops
working within ``cache_s`` on every worker (docs/api.md).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

from txmon.infra.errors import TxmonError

SCOPES = ("score", "read", "label", "clear")
_KEY = re.compile(r"^txk_([0-9a-f]{12})_([A-Za-z0-9_-]{32,64})$")


class ApiKeyError(TxmonError):
    """A key management request cannot be done as asked."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its name and its scopes."""

    key_id: str
    name: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def _hasher():
    # lazy: argon2 (20 ms to import); `txmon --help` loads this module without it
    from argon2 import PasswordHasher

    return PasswordHasher()


def new_key() -> tuple[str, str, str]:
    """(key id, secret, the whole key as the client sends it).

    >>> key_id, secret, key = new_key()
    >>> parse_key(key) == (key_id, secret)
    True
    """
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"txk_{key_id}_{secret}"


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None.

    >>> parse_key("txk_0123456789ab_" + "s" * 43)[0], parse_key("Bearer nonsense")
    ('0123456789ab', None)
    """
    m = _KEY.match(key.strip())
    return (m.group(1), m.group(2)) if m else None


def check_scopes(scopes: list[str] | tuple[str, ...]) -> frozenset[str]:
    """
    >>> sorted(check_scopes(["read", "score"]))
    ['read', 'score']
    >>> try:
    ...     check_scopes(["admin"])
    ... except ApiKeyError as exc:
    ...     print(exc)
    unknown scope 'admin'; use some of score, read, label, clear
    """
    for scope in scopes:
        if scope not in SCOPES:
            raise ApiKeyError(f"unknown scope {scope!r}; use some of {', '.join(SCOPES)}")
    if not scopes:
        raise ApiKeyError(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return frozenset(scopes)


def create_key(store, name: str, scopes: list[str]) -> tuple[str, Principal]:
    """Store a new key (hashed) and return (the key, shown once; its principal)."""
    wanted = check_scopes(scopes)
    for _ in range(5):
        key_id, secret, key = new_key()
        if store.add_key(key_id, name, set(wanted), _hasher().hash(secret)):
            return key, Principal(key_id, name, wanted)
    raise ApiKeyError("could not find a free key id; try again")


class KeyVerifier:
    """Verifies keys against the store, remembering good ones for ``cache_s`` seconds.

    When a remembered key's time is up, its row is read again (revoked? scopes?), but
    argon2 runs again only if the row's hash is not the one this key already passed: the
    same key against the same hash gives the same answer, and at expiry every request in
    flight with that key used to hash it at once (tens of ms of CPU each; 64 at once
    stalled a 2-core box for seconds every ``cache_s``). For the same reason one thread
    verifies a given key at a time; the others wait for its answer."""

    def __init__(self, store, cache_s: float = 30.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._passed: dict[bytes, str] = {}  # key digest -> the stored hash its secret passed
        self._flights: dict[bytes, threading.Lock] = {}
        self._lock = threading.Lock()

    def _fresh(self, digest: bytes) -> Principal | None:
        hit = self._cache.get(digest)
        if hit is not None and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        return None

    def cached(self, key: str) -> Principal | None:
        """The principal of a key verified less than ``cache_s`` ago, else None (then
        :meth:`verify`). No I/O: the event loop calls it, and goes to a thread only on a miss."""
        return self._fresh(hashlib.sha256(key.encode()).digest())

    def verify(self, key: str) -> Principal | None:
        """The key's principal, or None for an unknown, wrong or revoked key. Raises
        store.StoreUnavailable when the key is not cached and Cassandra is away."""
        digest = hashlib.sha256(key.encode()).digest()
        hit = self._fresh(digest)
        if hit is not None:
            return hit
        parsed = parse_key(key)
        if parsed is None:
            return None
        with self._lock:
            flight = self._flights.setdefault(digest, threading.Lock())
        try:
            with flight:
                hit = self._fresh(digest)  # verified while this one waited
                if hit is not None:
                    return hit
                return self._check(digest, *parsed)
        finally:
            with self._lock:
                if self._flights.get(digest) is flight:
                    del self._flights[digest]

    def _check(self, digest: bytes, key_id: str, secret: str) -> Principal | None:
        now = time.monotonic()
        row = self.store.key(key_id)
        if row is None or row.revoked_at is not None:
            self._forget(digest)
            return None
        if self._passed.get(digest) != row.secret_hash:
            # lazy: argon2 (20 ms to import); `txmon --help` loads this module without it
            from argon2.exceptions import InvalidHashError, VerificationError

            try:
                _hasher().verify(row.secret_hash, secret)
            except (VerificationError, InvalidHashError):
                return None
        principal = Principal(row.key_id, row.name or "", frozenset(row.scopes or ()))
        with self._lock:
            if len(self._cache) > 10_000:  # many clients: start again rather than grow without bound
                self._cache.clear()
                self._passed.clear()
            self._cache[digest] = (now, principal)
            self._passed[digest] = row.secret_hash
        return principal

    def _forget(self, digest: bytes) -> None:
        with self._lock:
            self._cache.pop(digest, None)
            self._passed.pop(digest, None)
