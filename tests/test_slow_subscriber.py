"""A subscriber that stops reading costs the server neither memory nor other viewers' rows.

The stalled peer is a raw TCP socket that performs the WebSocket upgrade, subscribes, and
then never reads again (with a small receive buffer), so the kernel buffers fill and the
server's writes to it stop completing: the situation of a frozen browser tab.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil
import pytest

from conftest import TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SOAK_SECONDS = 20.0
BATCH = 1000
ROW_BYTES = 24  # int64 + float64 + float64
#: Bound on the test process's RSS growth after warm-up while the soak runs. What the
#: server may legitimately hold: the history (100k rows x 24 B = 2.4 MB), one frame per
#: subscriber being written (<= the history window, 2.4 MB) plus the copy the kernel did
#: not take yet, the frame cache (at most 8 MiB) and the reader's own receive
#: queue (<= max_queue frames of <= 2.4 MB). Tens of MB at most; 150 MiB leaves room for
#: allocator slack, and is still several times smaller than the data streamed through
#: (asserted below), so a server that buffered for the stalled peer would exceed it.
RSS_BOUND = 150 * 1024 * 1024


def masked_text_frame(text: str) -> bytes:
    """A client-to-server WebSocket text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126, "short frames only"
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def stalled_subscriber(port: int, stream: str) -> socket.socket:
    """Upgrade, subscribe to ``stream``, and return the socket, which nobody will read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: stop right after the response head
        assert chunk, "server closed during the upgrade"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(masked_text_frame(f'{{"type": "subscribe", "stream": "{stream}"}}'))
    return sock


async def wait_until(predicate, timeout: float, what: str) -> float:
    """Poll a server-side condition with short awaits; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not predicate():
        if loop.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return loop.time() - t0


def close_code_after_draining(sock: socket.socket, timeout: float = 10.0) -> int | None:
    """Read the frames the server had queued up to its close frame; return the close code."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    buf = bytearray()

    def take(n: int) -> bytes:
        while len(buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("no close frame in time")
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("connection ended without a close frame")
            buf.extend(chunk)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    while True:
        b0, b1 = take(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", take(8))
        payload = take(length)
        if b0 & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class Producer:
    """Appends ``batch(end)`` to ``stream`` on a thread as fast as it can, but never more than
    half the history (50,000 rows) ahead of a normal reader, who reports its progress with
    :meth:`read_up_to`: that reader must see every row (it is never reset), whereas a
    stalled peer falls behind the history again and again."""

    def __init__(self, stream: Any, batch: Callable[[int], dict[str, Any]], name: str) -> None:
        self.stream = stream
        self.batch = batch
        self.read = 0
        self.stop = threading.Event()
        self.advanced = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            n = self.stream.end
            if n - self.read > 50_000:
                self.advanced.wait(1.0)
                self.advanced.clear()
                continue
            self.stream.append(self.batch(n))

    def read_up_to(self, offset: int) -> None:
        self.read = offset
        self.advanced.set()

    def finish(self) -> None:
        """Stop appending; the thread is gone within 5 s (asserted)."""
        self.stop.set()
        self.advanced.set()
        if self.thread.is_alive():
            self.thread.join(5)
        assert not self.thread.is_alive()


async def both_subscribed(server: Any, stream: str) -> None:
    await wait_until(lambda: server.hub.subscriber_count(stream) == 2, 5, "both subscriptions")


async def test_stalled_subscriber_does_not_cost_memory_or_rows(server_factory, ws_connect):
    server = server_factory()  # default history: 100k rows; default write_timeout: 30 s
    stream = server.stream("soak", schema={"i": "int64", "t": "float64", "v": "float64"})
    stalled = stalled_subscriber(server.port, "soak")
    base = np.arange(BATCH, dtype=np.int64)
    noise = np.random.default_rng(0).random(BATCH)
    producer = Producer(
        stream, lambda n: {"i": base + n, "t": (base + n) * 1e-3, "v": noise}, "test-soak-producer"
    )
    proc = psutil.Process()
    try:
        async with ws_connect(server, max_queue=4) as reader:
            await reader.subscribe("soak")
            await both_subscribed(server, "soak")
            producer.thread.start()
            nxt = 0
            frames = 0
            baseline = peak = 0
            loop = asyncio.get_running_loop()
            t_start = loop.time()
            warm = False
            while True:
                msg = await reader.expect(lambda m: m["type"] in ("data", "reset"), 10)
                assert msg["type"] == "data", f"the normal reader got {msg}"
                assert msg["offset"] == nxt, f"frame at {msg['offset']}, expected {nxt}"
                rows = msg["rows"]
                assert np.array_equal(msg["columns"]["i"], np.arange(nxt, nxt + rows))
                nxt += rows
                frames += 1
                producer.read_up_to(nxt)
                if not warm and nxt >= 300_000:
                    warm = True  # history full, frames at full size: measure from here
                    baseline = peak = proc.memory_info().rss
                    t_start = loop.time()
                elif warm:
                    peak = max(peak, proc.memory_info().rss)
                    if loop.time() - t_start >= SOAK_SECONDS:
                        break
                assert loop.time() - t_start < SOAK_SECONDS + 30, "warm-up took too long"
            producer.finish()
            final = stream.end
            if nxt < final:
                got = await reader.rows("soak", nxt, final, timeout=10)
                assert np.array_equal(got["i"], np.arange(nxt, final))

            # The stalled peer really was stalled and still connected all along ...
            subs = server.hub.subscribers["soak"]
            assert len(subs) == 2
            # The reader has its last frame, but the server learns that the write completed
            # in a callback on its own loop, which may not have run yet: wait for it.
            await wait_until(
                lambda: sum(s.busy_since is not None for s in subs) <= 1,
                5,
                "the normal reader's last write to complete",
            )
            stuck = [s for s in subs if s.busy_since is not None]
            assert len(stuck) == 1, "the raw peer's writes should not be completing"
            assert stuck[0].cursor < stream.start, "the stalled peer should lag the history"
            # ... while far more data went through than the bound allows to be held.
            assert final * ROW_BYTES > 3 * RSS_BOUND, f"only {final} rows streamed"
            growth = peak - baseline
            print(
                f"\nsoak: {final} rows in {frames} frames; RSS {baseline / 2**20:.0f} MiB"
                f" + {growth / 2**20:.1f} MiB peak growth"
            )
            assert growth < RSS_BOUND, f"RSS grew by {growth / 2**20:.0f} MiB"
    finally:
        producer.finish()
        stalled.close()


async def test_peer_that_does_not_drain_is_closed(server_factory, ws_connect):
    server = server_factory(write_timeout=2)
    stream = server.stream("wt", schema={"i": "int64", "t": "float64", "v": "float64"})
    base = np.arange(10_000, dtype=np.int64)  # 10k-row batches
    producer = Producer(
        stream,
        lambda n: {"i": base + n, "t": np.zeros(10_000), "v": np.ones(10_000)},
        "test-wt-producer",
    )
    stalled = stalled_subscriber(server.port, "wt")
    finished = asyncio.Event()
    try:
        async with ws_connect(server) as reader:
            await reader.subscribe("wt")
            await both_subscribed(server, "wt")
            assert len(server.hub.sessions) == 2

            async def keep_reading() -> None:
                # Checks `finished` too: on Python 3.11 a cancel that races with a
                # completing wait_for() can be swallowed.
                while not finished.is_set():
                    msg = await reader.expect(lambda m: m["type"] in ("data", "reset"))
                    assert msg["type"] == "data" and msg["offset"] == producer.read, msg
                    producer.read_up_to(producer.read + msg["rows"])

            reading = asyncio.create_task(keep_reading())
            try:
                producer.thread.start()
                took = await wait_until(
                    lambda: server.hub.subscriber_count("wt") <= 1 or reading.done(),
                    20,
                    "the hub to drop the stalled subscription",
                )
                assert not reading.done(), reading
                assert server.hub.subscriber_count("wt") == 1
                # Not before write_timeout (2 s), and promptly after it: the stall starts
                # within a second of the producer's start, the sweep runs every second.
                assert 2.0 <= took <= 6.0, f"dropped {took:.1f} s after the rows started"
                assert len(server.hub.sessions) == 1, "the stalled session should be gone"
                # The normal reader is unaffected and still gets fresh rows.
                mark = stream.end
                await wait_until(
                    lambda: producer.read > mark or reading.done(),
                    5,
                    "fresh rows for the normal reader",
                )
                assert not reading.done(), reading
            finally:
                producer.stop.set()
                producer.advanced.set()
                finished.set()
                reading.cancel()
                await asyncio.wait_for(asyncio.gather(reading, return_exceptions=True), 10)
            producer.finish()
        # Once the peer reads again, what was queued ends with the close frame (1008).
        assert await asyncio.to_thread(close_code_after_draining, stalled) == 1008
    finally:
        producer.finish()
        stalled.close()
