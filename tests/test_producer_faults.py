"""Faulty producers are contained: each one's stream reports it, the others keep flowing.

Beside a healthy producer whose rows a viewer checks one by one, producers that raise,
return rows of the wrong schema, return something that is not rows, return nothing, and
block forever (a thread waiting on an event the test only sets at teardown, and a
coroutine awaiting one that is never set). A failure puts its stream in status ``error``
with a message naming the cause, sent to its viewers as ``state``; a blocked producer leaves
its stream still (status ``running``) and shows ``stalled_for`` in ``list``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from livestream.producer import STALL_SECONDS
from livestream.server import Server

pytestmark = pytest.mark.timeout(60)


async def wait_for_state(peer: Any, stream: str, status: str) -> dict[str, Any]:
    """The first `state` of ``stream`` with ``status`` (bounded; other messages are kept)."""
    msg = await peer.expect(
        lambda m: m["type"] == "state" and m["stream"] == stream and m["state"]["status"] == status,
        10,
    )
    return msg["state"]


async def read_on(peer: Any, stream: str, nxt: int, at_least: int) -> int:
    """Read data frames of ``stream`` from offset ``nxt`` until ``at_least`` rows have come;
    each frame must continue the last, its ``i`` equal to the offsets. The next offset."""
    while nxt < at_least:
        msg = await peer.expect(
            lambda m: m["type"] in ("data", "reset") and m.get("stream") == stream, 10
        )
        assert msg["type"] == "data" and msg["offset"] == nxt, (msg, nxt)
        assert np.array_equal(msg["columns"]["i"], np.arange(nxt, nxt + msg["rows"]))
        nxt += msg["rows"]
    return nxt


async def listed(peer: Any) -> dict[str, dict[str, Any]]:
    reply = await peer.request({"type": "list"})
    assert reply["type"] == "streams", reply
    return {s["name"]: s for s in reply["streams"]}


async def test_faulty_producers_are_contained_and_reported(
    server_factory: Callable[..., Server], ws_connect: Any, http: Any
) -> None:
    server = server_factory()
    release = threading.Event()  # what the blocked producer waits for; set at teardown
    names = ("good", "raises", "wrong-schema", "not-rows", "nothing", "blocked", "async-blocked")
    streams = {name: server.stream(name) for name in names}
    calls = {name: itertools.count(1) for name in names}

    @streams["good"].producer(every=0.005)
    def good() -> dict[str, list[int]]:
        n = next(calls["good"])
        return {"i": [2 * n - 2, 2 * n - 1]}  # two rows a call; i equals the offset

    @streams["raises"].producer(every=0.01)
    def raises() -> dict[str, float]:
        if next(calls["raises"]) == 3:
            raise RuntimeError("sensor unplugged")
        return {"x": 1.0}

    @streams["wrong-schema"].producer(every=0.01)
    def wrong_schema() -> dict[str, Any]:
        return {"price": 1.5} if next(calls["wrong-schema"]) < 3 else {"price": "n/a"}

    @streams["not-rows"].producer(every=0.01)
    def not_rows() -> Any:
        return {"x": 1.0} if next(calls["not-rows"]) < 3 else "42 rows"

    @streams["nothing"].producer(every=0.01)
    def nothing() -> None:
        next(calls["nothing"])
        return None

    @streams["blocked"].producer(every=0.01)
    def blocked() -> dict[str, float] | None:
        if next(calls["blocked"]) == 2:
            release.wait()  # blocks until teardown
            return None
        return {"x": 1.0}

    @streams["async-blocked"].producer(every=0.01)
    async def async_blocked() -> dict[str, float]:
        if next(calls["async-blocked"]) == 2:
            await asyncio.Event().wait()  # never set; the server's stop cancels it
        return {"x": 1.0}

    try:
        async with ws_connect(server) as viewer:
            subscribed = {name: await viewer.subscribe(name) for name in names}

            async def failed(name: str) -> dict[str, Any]:
                # A producer that failed before the viewer subscribed is reported in the
                # `subscribed` reply; one that fails later, by a `state` message.
                state: dict[str, Any] = subscribed[name]["state"]
                if state["status"] == "error":
                    return state
                return await wait_for_state(viewer, name, "error")

            # Each failure reaches the viewers with its cause.
            state = await failed("raises")
            assert state["error"] == "RuntimeError: sensor unplugged"
            state = await failed("wrong-schema")
            assert state["error"].startswith("SchemaMismatch: ")
            assert "'price'" in state["error"] and "float64" in state["error"], state
            state = await failed("not-rows")
            assert state["error"].startswith("SchemaMismatch: ") and "str" in state["error"]
            for name, rows in (("raises", 2), ("wrong-schema", 2), ("not-rows", 2)):
                assert streams[name].end == rows, name  # the good rows before the fault stay

            # The blocked ones are reported as stalled once a call has lasted long enough;
            # meanwhile the healthy stream flows, row by row, to the same viewer.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STALL_SECONDS + 10
            nxt = 0
            while True:
                nxt = await read_on(viewer, "good", nxt, nxt + 10)
                summary = await listed(viewer)
                if all("stalled_for" in summary[n] for n in ("blocked", "async-blocked")):
                    break
                assert loop.time() < deadline, {n: summary[n] for n in ("blocked", "async-blocked")}
            for name in ("blocked", "async-blocked"):
                assert summary[name]["state"]["status"] == "running", summary[name]
                assert summary[name]["stalled_for"] >= STALL_SECONDS
                assert summary[name]["offset"] == 1, "only the call before the block appended"
            # Nobody else is stalled: not the healthy one, not the failed ones, not the one
            # whose calls return nothing.
            for name in ("good", "raises", "wrong-schema", "not-rows", "nothing"):
                assert "stalled_for" not in summary[name], summary[name]
            assert summary["nothing"]["state"]["status"] == "running"
            assert summary["nothing"]["offset"] == 0 and summary["nothing"]["schema"] == {}
            assert next(calls["nothing"]) > 10, "the producer returning None keeps being called"
            for name in ("raises", "wrong-schema", "not-rows"):
                assert summary[name]["state"]["status"] == "error"
                assert summary[name]["state"]["error"]
            # The HTTP API says the same.
            status, body = await asyncio.to_thread(http, server, "GET", "/api/streams/blocked")
            assert status == 200 and body["stalled_for"] >= STALL_SECONDS, body

            # The stalled streams do not grow while the healthy one goes on.
            nxt = await read_on(viewer, "good", nxt, streams["good"].end + 200)
            assert streams["blocked"].end == 1 and streams["async-blocked"].end == 1
            assert streams["good"].state["status"] == "running"
            # Every data frame the viewer got for the other streams came before their fault.
            for name in ("raises", "wrong-schema", "not-rows", "blocked", "async-blocked"):
                rows = streams[name].end
                column = "price" if name == "wrong-schema" else "x"
                got = await viewer.rows(name, 0, rows)
                assert got[column].tolist() == [1.5 if column == "price" else 1.0] * rows
    finally:
        release.set()
