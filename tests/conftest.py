"""Shared fixtures: a real server on 127.0.0.1 port 0, and an independent WebSocket peer.

The peer uses the plain ``websockets`` library and reads the wire format with ``struct``,
``json`` and ``numpy`` only, never ``livestream.protocol``, so the tests check the bytes the
server really sends against the protocol document rather than against our own decoder.

Fixtures:

* ``server_factory(**options)`` starts a :class:`livestream.server.Server` (background
  thread) with ``options``; every server it made is stopped at teardown, and the test fails
  if a thread named ``livestream-*`` outlives the stop.
* ``server``: one started server with the default options and :data:`TOKEN`.
* ``ws_connect(server, token=..., **kwargs)``: an async context manager yielding a
  :class:`Peer` connected to ``server``'s ``/ws`` with ``?token=``.
* ``http(server, method, path, body=None, token=..., headers=None)``: a blocking HTTP
  request returning (status, JSON body); run it with ``asyncio.to_thread``.
* ``live_server``: a started server with :data:`TOKEN`, stopped at teardown.
* ``running(*args)``: starts ``python -m livestream ARGS`` (support's :class:`Running`);
  every process it started is stopped at teardown.
* ``browser`` (per module): Debian's Chromium through Playwright, closed after the module.
* ``wave``: a stream ``wave`` of ``server`` fed 50 rows/s, with a parameter ``amp``.

For every test (autouse): ``no_thread_leaks`` fails a test that leaves a ``livestream-*``
thread running, and ``no_stray_errors`` one during which an ERROR was logged that the
test did not declare with ``@pytest.mark.expect_errors("regex")``. :data:`TOKEN` is the
one token of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import re
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest
import websockets
from support import Running, livestream_threads
from websockets.asyncio.client import ClientConnection

from livestream.controls import Float
from livestream.server import Server

TOKEN = "test-token-0123456789"
TIMEOUT = 5.0

#: Wire dtypes and the numpy types the protocol document gives them (little-endian).
WIRE_DTYPES = {
    "float64": "<f8",
    "float32": "<f4",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "u1",
    "bool": "?",
}


# --------------------------------------------------------------------------- wire helpers


def decode_binary(frame: bytes) -> dict[str, Any]:
    """Decode a binary data frame by the protocol document alone, checking its layout.

    Returns the header with ``columns`` replaced by {name: numpy array or list of values}
    and ``binary`` set to True.
    """
    assert len(frame) >= 4, f"binary frame of {len(frame)} bytes has no length prefix"
    (hlen,) = struct.unpack_from("<I", frame, 0)
    assert 4 + hlen <= len(frame), f"header length {hlen} runs past the {len(frame)}-byte frame"
    header = json.loads(frame[4 : 4 + hlen].decode("utf-8"))
    assert isinstance(header, dict)
    area_start = 4 + hlen + (-(4 + hlen) % 8)
    assert area_start % 8 == 0
    assert frame[4 + hlen : area_start] == b"\0" * (area_start - 4 - hlen), "padding not zero"
    area = memoryview(frame)[area_start:]
    rows = header["rows"]
    columns: dict[str, Any] = {}
    for col in header["columns"]:
        name = col["name"]
        if "values" in col:
            assert len(col["values"]) == rows
            columns[name] = col["values"]
            continue
        dtype = np.dtype(WIRE_DTYPES[col["dtype"]])
        offset, nbytes = col["offset"], col["nbytes"]
        assert offset % 8 == 0, f"column {name!r} buffer at {offset} is not 8-byte aligned"
        assert nbytes == rows * dtype.itemsize, f"column {name!r}: {nbytes} bytes for {rows} rows"
        assert offset + nbytes <= len(area), f"column {name!r} runs past the buffer area"
        columns[name] = np.frombuffer(area, dtype=dtype, count=rows, offset=offset)
    header["columns"] = columns
    header["binary"] = True
    return header


def encode_publish(stream: str, columns: dict[str, np.ndarray], id: Any = None) -> bytes:
    """Build a binary ``publish`` frame by hand, as the protocol document describes."""
    descr = []
    buffers = []
    position = 0
    rows = None
    for name, arr in columns.items():
        dtype = next(k for k, v in WIRE_DTYPES.items() if np.dtype(v) == arr.dtype)
        data = np.ascontiguousarray(arr).tobytes()
        rows = len(arr)
        descr.append({"name": name, "dtype": dtype, "offset": position, "nbytes": len(data)})
        pad = -len(data) % 8
        buffers.append(data + b"\0" * pad)
        position += len(data) + pad
    header: dict[str, Any] = {"type": "publish", "stream": stream, "rows": rows, "columns": descr}
    if id is not None:
        header["id"] = id
    head = json.dumps(header).encode()
    pad = -(4 + len(head)) % 8
    return struct.pack("<I", len(head)) + head + b"\0" * pad + b"".join(buffers)


def decode(frame: str | bytes) -> dict[str, Any]:
    """A server frame as a dict: JSON text as is, binary frames through decode_binary."""
    if isinstance(frame, bytes):
        return decode_binary(frame)
    msg = json.loads(frame)
    assert isinstance(msg, dict) and isinstance(msg.get("type"), str), msg
    return msg


class Peer:
    """A protocol peer over a plain ``websockets`` connection.

    Every receive is bounded (``timeout`` seconds). Messages skipped while waiting for a
    particular one are kept in ``backlog`` and returned first by later receives, so
    nothing the server sent is lost to a test.
    """

    _ids = itertools.count(1)

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.backlog: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}

    async def send(self, msg: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(json.dumps(msg) if isinstance(msg, dict) else msg)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message from the server."""
        if self.backlog:
            return self.backlog.pop(0)
        return decode(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """The first message matching ``predicate``; the others stay in the backlog."""
        deadline = asyncio.get_running_loop().time() + timeout
        for i, msg in enumerate(self.backlog):
            if predicate(msg):
                return self.backlog.pop(i)
        skipped: list[dict[str, Any]] = []
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    seen = [(m["type"], m.get("stream"), m.get("offset")) for m in skipped]
                    raise TimeoutError(f"no matching message within {timeout} s; got {seen[:20]}")
                try:
                    frame = await asyncio.wait_for(self.ws.recv(), left)
                except TimeoutError:
                    continue  # the deadline check above says what was seen
                msg = decode(frame)
                if predicate(msg):
                    return msg
                skipped.append(msg)
        finally:
            self.backlog.extend(skipped)

    async def expect_type(
        self, kind: str, timeout: float = TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        return await self.expect(
            lambda m: m["type"] == kind and all(m.get(k) == v for k, v in fields.items()), timeout
        )

    async def request(self, msg: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Send ``msg`` with a fresh ``id`` and return the reply carrying that ``id``."""
        msg = {**msg, "id": f"r{next(self._ids)}"}
        await self.send(msg)
        return await self.expect(lambda m: m.get("id") == msg["id"], timeout)

    async def ping(self, timeout: float = TIMEOUT) -> None:
        """Assert that the connection still answers."""
        reply = await self.request({"type": "ping"}, timeout)
        assert reply["type"] == "pong", reply

    async def publish_binary(
        self, stream: str, columns: dict[str, np.ndarray], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Publish ``columns`` as a hand-built binary frame; returns the reply to it."""
        id = f"r{next(self._ids)}"
        await self.send(encode_publish(stream, columns, id))
        return await self.expect(lambda m: m.get("id") == id, timeout)

    async def subscribe(self, stream: str, **options: Any) -> dict[str, Any]:
        reply = await self.request({"type": "subscribe", "stream": stream, **options})
        assert reply["type"] == "subscribed", reply
        return reply

    async def rows(
        self, stream: str, start: int, stop: int, timeout: float = TIMEOUT
    ) -> dict[str, np.ndarray]:
        """Read data frames of ``stream`` until rows ``start:stop`` have all arrived.

        Fails on a gap, a duplicate, or a frame that does not start where the last ended.
        """
        chunks: dict[str, list[np.ndarray]] = {}
        nxt = start
        deadline = asyncio.get_running_loop().time() + timeout
        while nxt < stop:
            left = deadline - asyncio.get_running_loop().time()
            msg = await self.expect(
                lambda m: m["type"] in ("data", "reset") and m.get("stream") == stream,
                max(left, 0.001),
            )
            assert msg["type"] == "data", f"unexpected {msg!r} while reading rows {nxt}..{stop}"
            assert msg["offset"] == nxt, f"data at offset {msg['offset']}, expected {nxt}"
            for name, values in msg["columns"].items():
                chunks.setdefault(name, []).append(np.asarray(values))
            nxt += msg["rows"]
        assert nxt == stop, f"read past the requested rows: up to {nxt}, asked for {stop}"
        return {n: np.concatenate(parts) for n, parts in chunks.items()}


@contextlib.asynccontextmanager
async def _connect(
    server: Server, token: str | None = TOKEN, path: str = "/ws", **kwargs: Any
) -> AsyncIterator[Peer]:
    url = server.ws_url.replace("/ws", path)
    if token is not None:
        url += f"?token={token}"
    kwargs.setdefault("max_size", 64 * 1024 * 1024)
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", 2)
    async with websockets.connect(url, **kwargs) as ws:
        peer = Peer(ws)
        peer.welcome = decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert peer.welcome["type"] == "welcome", peer.welcome
        yield peer


def _http(
    server: Server,
    method: str,
    path: str,
    body: bytes | str | None = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A blocking HTTP request (run it with asyncio.to_thread); returns (status, JSON body)."""
    url = server.base_url + path
    if token is not None:
        url += ("&" if "?" in path else "?") + f"token={token}"
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --------------------------------------------------------------------------- fixtures


def _wait_threads_gone(before: set[threading.Thread], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for thread in livestream_threads() - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t.name for t in livestream_threads() - before if t.is_alive()]
    assert not leaked, f"threads still running after the server stopped: {leaked}"


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Every test: a ``livestream-*`` thread the test started must be gone after it (a
    bounded wait for threads that are stopping)."""
    before = livestream_threads()
    yield
    _wait_threads_gone(before)


class _ErrorLog(logging.Handler):
    """Keeps the ERROR records logged while a test runs, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock2:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_stray_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test: an ERROR logged while it runs fails it, unless the test expects it.

    Tornado's ``ExpectLog`` habit: a server that logs an error nobody asked for is a bug
    the assertions may not see. A test that provokes one on purpose says so with
    ``@pytest.mark.expect_errors("regex", ...)``; each pattern must then match a record.
    """
    handler = _ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    marker = request.node.get_closest_marker("expect_errors")
    patterns = [re.compile(p) for p in (marker.args if marker else ())]
    texts = [f"{r.name}: {r.getMessage()}" for r in handler.records]
    unmatched = [p.pattern for p in patterns if not any(p.search(t) for t in texts)]
    assert not unmatched, f"expected ERROR log lines that never came: {unmatched}"
    stray = [t for t in texts if not any(p.search(t) for p in patterns)]
    assert not stray, f"ERROR logged during the test: {stray[:5]}"


@pytest.fixture
def live_server() -> Iterator[Server]:
    """A real server on 127.0.0.1, port 0, on its background thread; stopped at teardown."""
    server = Server("127.0.0.1", 0, token=TOKEN).start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.running, "the server still runs after stop()"


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    """Start servers with given options; stops them all and checks for leaked threads."""
    before = livestream_threads()
    started: list[Server] = []

    def make(**options: Any) -> Server:
        options.setdefault("token", TOKEN)
        server = Server("127.0.0.1", 0, **options).start()
        started.append(server)
        assert server.port and server.port > 0
        return server

    yield make
    for server in started:
        server.stop()
        assert not server.running
    _wait_threads_gone(before)


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    """A started server with the default options and the token TOKEN."""
    return server_factory()


@pytest.fixture
def http() -> Callable[..., tuple[int, Any]]:
    """``status, body = await asyncio.to_thread(http, server, "GET", "/api/streams")``"""
    return _http


@pytest.fixture
def ws_connect() -> Callable[..., contextlib.AbstractAsyncContextManager[Peer]]:
    """``async with ws_connect(server, token=TOKEN, **websockets_kwargs) as peer: ...``"""
    return _connect


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    """``proc = running("serve", "--port", "0")``: a ``python -m livestream`` process;
    every one started is stopped at teardown."""
    started: list[Running] = []

    def start(*args: str) -> Running:
        started.append(Running(*args))
        return started[-1]

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (never a downloaded one), driven by Playwright, for one module;
    a missing Chromium fails the test, saying how to install it."""
    from jupyter_support import chromium

    with chromium() as b:
        yield b


@pytest.fixture
def wave(server: Server) -> Any:
    """A stream ``wave`` fed 50 rows/s: time (ms), y, and k counting rows from 1; one
    declared parameter ``amp`` (0 to 5)."""
    stream = server.stream(
        "wave", history=20_000, schema={"time": "float64", "y": "float64", "k": "int64"}
    )
    count = {"k": 0}

    @stream.producer(every=0.02, params={"amp": Float(1.0, min=0.0, max=5.0, label="Amplitude")})
    def tick(params: Any) -> dict[str, Any]:
        count["k"] += 1
        return {
            "time": time.time() * 1000.0,
            "y": params["amp"] * math.sin(count["k"] / 20),
            "k": count["k"],
        }

    return stream
