"""Several ``livestream serve --redis`` processes serve one set of streams (issue 10).

Real parts only: a real ``redis-server`` on a free port with its own folder, three real
``python -m livestream serve --redis URL`` processes, and the plain ``websockets`` library
as the client (conftest's :class:`Peer`). Every test checks row by row: each value once,
at the offset it was stored, nothing lost and nothing duplicated.

A client moving from a killed node to another one is tested in tests/test_redis_failover.py,
with the Python client's own failover (a list of URLs); the resend of a batch with the same
``publisher`` and ``seq`` by hand is tested here (``test_a_resent_batch_is_stored_once``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from support import Running, Serving, livestream_cli, wait_until

from conftest import Peer, decode, encode_publish

TOKEN = "redis-test-token-0123"
REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A ``redis-server`` on a free port with its own folder; it can be killed and
    started again on the same port (with or without its append-only file)."""

    def __init__(self, folder: Path, *, aof: bool = False, password: str | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.aof = aof
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        assert os.path.exists(REDIS_SERVER), "redis-server is missing: scripts/test.sh installs it"
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
        ]
        args += ["--save", ""]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, 10, "redis-server answers PING")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    sock.recv(64)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: without persistence its data is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def shutdown(self) -> None:
        """SIGTERM: a graceful stop that writes the append-only file out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[RedisProcess] = []

    def make(**options: Any) -> RedisProcess:
        folder = tmp_path / f"redis{len(made)}"
        folder.mkdir()
        proc = RedisProcess(folder, **options).start()
        made.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in made:
            proc.kill()


class Node(Serving):
    """A ``livestream serve --redis`` process."""

    def offset(self, stream: str) -> int:
        """The stream's offset on this node; -1 while the node does not know it."""
        try:
            return int(self.get(f"/api/streams/{stream}")["offset"])
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return -1
            raise

    def get(self, path: str) -> Any:
        sep = "&" if "?" in path else "?"
        with urllib.request.urlopen(f"{self.base}{path}{sep}token={TOKEN}", timeout=5) as resp:
            return json.loads(resp.read())


@pytest.fixture
def nodes(running: Any) -> Any:
    def start(redis_url: str, count: int = 3, command: str = "serve") -> list[Node]:
        procs = [
            running(command, "--port", "0", "--token", TOKEN, "--redis", redis_url)
            for _ in range(count)
        ]
        return [Node(p) for p in procs]

    return start


class _Connect:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.ws: Any = None

    async def __aenter__(self) -> Peer:
        self.ws = await websockets.connect(
            f"{self.node.ws_url}?token={TOKEN}", max_size=64 * 1024 * 1024, open_timeout=5
        )
        peer = Peer(self.ws)
        peer.welcome = decode(await asyncio.wait_for(self.ws.recv(), 5))
        assert peer.welcome["type"] == "welcome"
        return peer

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()


def connect(node: Node) -> _Connect:
    return _Connect(node)


def batch(values: np.ndarray) -> dict[str, np.ndarray]:
    return {"v": values.astype("<i8"), "x": values.astype("<f8") * 0.5}


def publish_frame(
    stream: str, values: np.ndarray, id: Any, publisher: str | None = None, seq: int | None = None
) -> bytes:
    frame = encode_publish(stream, batch(values), id)
    if publisher is None:
        return frame
    # The optional publisher and seq go into the binary frame's JSON header.
    import struct

    (hlen,) = struct.unpack_from("<I", frame, 0)
    header = json.loads(frame[4 : 4 + hlen])
    header.update(publisher=publisher, seq=seq)
    head = json.dumps(header).encode()
    pad = -(4 + len(head)) % 8
    area_start = 4 + hlen + (-(4 + hlen) % 8)
    return struct.pack("<I", len(head)) + head + b"\0" * pad + frame[area_start:]


async def publish(peer: Peer, stream: str, values: np.ndarray, **kw: Any) -> dict[str, Any]:
    """Publish and return the ack, retrying while Redis is away (``unavailable``)."""
    deadline = time.monotonic() + 20
    while True:
        id = f"p{time.monotonic_ns()}"
        await peer.send(publish_frame(stream, values, id, **kw))
        reply = await peer.expect(lambda m, id=id: m.get("id") == id, 15)
        if reply["type"] == "ack":
            return reply
        assert reply["code"] == "unavailable", reply
        assert time.monotonic() < deadline, f"Redis did not come back: {reply}"
        await asyncio.sleep(0.1)


async def read_until(
    peer: Peer, stream: str, count: int, timeout: float = 15
) -> tuple[list[int], list[int]]:
    """Data rows of ``stream`` until ``count`` have come: (offsets, values). Fails on a
    reset, a gap or an overlap of offsets."""
    offsets: list[int] = []
    values: list[int] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(values) < count:
        left = deadline - asyncio.get_running_loop().time()
        msg = await peer.expect(
            lambda m: m["type"] in ("data", "reset") and m.get("stream") == stream, max(left, 0.01)
        )
        assert msg["type"] == "data", f"unexpected {msg} after {len(values)} rows"
        if offsets:
            assert msg["offset"] == offsets[-1] + 1, f"offset {msg['offset']} after {offsets[-1]}"
        offsets.extend(range(msg["offset"], msg["offset"] + msg["rows"]))
        values.extend(int(v) for v in msg["columns"]["v"])
    return offsets, values


def assert_once(values: list[int], expected: list[int]) -> None:
    """Every expected value exactly once (reports what was lost and what came twice)."""
    seen: dict[int, int] = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    lost = sorted(set(expected) - set(seen))
    doubled = sorted(v for v, n in seen.items() if n > 1)
    extra = sorted(set(seen) - set(expected))
    assert not lost and not doubled and not extra, (
        f"lost {len(lost)} {lost[:10]}, duplicated {len(doubled)} {doubled[:10]}, "
        f"unexpected {extra[:10]}"
    )


# --------------------------------------------------------------------------- the service


async def test_fan_in_from_two_nodes(redis_factory: Any, nodes: Any) -> None:
    redis = redis_factory()
    a, b, c = nodes(redis.url)
    async with connect(a) as pa, connect(b) as pb, connect(c) as viewer:

        async def pump(peer: Peer, base: int) -> list[tuple[int, int]]:
            acks = []
            for i in range(40):
                values = np.arange(base + i * 25, base + (i + 1) * 25)
                ack = await publish(peer, "fanin", values)
                acks.append((ack["offset"], ack["rows"]))
            return acks

        acks_a, acks_b = await asyncio.gather(pump(pa, 0), pump(pb, 1_000_000))
        spans = sorted(acks_a + acks_b)
        # Offsets were numbered in Redis: the two nodes' batches tile 0..2000 exactly.
        assert [s for s, _ in spans] == list(range(0, 2000, 25)), spans[:5]
        await viewer.subscribe("fanin", since=0)
        offsets, values = await read_until(viewer, "fanin", 2000)
        assert offsets == list(range(2000))
        assert_once(values, [*range(0, 1000), *range(1_000_000, 1_001_000)])
        # Each publisher's rows in its own order.
        mine = [v for v in values if v < 1_000_000]
        assert mine == sorted(mine)


async def test_fan_out_across_nodes_and_the_list_sums_viewers(
    redis_factory: Any, nodes: Any
) -> None:
    redis = redis_factory()
    a, b, c = nodes(redis.url)
    async with connect(a) as pub, connect(a) as va, connect(b) as vb, connect(c) as vc:
        await publish(pub, "fanout", np.arange(0, 100))
        epochs = set()
        for viewer in (va, vb, vc):
            for _ in range(50):  # the stream reaches every node through Redis
                reply = await viewer.request({"type": "subscribe", "stream": "fanout"})
                if reply["type"] == "subscribed":
                    break
                assert reply["code"] == "unknown_stream", reply
                await asyncio.sleep(0.05)
            epochs.add(reply["epoch"])
        assert len(epochs) == 1, f"one epoch everywhere; got {epochs}"
        for i in range(1, 20):
            await publish(pub, "fanout", np.arange(i * 100, (i + 1) * 100))
        got = await asyncio.gather(*(read_until(v, "fanout", 2000) for v in (va, vb, vc)))
        for offsets, values in got:
            assert offsets == list(range(2000))
            assert values == list(range(2000))

        def summed() -> Any:
            info = {s["name"]: s for s in a.get("/api/streams")["streams"]}.get("fanout")
            return info if info and info["subscribers"] == 3 and info["nodes"] == 3 else None

        info = await asyncio.to_thread(wait_until, summed, 10, "3 viewers on 3 nodes in the list")
        assert info["offset"] == 2000
        for _ in range(100):  # B hears of the others' viewers by their heartbeats
            listed = await vb.request({"type": "list"})
            entry = {s["name"]: s for s in listed["streams"]}["fanout"]
            if entry["subscribers"] == 3:
                break
            await asyncio.sleep(0.05)
        assert entry["subscribers"] == 3 and entry["nodes"] == 3, entry


async def test_controls_across_nodes(redis_factory: Any, nodes: Any, running: Any) -> None:
    """A producer on node A (the demo's market feed); a control sent to node B reaches it,
    and the new state reaches a viewer on node C."""
    redis = redis_factory()
    producer = Node(
        running("demo", "--port", "0", "--token", TOKEN, "--redis", redis.url, "--no-browser")
    )
    b, c = nodes(redis.url, 2)
    async with connect(b) as pb, connect(c) as vc:
        for _ in range(100):
            reply = await vc.request({"type": "subscribe", "stream": "prices", "since": 0})
            if reply["type"] == "subscribed" and reply["controls"]["params"]:
                break
            await asyncio.sleep(0.05)
        assert "volatility" in reply["controls"]["params"], reply["controls"]
        ack = await pb.request(
            {"type": "control", "stream": "prices", "action": "set", "params": {"volatility": 0.15}}
        )
        assert ack["type"] == "ack", ack
        assert ack["state"]["params"]["volatility"] == 0.15
        state = await vc.expect(
            lambda m: m["type"] == "state" and m["state"]["params"].get("volatility") == 0.15,
            10,
        )
        assert state["stream"] == "prices"
        # A bad value is refused by the producer's node, with its message.
        bad = await pb.request(
            {"type": "control", "stream": "prices", "action": "set", "params": {"volatility": 9}}
        )
        assert bad["type"] == "error" and bad["code"] == "invalid_param", bad
        ack = await pb.request({"type": "control", "stream": "prices", "action": "pause"})
        assert ack["state"]["paused"] is True
        await vc.expect(lambda m: m["type"] == "state" and m["state"]["paused"] is True, 10)
        # Rows on C are the producer's rows, each once and in order.
        end = (await asyncio.to_thread(producer.get, "/api/streams/prices"))["offset"]
        await asyncio.to_thread(wait_until, lambda: c.offset("prices") >= end, 10, "C caught up")
        count = c.get("/api/streams/prices")["offset"]
        offsets = []
        while len(offsets) < count:
            msg = await vc.expect(lambda m: m["type"] in ("data", "reset"), 10)
            assert msg["type"] == "data", msg
            assert msg["offset"] == len(offsets), "rows in order, none lost or doubled"
            offsets.extend(range(msg["offset"], msg["offset"] + msg["rows"]))
        assert offsets == list(range(count))


async def test_a_redis_restart_without_persistence_resets_every_viewer(
    redis_factory: Any, nodes: Any
) -> None:
    redis = redis_factory()
    a, b = nodes(redis.url, 2)
    async with connect(a) as pub, connect(a) as va, connect(b) as vb:
        await publish(pub, "volatile", np.arange(0, 300))
        epochs = []
        for viewer in (va, vb):
            for _ in range(100):
                reply = await viewer.request({"type": "subscribe", "stream": "volatile"})
                if reply["type"] == "subscribed":
                    break
                await asyncio.sleep(0.05)
            epochs.append(reply["epoch"])
            offsets, values = await read_until(viewer, "volatile", 300)
            assert values == list(range(300))
        redis.kill()
        redis.start()  # same port, no data: a new epoch
        ack = await publish(pub, "volatile", np.arange(1000, 1100))
        assert ack["offset"] == 0, "offsets start over with the new epoch"
        for viewer in (va, vb):
            reset = await viewer.expect(
                lambda m: m["type"] in ("reset", "data") and m.get("stream") == "volatile", 15
            )
            assert reset["type"] == "reset", f"a reset before any row of the new epoch: {reset}"
            assert reset["reason"] == "restart" and reset["offset"] == 0
            assert reset["epoch"] != epochs[0]
            offsets, values = await read_until(viewer, "volatile", 100)
            assert offsets == list(range(100))
            assert values == list(range(1000, 1100))


async def test_a_redis_restart_with_aof_loses_nothing(redis_factory: Any, nodes: Any) -> None:
    redis = redis_factory(aof=True)
    a, b = nodes(redis.url, 2)
    async with connect(a) as pub, connect(b) as vb:
        await publish(pub, "kept", np.arange(0, 300))
        for _ in range(100):
            reply = await vb.request({"type": "subscribe", "stream": "kept", "since": 0})
            if reply["type"] == "subscribed":
                break
            await asyncio.sleep(0.05)
        epoch = reply["epoch"]
        _, values = await read_until(vb, "kept", 300)
        redis.shutdown()
        redis.start()
        for i in range(3, 6):
            await publish(pub, "kept", np.arange(i * 100, (i + 1) * 100))
        offsets, more = await read_until(vb, "kept", 300)
        assert offsets == list(range(300, 600)), "the offsets go on"
        assert_once(values + more, list(range(600)))
        assert not [m for m in vb.backlog if m["type"] == "reset"]
    async with connect(b) as late:
        again = await late.subscribe("kept", since=0)
        assert again["epoch"] == epoch
        _, all_values = await read_until(late, "kept", 600)
        assert all_values == list(range(600))


async def test_a_resent_batch_is_stored_once(redis_factory: Any, nodes: Any) -> None:
    redis = redis_factory()
    a, b = nodes(redis.url, 2)
    async with connect(a) as pa, connect(b) as pb:
        first = await publish(pa, "dedup", np.arange(0, 10), publisher="gw", seq=1)
        assert first["offset"] == 0 and "duplicate" not in first
        # The same batch again, through another node: recognised, not stored.
        again = await publish(pb, "dedup", np.arange(0, 10), publisher="gw", seq=1)
        assert again["duplicate"] is True and again["offset"] == 0
        older = await publish(pb, "dedup", np.arange(0, 10), publisher="gw", seq=0)
        assert older["duplicate"] is True
        nxt = await publish(pb, "dedup", np.arange(10, 20), publisher="gw", seq=2)
        assert nxt["offset"] == 10 and "duplicate" not in nxt
        await pa.subscribe("dedup", since=0)
        offsets, values = await read_until(pa, "dedup", 20)
        assert offsets == list(range(20))
        assert values == list(range(20))
        with pytest.raises(TimeoutError):  # and nothing more comes
            await pa.expect(lambda m: m["type"] == "data", 0.5)


def test_redis_down_at_start_is_a_clear_error() -> None:
    port = free_port()  # nothing listens there
    done = livestream_cli(
        "serve", "--port", "0", "--token", TOKEN, "--redis", f"redis://:s3cretpw@127.0.0.1:{port}/0"
    )
    assert done.returncode == 1, done
    assert f"livestream: cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (" in done.stderr
    assert "s3cretpw" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_redis_url_is_a_clear_error() -> None:
    done = livestream_cli("serve", "--port", "0", "--token", TOKEN, "--redis", "localhost:6379")
    assert done.returncode == 1, done
    assert "redis must be a URL such as redis://localhost:6379/0" in done.stderr


async def test_the_password_is_never_shown(redis_factory: Any, running: Any) -> None:
    redis = redis_factory(password="pw-0123456789")
    proc = running("-v", "serve", "--port", "0", "--token", TOKEN, "--redis", redis.url)
    node = Node(proc)
    health = await asyncio.to_thread(node.get, "/healthz")
    assert health["ok"] is True and health["connected"] is True
    assert health["redis"] == f"redis://:***@127.0.0.1:{redis.port}/0"
    async with connect(node) as peer:
        await publish(peer, "secret", np.arange(5))
    proc.stop()
    assert "pw-0123456789" not in "".join(proc.output) + "".join(_drain(proc))


def _drain(proc: Running) -> Iterator[str]:
    while True:
        try:
            line = proc.lines.get_nowait()
        except Exception:
            return
        if line is None:
            return
        yield line


def test_without_redis_the_redis_module_is_not_imported() -> None:
    code = (
        "import sys, livestream, livestream.server, livestream.cli\n"
        "from livestream.server import Server\n"
        "s = Server(port=0).start(); s.stop()\n"
        "print('redis' in sys.modules, 'livestream.backplanes.redis' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


async def test_while_redis_is_away_nodes_serve_what_they_hold_and_publishes_fail_clearly(
    redis_factory: Any, nodes: Any
) -> None:
    redis = redis_factory()
    a, b = nodes(redis.url, 2)
    async with connect(a) as pub:
        await publish(pub, "held", np.arange(0, 200))
        await asyncio.to_thread(wait_until, lambda: b.offset("held") == 200, 10, "B holds 200")
        redis.kill()
        # B keeps serving the rows it holds.
        async with connect(b) as viewer:
            await viewer.subscribe("held", since=0)
            offsets, values = await read_until(viewer, "held", 200)
            assert values == list(range(200)) and offsets == list(range(200))
        # A publish is refused, saying why and that nothing was stored.
        for _ in range(200):
            id = f"q{time.monotonic_ns()}"
            await pub.send(publish_frame("held", np.arange(200, 210), id))
            reply = await pub.expect(lambda m, id=id: m.get("id") == id, 30)
            if reply["type"] == "error":
                break
            await asyncio.sleep(0.05)  # stored before A saw Redis go: fine, try again
        assert reply["code"] == "unavailable", reply
        assert f"Redis at redis://127.0.0.1:{redis.port}/0" in reply["message"]
        assert "not stored" in reply["message"] or "stored (once)" in reply["message"]
        # Over HTTP: 503 with the same code.
        status, body = await asyncio.to_thread(_post, a, "held", [{"v": 1, "x": 0.5}])
        assert status == 503 and body["error"]["code"] == "unavailable", body
        health = await asyncio.to_thread(a.get, "/healthz")
        assert health["connected"] is False
        # Redis is back (empty): publishes work again, under a new epoch.
        redis.start()
        ack = await publish(pub, "held", np.arange(1000, 1010))
        assert ack["offset"] == 0


def _post(node: Node, stream: str, rows: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{node.base}/api/streams/{stream}?token={TOKEN}",
        data=json.dumps(rows).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_http_publishes_and_producers_in_a_node_go_through_redis(
    redis_factory: Any, nodes: Any
) -> None:
    """Rows from an HTTP POST and from producers running in a node's process (a thread
    producer and an async one) reach a viewer on another node, each once, in order."""
    from livestream.server import Server

    redis = redis_factory()
    (b,) = nodes(redis.url, 1)
    server = Server(port=0, token=TOKEN, redis=redis.url).start()
    try:
        status, body = await asyncio.to_thread(
            _post,
            _node_of(server),
            "posted",
            [{"v": i, "x": i * 0.5} for i in range(50)],
        )
        assert status == 200 and body["offset"] == 0 and body["rows"] == 50, body

        def counting() -> Iterator[dict[str, Any]]:
            i = 0
            while True:
                yield {"v": np.arange(i, i + 10), "x": np.arange(i, i + 10) * 0.5}
                i += 10

        async def counting_async() -> Any:
            i = 0
            while True:
                yield {"v": np.arange(i, i + 10), "x": np.arange(i, i + 10) * 0.5}
                i += 10

        server.stream("threaded").producer(counting, every=0.002)
        server.stream("looped").producer(counting_async, every=0.002)
        async with connect(b) as viewer:
            for name, count in (("posted", 50), ("threaded", 1000), ("looped", 1000)):
                for _ in range(100):
                    reply = await viewer.request({"type": "subscribe", "stream": name, "since": 0})
                    if reply["type"] == "subscribed":
                        break
                    await asyncio.sleep(0.05)
                assert reply["type"] == "subscribed", reply
                offsets, values = await read_until(viewer, name, count)
                assert offsets[:count] == list(range(count))
                assert values[:count] == list(range(count)), name
    finally:
        await asyncio.to_thread(server.stop)


def _node_of(server: Any) -> Node:
    node = Node.__new__(Node)
    node.ws_url = server.ws_url
    node.base = server.base_url
    return node


async def test_demo_on_two_nodes_runs_its_feeds_once(redis_factory: Any, running: Any) -> None:
    """``livestream demo --redis URL`` twice: the second node serves the first one's feeds
    (one producer per stream), and a viewer on each node gets the same rows."""
    redis = redis_factory()
    first = Node(
        running("demo", "--port", "0", "--token", TOKEN, "--redis", redis.url, "--no-browser")
    )
    second_proc = running(
        "demo", "--port", "0", "--token", TOKEN, "--redis", redis.url, "--no-browser"
    )
    second_proc.expect(r"the feeds run on node [0-9a-f]+; this node serves them")
    second = Node(second_proc)
    async with connect(first) as v1, connect(second) as v2:
        got = []
        for viewer in (v1, v2):
            for _ in range(100):
                reply = await viewer.request({"type": "subscribe", "stream": "prices", "since": 0})
                if reply["type"] == "subscribed":
                    break
                await asyncio.sleep(0.05)
            assert reply["type"] == "subscribed", reply
            got.append(reply["epoch"])
        assert got[0] == got[1]
        frames = []
        for viewer in (v1, v2):
            rows: dict[int, float] = {}
            while len(rows) < 20:
                msg = await viewer.expect(lambda m: m["type"] in ("data", "reset"), 10)
                assert msg["type"] == "data", msg
                for i, price in enumerate(msg["columns"]["price"]):
                    rows[msg["offset"] + i] = float(price)
            frames.append(rows)
        common = sorted(set(frames[0]) & set(frames[1]))
        assert len(common) >= 20 and common == list(range(len(common)))
        assert all(frames[0][o] == frames[1][o] for o in common), "one feed, the same rows"


# --------------------------------------------------------------------------- one server


async def test_a_single_server_stores_a_resent_batch_once(
    live_server: Any, ws_connect: Any
) -> None:
    """``publisher`` and ``seq`` mean the same without Redis: the in-process backplane
    remembers each publisher's last seq per stream."""
    async with ws_connect(live_server) as peer:
        first = await publish(peer, "solo", np.arange(0, 5), publisher="p", seq=7)
        assert first["offset"] == 0 and "duplicate" not in first
        again = await publish(peer, "solo", np.arange(0, 5), publisher="p", seq=7)
        assert again["duplicate"] is True and again["offset"] == 0
        other = await publish(peer, "solo", np.arange(5, 10), publisher="q", seq=1)
        assert other["offset"] == 5, "another publisher's seq is its own"
        assert live_server.hub.streams["solo"].end == 10
        for bad, why in (
            ({"publisher": "p"}, "`seq`"),
            ({"publisher": "", "seq": 1}, "`publisher`"),
            ({"publisher": "p", "seq": -1}, "`seq`"),
            ({"publisher": "x" * 65, "seq": 1}, "`publisher`"),
        ):
            reply = await peer.request(
                {"type": "publish", "stream": "solo", "columns": {"v": [1], "x": [0.5]}, **bad}
            )
            assert reply["type"] == "error" and reply["code"] == "bad_message", reply
            assert why in reply["message"], reply["message"]
        assert live_server.hub.streams["solo"].end == 10, "nothing stored by a refused publish"


async def test_a_publish_is_conformed_to_the_schema_as_on_one_server(
    redis_factory: Any, nodes: Any
) -> None:
    """JSON integers for a float column, columns in another order: converted as a single
    server converts them; a column of text for a number column is refused, naming it."""
    redis = redis_factory()
    a, b = nodes(redis.url, 2)
    async with connect(a) as pa, connect(b) as pb:
        await publish(pa, "typed", np.arange(0, 3))  # v int64, x float64
        for _ in range(100):
            reply = await pb.request({"type": "subscribe", "stream": "typed", "since": 0})
            if reply["type"] == "subscribed":
                break
            await asyncio.sleep(0.05)
        ok = await pb.request(
            {"type": "publish", "stream": "typed", "columns": {"x": [2, 3], "v": [3, 4]}}
        )
        assert ok["type"] == "ack" and ok["offset"] == 3, ok
        bad = await pb.request(
            {"type": "publish", "stream": "typed", "columns": {"v": ["a"], "x": [1.0]}}
        )
        assert bad["type"] == "error" and bad["code"] == "schema_mismatch", bad
        assert "'v'" in bad["message"]
        offsets, values = await read_until(pb, "typed", 5)
        assert offsets == list(range(5)) and values == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- merging


def test_a_producers_waiting_batches_are_stored_as_one_entry_each_stream_in_order() -> None:
    """The writer joins a producer's batches of one stream that wait together (its own,
    which no client awaits), in order, up to MERGE_BYTES; a client's publish is never
    joined, nor are batches of another stream or schema."""
    from livestream import protocol as P
    from livestream.backplanes import redis as backplane
    from livestream.columns import to_batch
    from livestream.streams import Stream

    a, b = Stream("a"), Stream("b")
    loop = asyncio.new_event_loop()
    seq = 0

    def item(stream: Stream, values: np.ndarray, *, own: bool = True) -> Any:
        nonlocal seq
        seq += 1
        data = to_batch(batch(values))
        payload = P.encode_batch_frame({}, data)
        it = backplane._Item(
            stream, payload, data.rows, json.dumps(data.schema), "node:n" if own else "c", seq
        )
        if own:
            it.buffered, it.held = True, len(payload)
        else:
            it.future = loop.create_future()
        return it

    def values(it: Any) -> list[int]:
        return P.decode_batch_frame(it.payload)[1].columns["v"].tolist()  # type: ignore[no-any-return]

    try:
        items = [
            item(a, np.arange(0, 10)),
            item(b, np.arange(100, 105)),
            item(a, np.arange(10, 30)),
            item(a, np.arange(30, 31)),
            item(a, np.arange(31, 40), own=False),  # a client's: stored as sent
            item(a, np.arange(40, 50)),
            item(b, np.arange(105, 110)),
        ]
        merged = backplane._merge(items)
        assert [(it.stream.name, values(it), it.seq) for it in merged] == [
            ("a", list(range(0, 31)), 4),
            ("a", list(range(31, 40)), 5),
            ("a", list(range(40, 50)), 6),
            ("b", list(range(100, 110)), 7),
        ]
        assert [it.rows for it in merged] == [31, 9, 10, 10]
        assert merged[0].held == items[0].held + items[2].held + items[3].held
        assert merged[1].held == 0 and merged[1].future is items[4].future
        # A run is cut before it would pass MERGE_BYTES: 144 KB batches, three an entry.
        big = [item(a, np.arange(i * 9_000, (i + 1) * 9_000)) for i in range(4)]
        parts = backplane._merge(big)
        assert [it.rows for it in parts] == [27_000, 9_000]
        assert [v for it in parts for v in values(it)] == list(range(36_000))
    finally:
        loop.close()
