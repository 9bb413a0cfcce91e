"""Statements prepared once per session (infra/cassandra_schema.prepared) and chunked
``... IN ?`` reads (rows_in): every key read exactly once, in reads of at most
``per_read`` keys, never more than ``in_flight`` reads unanswered, rows in key order.
The sessions here stand in for the driver's ``prepare``, ``execute_async`` and
``result()``; the reads against Cassandra itself run in
tests/integration/test_console_reads.py (fraud label days, case states) and
tests/integration/test_stream.py (count_landed, feature profiles)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txmon.infra.cassandra_schema import IN_KEYS, forget_prepared, prepared, rows_in


class _Session:
    """Answers an IN read with one row per key named, (prefix..., key); counts the reads
    sent and not yet answered, and can fail the reads that name a given key."""

    def __init__(self, failing: object = None) -> None:
        self.reads: list[tuple] = []
        self.unanswered = 0
        self.most_unanswered = 0
        self.failing = failing

    def execute_async(self, stmt, params):
        assert stmt == "SELECT ... IN ?"
        assert isinstance(params[-1], list)  # the driver binds a list to IN ?
        self.reads.append(params)
        self.unanswered += 1
        self.most_unanswered = max(self.most_unanswered, self.unanswered)
        return _Future(self, params)


class _Future:
    def __init__(self, session: _Session, params: tuple) -> None:
        self.session, self.params = session, params

    def result(self):
        self.session.unanswered -= 1
        *before, keys = self.params
        if self.session.failing in keys:
            raise RuntimeError(f"read of {keys} failed")
        return [(*before, k) for k in keys]


keys_lists = st.lists(st.integers(min_value=0, max_value=50), max_size=400)  # repeats allowed
per_reads = st.integers(min_value=1, max_value=120)
in_flights = st.none() | st.integers(min_value=1, max_value=8)
befores = st.lists(st.text(max_size=3), max_size=2).map(tuple)


@given(keys_lists, per_reads, in_flights, befores)
def test_every_key_is_read_exactly_once_in_order(keys, per_read, in_flight, before):
    session = _Session()
    rows = rows_in(session, "SELECT ... IN ?", keys, before=before, per_read=per_read, in_flight=in_flight)
    named = [k for *_, chunk in session.reads for k in chunk]
    assert named == keys  # each occurrence once, none added, in order
    assert rows == [(*before, k) for k in keys]
    assert all(tuple(r[:-1]) == before for r in session.reads)
    assert len(session.reads) == -(-len(keys) // per_read)
    assert all(len(r[-1]) == per_read for r in session.reads[:-1])
    assert all(1 <= len(r[-1]) <= per_read for r in session.reads)
    assert session.unanswered == 0
    if in_flight is not None:
        assert session.most_unanswered <= in_flight
    else:  # all reads out before the first answer is awaited
        assert session.most_unanswered == len(session.reads)


@given(keys_lists, per_reads, in_flights)
def test_a_failed_read_raises(keys, per_read, in_flight):
    failing = keys[len(keys) // 2] if keys else None
    session = _Session(failing)
    if failing is None:
        assert rows_in(session, "SELECT ... IN ?", keys, per_read=per_read, in_flight=in_flight) == []
        assert session.reads == []
        return
    with pytest.raises(RuntimeError, match="failed"):
        rows_in(session, "SELECT ... IN ?", keys, per_read=per_read, in_flight=in_flight)


def test_the_default_read_names_at_most_in_keys():
    session = _Session()
    rows_in(session, "SELECT ... IN ?", list(range(2 * IN_KEYS + 1)))
    assert [len(r[-1]) for r in session.reads] == [IN_KEYS, IN_KEYS, 1]


@pytest.mark.parametrize(("per_read", "in_flight"), [(0, None), (-1, None), (10, 0)])
def test_a_read_size_or_bound_below_one_is_refused(per_read, in_flight):
    with pytest.raises(ValueError, match="at least 1"):
        rows_in(_Session(), "SELECT ... IN ?", [1, 2], per_read=per_read, in_flight=in_flight)


class _Preparing:
    def __init__(self) -> None:
        self.prepares: list[str] = []

    def prepare(self, cql: str) -> tuple[int, str]:
        self.prepares.append(cql)
        return (id(self), cql)


def test_a_statement_is_prepared_once_per_session_until_forgotten():
    a, b = _Preparing(), _Preparing()
    assert prepared(a, "SELECT 1") is prepared(a, "SELECT 1")
    assert prepared(a, "SELECT 2") == (id(a), "SELECT 2")
    assert prepared(b, "SELECT 1") == (id(b), "SELECT 1")
    assert a.prepares == ["SELECT 1", "SELECT 2"] and b.prepares == ["SELECT 1"]
    forget_prepared()  # sessions shut down: the next one prepares again
    prepared(a, "SELECT 1")
    assert a.prepares == ["SELECT 1", "SELECT 2", "SELECT 1"]
