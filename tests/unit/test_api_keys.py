"""KeyVerifier: a key whose cache time is up is read again (revocation, scopes) without
running argon2 again for the same stored hash, and concurrent requests with one key run
one verification, not one each."""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from datetime import datetime

import pytest

from txmon.webapp.api import keys
from txmon.webapp.api.keys import KeyVerifier, create_key

KeyRow = namedtuple("KeyRow", "key_id name scopes secret_hash created_at revoked_at")


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, KeyRow] = {}
        self.reads = 0

    def add_key(self, key_id, name, scopes, secret_hash):
        self.rows[key_id] = KeyRow(key_id, name, scopes, secret_hash, datetime.now(), None)
        return True

    def key(self, key_id):
        self.reads += 1
        return self.rows.get(key_id)


@pytest.fixture
def hashes(monkeypatch):
    """argon2 at its smallest cost, counting verifications; ``delay`` slows each one."""
    from argon2 import PasswordHasher

    counted = {"verify": 0, "delay": 0.0}

    class Counting(PasswordHasher):
        def verify(self, hash, password):
            counted["verify"] += 1
            time.sleep(counted["delay"])
            return super().verify(hash, password)

    monkeypatch.setattr(keys, "_hasher", lambda: Counting(time_cost=1, memory_cost=64, parallelism=1))
    return counted


def test_an_expired_key_is_read_again_but_hashed_once_and_revocation_still_counts(hashes):
    store = Store()
    key, principal = create_key(store, "switch", ["score"])
    verifier = KeyVerifier(store, cache_s=0)  # every call finds its cache time up
    assert [verifier.verify(key) for _ in range(3)] == [principal] * 3
    assert store.reads == 3 and hashes["verify"] == 1

    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    assert verifier.verify(wrong) is None and hashes["verify"] == 2  # another secret: hashed

    # A new hash for the id (not one this key passed) is checked with argon2 again.
    new_hash = keys._hasher().hash("another-secret-entirely-000000000000000")
    store.rows[principal.key_id] = store.rows[principal.key_id]._replace(secret_hash=new_hash)
    assert verifier.verify(key) is None and hashes["verify"] == 3

    store.rows[principal.key_id] = store.rows[principal.key_id]._replace(revoked_at=datetime.now())
    assert verifier.verify(key) is None


def test_concurrent_requests_with_one_key_verify_it_once(hashes):
    store = Store()
    key, principal = create_key(store, "switch", ["score"])
    verifier = KeyVerifier(store, cache_s=30)
    hashes["delay"] = 0.2  # long enough for every thread to arrive while the first verifies
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(verifier.verify(key))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [principal] * 8
    assert hashes["verify"] == 1 and store.reads == 1
