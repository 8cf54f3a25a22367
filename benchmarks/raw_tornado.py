"""The ceiling: a minimal raw Tornado WebSocket broadcast of the same binary frames.

No livestream code at all: a handler that keeps a set of connections, and a producer
coroutine on the loop that encodes each batch once (the protocol's binary ``data`` layout:
uint32 header length, JSON header, padding, 8-byte aligned little-endian columns) and writes
it to every connection. Modes:

* ``await`` (the default, the fair ceiling): write the frame to everyone, then wait for all
  the writes to complete before the next batch: lossless, memory-bounded, paced by the
  slowest reader. Nothing can merge, so every batch is one frame per connection.
* ``nowait``: write and go on (only yielding to the loop between batches): what a naive
  broadcast does. A reader that stops reading makes Tornado buffer without bound.
* with a ``rate``: write on an absolute schedule (rows/s in ``batch``-row frames) without
  waiting (used for latency).

Run in its own process by the benchmarks (``serve``); pipe commands as for
``benchmarks.ls_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from typing import Any

import numpy as np
import psutil
import tornado.web
import tornado.websocket

from .common import (
    STREAM,
    Batches,
    PacedProducer,
    ProducerSlot,
    ServerThread,
    child_setup,
    error_reply,
    serve_commands,
)

_DTYPES = {"float64": "<f8", "int64": "<i8"}
_SCHEMA = {"time": "float64", "price": "float64", "volume": "int64"}


def encode_frame(offset: int, columns: dict[str, np.ndarray]) -> bytes:
    """One binary data frame, laid out as docs/protocol.md says (all columns 8-byte types)."""
    rows = len(columns["time"])
    descr, buffers, position = [], [], 0
    for name, dtype in _SCHEMA.items():
        data = np.ascontiguousarray(columns[name], dtype=_DTYPES[dtype]).tobytes()
        descr.append({"name": name, "dtype": dtype, "offset": position, "nbytes": len(data)})
        buffers.append(data)
        position += len(data)  # 8-byte dtypes: always aligned
    head = json.dumps(
        {"type": "data", "stream": STREAM, "offset": offset, "rows": rows, "columns": descr},
        separators=(",", ":"),
    ).encode()
    pad = -(4 + len(head)) % 8
    return b"".join([struct.pack("<I", len(head)), head, b"\0" * pad, *buffers])


class _Broadcast(tornado.websocket.WebSocketHandler):
    clients: set[_Broadcast]

    def initialize(self, clients: set[_Broadcast]) -> None:
        self.clients = clients

    def check_origin(self, origin: str) -> bool:
        return True

    def get_compression_options(self) -> None:
        return None

    def open(self, *args: Any) -> None:
        self.set_nodelay(True)
        self.clients.add(self)

    def on_message(self, message: str | bytes) -> None:
        # A raw broadcast has nothing to hear but the protocol's application ping, answered
        # so that a bystander can measure the loop's responsiveness (benchmarks.abuse).
        if not isinstance(message, str) or '"ping"' not in message:
            return
        try:
            msg = json.loads(message)
        except ValueError:
            return
        if isinstance(msg, dict) and msg.get("type") == "ping":
            try:
                fut = self.write_message(json.dumps({"type": "pong", "id": msg.get("id")}))
            except tornado.websocket.WebSocketClosedError:
                return
            fut.add_done_callback(_retrieve)

    def on_close(self) -> None:
        self.clients.discard(self)


def _retrieve(fut: Any) -> None:
    # A write to a connection that closed meanwhile fails; that is expected, not an error.
    if not fut.cancelled():
        fut.exception()


class _Producer(PacedProducer):
    def __init__(
        self,
        loop: Any,
        clients: set[_Broadcast],
        batch: int,
        rate: float | None,
        mode: str,
        duration: float,
    ) -> None:
        super().__init__(batch, rate, duration)
        self.loop = loop
        self.clients = clients
        self.mode = mode
        self.stopping = False
        self.task: Any = None

    def start(self) -> None:
        self.task = asyncio.run_coroutine_threadsafe(self.run(), self.loop)

    def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(Exception):
            self.task.result(20)

    async def run(self) -> None:
        source = Batches(self.batch)
        pace = self.pace()
        interval = pace.interval
        offset = 0
        async for _ in pace.abeats(lambda: self.stopping):
            frame = encode_frame(offset, source.columns())
            offset += self.batch
            self.appended = offset
            futures = []
            for client in list(self.clients):
                try:
                    fut = client.write_message(frame, binary=True)
                except tornado.websocket.WebSocketClosedError:
                    self.clients.discard(client)
                    continue
                fut.add_done_callback(_retrieve)
                futures.append(fut)
            if self.mode == "await" and not interval:
                if futures:
                    await asyncio.gather(*futures, return_exceptions=True)
                else:
                    await asyncio.sleep(0.001)
            elif not interval:
                await asyncio.sleep(0)
        self.stopped = time.monotonic()


def serve(conn: Any, options: dict[str, Any]) -> None:
    """Process entry point: run the raw broadcast server and obey pipe commands."""
    child_setup()
    clients: set[_Broadcast] = set()
    try:
        server = ServerThread(
            lambda: tornado.web.Application(
                [(r"/ws", _Broadcast, {"clients": clients})], websocket_max_message_size=1 << 20
            ),
            "raw Tornado server",
            backlog=1024,
            timeout=20,
        )
    except Exception as exc:
        conn.send(error_reply(exc))
        return
    me = psutil.Process()
    conn.send({"kind": "raw", "port": server.port, "pid": me.pid})
    producer = ProducerSlot()

    def produce(msg: dict[str, Any]) -> dict[str, Any]:
        producer.run(
            _Producer(
                server.loop,
                clients,
                msg.get("batch", 1000),
                msg.get("rate"),
                msg.get("mode", "await"),
                msg.get("duration", 120.0),
            )
        )
        return {"ok": True, "end": 0}

    try:
        serve_commands(
            conn,
            {
                "produce": produce,
                "stop": lambda msg: producer.stop(),
                "info": lambda msg: {"rss": me.memory_info().rss, "subscribers": len(clients)},
            },
        )
    finally:
        server.stop(5)  # its loop ends, cancelling a producer still running
