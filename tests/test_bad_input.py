"""The bad-input matrix: every refusal has its specific code and an explanatory message, and
neither the offending connection (when it stays open) nor anyone else is disturbed.

Each test ends with :meth:`Feed.check`: the same connection still answers a ping, and a
viewer that subscribed before the bad input still receives newly appended rows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import TOKEN
from livestream import Server
from livestream.controls import Float

pytestmark = pytest.mark.timeout(30)

FULL_TOKEN = TOKEN  # the conftest server's token
VIEW_TOKEN = "viewonly-token-123"


class Feed:
    """A stream ``feed`` with a parameter, and a viewer subscribed to it."""

    def __init__(self, server, stream, viewer):
        self.server = server
        self.stream = stream
        self.viewer = viewer

    async def check(self, peer=None) -> None:
        """``peer`` still answers, and the viewer still gets new rows."""
        if peer is not None:
            await peer.ping()
        n = self.stream.end
        self.stream.append({"n": [n], "x": [n / 2]})
        got = await self.viewer.rows("feed", n, n + 1)
        assert got["n"].tolist() == [n]


@contextlib.asynccontextmanager
async def feed_on(server, ws_connect) -> AsyncIterator[Feed]:
    stream = server.stream(
        "feed", schema={"n": "int64", "x": "float64"}, params={"gain": Float(1.0, min=0, max=10)}
    )
    stream.append({"n": [0, 1], "x": [0.0, 0.5]})
    async with ws_connect(server) as viewer:
        await viewer.subscribe("feed")
        await viewer.rows("feed", 0, 2)
        yield Feed(server, stream, viewer)


@pytest.fixture
async def feed(server, ws_connect) -> AsyncIterator[Feed]:
    async with feed_on(server, ws_connect) as f:
        yield f


async def refused(peer, msg, code: str, *needles: str):
    """Send ``msg``; assert the reply is an error ``code`` whose message has ``needles``."""
    await peer.send(msg)
    reply = await peer.expect_type("error")
    assert reply["code"] == code, reply
    for needle in needles:
        assert needle in reply["message"], (needle, reply["message"])
    if isinstance(msg, dict) and "id" in msg:
        assert reply.get("id") == msg["id"], "the error must answer the request's id"
    return reply


# --------------------------------------------------------------------------- malformed, unknown names

#: A publish frame whose 4-byte length prefix promises more header than the frame holds.
_HEAD = json.dumps({"type": "publish", "stream": "feed", "rows": 1}).encode()
_TRUNCATED = struct.pack("<I", len(_HEAD)) + _HEAD[:10]


def _control(id: int, **fields: Any) -> dict[str, Any]:
    return {"type": "control", "stream": "feed", "id": id, **fields}


#: name → (message, the error code, words its message must hold).
REFUSALS: dict[str, tuple[str | bytes | dict[str, Any], str, list[str]]] = {
    # malformed
    "not JSON": ("{this is not json", "bad_message", ["JSON"]),
    "JSON that is not an object": ("[1, 2, 3]", "bad_message", ["JSON object", "array"]),
    "unknown type": (
        {"type": "subscribbe", "id": 1},
        "bad_message",
        ["subscribbe", "subscribe", "publish"],
    ),
    "subscribe without stream": ({"type": "subscribe", "id": 2}, "bad_message", ["`stream`"]),
    "control without action": (_control(3), "bad_message", ["`action`", "pause"]),
    "binary frame with a truncated header": (
        _TRUNCATED,
        "bad_message",
        [f"{len(_HEAD)}-byte header"],
    ),
    "binary frame shorter than its length prefix": (b"\x01\x00", "bad_message", ["4-byte"]),
    # unknown names
    "subscribe to an unknown stream": (
        {"type": "subscribe", "stream": "nope", "id": 4},
        "unknown_stream",
        ["'nope'", "feed"],
    ),
    "control of an unknown stream": (
        {**_control(5, action="pause"), "stream": "nope"},
        "unknown_stream",
        ["'nope'", "feed"],
    ),
    "unknown action": (
        _control(6, action="explode"),
        "unknown_action",
        ["'explode'", "pause, resume, set"],
    ),
    "unknown parameter": (
        _control(7, action="set", params={"gian": 2}),
        "invalid_param",
        ["'gian'", "gain"],
    ),
    "value out of range": (
        _control(8, action="set", params={"gain": 99}),
        "invalid_param",
        ["'gain'", "between 0 and 10", "99"],
    ),
    "value not a number": (
        _control(9, action="set", params={"gain": "high"}),
        "invalid_param",
        ["'gain'", "number"],
    ),
    "publish a text into a float column": (
        {"type": "publish", "stream": "feed", "id": 10, "columns": {"n": [3], "x": ["three"]}},
        "schema_mismatch",
        ["'x'", "float64"],
    ),
    "publish without a column of the schema": (
        {"type": "publish", "stream": "feed", "id": 11, "columns": {"n": [3]}},
        "schema_mismatch",
        ["'x'"],
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
async def test_a_bad_message_is_refused_and_changes_nothing(name, feed, ws_connect):
    message, code, needles = REFUSALS[name]
    async with ws_connect(feed.server) as peer:
        await refused(peer, message, code, *needles)
        # Nothing the message asked for happened: no row, no parameter, no pause, no stream.
        assert feed.stream.end == 2, "a refused batch must not be appended"
        assert feed.stream.params == {"gain": 1.0}
        assert feed.stream.paused is False
        assert set(feed.server.hub.streams) == {"feed"}
        await feed.check(peer)


# --------------------------------------------------------------------------- limits


async def test_oversized_frame_closes_with_1009(server_factory, ws_connect):
    server = server_factory(max_message_size=64 * 1024)
    async with feed_on(server, ws_connect) as feed, ws_connect(server) as peer:
        # Just under the limit is fine ...
        ack = await peer.request(
            {"type": "publish", "stream": "small", "columns": {"x": [1.0] * 10_000}}
        )
        assert ack["type"] == "ack" and ack["rows"] == 10_000
        # ... one over it closes the connection with 1009.
        await peer.send(
            json.dumps({"type": "publish", "stream": "big", "columns": {"x": [1.0] * 20_000}})
        )
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(peer.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert "big" not in server.hub.streams
        await feed.check()


async def test_too_many_bad_messages_closes_with_4001(feed, ws_connect):
    async with ws_connect(feed.server) as peer:
        for i in range(19):
            await refused(peer, f"junk {i}", "bad_message")
        await peer.ping()  # 19 is still tolerated
        await peer.send("junk 20")
        reply = await peer.recv()
        assert reply["type"] == "error" and reply["code"] == "bad_message"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(peer.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
        await feed.check()


# --------------------------------------------------------------------------- refused upgrades


async def upgrade_refused(server, ws_connect, status: int, **kwargs) -> dict:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(server, **kwargs):
            pass
    response = refused.value.response
    assert response.status_code == status
    return json.loads(response.body)["error"]


async def test_wrong_token_is_403(feed, ws_connect):
    error = await upgrade_refused(feed.server, ws_connect, 403, token="wrong-token-xyz")
    assert error["code"] == "bad_token" and "token" in error["message"]
    await feed.check()


async def test_missing_token_is_401(feed, ws_connect):
    error = await upgrade_refused(feed.server, ws_connect, 401, token=None)
    assert error["code"] == "missing_token"
    assert "?token=" in error["message"] and "Bearer" in error["message"]
    await feed.check()


async def test_foreign_origin_is_403(feed, ws_connect):
    error = await upgrade_refused(feed.server, ws_connect, 403, origin="http://evil.example")
    assert error["code"] == "bad_origin"
    assert "http://evil.example" in error["message"] and "--allow-origin" in error["message"]
    # The loopback origins are allowed (so the refusal above is about the origin).
    for origin in (f"http://127.0.0.1:{feed.server.port}", "http://localhost:8888"):
        async with ws_connect(feed.server, origin=origin) as peer:
            await peer.ping()
    await feed.check()


async def test_origin_extending_an_allowed_one_is_403(feed, ws_connect):
    error = await upgrade_refused(
        feed.server, ws_connect, 403, origin="http://127.0.0.1:8765.evil.example"
    )
    assert error["code"] == "bad_origin"
    error = await upgrade_refused(
        feed.server, ws_connect, 403, origin="http://localhost.evil.example:8765"
    )
    assert error["code"] == "bad_origin"
    await feed.check()


async def raw_upgrade(server, host: str, token: str = FULL_TOKEN) -> tuple[int, bytes]:
    """Send a WebSocket upgrade request with exactly this ``Host``; (status, raw response)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 5)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return int(head.split(b" ", 2)[1]), head
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await asyncio.wait_for(writer.wait_closed(), 5)


async def test_foreign_host_is_403(feed):
    port = feed.server.port
    status, _ = await raw_upgrade(feed.server, f"127.0.0.1:{port}")
    assert status == 101, "the raw upgrade itself must be valid"
    status, _ = await raw_upgrade(feed.server, f"localhost:{port}")
    assert status == 101
    status, head = await raw_upgrade(feed.server, f"rebind.evil.example:{port}")
    assert status == 403, head
    status, head = await raw_upgrade(feed.server, "127.0.0.1.evil.example")
    assert status == 403, head
    await feed.check()


async def test_bearer_token(feed, ws_connect):
    async with ws_connect(
        feed.server, token=None, additional_headers={"Authorization": f"Bearer {FULL_TOKEN}"}
    ) as peer:
        assert sorted(peer.welcome["roles"]) == ["control", "publish", "view"]
        await peer.subscribe("feed")
        await feed.check(peer)
    error = await upgrade_refused(
        feed.server,
        ws_connect,
        403,
        token=None,
        additional_headers={"Authorization": "Bearer wrong-token-xyz"},
    )
    assert error["code"] == "bad_token"


async def test_view_only_token_is_forbidden_to_control_and_publish(server_factory, ws_connect):
    server = server_factory(tokens={VIEW_TOKEN: ["view"]})
    async with feed_on(server, ws_connect) as feed, ws_connect(server, token=VIEW_TOKEN) as peer:
        assert peer.welcome["roles"] == ["view"]
        await peer.subscribe("feed")  # viewing is allowed
        await refused(
            peer,
            {"type": "control", "stream": "feed", "action": "pause", "id": 12},
            "forbidden",
            "'control'",
            "view",
        )
        assert feed.stream.paused is False
        await refused(
            peer,
            {"type": "publish", "stream": "feed", "id": 13, "columns": {"n": [5], "x": [5.0]}},
            "forbidden",
            "'publish'",
        )
        reply = await peer.publish_binary("created", {"x": np.array([1.0])})
        assert reply["type"] == "error" and reply["code"] == "forbidden"
        assert feed.stream.end == 2 and "created" not in server.hub.streams
        await feed.check(peer)
        # The viewer's own subscription still flows too.
        await peer.rows("feed", 0, feed.stream.end)


async def test_publishing_beyond_max_streams_is_refused(
    server_factory: Callable[..., Server], ws_connect: Any
) -> None:
    server = server_factory(max_streams=2)
    async with ws_connect(server) as peer:
        for name in ("one", "two"):
            ack = await peer.request({"type": "publish", "stream": name, "columns": {"v": [1]}})
            assert ack["type"] == "ack" and ack["offset"] == 0
        error = await peer.request({"type": "publish", "stream": "three", "columns": {"v": [1]}})
        assert error["type"] == "error" and error["code"] == "too_large", error
        assert "limit" in error["message"] and "max_streams" in error["message"]
        assert "three" not in server.hub.streams
        # An existing stream still takes rows.
        ack = await peer.request({"type": "publish", "stream": "one", "columns": {"v": [2]}})
        assert ack["offset"] == 1
