"""The scoring API's profile reads on its own connection (webapp/api/cql.py) against the
real Cassandra: the same Profiles as the driver's reads for every shape of answer, and a
fall back to the driver, still answering, when Cassandra refuses a statement it holds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

from txmon.infra.cassandra_schema import apply_schema
from txmon.webapp.api.store import ApiStore


def _rows(session, tag: str) -> dict:
    """Profiles and fraud labels under keys of this run; the keys by role."""
    keys = {role: f"wire-{tag}-{role}" for role in ("payer", "payee", "lonely_payee")}
    insert = session.prepare("INSERT INTO feature_profiles (kind, key, state, updated_at) VALUES (?, ?, ?, ?)")
    session.execute(insert, ("payer", keys["payer"], '{"n": 3, "name": "Ünïcode ₹"}', datetime(2026, 12, 1)))
    session.execute(insert, ("payee", keys["payee"], '{"n": 7}', datetime(2026, 12, 1)))
    label = session.prepare(
        "INSERT INTO payee_fraud_labels (payee_key, txn_id, label_time, event_time) VALUES (?, ?, ?, ?)"
    )
    session.execute(label, (keys["payee"], "t1", datetime(2026, 12, 2, 3, 4, 5, 678000), datetime(2026, 11, 30)))
    session.execute(label, (keys["payee"], "t2", datetime(2026, 12, 1, 0, 0, 0, 1000), None))  # before event times
    session.execute(label, (keys["payee"], "t3", datetime(1969, 12, 31, 23, 59, 59, 999000), datetime(1960, 1, 1)))
    return keys


def test_own_connection_reads_what_the_driver_reads(services, cassandra_session):
    apply_schema(services)
    keys = _rows(cassandra_session, uuid.uuid4().hex[:8])
    cases = [
        (keys["payer"], keys["payee"]),
        (keys["payer"], None),
        ("wire-nobody", keys["payee"]),
        (keys["payer"], keys["lonely_payee"]),
        ("wire-nobody", None),
    ]
    store = ApiStore(services, timeout_s=5)
    wire_reads = []
    read_on_wire = store._profiles_wire

    async def counted(*args):
        wire_reads.append(args)
        return await read_on_wire(*args)

    store._profiles_wire = counted  # type: ignore[method-assign]

    async def run() -> None:
        first = await store.profiles_async(*cases[0])  # through the driver while the connection opens
        assert first == store.profiles(*cases[0]) and not wire_reads
        for _ in range(100):
            if store._wire is not None:
                break
            await asyncio.sleep(0.1)
        assert store._wire is not None and store._wire.open
        for payer, payee in cases:
            assert await store.profiles_async(payer, payee) == store.profiles(payer, payee)
        assert len(wire_reads) == len(cases)
        profiles = await store.profiles_async(*cases[0])
        assert profiles.payer and "₹" in profiles.payer and len(profiles.frauds) == 3

        # A statement id Cassandra does not hold: it answers an error, the request is read
        # through the driver and answered the same; the connection is dropped and opened again.
        wire = store._wire
        wire.prepared["payer_profile"] = b"\x00" * 16
        assert await store.profiles_async(*cases[0]) == store.profiles(*cases[0])
        assert not wire.open
        store._wire_attempt = float("-inf")  # no wait for the reconnect interval
        await store.profiles_async(*cases[1])
        for _ in range(100):
            if store._wire is not None and store._wire is not wire:
                break
            await asyncio.sleep(0.1)
        before = len(wire_reads)
        assert await store.profiles_async(*cases[0]) == store.profiles(*cases[0])
        assert len(wire_reads) == before + 1
        store._wire.close()

    try:
        asyncio.run(run())
    finally:
        store.close()
