"""The Python client against a real server: publish, subscribe, control, list, reconnect."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

import livestream
from conftest import TOKEN
from livestream import AsyncClient, Batch, Client, Float, Server, ServerError, Subscription


@pytest.fixture
def client(live_server: Server) -> Iterator[Client]:
    """A blocking client connected with the URL the server prints (token in the query)."""
    with livestream.connect(live_server.url) as c:
        yield c


def take_rows(sub: Subscription, count: int, timeout: float = 10.0) -> list[Batch]:
    """Batches until ``count`` rows have arrived; fails on a gap or a duplicate."""
    batches: list[Batch] = []
    rows = 0
    deadline = time.monotonic() + timeout
    while rows < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {rows} of {count} rows within {timeout} s"
        batch = sub.next(timeout=left)
        if batches:
            expected = batches[-1].offset + batches[-1].rows
            assert batch.offset == expected, f"batch at {batch.offset}, expected {expected}"
        batches.append(batch)
        rows += batch.rows
    return batches


def test_connect_with_the_printed_url_carrying_the_token(live_server: Server) -> None:
    assert "token=" in live_server.url and live_server.url.startswith("http://")
    with livestream.connect(live_server.url) as c:
        assert set(c.roles) == {"view", "control", "publish"}
        assert c.publish("a", {"x": [1, 2, 3]}) == 0


def test_connect_with_ws_url_and_token(live_server: Server) -> None:
    with livestream.connect(live_server.ws_url, token=TOKEN) as c:
        assert c.publish("a", {"x": [1.0]}) == 0
        assert c.publish("a", [{"x": 2.0}, {"x": 3.0}]) == 1
        assert c.publish("a", pd.DataFrame({"x": [4.0, 5.0]})) == 3
    stream = live_server.hub.get("a")
    assert stream.read(0).columns["x"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_wrong_token_is_refused_with_403(live_server: Server) -> None:
    with pytest.raises(ServerError, match="403") as info:
        livestream.connect(live_server.ws_url, token="not-the-token-at-all")
    assert info.value.code == "refused"
    assert "token" in info.value.message


def test_publish_returns_the_offset_of_the_first_row(client: Client, live_server: Server) -> None:
    offsets = [client.publish("p", {"i": list(range(n))}) for n in (3, 1, 4)]
    assert offsets == [0, 3, 4]
    assert live_server.hub.get("p").window() == (0, 8)
    with pytest.raises(ServerError, match="'i'") as info:
        client.publish("p", {"i": ["text"]})
    assert info.value.code == "schema_mismatch"


def test_subscribe_delivers_batches_with_their_offsets(client: Client, live_server: Server) -> None:
    stream = live_server.stream("sub")
    stream.append({"i": np.arange(5)})
    sub = client.subscribe("sub", since=0)
    assert sub.schema == {"i": "int64"}
    first = take_rows(sub, 5)
    assert first[0].offset == 0
    stream.append({"i": np.arange(5, 8)})
    client.publish("sub", {"i": [8, 9]})
    more = take_rows(sub, 5)
    assert more[0].offset == 5
    got = Batch.concat(first + more).columns["i"].tolist()
    assert got == list(range(10))
    assert sub.next_offset == 10


def test_subscribe_with_last(client: Client, live_server: Server) -> None:
    live_server.stream("last").append({"i": np.arange(10)})
    sub = client.subscribe("last", last=3)
    batch = sub.next(timeout=5)
    assert batch.offset == 7
    assert batch.columns["i"].tolist() == [7, 8, 9]


def test_subscribe_to_an_unknown_stream(client: Client) -> None:
    with pytest.raises(ServerError, match="unknown stream 'nope'") as info:
        client.subscribe("nope")
    assert info.value.code == "unknown_stream"


def test_to_pandas_indexes_rows_by_offset(client: Client, live_server: Server) -> None:
    live_server.stream("frame").append({"t": [1.0, 2.0, 3.0], "v": [10, 20, 30]})
    frame = client.subscribe("frame", last=2).to_pandas()
    assert list(frame.index) == [1, 2]
    assert frame["v"].tolist() == [20, 30]
    assert list(frame.columns) == ["t", "v"]


def test_control_returns_the_state(client: Client, live_server: Server) -> None:
    stream = live_server.stream("ctl", params={"volatility": Float(0.02, min=0, max=0.2)})
    stream.append({"x": [1]})
    assert client.control("ctl", "pause") == {
        "status": "paused",
        "paused": True,
        "params": {"volatility": 0.02},
    }
    assert stream.paused
    state = client.control("ctl", "set", volatility=0.1)
    assert state["params"] == {"volatility": 0.1}
    assert stream.params == {"volatility": 0.1}
    assert client.control("ctl", "resume")["paused"] is False


def test_control_errors(client: Client, live_server: Server) -> None:
    live_server.stream("ctl", params={"volatility": Float(0.02, min=0, max=0.2)})
    with pytest.raises(ServerError, match="unknown action 'explode'") as info:
        client.control("ctl", "explode")
    assert info.value.code == "unknown_action"
    with pytest.raises(ServerError) as info:
        client.control("ctl", "set", volatility=5)
    assert info.value.code == "invalid_param"
    with pytest.raises(ServerError) as info:
        client.control("ctl", "set", volatility=10**400)  # not an internal error
    assert info.value.code == "invalid_param"
    with pytest.raises(ServerError) as info:
        client.control("missing", "pause")
    assert info.value.code == "unknown_stream"
    assert live_server.hub.get("ctl").params == {"volatility": 0.02}


def test_list_describes_every_stream(client: Client, live_server: Server) -> None:
    assert client.list() == []
    live_server.stream("one").append({"x": [1.0, 2.0]})
    client.publish("two", {"s": ["a"]})
    streams = {s["name"]: s for s in client.list()}
    assert set(streams) == {"one", "two"}
    one = streams["one"]
    assert (one["schema"], one["rows"], one["offset"]) == ({"x": "float64"}, 2, 2)
    assert one["state"] == {"status": "idle", "paused": False, "params": {}}
    assert streams["two"]["schema"] == {"s": "str"}


def test_reconnect_resumes_every_subscription_without_loss_or_duplicate(
    client: Client,
    live_server: Server,
) -> None:
    stream = live_server.stream("feed")
    counter = itertools.count()

    @stream.producer(every=0.002)
    def tick() -> dict[str, int]:
        return {"i": next(counter)}

    def drop_every_connection() -> None:
        for session in list(live_server.hub.sessions):
            session.transport.close(1001, "test")

    assert live_server.loop is not None
    sub = client.subscribe("feed", since=0)
    seen: list[int] = []
    drops = 0
    deadline = time.monotonic() + 20
    while len(seen) < 1200:
        assert time.monotonic() < deadline, f"only {len(seen)} rows after 20 s"
        batch = sub.next(timeout=10)
        assert batch.offset == len(seen), f"batch at {batch.offset} after {len(seen)} rows"
        seen += batch.columns["i"].tolist()
        if drops < 3 and len(seen) >= 300 * (drops + 1):
            live_server.loop.call_soon_threadsafe(drop_every_connection)
            drops += 1
    tick.stop()
    assert seen == list(range(len(seen))), "a row was lost, repeated or reordered"
    assert client.reconnects >= 1
    assert sub.resets == []
    # With one URL the client comes back to it, and its events say so.
    assert client.urls == (live_server.ws_url,) and client.url == live_server.ws_url
    events = [(e.kind, e.url, e.detail) for e in client.events if e.kind != "resubscribed"]
    assert events[0] == ("connected", live_server.ws_url, "first")
    assert events[1:3] == [
        ("disconnected", live_server.ws_url, "code 1001"),
        ("connected", live_server.ws_url, "reconnected"),
    ]
    resumed = [e for e in client.events if e.kind == "resubscribed"]
    assert len(resumed) == client.reconnects
    assert all(e.stream == "feed" and e.offset is not None and e.offset > 0 for e in resumed)
    # The connection is usable again after the drops.
    assert client.publish("after", {"x": [1]}) == 0


async def test_async_client(live_server: Server) -> None:
    stream = live_server.stream("async")
    stream.append({"i": [0, 1, 2]})
    async with AsyncClient(live_server.ws_url, token=TOKEN) as c:
        assert set(c.roles) == {"view", "control", "publish"}
        assert await c.publish("async", {"i": [3, 4]}) == 3
        sub = await c.subscribe("async", since=1)
        assert sub.schema == {"i": "int64"}
        got: list[int] = []
        offsets: list[int] = []
        while len(got) < 4:
            batch = await sub.next(timeout=5)
            offsets.append(batch.offset)
            got += batch.columns["i"].tolist()
        assert got == [1, 2, 3, 4]
        assert offsets[0] == 1
        state = await c.control("async", "pause")
        assert state["paused"] is True
        with pytest.raises(ServerError) as info:
            await c.control("async", "nope")
        assert info.value.code == "unknown_action"
        names = [s["name"] for s in await c.list()]
        assert names == ["async"]
        await c.ping()
        await sub.close()
        await asyncio.wait_for(sub_finished(sub), 5)


async def sub_finished(sub: Any) -> None:
    """An unsubscribed subscription ends its iteration."""
    async for _ in sub:
        pass


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("token", "status", "reason", "says"),
    [
        ("not-the-token-at-all", 403, "bad_token", "the token was not accepted"),
        (None, 401, "missing_token", "this server needs a token"),
    ],
)
def test_a_refused_handshake_carries_status_reason_and_the_message_only(
    live_server: Server, token: str | None, status: int, reason: str, says: str
) -> None:
    with pytest.raises(ServerError) as info:
        livestream.connect(live_server.ws_url, token=token)
    error: Any = info.value
    assert (error.code, error.status, error.reason) == ("refused", status, reason)
    assert error.message.startswith(f"HTTP {status} from {live_server.ws_url}: {says}")
    assert "{" not in str(error), "the server's message, not its JSON answer"


def test_no_server_listening_names_the_url_and_how_to_start_one() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on once released
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(livestream.ConnectionClosed) as info:
        livestream.connect(f"ws://127.0.0.1:{port}", token=TOKEN, reconnect=False)
    message = str(info.value)
    assert f"cannot reach ws://127.0.0.1:{port}/ws: no server is listening there" in message
    assert "start one with `livestream serve`" in message


def test_a_refused_value_is_the_first_that_does_not_fit(client: Client) -> None:
    client.publish("temps", {"temp": [20.5]})
    with pytest.raises(ServerError) as info:
        client.publish("temps", [{"temp": 21.5}, {"temp": "abc"}, {"temp": 22.0}])
    assert info.value.code == "schema_mismatch"
    assert "object values (e.g. 'abc') at row 2 of 3; send float64 values" in info.value.message


def test_a_value_json_cannot_carry_is_refused_naming_its_column(client: Client) -> None:
    with pytest.raises(livestream.SchemaMismatch, match=r"column 'x' of stream 'nan', row 1"):
        client.publish("nan", [{"x": [1.0]}, {"x": [1.0, float("nan")]}])
    assert client.publish("nan", {"x": [[2.0]]}) == 0  # nothing was sent; the client still works
