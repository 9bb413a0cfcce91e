"""The scoring API's own native-protocol reads (webapp/api/cql.py): frames it writes, rows
it reads, timestamps decoded as the driver decodes them, answers split anywhere by TCP,
and hostile bytes refused with CqlError, never another exception."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest
from cassandra.cqltypes import DateType
from hypothesis import given, settings
from hypothesis import strategies as st

from txmon.webapp.api import cql

cells = st.one_of(st.none(), st.binary(max_size=40))


def rows_body(rows: list[tuple[bytes | None, ...]], columns: int, meta: int = 0x0004) -> bytes:
    """A RESULT Rows body as Cassandra sends it when the result metadata is skipped."""
    out = [struct.pack(">iiii", cql.ROWS, meta, columns, len(rows))]
    for row in rows:
        for cell in row:
            out.append(struct.pack(">i", -1) if cell is None else struct.pack(">i", len(cell)) + cell)
    return b"".join(out)


def response(stream: int, opcode: int, body: bytes, flags: int = 0) -> bytes:
    return cql.HEADER.pack(cql.RESPONSE, flags, stream, opcode, len(body)) + body


@given(st.integers(1, 3).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.tuples(*[cells] * n), max_size=20))))
def test_rows_read_back_as_written(case):
    columns, rows = case
    assert cql.parse_rows(0, rows_body(rows, columns), columns) == rows


def test_warnings_and_tracing_before_the_rows_are_skipped():
    extras = b"\x01" * 16 + struct.pack(">H", 1) + struct.pack(">H", 4) + b"warn"
    body = extras + rows_body([(b"x",)], 1)
    assert cql.parse_rows(0x02 | 0x08, body, 1) == [(b"x",)]


@pytest.mark.parametrize(
    "body",
    [
        rows_body([(b"x",)], 1, meta=0x0004 | 0x0002),  # more pages
        rows_body([(b"x",)], 1, meta=0),  # metadata not skipped
        rows_body([(b"x", b"y")], 2),  # not the statement's columns
        struct.pack(">i", cql.SET_KEYSPACE) + struct.pack(">H", 2) + b"ks",
    ],
)
def test_rows_other_than_asked_are_refused(body):
    with pytest.raises(cql.CqlError):
        cql.parse_rows(0, body, 1)


@given(st.binary(max_size=200), st.integers(0, 255), st.integers(1, 3))
def test_hostile_bodies_raise_cql_error_only(body, flags, columns):
    with contextlib.suppress(cql.CqlError):
        cql.parse_rows(flags, body, columns)
    with contextlib.suppress(cql.CqlError):
        cql.parse_prepared(flags, body)


@given(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-62_135_596_800_000, 253_402_300_799_999)))
def test_timestamps_as_the_driver_gives_them(ms):
    """Equal wherever the driver can decode one; CqlError (the driver then reads) where not."""
    cell = struct.pack(">q", ms)
    try:
        expected = DateType.deserialize(cell, 4)
    except OverflowError:
        with pytest.raises(cql.CqlError):
            cql.timestamp(cell)
    else:
        assert cql.timestamp(cell) == expected


def test_null_cells():
    assert cql.timestamp(None) is None and cql.text(None) is None
    assert cql.text("₹ ok".encode()) == "₹ ok"


def test_execute_frame_layout():
    body = cql.execute_body(b"\xab\xcd", ["payer-1", "ü"], consistency=0x000A)
    assert body == (
        b"\x00\x02\xab\xcd"  # statement id
        + struct.pack(">HBH", 0x000A, 0x01 | 0x02, 2)  # LOCAL_ONE, values + skip metadata, 2 values
        + struct.pack(">i", 7)
        + b"payer-1"
        + struct.pack(">i", 2)
        + "ü".encode()
    )
    framed = cql.frame(5, cql.EXECUTE, body)
    assert cql.HEADER.unpack_from(framed) == (0x04, 0, 5, cql.EXECUTE, len(body))


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=30), st.permutations(range(3)))
def test_answers_split_anywhere_and_out_of_order_reach_their_requests(cuts, order):
    async def run():
        connection, transport = cql.CqlConnection(), FakeTransport()
        connection.connection_made(transport)
        futures = connection.send([(cql.EXECUTE, b"a"), (cql.EXECUTE, b"b"), (cql.EXECUTE, b"c")])
        (sent,) = transport.written  # one write for the three
        streams = []
        at = 0
        for _ in range(3):
            _, _, stream, opcode, length = cql.HEADER.unpack_from(sent, at)
            assert opcode == cql.EXECUTE
            streams.append(stream)
            at += 9 + length
        assert len(set(streams)) == 3
        answers = b"".join(response(streams[i], cql.RESULT, rows_body([(bytes([i]),)], 1)) for i in order)
        i = 0
        for cut in cuts * 10:
            connection.data_received(answers[i : i + cut])
            i += cut
            if i >= len(answers):
                break
        connection.data_received(answers[i:])
        got = [await f for f in futures]
        assert [cql.parse_rows(flags, body, 1) for _, flags, body in got] == [[(b"\x00",)], [(b"\x01",)], [(b"\x02",)]]
        assert len(connection._free) == 32767  # every stream id back

    asyncio.run(run())


def test_a_bad_header_or_a_lost_connection_fails_every_waiting_request():
    async def run():
        for breaking in (
            lambda c: c.data_received(b"\x04" + b"\x00" * 8),  # a request's version: not an answer
            lambda c: c.connection_lost(ConnectionResetError()),
        ):
            connection = cql.CqlConnection()
            connection.connection_made(FakeTransport())
            futures = connection.send([(cql.EXECUTE, b"a"), (cql.EXECUTE, b"b")])
            breaking(connection)
            for future in futures:
                with pytest.raises(cql.CqlError):
                    await future
            assert not connection.open
            with pytest.raises(cql.CqlError):
                connection.send([(cql.EXECUTE, b"a")])

    asyncio.run(run())
