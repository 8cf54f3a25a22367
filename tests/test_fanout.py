"""Fan-out details that the benchmarks rely on: chunk-aligned frames, and producer threads
that cannot starve the server's loop.

The frames are read by the independent ``websockets`` peer of conftest.py; the yield is
observed from the appending thread, on a real server whose loop the test holds.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np
import pytest
import websockets

from conftest import TOKEN
from livestream import Limits
from livestream import hub as H

pytestmark = pytest.mark.timeout(60)

ROW_BYTES = 24  # float64 + float64 + int64
CHUNK = H.CHUNK_BYTES // ROW_BYTES


def rows(start: int, stop: int) -> dict[str, np.ndarray]:
    offsets = np.arange(start, stop)
    return {
        "time": offsets.astype("<f8"),
        "price": offsets * 0.5,
        "volume": offsets.astype("<i8"),
    }


async def frames_until(peer, stream: str, stop: int) -> list[tuple[int, int, np.ndarray]]:
    """(offset, rows, volume column) of each data frame until row ``stop``; no gaps."""
    out = []
    nxt = None
    while nxt is None or nxt < stop:
        msg = await peer.expect(lambda m: m["type"] in ("data", "reset") and m["stream"] == stream)
        assert msg["type"] == "data", f"unexpected {msg}"
        assert nxt is None or msg["offset"] == nxt, f"frame at {msg['offset']}, expected {nxt}"
        out.append((msg["offset"], msg["rows"], msg["columns"]["volume"]))
        nxt = msg["offset"] + msg["rows"]
    return out


async def test_a_viewer_catching_up_gets_chunk_aligned_frames(server, ws_connect):
    stream = server.stream("ticks")
    total = 4 * CHUNK + 1234
    stream.append(rows(0, total))
    async with ws_connect(server) as a, ws_connect(server) as b, ws_connect(server) as c:
        await a.subscribe("ticks")
        await b.subscribe("ticks")
        start = CHUNK // 3  # a resuming viewer, mid-chunk
        await c.subscribe("ticks", since=start, epoch=stream.epoch)
        got_a = await frames_until(a, "ticks", total)
        got_b = await frames_until(b, "ticks", total)
        got_c = await frames_until(c, "ticks", total)

    # Frames end at chunk boundaries (or at the end of the stream), never across one.
    for got in (got_a, got_b, got_c):
        for offset, n, _ in got:
            end = offset + n
            assert end == total or end % CHUNK == 0, f"frame {offset}..{end} crosses a chunk"
            assert offset // CHUNK == (end - 1) // CHUNK, f"frame {offset}..{end} spans chunks"
        volumes = np.concatenate([v for _, _, v in got])
        assert volumes.tolist() == list(range(got[0][0], total)), "rows lost or out of order"
    assert [(o, n) for o, n, _ in got_a] == [(o, n) for o, n, _ in got_b]
    assert len(got_a) == 5  # four whole chunks and the tail
    # The mid-chunk viewer's first frame runs to the next boundary; then it is in step.
    assert got_c[0][:2] == (start, CHUNK - start)
    assert [(o, n) for o, n, _ in got_c[1:]] == [(o, n) for o, n, _ in got_a[1:]]


async def test_a_viewer_in_step_still_gets_merged_frames(server, ws_connect):
    """Chunks cut frames only at boundaries: rows appended while a viewer's frame is
    being written still go out together."""
    stream = server.stream("ticks")
    stream.append(rows(0, 1))
    async with ws_connect(server) as peer:
        await peer.subscribe("ticks", credit=1)
        await frames_until(peer, "ticks", 1)
        stream.append(rows(1, 200))  # no credit: these wait on the server...
        stream.append(rows(200, 400))
        stream.append(rows(400, 600))
        await peer.send({"type": "credit", "stream": "ticks", "frames": 1})
        got = await frames_until(peer, "ticks", 600)  # ...and arrive as one frame
    assert [(o, n) for o, n, _ in got] == [(1, 599)]


def test_a_producer_thread_that_starves_the_loop_waits_a_bounded_time(server):
    """While the loop cannot run (here: the test holds it), a second ``append`` from a thread
    waits for it at most YIELD_MAX, once the first one's wake has waited STARVED_AFTER;
    when the loop runs again, appends go straight through and every row is kept."""
    stream = server.stream("busy")
    stream.append(rows(0, 10))
    entered, release = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        entered.set()
        release.wait(10)

    server.loop.call_soon_threadsafe(hold_the_loop)
    assert entered.wait(5), "the loop did not run the holding callback"
    try:
        stream.append(rows(10, 20))  # schedules the wake; nothing to wait for yet
        assert server.hub.wake_pending("busy"), "the append scheduled no wake"
        # Let the wake wait longer than STARVED_AFTER: a stretch of time, not an event.
        time.sleep(H.STARVED_AFTER * 3)
        t1 = time.monotonic()
        stream.append(rows(20, 30))  # the loop is starved: this one yields to it
        second = time.monotonic() - t1
    finally:
        release.set()
    assert H.YIELD_MAX * 0.9 <= second < 1.0, f"the starved append waited {second * 1000:.1f} ms"

    # The loop runs again: its wake comes, and appends stop waiting.
    ran = threading.Event()
    server.loop.call_soon_threadsafe(ran.set)  # queued behind the wake: it has run by then
    assert ran.wait(5), "the loop never ran again"
    assert not server.hub.wake_pending("busy"), "the loop never ran the wake"
    t2 = time.monotonic()
    for i in range(3, 50):
        stream.append(rows(i * 10, i * 10 + 10))
    took = time.monotonic() - t2
    # Were every append to wait, 47 would take 235 ms; unhindered they take about 1 ms.
    assert took < 47 * H.YIELD_MAX / 2, f"47 appends took {took * 1000:.0f} ms: they kept waiting"
    assert stream.window() == (0, 500)
    assert stream.read(0).columns["volume"].tolist() == list(range(500))


# --------------------------------------------------------------------------- overflow="wait"


async def test_in_wait_mode_a_slow_viewer_loses_nothing(server_factory, ws_connect):
    """A producer thread appends 20 histories' worth as fast as it can; the viewer reads
    slowly. In ``overflow="wait"`` mode the producer waits for it: every row arrives, in
    order, and no ``reset`` is sent."""
    server = server_factory()
    stream = server.stream("backfill", history=2_000, overflow="wait")
    async with ws_connect(server) as viewer:
        await viewer.subscribe("backfill", format="json")
        total = 40_000

        def produce() -> None:
            for start in range(0, total, 500):
                stream.append(rows(start, start + 500))

        producer = asyncio.get_running_loop().run_in_executor(None, produce)
        nxt = 0
        while nxt < total:
            msg = await viewer.expect(lambda m: m.get("stream") == "backfill", timeout=30)
            assert msg["type"] == "data", f"the viewer fell behind: {msg}"
            assert msg["offset"] == nxt
            assert msg["columns"]["volume"] == list(range(nxt, nxt + msg["rows"]))
            nxt += msg["rows"]
            await asyncio.sleep(0.002)  # a slow reader
        await asyncio.wait_for(producer, 30)
    assert stream.end == total


async def test_in_wait_mode_a_stalled_viewer_holds_the_producer_only_so_long(server_factory):
    """A viewer that never reads holds a waiting producer at most the write timeout (then
    the server closes it and the producer goes on), never forever."""
    server = server_factory(limits=Limits(write_timeout=1.0))
    stream = server.stream("held", history=10_000, overflow="wait")
    stream.append(rows(0, 10_000))
    url = f"{server.ws_url}?token={TOKEN}"
    async with websockets.connect(url, max_queue=1, max_size=None, close_timeout=1) as stalled:
        stalled.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        await stalled.send('{"type":"subscribe","stream":"held","since":0}')

        def produce() -> float:
            t0 = time.monotonic()
            # 48 MB: far more than the socket buffers between the server and the viewer.
            for start in range(10_000, 2_000_000, 10_000):
                stream.append(rows(start, start + 10_000))
            return time.monotonic() - t0

        took = await asyncio.wait_for(asyncio.to_thread(produce), 30)
    # It did wait (about the write timeout, then the sweep's second), and no longer.
    assert 0.8 < took < 1.0 + 1.0 + 2.0, f"the producer took {took:.2f} s"
    assert stream.end == 2_000_000
    assert server.hub.subscriber_count("held") == 0  # the stalled viewer was closed
