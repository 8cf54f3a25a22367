"""The server end to end: a real server on 127.0.0.1:0, a plain ``websockets`` peer.

Every message is read with the independent decoder in conftest.py (struct + json + numpy),
so these tests check the wire format the protocol document promises, not our own codec.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import numpy as np
import pytest

from livestream.controls import Float

pytestmark = pytest.mark.timeout(30)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll a server-side condition with short awaits, failing after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- connection


async def test_welcome_is_the_first_message(server, ws_connect):
    async with ws_connect(server) as a, ws_connect(server) as b:
        for peer in (a, b):
            welcome = peer.welcome
            assert welcome["type"] == "welcome"
            assert welcome["protocol"] == 1
            assert welcome["server"].startswith("livestream")
            assert isinstance(welcome["session"], str) and welcome["session"]
            assert sorted(welcome["roles"]) == ["control", "publish", "view"]
        assert a.welcome["session"] != b.welcome["session"]


async def test_ping_pong_echoes_the_id(server, ws_connect):
    async with ws_connect(server) as peer:
        await peer.send({"type": "ping", "id": 7})
        assert await peer.recv() == {"type": "pong", "id": 7}
        await peer.send({"type": "ping", "id": "abc"})
        assert await peer.recv() == {"type": "pong", "id": "abc"}


# --------------------------------------------------------------------------- subscribe


async def test_subscribe_binary_then_live_rows(server, ws_connect):
    stream = server.stream("prices")
    stream.append(
        {
            "time": np.arange(5.0),
            "qty": np.arange(5, dtype=np.int64),
            "sym": ["a", "b", "c", "d", "e"],
            "ok": np.array([1, 0, 1, 0, 1], bool),
        }
    )
    async with ws_connect(server) as peer:
        sub = await peer.subscribe("prices")
        assert sub["stream"] == "prices"
        assert sub["epoch"] == stream.epoch and isinstance(sub["epoch"], str)
        assert list(sub["schema"].items()) == [
            ("time", "float64"),
            ("qty", "int64"),
            ("sym", "str"),
            ("ok", "bool"),
        ]
        assert sub["offset"] == 0
        assert sub["state"]["paused"] is False and sub["state"]["status"] == "idle"
        assert "params" in sub["controls"] and "actions" in sub["controls"]

        data = await peer.expect_type("data")
        assert data["binary"] is True
        assert (data["stream"], data["offset"], data["rows"]) == ("prices", 0, 5)
        assert data["columns"]["time"].dtype == np.dtype("<f8")
        assert data["columns"]["time"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert data["columns"]["qty"].dtype == np.dtype("<i8")
        assert data["columns"]["qty"].tolist() == [0, 1, 2, 3, 4]
        assert data["columns"]["sym"] == ["a", "b", "c", "d", "e"]
        assert data["columns"]["ok"].tolist() == [True, False, True, False, True]

        # Rows appended from another thread arrive live, continuing the offsets.
        appender = threading.Thread(
            target=stream.append,
            args=({"time": [5.0, 6.0], "qty": [5, 6], "sym": ["f", "g"], "ok": [False, True]},),
        )
        appender.start()
        appender.join(5)
        got = await peer.rows("prices", 5, 7)
        assert got["qty"].tolist() == [5, 6]
        assert got["sym"].tolist() == ["f", "g"]


async def test_subscribe_json_format(server, ws_connect):
    stream = server.stream("js")
    stream.append({"x": [1.5, float("nan")], "n": [1, 2], "s": ["p", None]})
    async with ws_connect(server) as peer:
        await peer.subscribe("js", format="json")
        frame = await asyncio.wait_for(peer.ws.recv(), 5)
        assert isinstance(frame, str), "format json must send data as text frames"
        data = json.loads(frame)
        assert data == {
            "type": "data",
            "stream": "js",
            "offset": 0,
            "rows": 2,
            "columns": {"x": [1.5, None], "n": [1, 2], "s": ["p", None]},
        }
        stream.append({"x": [3.0], "n": [3], "s": ["q"]})
        data = await peer.expect_type("data")
        assert "binary" not in data
        assert (data["offset"], data["rows"], data["columns"]) == (
            2,
            1,
            {"x": [3.0], "n": [3], "s": ["q"]},
        )


async def test_subscribe_last(server, ws_connect):
    stream = server.stream("tail")
    stream.append({"i": np.arange(100, dtype=np.int64)})
    async with ws_connect(server) as peer:
        sub = await peer.subscribe("tail", last=10)
        assert sub["offset"] == 90
        got = await peer.rows("tail", 90, 100)
        assert got["i"].tolist() == list(range(90, 100))
    async with ws_connect(server) as peer:
        sub = await peer.subscribe("tail", last=1000)  # more than there is: everything
        assert sub["offset"] == 0
        assert (await peer.rows("tail", 0, 100))["i"].tolist() == list(range(100))


async def test_subscribe_column_subset(server, ws_connect):
    stream = server.stream("wide")
    stream.append({"a": np.arange(4.0), "b": np.arange(4, dtype=np.int32), "c": np.ones(4)})
    async with ws_connect(server) as peer:
        await peer.subscribe("wide", columns=["c", "a"])
        data = await peer.expect_type("data")
        assert list(data["columns"]) == ["c", "a"]
        assert data["columns"]["a"].tolist() == [0.0, 1.0, 2.0, 3.0]
        stream.append({"a": [9.0], "b": [9], "c": [9.0]})
        data = await peer.expect_type("data")
        assert set(data["columns"]) == {"a", "c"} and data["offset"] == 4

        reply = await peer.request({"type": "subscribe", "stream": "wide", "columns": ["zzz"]})
        assert reply["type"] == "error" and reply["code"] == "bad_message"
        assert "'zzz'" in reply["message"] and "a, b, c" in reply["message"]


@pytest.mark.parametrize("bad_first", [True, False])
async def test_column_subset_before_the_schema_exists(server, ws_connect, bad_first):
    # Subscribed before the first batch, a subset cannot be checked yet; once rows come,
    # an unknown column ends only that subscription, and nobody else's rows stall.
    stream = server.stream("later")
    async with (
        ws_connect(server) as bad,
        ws_connect(server) as good,
        ws_connect(server) as subset,
    ):
        order = [bad, good] if bad_first else [good, bad]
        for peer in order:
            cols = ["nope"] if peer is bad else None
            sub = await peer.subscribe("later", **({"columns": cols} if cols else {}))
            assert sub["schema"] == {}
        await subset.subscribe("later", columns=["y"])
        for k in range(3):
            stream.append({"x": [float(k)], "y": [k]})
            assert (await good.rows("later", k, k + 1))["x"].tolist() == [float(k)]
            got = await subset.rows("later", k, k + 1)
            assert list(got) == ["y"] and got["y"].tolist() == [k]
        error = await bad.expect_type("error")
        assert error["code"] == "bad_message"
        assert "'nope'" in error["message"] and "x, y" in error["message"]
        assert server.hub.subscriber_count("later") == 2
        await bad.send({"type": "ping", "id": "after"})
        assert await bad.recv() == {"type": "pong", "id": "after"}


async def test_unsubscribe_stops_data(server, ws_connect):
    stream = server.stream("u")
    stream.append({"i": [0]})
    async with ws_connect(server) as peer, ws_connect(server) as witness:
        await peer.subscribe("u")
        await witness.subscribe("u")
        await peer.rows("u", 0, 1)
        await witness.rows("u", 0, 1)
        assert server.hub.subscriber_count("u") == 2

        reply = await peer.request({"type": "unsubscribe", "stream": "u"})
        assert reply["type"] == "unsubscribed" and reply["stream"] == "u"
        assert server.hub.subscriber_count("u") == 1

        stream.append({"i": [1, 2]})
        # Once the witness has the rows, the fan-out has run: had `peer` still been
        # subscribed, its frame would now sit before the pong on its socket.
        await witness.rows("u", 1, 3)
        await peer.send({"type": "ping", "id": "after"})
        assert await peer.recv() == {"type": "pong", "id": "after"}

        reply = await peer.request({"type": "unsubscribe", "stream": "u"})
        assert reply["type"] == "error" and reply["code"] == "unknown_stream"


async def test_list_streams(server, ws_connect):
    server.stream("one").append({"x": [1.0, 2.0]})
    server.stream("two").append({"y": [1]})
    async with ws_connect(server) as peer:
        reply = await peer.request({"type": "list"})
        assert reply["type"] == "streams"
        by_name = {s["name"]: s for s in reply["streams"]}
        assert set(by_name) == {"one", "two"}
        assert by_name["one"]["schema"] == {"x": "float64"}
        assert (by_name["one"]["rows"], by_name["one"]["offset"]) == (2, 2)
        assert by_name["two"]["schema"] == {"y": "int64"}
        assert by_name["two"]["state"]["status"] == "idle"


# --------------------------------------------------------------------------- publish


async def test_publish_json_creates_stream_and_acks_offsets(server, ws_connect):
    async with ws_connect(server) as pub, ws_connect(server) as viewer:
        assert "made" not in server.hub.streams
        ack = await pub.request(
            {"type": "publish", "stream": "made", "columns": {"x": [1.5, 2.5], "n": [1, 2]}}
        )
        assert ack["type"] == "ack" and ack["ok"] is True
        assert (ack["offset"], ack["rows"]) == (0, 2)
        stream = server.hub.streams["made"]
        assert stream.schema == {"x": "float64", "n": "int64"}

        await viewer.subscribe("made")
        assert (await viewer.rows("made", 0, 2))["n"].tolist() == [1, 2]

        ack = await pub.request(
            {"type": "publish", "stream": "made", "columns": {"x": [3.5], "n": [3]}}
        )
        assert (ack["offset"], ack["rows"]) == (2, 1)
        got = await viewer.rows("made", 2, 3)
        assert got["x"].tolist() == [3.5] and got["n"].tolist() == [3]
        assert stream.end == 3


async def test_publish_binary_hand_built_frame(server, ws_connect):
    cols = {
        "t": np.array([1.0, 2.0, 3.0], "<f8"),
        "f": np.array([0.5, 1.5, 2.5], "<f4"),
        "k": np.array([7, -8, 9], "<i4"),
        "b": np.array([True, False, True]),
        "u": np.array([1, 2, 255], "u1"),
    }
    async with ws_connect(server) as pub, ws_connect(server) as viewer:
        ack = await pub.publish_binary("bin", cols)
        assert ack["type"] == "ack" and (ack["offset"], ack["rows"]) == (0, 3)
        stream = server.hub.streams["bin"]
        assert stream.schema == {
            "t": "float64",
            "f": "float32",
            "k": "int32",
            "b": "bool",
            "u": "uint8",
        }
        ack = await pub.publish_binary("bin", {k: v[:2] for k, v in cols.items()})
        assert (ack["offset"], ack["rows"]) == (3, 2)

        await viewer.subscribe("bin")
        got = await viewer.rows("bin", 0, 5)
        for name, arr in cols.items():
            assert got[name].dtype == arr.dtype, name
            assert got[name].tolist() == arr.tolist() + arr[:2].tolist(), name


# --------------------------------------------------------------------------- controls


async def test_controls_reach_the_producer(server, ws_connect):
    stream = server.stream("ctl")

    @stream.producer(every=0.005, params={"gain": Float(1.0, min=0, max=10)})
    def produce(params):
        return {"v": [params["gain"]]}

    await wait_until(lambda: stream.end > 3, what="the producer to append rows")
    async with ws_connect(server) as peer:
        ack = await peer.request(
            {"type": "control", "stream": "ctl", "action": "set", "params": {"gain": 5}}
        )
        assert ack["type"] == "ack" and ack["ok"] is True
        assert ack["state"]["params"] == {"gain": 5.0}
        assert stream.params == {"gain": 5.0}
        # The producer sees the new value: its rows start carrying it.
        await wait_until(
            lambda: stream.tail(1).columns["v"][0] == 5.0, what="a row produced with gain 5"
        )

        ack = await peer.request({"type": "control", "stream": "ctl", "action": "pause"})
        assert ack["state"]["paused"] is True and ack["state"]["status"] == "paused"
        assert stream.paused is True
        await asyncio.sleep(0.2)  # a call already under way may still land
        before, calls = stream.end, produce.calls
        await asyncio.sleep(0.4)  # 80 periods of the producer
        assert stream.end == before, "rows kept growing while paused"
        assert produce.calls == calls

        ack = await peer.request({"type": "control", "stream": "ctl", "action": "resume"})
        assert ack["state"]["paused"] is False and ack["state"]["status"] == "running"
        assert stream.paused is False
        await wait_until(lambda: stream.end > before + 3, what="rows after resume")


async def test_state_is_broadcast_to_every_subscriber(server, ws_connect):
    stream = server.stream("shared", params={"gain": Float(1.0, min=0, max=10)})
    async with ws_connect(server) as a, ws_connect(server) as b, ws_connect(server) as c:
        await a.subscribe("shared")
        await b.subscribe("shared")
        # c is not subscribed: it sends the control and must not need to be a viewer.
        ack = await c.request(
            {"type": "control", "stream": "shared", "action": "set", "params": {"gain": 2.5}}
        )
        assert ack["type"] == "ack" and ack["state"]["params"] == {"gain": 2.5}
        for peer in (a, b):
            msg = await peer.expect_type("state", stream="shared")
            assert msg["state"]["params"] == {"gain": 2.5}
            assert msg["state"]["paused"] is False

        await a.request({"type": "control", "stream": "shared", "action": "pause"})
        msg = await b.expect_type("state", stream="shared")
        assert msg["state"]["paused"] is True
        assert stream.paused is True
        # c never subscribed, so it gets no state messages: only the pong.
        await c.send({"type": "ping", "id": "p"})
        assert await c.recv() == {"type": "pong", "id": "p"}


async def test_failing_producer_is_isolated(server, ws_connect):
    bad, good = server.stream("bad"), server.stream("good")
    fail = threading.Event()

    @bad.producer(every=0.01)
    def broken():
        if fail.is_set():
            raise RuntimeError("sensor unplugged")
        return {"x": [1.0]}

    @good.producer(every=0.01)
    def fine():
        return {"y": [2.0]}

    await wait_until(lambda: bad.end > 0 and good.end > 0, what="both producers to run")
    async with ws_connect(server) as peer:
        await peer.subscribe("bad")
        await peer.subscribe("good")
        fail.set()
        msg = await peer.expect(
            lambda m: (
                m["type"] == "state" and m["stream"] == "bad" and m["state"]["status"] == "error"
            )
        )
        assert "sensor unplugged" in msg["state"]["error"]
        assert bad.state["status"] == "error"
        # The other stream keeps flowing after the failure.
        mark = good.end
        await peer.rows("good", 0, mark + 5)
        assert good.state["status"] == "running"
        # A viewer arriving later sees the error in `subscribed`.
        async with ws_connect(server) as late:
            sub = await late.subscribe("bad")
            assert sub["state"]["status"] == "error"
            assert "sensor unplugged" in sub["state"]["error"]


# --------------------------------------------------------------------------- flow control


async def test_credit_flow_control(server, ws_connect):
    stream = server.stream("cr")
    stream.append({"i": np.arange(10, dtype=np.int64)})
    async with ws_connect(server) as slow, ws_connect(server) as witness:
        await slow.subscribe("cr", credit=1)
        await witness.subscribe("cr")
        assert (await slow.rows("cr", 0, 10))["i"].tolist() == list(range(10))
        await witness.rows("cr", 0, 10)

        for k in range(3):  # three separate appends, three fan-outs
            stream.append({"i": np.arange(10 + 5 * k, 15 + 5 * k, dtype=np.int64)})
            await witness.rows("cr", 10 + 5 * k, 15 + 5 * k)
        # Without credit nothing was sent: the next message is the pong.
        await slow.send({"type": "ping", "id": "no-credit"})
        assert await slow.recv() == {"type": "pong", "id": "no-credit"}

        await slow.send({"type": "credit", "stream": "cr", "frames": 1})
        data = await slow.expect_type("data")
        assert (data["offset"], data["rows"]) == (10, 15), "missed rows come as one frame"
        assert data["columns"]["i"].tolist() == list(range(10, 25))

        stream.append({"i": [25]})
        await witness.rows("cr", 25, 26)
        await slow.send({"type": "ping", "id": "spent"})
        assert await slow.recv() == {"type": "pong", "id": "spent"}
        await slow.send({"type": "credit", "stream": "cr", "frames": 2})
        assert (await slow.rows("cr", 25, 26))["i"].tolist() == [25]
        stream.append({"i": [26]})  # the second credit is still there
        assert (await slow.rows("cr", 26, 27))["i"].tolist() == [26]


# --------------------------------------------------------------------------- HTTP API


async def test_http_api(server, ws_connect, http):
    async def call(*args, **kwargs):
        return await asyncio.to_thread(http, server, *args, **kwargs)

    status, body = await call("GET", "/healthz", token=None)
    assert (status, body) == (200, {"ok": True})

    status, body = await call("GET", "/api/streams")
    assert (status, body) == (200, {"streams": []})
    status, body = await call("GET", "/api/streams", token=None)
    assert status == 401 and body["error"]["code"] == "missing_token"

    status, body = await call("GET", "/api/streams/nope")
    assert status == 404
    assert body["error"]["code"] == "unknown_stream" and "'nope'" in body["error"]["message"]

    async with ws_connect(server) as viewer:
        status, body = await call(
            "POST", "/api/streams/h", '[{"a": 1.0, "b": 2}, {"a": 3.0, "b": 4}]'
        )
        assert (status, body) == (200, {"stream": "h", "offset": 0, "rows": 2})
        status, body = await call("POST", "/api/streams/h", '{"columns": {"a": [5.0], "b": [6]}}')
        assert (status, body) == (200, {"stream": "h", "offset": 2, "rows": 1})
        status, body = await call(
            "POST", "/api/streams/h", '{"a": 7.0, "b": 8}\n{"a": 9.5, "b": 10}\n'
        )
        assert (status, body) == (200, {"stream": "h", "offset": 3, "rows": 2})
        status, body = await call("POST", "/api/streams/h", '{"a": "oops", "b": 11}')
        assert status == 400 and body["error"]["code"] == "schema_mismatch"
        assert "'a'" in body["error"]["message"] and "float64" in body["error"]["message"]
        status, body = await call("POST", "/api/streams/h", "{not json")
        assert status == 400 and body["error"]["code"] == "bad_message"
        # A refused body does not leave a new, empty stream behind.
        status, body = await call("POST", "/api/streams/h2", '{"a": [1, 2], "b": [3]}')
        assert status == 400 and body["error"]["code"] == "schema_mismatch"
        assert "a=2, b=1" in body["error"]["message"]
        assert "h2" not in server.hub.streams

        stream = server.hub.streams["h"]
        assert stream.end == 5
        await viewer.subscribe("h")
        got = await viewer.rows("h", 0, 5)
        assert got["a"].tolist() == [1.0, 3.0, 5.0, 7.0, 9.5]
        assert got["b"].tolist() == [2, 4, 6, 8, 10]

        status, body = await call("GET", "/api/streams/h")
        assert status == 200
        assert (body["name"], body["rows"], body["offset"]) == ("h", 5, 5)
        assert body["schema"] == {"a": "float64", "b": "int64"}
        assert body["subscribers"] == 1
        status, body = await call("GET", "/api/streams")
        assert [s["name"] for s in body["streams"]] == ["h"]


def test_plot_endpoint_says_which_query_parameter_is_wrong(server, http):  # type: ignore[no-untyped-def]
    server.stream("plotted").append({"time": [1.0, 2.0], "y": [3.0, 4.0]})
    status, body = http(server, "GET", "/api/streams/plotted/plot?window=abc")
    assert status == 400
    assert "'window' must be a whole number" in body["error"]["message"]
    assert "'abc'" in body["error"]["message"]
    status, body = http(server, "GET", "/api/streams/plotted/plot?window=500&kind=step")
    assert status == 200 and body["kind"] == "step" and body["rollover"] == 500
