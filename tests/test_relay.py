"""The kernel's end of the comm relay, driven by the messages a widget's page would send.

The relay's only output is ``send(content, buffers)`` (the widget's comm); here a
:class:`CommRecorder` stands in for the page and records what the kernel sends back,
against a real server on its background thread. No Jupyter, no socket for the relay.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import TOKEN
from livestream import Server
from livestream import protocol as P
from livestream.relay import MAX_SESSIONS, Relay


class CommRecorder:
    """Everything the relay sent to the page, decoded; waits are bounded."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def __call__(self, content: dict[str, Any], buffers: Any) -> None:
        msg = dict(content)
        if buffers:
            msg["buffer"] = bytes(buffers[0])
        if msg.get("ls") == "frame":
            frame = msg["text"] if "text" in msg else msg["buffer"]
            decoded = P.decode_server(frame)
            msg["msg"] = (
                {"type": "data", "offset": decoded.offset, "rows": decoded.batch.rows}
                if isinstance(decoded, P.Data)
                else json.loads(frame)
            )
        with self._changed:
            self.sent.append(msg)
            self._changed.notify_all()

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for msg in self.sent:
                    if pred(msg):
                        return msg
                left = deadline - time.monotonic()
                assert left > 0, f"nothing matched within {timeout} s; sent: {self.sent[-10:]}"
                self._changed.wait(left)

    def frames(self, sid: str) -> list[dict[str, Any]]:
        with self._changed:
            return [m["msg"] for m in self.sent if m.get("ls") == "frame" and m["id"] == sid]


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server("127.0.0.1", 0, token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def page(server: Server) -> tuple[Relay, CommRecorder]:
    comm = CommRecorder()
    return Relay(server, TOKEN, comm), comm


def open_socket(relay: Relay, comm: CommRecorder, sid: str) -> None:
    relay.handle(None, {"ls": "open", "id": sid})
    comm.wait(lambda m: m.get("ls") == "opened" and m["id"] == sid)
    comm.wait(lambda m: m.get("id") == sid and m.get("msg", {}).get("type") == "welcome")


def frame(relay: Relay, sid: str, msg: dict[str, Any]) -> None:
    relay.handle(None, {"ls": "frame", "id": sid, "text": json.dumps(msg)})


def test_a_relay_socket_subscribes_and_receives_data(
    server: Server, page: tuple[Relay, CommRecorder]
) -> None:
    relay, comm = page
    server.stream("s").append({"x": [1.0, 2.0]})
    open_socket(relay, comm, "a")
    frame(relay, "a", {"type": "subscribe", "stream": "s", "id": 1})
    comm.wait(lambda m: m.get("id") == "a" and m.get("msg", {}).get("type") == "data")
    types = [m["type"] for m in comm.frames("a")]
    assert types == ["welcome", "subscribed", "data"]
    assert comm.frames("a")[-1] == {"type": "data", "offset": 0, "rows": 2}


def test_frames_are_handled_in_order_even_when_one_is_decoded_off_the_loop(
    page: tuple[Relay, CommRecorder],
) -> None:
    relay, comm = page
    open_socket(relay, comm, "a")
    big = {"type": "publish", "stream": "p", "id": "big", "columns": {"x": [0.5] * 30_000}}
    frame(relay, "a", big)  # over 64 KiB: decoded on a worker thread
    frame(relay, "a", {"type": "ping", "id": "after"})
    comm.wait(lambda m: m.get("msg", {}).get("id") == "after")
    replies = [m.get("id") for m in comm.frames("a") if m["type"] in ("ack", "pong")]
    assert replies == ["big", "after"]


def test_the_relay_refuses_paths_outside_the_api(
    server: Server, page: tuple[Relay, CommRecorder]
) -> None:
    relay, comm = page
    for path in ("/etc/passwd", "/api/../etc/passwd", "//evil.example/x", "/static\\x"):
        relay.handle(None, {"ls": "get", "id": "g", "path": path})
        reply = comm.wait(lambda m: m.get("ls") == "response" and m.get("status") == 400)
        assert b"only /api/, /static/ and /healthz" in reply["buffer"]
        comm.sent.clear()
    relay.handle(None, {"ls": "get", "id": "g", "path": f"/healthz?token={TOKEN}"})
    reply = comm.wait(lambda m: m.get("ls") == "response")
    assert reply["status"] == 200 and json.loads(reply["buffer"]) == {"ok": True}


def test_a_widget_keeps_at_most_max_sessions_sockets(page: tuple[Relay, CommRecorder]) -> None:
    relay, comm = page
    for i in range(MAX_SESSIONS + 1):
        open_socket(relay, comm, f"s{i}")
    closed = comm.wait(lambda m: m.get("ls") == "closed")
    assert closed["id"] == "s0" and closed["code"] == 1008
    assert "too many relay sockets" in closed["reason"]


def test_hello_admits_a_page_origin_or_says_why_not(
    server: Server, page: tuple[Relay, CommRecorder]
) -> None:
    relay, comm = page
    relay.handle(None, {"ls": "hello", "origin": "null"})
    refused = comm.wait(lambda m: m.get("ls") == "admitted")
    assert refused["ok"] is False and "cannot admit origin" in refused["message"]
    comm.sent.clear()
    relay.handle(None, {"ls": "hello", "origin": "https://hub.example.org"})
    admitted = comm.wait(lambda m: m.get("ls") == "admitted")
    assert admitted["ok"] is True
    server.security.check_origin("https://hub.example.org", "127.0.0.1")


def test_a_relay_for_a_server_elsewhere_refuses_to_open() -> None:
    comm = CommRecorder()
    relay = Relay(None, TOKEN, comm, url="ws://10.9.8.7:8765")
    relay.handle(None, {"ls": "open", "id": "x"})
    closed = comm.wait(lambda m: m.get("ls") == "closed")
    assert closed["code"] == 1008 and "ws://10.9.8.7:8765" in closed["reason"]
