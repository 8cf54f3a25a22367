"""Subscribers built on the ``websockets`` library: the client most users have.

Issue 14: an independent harness measured livestream against raw Tornado with subscribers
written with plain ``websockets`` (``websockets.connect(url, max_size=None)``, asyncio),
decoding every binary ``data`` frame and checking offsets row by row, and saw livestream at
0.66x raw at N = 1 where the light client of ``benchmarks.wsclient`` (which reads only
each frame's JSON header) gave 0.95x. This module is that kind of subscriber, so the
benchmarks can report both.

Each connection is a ``websockets`` client connection with its own reading task. It
decodes each binary frame as docs/protocol.md says, with ``struct`` and numpy only (no
livestream import): the uint32 header length, the JSON header, the 8-byte aligned buffer
area, and every numeric column as a numpy view of its buffer (``nbytes`` checked against
``rows``). Raw Tornado (``benchmarks.raw_tornado``) sends the same layout, so the same code
subscribes to both; for livestream it first waits for ``welcome`` and sends ``subscribe``
with ``last: 0``.

Offsets are checked row by row: the connection keeps the offset of the next row it
expects, and every frame must start exactly there. Rows that a ``reset`` (reason ``gap``)
announced as skipped are counted as *skipped*; any other jump forward is a *gap* error, any
overlap (a frame starting before the next expected row) a *duplicate* error, and so is a
frame whose column sizes do not match its ``rows``. The light client counts any jump as
loss; this one tells the cases apart.

Commands over the pipe are those of :func:`benchmarks.clients.ws_subscribers`
(``measure``, ``drain``, ``quit``), and the replies have the same keys, plus ``skipped``
(rows skipped via ``reset``, whole run), ``errors`` (gaps without a ``reset``, duplicates,
malformed frames, whole run) and ``decoded`` (columns decoded in the window).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import time
from typing import Any

import numpy as np

from .common import HOST, STREAM, TOKEN, child_setup, error_reply

_U32 = struct.Struct("<I")
_NUMPY = {
    "float64": "<f8",
    "float32": "<f4",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "u1",
    "bool": "?",
}


def decode(frame: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """A binary data frame -> (its header, {column: numpy view or list of values}).

    Raises ``ValueError`` for a frame whose buffers do not match its ``rows``."""
    (hlen,) = _U32.unpack_from(frame, 0)
    header = json.loads(frame[4 : 4 + hlen])
    area = 4 + hlen + (-(4 + hlen) % 8)
    rows = header["rows"]
    columns: dict[str, Any] = {}
    for col in header["columns"]:
        if "values" in col:
            columns[col["name"]] = col["values"]
            continue
        dtype = np.dtype(_NUMPY[col["dtype"]])
        if col["nbytes"] != rows * dtype.itemsize:
            raise ValueError(f"column {col['name']}: {col['nbytes']} bytes for {rows} rows")
        columns[col["name"]] = np.frombuffer(frame, dtype, count=rows, offset=area + col["offset"])
    return header, columns


class _State:
    __slots__ = (
        "bytes_win",
        "decoded_win",
        "dups",
        "errors",
        "first",
        "frames_win",
        "gap",
        "gap_win",
        "lat",
        "malformed",
        "next",
        "reset_to",
        "resets",
        "rows_total",
        "rows_win",
        "skipped",
        "skipped_win",
    )

    def __init__(self) -> None:
        self.rows_win = self.frames_win = self.bytes_win = self.decoded_win = 0
        self.rows_total = 0
        self.gap = self.gap_win = 0  # rows jumped over, for whatever reason (the loss column)
        self.skipped = self.skipped_win = 0  # of which announced by a `reset`
        self.errors = 0  # rows jumped over without a reset
        self.dups = 0  # rows received twice
        self.malformed = 0
        self.resets = 0
        self.first: int | None = None
        self.next: int | None = None
        self.reset_to: int | None = None
        self.lat: list[np.ndarray] = []


class _Window:
    t0 = float("inf")
    t1 = float("inf")
    latency = False


def _on_binary(st: _State, frame: bytes) -> None:
    now = time.time()
    try:
        header, columns = decode(frame)
    except (ValueError, KeyError, struct.error):
        st.malformed += 1
        return
    rows, offset = header["rows"], header["offset"]
    jumped = skipped = 0
    if st.next is None:
        st.first = offset
    elif offset > st.next:
        jumped = offset - st.next
        if st.reset_to is not None and st.reset_to >= offset:
            skipped = jumped  # announced by a reset: rows the server no longer held
        else:
            st.errors += jumped  # rows that simply never came
    elif offset < st.next:
        st.dups += st.next - offset
    st.reset_to = None
    st.gap += jumped
    st.skipped += skipped
    st.next = offset + rows
    st.rows_total += rows
    if _Window.t0 <= now < _Window.t1:
        st.gap_win += jumped
        st.skipped_win += skipped
        st.rows_win += rows
        st.frames_win += 1
        st.bytes_win += len(frame)
        st.decoded_win += len(columns)
        if _Window.latency:
            st.lat.append(now * 1000.0 - columns["time"])


def _on_text(st: _State, text: str, subscribed: asyncio.Event) -> None:
    msg = json.loads(text)
    kind = msg.get("type")
    if kind == "subscribed":
        st.first = st.next = msg["offset"]
        subscribed.set()
    elif kind == "reset":
        st.resets += 1
        st.reset_to = msg["offset"]
    elif kind == "error":
        st.malformed += 1


async def _main(conn: Any, kind: str, port: int, count: int, options: dict[str, Any]) -> None:
    import websockets

    url = f"ws://{HOST}:{port}/ws" + (f"?token={TOKEN}" if kind == "livestream" else "")
    states = [_State() for _ in range(count)]
    conns: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    limit = asyncio.Semaphore(32)
    subscribe = json.dumps({"type": "subscribe", "stream": STREAM, "last": 0})

    async def read(ws: Any, st: _State, subscribed: asyncio.Event) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, asyncio.CancelledError):
            async for message in ws:
                if isinstance(message, bytes):
                    _on_binary(st, message)
                else:
                    _on_text(st, message, subscribed)

    async def open_one(st: _State) -> None:
        async with limit:
            ws = await asyncio.wait_for(websockets.connect(url, max_size=None), 60)
            conns.append(ws)
            subscribed = asyncio.Event()
            if kind == "livestream":
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if welcome.get("type") != "welcome":
                    raise RuntimeError(f"expected welcome, got {welcome}")
            tasks.append(asyncio.create_task(read(ws, st, subscribed)))
            if kind == "livestream":
                await ws.send(subscribe)
                await asyncio.wait_for(subscribed.wait(), 30)

    await asyncio.gather(*(open_one(st) for st in states))
    conn.send({"connected": len(conns), "pid": os.getpid(), "port": 0})
    loop = asyncio.get_running_loop()
    try:
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            cmd = msg["cmd"]
            if cmd == "quit":
                break
            if cmd == "measure":
                for st in states:
                    st.rows_win = st.frames_win = st.bytes_win = st.decoded_win = 0
                    st.gap_win = st.skipped_win = 0
                    st.lat = []
                _Window.latency = bool(msg.get("latency"))
                _Window.t0, _Window.t1 = msg["t0"], msg["t1"]
                await asyncio.sleep(max(0.0, _Window.t1 - time.time()) + 0.05)
                lat = [a for st in states for a in st.lat]
                conn.send(
                    {
                        "rows": [st.rows_win for st in states],
                        "frames": [st.frames_win for st in states],
                        "bytes": [st.bytes_win for st in states],
                        "gap": [st.gap_win for st in states],
                        "skipped_win": [st.skipped_win for st in states],
                        "resets": [st.resets for st in states],
                        "skipped": [st.skipped for st in states],
                        "errors": [st.errors + st.dups + st.malformed for st in states],
                        "dups": [st.dups for st in states],
                        "decoded": [st.decoded_win for st in states],
                        "latency": np.concatenate(lat).tolist() if lat else [],
                    }
                )
            elif cmd == "drain":
                deadline = time.monotonic() + msg.get("timeout", 20.0)
                end = msg["end"]
                while time.monotonic() < deadline and any((st.next or 0) < end for st in states):
                    await asyncio.sleep(0.05)
                conn.send(
                    {
                        "received": [st.rows_total for st in states],
                        "expected": [end - (st.first or 0) for st in states],
                        "gap": [st.gap for st in states],
                        "resets": [st.resets for st in states],
                        "skipped": [st.skipped for st in states],
                        "errors": [st.errors + st.dups + st.malformed for st in states],
                        "complete": sum((st.next or 0) >= end for st in states),
                    }
                )
            else:
                conn.send({"error": f"unknown command {cmd!r}"})
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True), 5
            )


def subscribers(conn: Any, kind: str, port: int, count: int, options: dict[str, Any]) -> None:
    """Process entry point: ``count`` ``websockets`` subscribers of a livestream or raw
    Tornado server (``kind``: ``"livestream"`` or ``"raw"``)."""
    child_setup()
    try:
        asyncio.run(_main(conn, kind, port, count, options))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(error_reply(exc))
