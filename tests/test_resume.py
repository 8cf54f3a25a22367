"""Offsets, epochs and resume: a reconnecting client gets every row exactly once, in order,
or an explicit ``reset`` when what it asks for is gone."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from livestream.streams import Stream

pytestmark = pytest.mark.timeout(30)


def rows_of(n0: int, n1: int) -> dict[str, np.ndarray]:
    i = np.arange(n0, n1, dtype=np.int64)
    return {"i": i, "x": i * 0.5}


def reset_of(stream: Stream, offset: int, reason: str) -> dict[str, Any]:
    """The ``reset`` message the protocol document gives for ``stream`` at ``offset``."""
    return {
        "type": "reset",
        "stream": stream.name,
        "epoch": stream.epoch,
        "offset": offset,
        "reason": reason,
    }


async def read_frames(peer, stream: str, frames: int) -> list[dict]:
    """The next ``frames`` data frames of ``stream`` (failing on a reset)."""
    out = []
    while len(out) < frames:
        msg = await peer.expect(lambda m: m["type"] in ("data", "reset") and m["stream"] == stream)
        assert msg["type"] == "data", msg
        out.append(msg)
    return out


def contiguous(frames: list[dict], start: int) -> int:
    """Assert the frames continue each other from ``start``; return the next offset."""
    nxt = start
    for msg in frames:
        assert msg["offset"] == nxt, f"frame at {msg['offset']}, expected {nxt}"
        assert msg["columns"]["i"].tolist() == list(range(nxt, nxt + msg["rows"]))
        nxt += msg["rows"]
    return nxt


async def test_resume_inside_history_gets_every_row_once(server, ws_connect):
    stream = server.stream("r", schema={"i": "int64", "x": "float64"})
    stream.append(rows_of(0, 1000))
    stop = threading.Event()

    def appender() -> None:
        # Keeps appending across the disconnect and the reconnect (well within the
        # default 100k-row history).
        while not stop.is_set() and stream.end < 80_000:
            n = stream.end
            stream.append(rows_of(n, n + 97))
            stop.wait(0.0005)

    worker = threading.Thread(target=appender, name="test-appender", daemon=True)
    try:
        async with ws_connect(server) as first:
            sub = await first.subscribe("r")
            epoch = sub["epoch"]
            assert sub["offset"] == 0
            worker.start()
            frames = await read_frames(first, "r", 5)
            resume_at = contiguous(frames, 0)
            assert resume_at >= 1000
        # Disconnected; the appender goes on.
        deadline = asyncio.get_running_loop().time() + 5
        while stream.end < resume_at + 1000:
            assert asyncio.get_running_loop().time() < deadline, "the appender stalled"
            await asyncio.sleep(0.005)

        async with ws_connect(server) as second:
            sub = await second.subscribe("r", since=resume_at, epoch=epoch)
            assert sub["offset"] == resume_at and sub["epoch"] == epoch
            frames = await read_frames(second, "r", 3)
            stop.set()
            worker.join(5)
            assert not worker.is_alive()
            final = stream.end
            assert final > resume_at + 97
            nxt = contiguous(frames, resume_at)
            if nxt < final:
                got = await second.rows("r", nxt, final)
                assert got["i"].tolist() == list(range(nxt, final))
                assert got["x"].tolist() == (np.arange(nxt, final) * 0.5).tolist()
            # Nothing more: the next message answers a ping, no duplicate or reset first.
            await second.send({"type": "ping", "id": "end"})
            assert await second.recv() == {"type": "pong", "id": "end"}
    finally:
        stop.set()
        if worker.is_alive():
            worker.join(5)


async def test_resume_at_the_end_gets_only_new_rows(server, ws_connect):
    stream = server.stream("e")
    stream.append(rows_of(0, 10))
    async with ws_connect(server) as peer:
        sub = await peer.subscribe("e", since=10, epoch=stream.epoch)
        assert sub["offset"] == 10
        stream.append(rows_of(10, 12))
        msg = await peer.expect(lambda m: m["type"] in ("data", "reset"))
        assert msg["type"] == "data" and (msg["offset"], msg["rows"]) == (10, 2)


async def test_since_older_than_history_gets_gap_reset(server_factory, ws_connect):
    server = server_factory(history=1000)
    stream = server.stream("g")
    for k in range(5):
        stream.append(rows_of(1000 * k, 1000 * (k + 1)))
    assert (stream.start, stream.end) == (4000, 5000)
    for since in (10, 3999, 5001):  # before the history, and beyond its end
        async with ws_connect(server) as peer:
            sub = await peer.subscribe("g", since=since, epoch=stream.epoch)
            assert sub["offset"] == 4000
            reset = await peer.recv()
            assert reset == reset_of(stream, 4000, "gap"), since
            got = await peer.rows("g", 4000, 5000)
            assert got["i"].tolist() == list(range(4000, 5000))


async def test_another_epoch_gets_restart_reset(server, ws_connect):
    stream = server.stream("ep")
    stream.append(rows_of(0, 20))
    async with ws_connect(server) as peer:
        sub = await peer.subscribe("ep", since=5, epoch="an-old-epoch")
        assert sub["offset"] == 0 and sub["epoch"] == stream.epoch != "an-old-epoch"
        reset = await peer.recv()
        assert reset == reset_of(stream, 0, "restart")
        assert (await peer.rows("ep", 0, 20))["i"].tolist() == list(range(20))


async def test_subscriber_that_falls_out_of_history_gets_gap_reset(server_factory, ws_connect):
    server = server_factory(history=1000)
    stream = server.stream("fall")
    stream.append(rows_of(0, 100))
    async with ws_connect(server) as peer, ws_connect(server) as witness:
        await peer.subscribe("fall", credit=1)  # one frame, then it stops taking any
        await witness.subscribe("fall")
        await peer.rows("fall", 0, 100)
        await witness.rows("fall", 0, 100)
        for k in range(1, 6):
            stream.append(rows_of(1000 * k - 900, 1000 * k + 100))
            await witness.rows("fall", 1000 * k - 900, 1000 * k + 100)
        assert stream.start == 4100
        await peer.send({"type": "credit", "stream": "fall", "frames": 5})
        reset = await peer.recv()
        assert reset == reset_of(stream, 4100, "gap")
        assert (await peer.rows("fall", 4100, 5100))["i"].tolist() == list(range(4100, 5100))
