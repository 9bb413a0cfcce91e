"""A minimal client of Cassandra's native protocol (version 4) on the worker's event loop,
for the scoring API's hot reads only: the prepared payer, payee and payee-frauds reads of
``POST /v1/score`` (webapp/api/store.py).

Why not the driver for those: each driver read builds a response future, arms a timer on
the driver's I/O thread, hands its message to that thread and is woken back by it, so three
reads per request wake that thread several times and each wake takes the GIL from the event
loop: the driver was ~31 % of a worker's CPU (py-spy). Here the three EXECUTE frames go out
in one write on the loop's own socket and their answers are parsed on the loop, with no
other thread. Everything else (keys, decisions, labels, read-back, the batch and ingest
routes, and these reads whenever this client is not connected or gets anything but rows)
stays with the driver, so the API's outage behaviour is the driver's.

Same statements, prepared (the server's own PREPARE), same consistency, the same
credentials as the driver; rows are read with the result metadata skipped (the client knows
its statements' columns); timestamps are decoded as the driver decodes them.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import struct
from collections.abc import Sequence
from datetime import datetime, timedelta

from txmon.infra.errors import TxmonError

VERSION = 0x04
RESPONSE = 0x84
HEADER = struct.Struct(">BBhBi")  # version, flags, stream, opcode, body length

ERROR, STARTUP, READY, AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
QUERY, RESULT, PREPARE, EXECUTE = 0x07, 0x08, 0x09, 0x0A
AUTH_CHALLENGE, AUTH_RESPONSE, AUTH_SUCCESS = 0x0E, 0x0F, 0x10

ROWS, SET_KEYSPACE, PREPARED = 0x0002, 0x0003, 0x0004
_TRACING, _CUSTOM_PAYLOAD, _WARNING = 0x02, 0x04, 0x08
_HAS_MORE_PAGES, _NO_METADATA = 0x0002, 0x0004
_VALUES, _SKIP_METADATA = 0x01, 0x02
MAX_BODY = 64 * 1024 * 1024  # a larger frame is a protocol error, not a read to buffer

_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - the driver's naive UTC timestamps


class CqlError(TxmonError):
    """This connection cannot answer (closed, refused, a frame it does not understand, or an
    error from Cassandra): the caller reads through the driver instead."""


def timestamp(cell: bytes | None) -> datetime | None:
    """A ``timestamp`` cell as the driver returns it: naive UTC, via float seconds
    (cassandra.cqltypes.DateType / cassandra.util.datetime_from_timestamp)."""
    if cell is None:
        return None
    if len(cell) != 8:
        raise CqlError("a timestamp is 8 bytes")
    (ms,) = struct.unpack(">q", cell)
    try:
        return _EPOCH + timedelta(seconds=ms / 1000.0)
    except OverflowError:  # outside years 1-9999: the driver's reads decide what to answer
        raise CqlError(f"timestamp {ms} ms out of range") from None


def text(cell: bytes | None) -> str | None:
    return None if cell is None else cell.decode()


# ------------------------------------------------------------------ frames


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">H", len(data)) + data


def _long_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def frame(stream: int, opcode: int, body: bytes) -> bytes:
    return HEADER.pack(VERSION, 0, stream, opcode, len(body)) + body


def startup_body() -> bytes:
    return struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0")


def auth_body(user: str, password: str) -> bytes:
    token = b"\x00" + user.encode() + b"\x00" + password.encode()  # SASL PLAIN
    return struct.pack(">i", len(token)) + token


def query_body(cql: str, consistency: int) -> bytes:
    return _long_string(cql) + struct.pack(">HB", consistency, 0)


def execute_body(statement_id: bytes, values: Sequence[str], consistency: int) -> bytes:
    """EXECUTE of a prepared statement with text values, result metadata skipped, no paging
    (one answer holds every row)."""
    parts = [struct.pack(">H", len(statement_id)), statement_id]
    parts.append(struct.pack(">HBH", consistency, _VALUES | _SKIP_METADATA, len(values)))
    for value in values:
        data = value.encode()
        parts += [struct.pack(">i", len(data)), data]
    return b"".join(parts)


class _Reader:
    """Bounds-checked reads of one frame body: a short or hostile body raises CqlError."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise CqlError("truncated frame")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def string(self) -> str:
        return self.take(self.u16()).decode(errors="replace")

    def value(self) -> bytes | None:
        n = self.i32()
        return None if n < 0 else self.take(n)

    def short_bytes(self) -> bytes:
        return self.take(self.u16())


def _skip_extras(reader: _Reader, flags: int) -> None:
    """The tracing id, custom payload and warnings a response may start with."""
    if flags & _TRACING:
        reader.take(16)
    if flags & _CUSTOM_PAYLOAD:
        for _ in range(reader.u16()):
            reader.string()
            reader.value()
    if flags & _WARNING:
        for _ in range(reader.u16()):
            reader.string()


def error_text(body: bytes) -> str:
    reader = _Reader(body)
    code = reader.i32()
    return f"Cassandra error 0x{code:04x}: {reader.string()[:200]}"


def parse_rows(flags: int, body: bytes, columns: int) -> list[tuple[bytes | None, ...]]:
    """The rows of a RESULT frame's body of ``columns`` columns (cells as bytes, None for
    null); CqlError for anything else: another kind of result or column count, more pages,
    or result metadata (asked to be skipped)."""
    reader = _Reader(body)
    _skip_extras(reader, flags)
    kind = reader.i32()
    if kind != ROWS:
        raise CqlError(f"expected rows, got result kind {kind}")
    meta = reader.i32()
    if reader.i32() != columns or meta & _HAS_MORE_PAGES or not meta & _NO_METADATA:
        raise CqlError("unexpected rows metadata")
    count = reader.i32()
    if count < 0 or count * columns * 4 > len(body):
        raise CqlError("bad row count")
    cell = reader.value
    return [tuple(cell() for _ in range(columns)) for _ in range(count)]


def parse_prepared(flags: int, body: bytes) -> bytes:
    """A PREPARE answer's statement id."""
    reader = _Reader(body)
    _skip_extras(reader, flags)
    if reader.i32() != PREPARED:
        raise CqlError("expected a prepared result")
    return reader.short_bytes()


# ------------------------------------------------------------------ connection


class CqlConnection(asyncio.Protocol):
    """One connection, many requests in flight (each on its own stream id), on one event loop."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._waiting: dict[int, asyncio.Future] = {}
        self._free = list(range(32767, 0, -1))
        self.prepared: dict[str, bytes] = {}
        self.consistency = 0x0001  # ONE until connect() sets the caller's

    # asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 9:
            version, flags, stream, opcode, length = HEADER.unpack_from(buffer)
            if version != RESPONSE or not 0 <= length <= MAX_BODY:
                self._fail(CqlError(f"unexpected frame header (version 0x{version:02x}, length {length})"))
                return
            if len(buffer) < 9 + length:
                return
            body = bytes(buffer[9 : 9 + length])
            del buffer[: 9 + length]
            waiter = self._waiting.pop(stream, None)
            if waiter is not None:
                self._free.append(stream)
                if not waiter.done():
                    waiter.set_result((opcode, flags, body))

    def connection_lost(self, exc) -> None:
        self._fail(CqlError(f"connection lost ({exc})" if exc else "connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def open(self) -> bool:
        return not self.closed.done()

    def close(self) -> None:
        self._fail(CqlError("connection closed"))

    # requests

    def send(self, requests: Sequence[tuple[int, bytes]]) -> list[asyncio.Future]:
        """Send each (opcode, body) on its own stream, in one write; their answers' futures,
        each (opcode, flags, body)."""
        if not self.open or self.transport is None:
            raise CqlError("connection closed")
        if len(self._free) < len(requests):
            raise CqlError("too many requests in flight")
        loop = asyncio.get_running_loop()
        futures, out = [], []
        for opcode, body in requests:
            stream = self._free.pop()
            future = loop.create_future()
            self._waiting[stream] = future
            futures.append(future)
            out.append(frame(stream, opcode, body))
        self.transport.write(b"".join(out))
        return futures

    async def call(self, opcode: int, body: bytes) -> tuple[int, int, bytes]:
        (future,) = self.send([(opcode, body)])
        answer = await future
        if answer[0] == ERROR:
            raise CqlError(error_text(answer[2]))
        return answer


async def connect(
    host: str,
    port: int,
    user: str,
    password: str,
    keyspace: str,
    statements: dict[str, str],
    consistency: int,
    timeout: float,
    ssl: ssl_module.SSLContext | None = None,
) -> CqlConnection:
    """A connection logged in, on ``keyspace``, with ``statements`` prepared
    (``connection.prepared``: name -> statement id); over TLS with ``ssl`` (the driver's
    own ``ssl_context``). CqlError or OSError if not."""

    async def handshake() -> CqlConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(CqlConnection, host, port, ssl=ssl)
        try:
            opcode, _, body = await connection.call(STARTUP, startup_body())
            if opcode == AUTHENTICATE:
                opcode, _, body = await connection.call(AUTH_RESPONSE, auth_body(user, password))
                if opcode != AUTH_SUCCESS:
                    raise CqlError(f"authentication not accepted (opcode 0x{opcode:02x})")
            elif opcode != READY:
                raise CqlError(f"unexpected answer to STARTUP (opcode 0x{opcode:02x})")
            connection.consistency = consistency
            quoted = '"' + keyspace.replace('"', '""') + '"'
            await connection.call(QUERY, query_body(f"USE {quoted}", consistency))
            for name, cql in statements.items():
                _, flags, body = await connection.call(PREPARE, _long_string(cql))
                connection.prepared[name] = parse_prepared(flags, body)
        except BaseException:
            connection.close()
            raise
        return connection

    return await asyncio.wait_for(handshake(), timeout)
