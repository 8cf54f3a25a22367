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
import struct
import time
from typing import Any

import numpy as np

from .clients import (
    OffsetCounts,
    Window,
    connect_all,
    drain,
    latencies,
    measure_window,
    per,
    run_subscribers,
)
from .common import HOST, STREAM, TOKEN, serve_commands_async

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


class _State(OffsetCounts):
    __slots__ = (
        "decoded_win",
        "dups",
        "errors",
        "malformed",
        "reset_to",
        "skipped",
        "skipped_win",
    )

    def __init__(self) -> None:
        super().__init__()
        self.decoded_win = 0
        # `gap` (rows jumped over, for whatever reason: the loss column) of which:
        self.skipped = self.skipped_win = 0  # announced by a `reset`
        self.errors = 0  # jumped over without a reset
        self.dups = 0  # rows received twice
        self.malformed = 0
        self.reset_to: int | None = None

    def reset_window(self) -> None:
        super().reset_window()
        self.decoded_win = self.skipped_win = 0

    @property
    def all_errors(self) -> int:
        return self.errors + self.dups + self.malformed


def _on_binary(st: _State, frame: bytes) -> None:
    now = time.time()
    try:
        header, columns = decode(frame)
    except (ValueError, KeyError, struct.error):
        st.malformed += 1
        return
    rows, offset = header["rows"], header["offset"]
    jumped = st.jump_to(offset)
    skipped = 0
    if jumped:
        if st.reset_to is not None and st.reset_to >= offset:
            skipped = jumped  # announced by a reset: rows the server no longer held
        else:
            st.errors += jumped  # rows that simply never came
    elif st.next is not None and offset < st.next:
        st.dups += st.next - offset
    st.reset_to = None
    st.skipped += skipped
    if st.took(now, offset, rows, len(frame), jumped):
        st.skipped_win += skipped
        st.decoded_win += len(columns)
        if Window.latency:
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
    subscribe = json.dumps({"type": "subscribe", "stream": STREAM, "last": 0})

    async def read(ws: Any, st: _State, subscribed: asyncio.Event) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, asyncio.CancelledError):
            async for message in ws:
                if isinstance(message, bytes):
                    _on_binary(st, message)
                else:
                    _on_text(st, message, subscribed)

    async def open_one(st: _State) -> None:
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

    async def measure(msg: dict[str, Any]) -> dict[str, Any]:
        out = await measure_window(states, msg)
        out.update(
            gap=per(states, "gap_win"),
            skipped_win=per(states, "skipped_win"),
            resets=per(states, "resets"),
            skipped=per(states, "skipped"),
            errors=per(states, "all_errors"),
            dups=per(states, "dups"),
            decoded=per(states, "decoded_win"),
            latency=latencies(states),
        )
        return out

    async def drain_all(msg: dict[str, Any]) -> dict[str, Any]:
        out = await drain(states, msg)
        out.update(skipped=per(states, "skipped"), errors=per(states, "all_errors"))
        return out

    await connect_all(conn, open_one, states, 32)
    try:
        await serve_commands_async(conn, {"measure": measure, "drain": drain_all})
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
    run_subscribers(_main, conn, kind, port, count, options)
