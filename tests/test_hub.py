"""The hub and a session, bytes in and bytes out: no socket and no sleep.

A :class:`RecordingTransport` keeps every frame a session sends and completes each write
only when the test says so, and the hub's clock is a number the test moves. So fan-out by
cursor, merging while a write is busy, the stall sweep, the outbound budget and the
bad-message window are each checked step by step.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import numpy as np
import pytest

from livestream import Limits
from livestream import protocol as P
from livestream.hub import CHUNK_BYTES, TURN_MAX, TURN_STALLED, Hub
from livestream.session import BAD_MESSAGE_LIMIT, BAD_MESSAGE_WINDOW, BURST, Session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingTransport:
    """A transport whose writes complete when the test calls :meth:`drain`."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []
        self.pending: list[asyncio.Future[None]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, frame: str | bytes) -> asyncio.Future[None]:
        self.frames.append(frame)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(done)
        return done

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def drain(self) -> None:
        """The peer read everything: every pending write completes."""
        pending, self.pending = self.pending, []
        for done in pending:
            if not done.done():
                done.set_result(None)

    def messages(self) -> list[dict[str, Any]]:
        """Every frame sent so far, decoded with the protocol module, then forgotten."""
        out = []
        for frame in self.frames:
            msg = P.decode_server(frame)
            out.append(
                {"type": "data", "offset": msg.offset, "rows": msg.batch.rows}
                if isinstance(msg, P.Data)
                else json.loads(frame)
            )
        self.frames.clear()
        return out


async def turn() -> None:
    """Let the loop run what is scheduled (wakes, write callbacks)."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
async def hub() -> Any:
    clock = Clock()
    hub = Hub(limits=Limits(write_timeout=30.0, outbound_budget=1 << 20), clock=clock)
    hub.attach(asyncio.get_running_loop())
    yield hub
    hub.detach()


def connect(
    hub: Hub, roles: tuple[str, ...] = ("view", "control", "publish")
) -> tuple[Session, RecordingTransport]:
    transport = RecordingTransport()
    session = Session(hub, transport, roles, peer="test")
    hub.sessions.add(session)
    session.welcome()
    assert transport.messages()[0]["type"] == "welcome"
    transport.drain()
    return session, transport


def send(session: Session, msg: dict[str, Any]) -> None:
    """A small frame is handled at once (what it returns is at most the fair-turn pause
    that asks the adapter to let the loop turn before it reads more)."""
    session.receive(json.dumps(msg))


async def test_a_busy_subscriber_gets_the_rows_merged_into_one_frame(hub: Hub) -> None:
    stream = hub.stream("s")
    session, wire = connect(hub)
    send(session, {"type": "subscribe", "stream": "s", "id": 1})
    assert [m["type"] for m in wire.messages()] == ["subscribed"]
    stream.append({"x": [1.0]})
    await turn()
    assert wire.messages() == [{"type": "data", "offset": 0, "rows": 1}]
    # The first frame is not written yet: three more appends wait at the cursor...
    for i in range(3):
        stream.append({"x": [float(i)]})
        await turn()
    assert wire.messages() == []
    # ...and go out as one frame once it is.
    wire.drain()
    await turn()
    assert wire.messages() == [{"type": "data", "offset": 1, "rows": 3}]


async def test_a_viewer_that_does_not_drain_is_swept_after_write_timeout(hub: Hub) -> None:
    stream = hub.stream("s")
    session, wire = connect(hub)
    send(session, {"type": "subscribe", "stream": "s"})
    stream.append({"x": [1.0]})
    await turn()
    hub.clock.now += 29.0  # type: ignore[attr-defined]
    hub.sweep()
    assert wire.closed is None
    hub.clock.now += 2.0  # type: ignore[attr-defined]
    hub.sweep()
    assert wire.closed == (1008, "peer is not reading its socket")
    assert session.closed and session not in hub.sessions
    assert hub.subscriber_count("s") == 0


async def test_a_re_subscribe_waits_for_the_frame_on_the_wire(hub: Hub) -> None:
    stream = hub.stream("s")
    stream.append({"x": np.arange(10.0)})
    session, wire = connect(hub)
    send(session, {"type": "subscribe", "stream": "s"})
    assert [m["type"] for m in wire.messages()] == ["subscribed", "data"]
    # Far more re-subscribes than the interpreter's recursion limit: no chain builds up.
    for _ in range(3000):
        send(session, {"type": "subscribe", "stream": "s", "since": 0})
    # The replies, and no new data frame while the first is unwritten.
    assert [m["type"] for m in wire.messages()] == ["subscribed"] * 3000
    wire.drain()
    await turn()
    assert wire.messages() == [{"type": "data", "offset": 0, "rows": 10}]


async def test_data_waits_for_the_budget_and_other_frames_close_over_it(hub: Hub) -> None:
    # 1 MiB budget: data may fill 768 KiB of it (a quarter is kept for replies), and each
    # stream's first frame is one 256 KiB chunk.
    for i in range(5):
        hub.stream(f"s{i}").append({"x": np.arange(40_000.0)})
    session, wire = connect(hub)
    for i in range(5):
        send(session, {"type": "subscribe", "stream": f"s{i}"})
    sent = [m["type"] for m in wire.messages()]
    assert sent.count("subscribed") == 5
    assert sent.count("data") == 2  # the third frame would pass 768 KiB: it waits
    assert len(session.waiting) == 3 and wire.closed is None
    assert session.outbound <= hub.limits.outbound_budget
    wire.drain()  # the peer reads: waiting data goes out, nothing was lost
    await turn()
    offsets = [m["offset"] for m in wire.messages() if m["type"] == "data"]
    # Two waiting streams start (at 0), the first two go on (at their second chunk), and
    # the fifth still waits for room.
    assert sorted(offsets) == [0, 0, 32768, 32768], offsets
    assert len(session.waiting) == 1
    assert wire.closed is None
    # Control-plane answers that do not fit close the connection, saying why.
    for i in range(5000):
        if session.closed:
            break
        send(session, {"type": "list", "id": i})
    assert wire.closed is not None and wire.closed[0] == 1008
    assert "outbound_budget" in wire.closed[1]
    assert session.outbound <= hub.limits.outbound_budget


async def test_the_bad_message_limit_counts_within_its_window(hub: Hub) -> None:
    session, wire = connect(hub)
    for _ in range(BAD_MESSAGE_LIMIT - 1):
        session.receive("not json")
    hub.clock.now += BAD_MESSAGE_WINDOW + 1  # type: ignore[attr-defined]
    for _ in range(BAD_MESSAGE_LIMIT - 1):
        session.receive("not json")
    assert wire.closed is None  # never 20 within 10 s
    errors = [m for m in wire.messages() if m["type"] == "error"]
    assert len(errors) == 2 * (BAD_MESSAGE_LIMIT - 1)
    assert all(e["code"] == "bad_message" for e in errors)
    session.receive("not json")
    assert wire.closed == (4001, "too many bad messages")


async def test_a_large_frame_is_decoded_off_the_loop_and_handled_in_order(hub: Hub) -> None:
    session, wire = connect(hub)
    frame = json.dumps(
        {"type": "publish", "stream": "p", "id": "big", "columns": {"x": [0.5] * 20_000}}
    )
    pending = session.receive(frame)
    assert pending is not None  # the adapter waits on it before reading more
    assert wire.messages() == []  # nothing answered yet: the decode runs on a worker
    await asyncio.wait_for(pending, 10)
    (ack,) = wire.messages()
    assert ack == {"type": "ack", "ok": True, "offset": 0, "rows": 20_000, "id": "big"}


async def test_roles_are_enforced_per_message(hub: Hub) -> None:
    hub.stream("s").append({"x": [1.0]})
    session, wire = connect(hub, roles=("view",))
    send(session, {"type": "control", "stream": "s", "action": "pause", "id": 1})
    send(session, {"type": "publish", "stream": "s", "columns": {"x": [2.0]}, "id": 2})
    send(session, {"type": "list", "id": 3})
    replies = wire.messages()
    assert [(m["type"], m.get("code")) for m in replies] == [
        ("error", "forbidden"),
        ("error", "forbidden"),
        ("streams", None),
    ]
    assert "'control' role" in replies[0]["message"]


async def test_a_pipelining_peer_lets_the_loop_turn_after_each_burst(hub: Hub) -> None:
    session, wire = connect(hub)
    pauses = [session.receive(json.dumps({"type": "ping", "id": i})) for i in range(3 * BURST)]
    assert [i for i, p in enumerate(pauses) if p is not None] == [
        BURST - 1,
        2 * BURST - 1,
        3 * BURST - 1,
    ]
    assert len(wire.messages()) == 3 * BURST  # every ping answered, in order
    await turn()


async def test_a_restarted_stream_resets_its_viewers_to_the_new_epoch(hub: Hub) -> None:
    stream = hub.stream("s")
    stream.append({"x": [1.0, 2.0, 3.0]})
    session, wire = connect(hub)
    send(session, {"type": "subscribe", "stream": "s"})
    assert [m["type"] for m in wire.messages()] == ["subscribed", "data"]
    wire.drain()
    old = stream.epoch
    new = stream.restart()
    assert new != old and stream.end == 0
    stream.append({"x": [9.0]})
    await turn()
    reset, data = wire.messages()
    assert reset == {"type": "reset", "stream": "s", "epoch": new, "offset": 0, "reason": "restart"}
    assert data == {"type": "data", "offset": 0, "rows": 1}


async def test_control_listeners_hear_who_sent_what(hub: Hub) -> None:
    stream = hub.stream("s")
    heard: list[dict[str, Any]] = []
    remove = stream.on_control(heard.append)
    session, _wire = connect(hub, roles=("view", "control"))
    send(session, {"type": "control", "stream": "s", "action": "pause"})
    stream.control("resume")
    remove()
    stream.control("pause")
    assert [(e["action"], e["by"], e["state"]["paused"]) for e in heard] == [
        ("pause", "view,control", True),
        ("resume", "python", False),
    ]


async def lagging_viewer(hub: Hub) -> tuple[Any, Session, RecordingTransport]:
    """A stream whose only viewer has a frame on the wire and more than a chunk behind it."""
    stream = hub.stream("s", history=200_000)
    session, wire = connect(hub)
    send(session, {"type": "subscribe", "stream": "s"})
    stream.append({"x": [0.0]})
    await turn()
    assert [m["type"] for m in wire.messages()] == ["subscribed", "data"]
    chunk = CHUNK_BYTES // stream.row_bytes
    stream.append({"x": np.arange(chunk + 10.0)})
    await turn()
    assert wire.messages() == []  # the first frame is still on the wire
    return stream, session, wire


async def test_a_producer_on_the_loop_waits_for_a_write_while_a_viewer_lags(hub: Hub) -> None:
    hub.turn_max = 60.0  # only a write can end the wait
    stream, _session, wire = await lagging_viewer(hub)
    assert hub.lagging(stream)
    taken = hub.turn(stream)
    assert taken is not None
    waiting = asyncio.ensure_future(taken)
    await turn()
    assert not waiting.done()
    wire.drain()  # the frame is written: the producer's turn comes
    await turn()
    assert waiting.done()
    # The next frame (up to the first chunk boundary) is on the wire; the viewer now lags
    # by less than a chunk.
    assert [m["rows"] for m in wire.messages()] == [CHUNK_BYTES // stream.row_bytes - 1]
    assert not hub.lagging(stream)


async def test_a_producer_waits_at_most_turn_max_for_a_write(hub: Hub) -> None:
    stream, _session, _wire = await lagging_viewer(hub)
    loop = asyncio.get_running_loop()
    started = loop.time()
    taken = hub.turn(stream)
    assert taken is not None
    await asyncio.wait_for(taken, 1.0)  # nobody drains
    assert loop.time() - started >= TURN_MAX * 0.9
    assert hub.lagging(stream)


async def test_a_stalled_or_paused_viewer_paces_no_producer(hub: Hub) -> None:
    stream, session, _wire = await lagging_viewer(hub)
    hub.clock.now += TURN_STALLED  # type: ignore[attr-defined]
    assert not hub.lagging(stream)  # stalled: its frame has been on the wire too long
    hub.clock.now -= TURN_STALLED  # type: ignore[attr-defined]
    assert hub.lagging(stream)
    session.subscriptions["s"].credit = 0  # paused itself with credit
    assert not hub.lagging(stream)
    assert hub.turn(stream) is None  # the producer goes on at once


async def test_an_async_producer_takes_turns_with_the_writes(hub: Hub) -> None:
    """Each step of a producer on the loop, while its viewer lags, waits for a write or
    for TURN_MAX: its steps no longer come once per loop iteration."""
    stream, _session, _wire = await lagging_viewer(hub)
    loop = asyncio.get_running_loop()
    steps: list[float] = []
    six = asyncio.Event()

    async def flat_out() -> Any:
        while True:
            steps.append(loop.time())
            if len(steps) == 6:
                six.set()
            yield {"x": np.arange(1000.0)}

    producer = stream.producer(flat_out)
    async with asyncio.timeout(10):
        await six.wait()
    gaps = [b - a for a, b in itertools.pairwise(steps[1:])]
    assert min(gaps) >= TURN_MAX * 0.9, gaps
    producer.stop(wait=False)
    await turn()
