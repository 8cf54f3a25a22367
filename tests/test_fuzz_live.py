"""A live fuzz run: over 10,000 random and mutated frames against a running server.

tests/test_protocol.py fuzzes the decoder with hypothesis; this sends the frames to a real
server over a few plain ``websockets`` connections (fixed seed), while another connection
receives a steady stream. Each fuzz frame is followed by a ``ping`` whose ``pong`` marks the
end of the frame's answers, so every frame's answers are known:

* a frame the protocol refuses (``livestream.protocol.decode_client`` is the oracle) gets
  exactly one ``error`` with the oracle's code;
* a valid frame gets the answer its type calls for (or a refusal such as
  ``unknown_stream``), never ``internal``;
* after 20 refusals within 10 s the server closes with 4001 (the fuzzer reconnects);
  a message over the size limit closes with 1009 (or a reset, see ``Fuzzer.closed``); a
  text frame that is not UTF-8 fails the connection (RFC 6455: no close frame);
* no other close, no hang (every receive is bounded), no error in the server's log, and
  the steady subscriber gets every row, in order, without a pause of more than 3 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
import websockets

from conftest import TOKEN, decode_binary, encode_publish
from livestream import protocol as P
from livestream.errors import ProtocolError
from livestream.server import Server

pytestmark = pytest.mark.timeout(150)

SEED = 20240611
CONNECTIONS = 4
FRAMES_PER_CONNECTION = 2_600  # 10,400 in all
MAX_MESSAGE = 1024 * 1024  # the server's limit in this test (default 16 MiB)
BAD_LIMIT = 20  # refusals within BAD_WINDOW seconds before a 4001 close (docs/protocol.md)
BAD_WINDOW = 10.0
STREAMS = ("fz", "fz.two", "fz:3")  # what valid frames name; `steady` is never named

#: What each valid message type may be answered with ("" for no answer: a valid credit).
ANSWERS: dict[type, set[str]] = {
    P.Ping: {"pong"},
    P.ListStreams: {"streams"},
    P.Subscribe: {"subscribed", "error:unknown_stream", "error:bad_message"},
    P.Unsubscribe: {"unsubscribed", "error:unknown_stream"},
    P.Control: {"ack", "error:unknown_stream", "error:unknown_action", "error:invalid_param"},
    P.Publish: {"ack", "error:schema_mismatch"},
    P.Credit: {"", "error:unknown_stream"},
}


# --------------------------------------------------------------------------- frames


def valid_messages(rng: random.Random) -> list[dict[str, Any]]:
    stream = rng.choice(STREAMS)
    n = rng.randint(0, 4)
    return [
        {"type": "subscribe", "stream": stream, "id": rng.randint(0, 99), "last": 3},
        {
            "type": "subscribe",
            "stream": stream,
            "id": "s",
            "since": rng.randint(0, 50),
            "epoch": "old-epoch",
            "credit": 2,
            "format": "json",
            "columns": ["a"],
        },
        {"type": "unsubscribe", "stream": stream, "id": "u"},
        {
            "type": "control",
            "stream": stream,
            "action": rng.choice(["pause", "resume", "go"]),
            "id": 7,
        },
        {
            "type": "control",
            "stream": stream,
            "action": "set",
            "params": {"gain": rng.choice([0.5, 2, 11, "x", None])},
            "id": "c",
        },
        {
            "type": "publish",
            "stream": stream,
            "id": 3,
            "columns": {"a": [rng.random() for _ in range(n)], "s": ["x"] * n},
        },
        {"type": "list", "id": 4},
        {"type": "credit", "stream": stream, "frames": rng.randint(1, 3)},
        {"type": "ping", "id": rng.choice([5, "five"])},
    ]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, 10**30, -(10**20)])
    if kind == 3:
        return rng.choice([0.5, -1.5, 1e308, float("nan"), float("inf"), 3.0])
    if kind == 4:
        return "".join(
            rng.choice('ab:._- \u00e9\u2603\U0001f600\\"') for _ in range(rng.randint(0, 12))
        )
    if kind == 5:
        return rng.choice((*P.CLIENT_TYPES, "data", "welcome", "", "PING"))
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [
        "type",
        "stream",
        "id",
        "since",
        "epoch",
        "last",
        "columns",
        "credit",
        "format",
        "action",
        "params",
        "frames",
        "x",
    ]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def mutate_message(rng: random.Random, msg: dict[str, Any]) -> dict[str, Any]:
    """One to three structural mutations: a field dropped, retyped, added, renamed."""
    msg = dict(msg)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        key = rng.choice(list(msg) or ["type"])
        if op == 0:
            msg.pop(key, None)
        elif op == 1:
            msg[key] = random_json(rng)
        elif op == 2:
            msg[
                rng.choice(
                    [
                        "since",
                        "last",
                        "credit",
                        "columns",
                        "format",
                        "epoch",
                        "params",
                        "frames",
                        "action",
                        "zzz",
                    ]
                )
            ] = random_json(rng)
        elif op == 3:
            msg["type"] = rng.choice([*P.CLIENT_TYPES, "data", "Subscribe", 1, None, ["ping"]])
        else:
            msg["stream"] = rng.choice(["", "a b", "x" * 129, "steady/..", None, 5, "é", "fz\n"])
    return msg


def mutate_bytes(rng: random.Random, data: bytes, ascii_only: bool) -> bytes:
    """Byte-level damage: truncation, flips, insertions, deletions, duplications."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0:
            del buf[pos:]
        elif op == 1 and buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.randrange(32, 127) if ascii_only else buf[i] ^ (1 << rng.randrange(8))
        elif op == 2:
            junk = bytes(
                rng.randrange(32, 127) if ascii_only else rng.randrange(256)
                for _ in range(rng.randint(1, 8))
            )
            buf[pos:pos] = junk
        elif op == 3:
            del buf[pos : pos + rng.randint(1, 8)]
        else:
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 16)]
    return bytes(buf)


def binary_frame(header: Any, area: bytes, hlen: int | None = None) -> bytes:
    head = json.dumps(header).encode()
    size = len(head) if hlen is None else hlen
    return struct.pack("<I", size & 0xFFFFFFFF) + head + b"\0" * (-(4 + len(head)) % 8) + area


def binary_publish(rng: random.Random) -> bytes:
    n = rng.randint(0, 5)
    return encode_publish(
        rng.choice(STREAMS),
        {"a": np.arange(n, dtype=np.float64) / 3},
        id=rng.choice([None, 1, "b"]),
    )


def mutate_binary(rng: random.Random) -> bytes:
    """A publish frame with a damaged header: counts, sizes, offsets, dtypes, types."""
    rows = rng.randint(1, 4)
    area = np.arange(rows, dtype="<f8").tobytes()
    column: dict[str, Any] = {"name": "a", "dtype": "float64", "offset": 0, "nbytes": 8 * rows}
    header: dict[str, Any] = {
        "type": "publish",
        "stream": rng.choice(STREAMS),
        "id": 9,
        "rows": rows,
        "columns": [column],
    }
    hlen = None
    whole: Any = header
    for _ in range(rng.randint(1, 2)):
        op = rng.randrange(12)
        if op == 0:
            header["rows"] = rng.choice([-1, 2**31, 2**63, 10**30, 1.5, "3", None, True])
        elif op == 1:
            column["nbytes"] = rng.choice([-8, 0, 8 * rows + 1, 2**62, 10**30, "8", None])
        elif op == 2:
            column["offset"] = rng.choice([-8, 3, 8, 2**40, 2**64, "0", None, 0.0])
        elif op == 3:
            column["dtype"] = rng.choice(["int8", "str", "object", "float16", 5, None, "bool"])
        elif op == 4:
            header["columns"] = rng.choice(
                [
                    [],
                    {},
                    "a",
                    ["a"],
                    [{"name": 1}],
                    [column, column],
                    [{"name": "s", "values": "x"}],
                    [{"name": "s", "values": [1] * (rows + 1)}],
                    [{"name": "s", "dtype": "str", "values": [1, "x"][:rows]}],
                ]
            )
        elif op == 5:
            header["type"] = rng.choice(["subscribe", "data", "ping", 1, None])
        elif op == 6:
            header["stream"] = rng.choice(["", "a b", "x" * 129, None, 5])
        elif op == 7:
            header["id"] = rng.choice([1.5, True, [1], {"a": 1}, 10**40])
        elif op == 8:
            hlen = rng.choice([0, 1, 7, 2**31, 0xFFFFFFFF, 10**6])
        elif op == 9:
            area = area[: rng.randrange(len(area) + 1)]
        elif op == 10:
            whole = rng.choice([[header], "publish", 7, None])
        else:
            header.pop(rng.choice(["rows", "columns", "stream", "type"]), None)
    frame = binary_frame(whole, area, hlen)
    if rng.random() < 0.1:  # not UTF-8 inside the header
        frame = frame[:6] + b"\xff\xfe" + frame[8:]
    return frame


def make_frame(rng: random.Random, index: int) -> tuple[str | bytes, bool]:
    """The fuzz frame number ``index``: (payload, sent as a text frame)."""
    if index % 1000 == 999:  # a few over the size limit
        return "[" + " " * MAX_MESSAGE + "]", True
    roll = rng.random()
    if roll < 0.004:  # a text frame that is not UTF-8
        return mutate_bytes(rng, b'{"type":"ping","id":"\xc3\x28"}', ascii_only=False), True
    if roll < 0.01:
        depth = rng.choice([2000, 50_000])
        return rng.choice(["[" * depth + "]" * depth, '{"type":"ping","id":' + "[" * depth]), True
    if roll < 0.10:
        return json.dumps(random_json(rng)), True
    if roll < 0.17:
        return json.dumps(rng.choice(valid_messages(rng))), True
    if roll < 0.42:
        return json.dumps(mutate_message(rng, rng.choice(valid_messages(rng)))), True
    if roll < 0.62:
        text = json.dumps(rng.choice(valid_messages(rng))).encode()
        return mutate_bytes(rng, text, ascii_only=True).decode(), True
    if roll < 0.66:
        return binary_publish(rng), False
    if roll < 0.86:
        return mutate_binary(rng), False
    if roll < 0.95:
        return mutate_bytes(rng, binary_publish(rng), ascii_only=False), False
    if roll < 0.97:  # a valid message sent as a binary frame
        return json.dumps(rng.choice(valid_messages(rng))).encode(), False
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))), False


def expected(payload: str | bytes, text: bool) -> str:
    """What the server must do with a frame: ``close:1009``, ``close:abort``,
    ``error:<code>`` or ``valid:<message class>``."""
    size = len(payload.encode() if isinstance(payload, str) else payload)
    if size > MAX_MESSAGE:
        return "close:1009"
    if text and isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return "close:abort"
    try:
        msg = P.decode_client(payload)
    except ProtocolError as err:
        return f"error:{err.code}"
    return f"valid:{type(msg).__name__}"


# --------------------------------------------------------------------------- the peers


class Steady:
    """A subscriber of ``steady`` that checks every row and times the gaps between frames."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.next = 0
        self.longest_pause = 0.0
        self.frames = 0

    async def run(self, stop: asyncio.Event) -> None:
        url = f"{self.server.ws_url}?token={TOKEN}"
        async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
            await ws.send(json.dumps({"type": "subscribe", "stream": "steady", "id": 1}))
            loop = asyncio.get_running_loop()
            last = loop.time()
            while not stop.is_set() or self.next < self.server.hub.get("steady").end:
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.25)  # (recv is cancel-safe)
                except TimeoutError:
                    assert loop.time() - last < 5, f"no rows for 5 s after row {self.next}"
                    continue
                if not isinstance(frame, bytes):
                    msg = json.loads(frame)
                    assert msg["type"] == "subscribed" and msg["offset"] == 0, msg
                    continue
                msg = decode_binary(frame)
                assert msg["offset"] == self.next, f"frame at {msg['offset']}, expected {self.next}"
                i = msg["columns"]["i"]
                assert np.array_equal(i, np.arange(self.next, self.next + msg["rows"]))
                self.next += msg["rows"]
                self.frames += 1
                now = loop.time()
                self.longest_pause = max(self.longest_pause, now - last)
                last = now


class Fuzzer:
    """Sends its frames, each followed by a delimiting ping, and checks every answer."""

    def __init__(self, server: Server, name: str, frames: list[tuple[str | bytes, bool]]) -> None:
        self.server = server
        self.name = name
        self.frames = frames
        self.closes: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.connections = 0

    async def run(self) -> None:
        url = f"{self.server.ws_url}?token={TOKEN}"
        index = 0
        while index < len(self.frames):
            self.connections += 1
            refusals: list[float] = []  # when each counted error arrived on this connection
            async with websockets.connect(
                url, max_size=None, open_timeout=5, close_timeout=2
            ) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
                while index < len(self.frames):
                    payload, text = self.frames[index]
                    expect = expected(payload, text)
                    index += 1
                    try:
                        answers = await self.exchange(ws, payload, text, index)
                    except websockets.ConnectionClosed as exc:
                        self.closed(exc, expect, refusals, payload)
                        break
                    assert not expect.startswith("close:"), (
                        f"frame {index} should have closed the connection ({expect}): "
                        f"{payload[:200]!r}"
                    )
                    self.check(expect, answers, payload, index)
                    now = time.monotonic()
                    refusals.extend(now for a in answers if a["type"] == "error")
                    recent = [t for t in refusals if now - t < BAD_WINDOW - 1.0]
                    assert len(recent) < BAD_LIMIT, (
                        f"{len(recent)} refusals within {BAD_WINDOW - 1} s and no 4001 close"
                    )

    async def exchange(
        self, ws: Any, payload: str | bytes, text: bool, index: int
    ) -> list[dict[str, Any]]:
        """Send one frame and a ping; the answers that came before the pong."""
        delim = f"delim-{self.name}-{index}"
        await ws.send(payload, text=text)
        await ws.send(json.dumps({"type": "ping", "id": delim}))
        answers = []
        while True:
            frame = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(frame, bytes):
                continue  # data of a subscription a fuzz frame made
            msg = json.loads(frame)
            if msg["type"] in ("data", "state", "reset"):
                continue
            if (
                msg["type"] == "error"
                and "id" not in msg
                and "subscription is ended" in msg["message"]
            ):
                continue  # a subscription ended by a later schema: not an answer
            if msg == {"type": "pong", "id": delim}:
                return answers
            answers.append(msg)

    def check(self, expect: str, answers: list[dict[str, Any]], payload: Any, index: int) -> None:
        what = f"frame {index} ({expect}) {payload[:200]!r} got {answers}"
        kinds = [a["type"] if a["type"] != "error" else f"error:{a['code']}" for a in answers]
        assert "error:internal" not in kinds, what
        if expect.startswith("error:"):
            assert kinds == [expect], what
            assert answers[0]["message"], what
            self.outcomes["refused"] += 1
            return
        allowed = ANSWERS[getattr(P, expect.removeprefix("valid:"))]
        assert len(kinds) <= 1 and (kinds[0] if kinds else "") in allowed, what
        self.outcomes["answered" if kinds else "silent"] += 1

    def closed(
        self, exc: websockets.ConnectionClosed, expect: str, refusals: list[float], payload: Any
    ) -> None:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if expect == "close:1009":
            # Tornado sends the 1009 close frame and drops the connection without reading
            # the rest of the message: a client still sending it may get a TCP reset, and
            # lose the close frame, instead.
            assert code in (1009, None), (expect, exc)
            self.closes["1009 too big"] += 1
        elif expect == "close:abort":
            assert code is None, (expect, exc)
            self.closes["not UTF-8"] += 1
        else:
            # The answer to this frame may have been the 20th refusal: it came before the
            # close, but the delimiting pong never did.
            assert code == 4001, (f"closed with {code} after {expect} {payload[:200]!r}", exc)
            assert len(refusals) + 1 >= BAD_LIMIT, f"4001 after {len(refusals)} refusals"
            self.closes["4001 too many bad"] += 1
            self.outcomes["refused"] += 1


# --------------------------------------------------------------------------- the test


async def test_live_fuzz_does_not_disturb_the_server_or_a_steady_subscriber(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server: Server = server_factory(max_message_size=MAX_MESSAGE, history=1000)
    steady_stream = server.stream("steady", schema={"i": "int64"}, history=100_000)
    server.stream("fz", schema={"a": "float64", "s": "str"}, params={})
    rng = random.Random(SEED)
    plans = [[make_frame(rng, k) for k in range(FRAMES_PER_CONNECTION)] for _ in range(CONNECTIONS)]
    assert sum(map(len, plans)) >= 10_000

    stop_feed = threading.Event()

    def feed() -> None:
        base = np.arange(100, dtype=np.int64)
        while not stop_feed.wait(0.005):
            steady_stream.append({"i": base + steady_stream.end})

    feeder = threading.Thread(target=feed, name="test-steady-feed", daemon=True)
    steady = Steady(server)
    stop = asyncio.Event()
    reading = asyncio.create_task(steady.run(stop))
    fuzzers = [Fuzzer(server, f"f{k}", plan) for k, plan in enumerate(plans)]
    feeder.start()
    try:
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(f.run() for f in fuzzers)), 120)
        took = time.monotonic() - started
        assert not reading.done(), reading
    finally:
        stop_feed.set()
        feeder.join(5)
        stop.set()
    await asyncio.wait_for(reading, 10)
    assert not feeder.is_alive()

    closes = sum((f.closes for f in fuzzers), Counter())
    outcomes = sum((f.outcomes for f in fuzzers), Counter())
    print(
        f"\nfuzz: {sum(map(len, plans))} frames in {took:.1f} s over "
        f"{sum(f.connections for f in fuzzers)} connections; {dict(outcomes)}; "
        f"closes {dict(closes)}; steady: {steady.next} rows in {steady.frames} frames, "
        f"longest pause {steady.longest_pause:.2f} s; {len(server.hub.streams)} streams"
    )
    # Every kind of outcome happened, so the run covered what it claims to.
    assert outcomes["refused"] > 5_000 and outcomes["answered"] > 500, outcomes
    assert closes["4001 too many bad"] > 100 and closes["1009 too big"] == CONNECTIONS * 2
    assert closes["not UTF-8"] > 10, closes
    # The steady subscriber got every row (checked frame by frame) without a long pause.
    assert steady.next == steady_stream.end > 0
    assert steady.longest_pause < 3.0, steady.longest_pause
    # The server is healthy: it answers, and only the steady session is left.
    async with websockets.connect(f"{server.ws_url}?token={TOKEN}", open_timeout=5) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
        await ws.send('{"type":"ping","id":"end"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong", "id": "end"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while server.hub.sessions:
        assert loop.time() < deadline, f"{len(server.hub.sessions)} sessions left"
        await asyncio.sleep(0.02)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]


async def test_nothing_sent_after_the_20th_bad_message_takes_effect(
    server_factory: Any,
) -> None:
    """Once the server has closed a connection with 4001, what the peer had already sent
    behind the 20th bad message (here a publish and a control) is not carried out."""
    server: Server = server_factory()
    paused = server.stream("p", schema={"x": "float64"})
    burst = ['{"type": "nonsense"}'] * BAD_LIMIT + [
        '{"type":"publish","stream":"after-close","columns":{"x":[1.0]},"id":"late"}',
        '{"type":"control","stream":"p","action":"pause","id":"late2"}',
    ]
    async with websockets.connect(f"{server.ws_url}?token={TOKEN}", close_timeout=2) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
        for frame in burst:
            await ws.send(frame)
        errors = 0
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert msg["type"] == "error" and msg.get("id") is None, msg
                errors += 1
        assert info.value.rcvd is not None and info.value.rcvd.code == 4001
        assert errors == BAD_LIMIT
    # Wait (bounded) for the server to have let the session go, so it handled everything.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while server.hub.sessions:
        assert loop.time() < deadline, "the closed session is still there"
        await asyncio.sleep(0.02)
    assert "after-close" not in server.hub.streams
    assert paused.state["paused"] is False
