"""The Python client's own failover between ``livestream serve --redis`` nodes (issue 10).

Real parts only, as in tests/test_redis.py (whose fixtures these tests use): a real
``redis-server``, three real ``python -m livestream serve --redis URL`` processes, the
client made by ``livestream.connect([url_a, url_b, url_c], ...)``. A node is SIGKILLed
while a viewer and a publisher use it; nothing in the test reconnects, resubscribes or
resends: the client does. Checked row by row: 0 rows lost, 0 duplicated, no ``reset``
(the nodes share offsets and epochs through Redis), the client's events name the node it
left and the offset it resubscribed from, and a publish the killed node had stored but
never acknowledged is stored once.

A node whose copy of a stream lags behind Redis must not answer a resume from beyond that
copy with a ``reset`` (gap) and the rows again: it waits (bounded) until it has read them
(Session._caught_up). The last test makes a node lag deterministically (a proxy holds its
reads from Redis); it failed with that reset before the wait.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support import wait_until
from test_redis import (  # noqa: F401  (fixtures)
    TOKEN,
    Node,
    assert_once,
    connect,
    nodes,
    read_until,
    redis_factory,
)

import livestream
from livestream.client import Backoff, Client, ConnectionEvent, Subscription

FAST = Backoff(first=0.1, cap=1.0)


def rows(start: int, stop: int) -> dict[str, np.ndarray]:
    values = np.arange(start, stop)
    return {"v": values.astype("<i8"), "x": values.astype("<f8") * 0.5}


class Reader:
    """Takes a subscription's batches and checks each continues the last one (by its
    offset): a gap or an overlap fails at once."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.offsets: list[int] = []
        self.values: list[int] = []

    def until(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.values) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(self.values)} of {count} rows within {timeout} s"
            batch = self.sub.next(timeout=left)
            assert batch.offset is not None
            if self.offsets:
                assert batch.offset == self.offsets[-1] + 1, (
                    f"rows from {batch.offset} after {self.offsets[-1]}: a gap or an overlap; "
                    f"resets {self.sub.resets}; events {self.sub._client.events}"
                )
            self.offsets.extend(range(batch.offset, batch.offset + batch.rows))
            self.values.extend(int(v) for v in batch.columns["v"])


def events(client: Client, kind: str) -> list[ConnectionEvent]:
    return [e for e in client.events if e.kind == kind]


def assert_failed_over(client: Client, lost: str, to: str) -> None:
    """The client's events: it left ``lost`` once and opened ``to`` saying so, no reset."""
    kinds = [e.kind for e in client.events]
    assert "reset" not in kinds and "gave_up" not in kinds, client.events
    assert [e.url for e in events(client, "disconnected")] == [lost], client.events
    connected = [(e.url, e.detail) for e in events(client, "connected")]
    assert connected == [(lost, "first"), (to, f"failed over from {lost}")], client.events
    assert client.url == to and client.reconnects == 1


class HoldingProxy:
    """A TCP forwarder to a server (a node, redis-server) that can hold back the server's
    bytes (``hold``, kept until :meth:`release`) while it still passes the client's bytes
    to the server: a node stores a publish and acknowledges it, and the acknowledgement
    never arrives; or a node's reads from Redis stall while Redis stores what others
    write. When the server's side closes (a node is killed), the client's side is closed
    too."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.hold = threading.Event()
        self.held = 0  # bytes from the server held back
        self._kept: list[tuple[socket.socket, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._start(self._accept)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="test-holding-proxy")
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:  # the node is gone: the client sees its attempt fail
                client.close()
                continue
            upstream.settimeout(None)
            self._socks += [client, upstream]
            self._start(self._pump, client, upstream, False)
            self._start(self._pump, upstream, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_node: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    if from_node and self.hold.is_set():
                        self.held += len(data)
                        self._kept.append((dst, data))
                        continue
                    dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def release(self) -> None:
        """Pass on what was held back, in order, and stop holding."""
        with self._lock:
            for dst, data in self._kept:
                dst.sendall(data)
            self._kept.clear()
            self.hold.clear()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for sock in self._socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)
        for sock in self._socks:
            sock.close()


@pytest.fixture
def holding_proxy() -> Iterator[Any]:
    made: list[HoldingProxy] = []

    def make(port: int) -> HoldingProxy:
        made.append(HoldingProxy(port))
        return made[-1]

    try:
        yield make
    finally:
        for proxy in made:
            proxy.close()


async def _fresh_read(node: Node, stream: str, count: int) -> tuple[list[int], list[int]]:
    async with connect(node) as late:
        await late.subscribe(stream, since=0)
        return await read_until(late, stream, count)


def stored_rows(node: Node, stream: str, count: int) -> tuple[list[int], list[int]]:
    """What ``node`` holds of ``stream``, read by a plain ``websockets`` viewer from 0."""
    return asyncio.run(_fresh_read(node, stream, count))


def test_a_publish_stored_by_the_killed_node_is_stored_once_and_the_viewer_resumes(
    redis_factory: Any,  # noqa: F811
    nodes: Any,  # noqa: F811
    holding_proxy: Any,
) -> None:
    """Node A stores a publish in Redis and its acknowledgement is lost (a proxy holds
    A's bytes), then A is SIGKILLed. The publisher's client sends the publish again to B
    with the same publisher and seq: B recognises it, and the stream holds it once. The
    viewer's client, which had every row A had, resubscribes on C from that offset in the
    same epoch: no reset, the rows published meanwhile come next, each once."""
    redis = redis_factory()
    a, b, c = nodes(redis.url)
    proxy = holding_proxy(int(a.ws_url.rsplit(":", 1)[1].split("/")[0]))
    size = 100
    with (
        livestream.connect([proxy.ws_url, b.ws_url, c.ws_url], token=TOKEN, backoff=FAST) as pub,
        livestream.connect([a.ws_url, c.ws_url, b.ws_url], token=TOKEN, backoff=FAST) as view,
    ):
        assert pub.url == proxy.ws_url and view.url == a.ws_url
        assert [pub.publish("resume", rows(i, i + size)) for i in range(0, 500, size)] == [
            0,
            100,
            200,
            300,
            400,
        ]
        sub = view.subscribe("resume", since=0)
        epoch = sub._inner.epoch
        assert epoch is not None
        reader = Reader(sub)
        reader.until(500)

        # A stores the next publish; its ack is held back by the proxy.
        proxy.hold.set()
        result: dict[str, Any] = {}

        def publish() -> None:
            try:
                result["offset"] = pub.publish("resume", rows(500, 600))
            except BaseException as exc:  # reported by the assertions below
                result["error"] = exc

        publisher = threading.Thread(target=publish, name="test-publisher")
        publisher.start()
        wait_until(lambda: b.offset("resume") == 600, 10, "A stored 500..599 (B sees it)")
        reader.until(600)  # the viewer on A has it too
        wait_until(lambda: proxy.held > 0, 5, "A's ack held back by the proxy")
        assert not result and publisher.is_alive(), f"the ack cannot have arrived: {result}"

        a.kill()
        assert a.running.proc.returncode == -signal.SIGKILL
        publisher.join(15)
        assert not publisher.is_alive(), "the resent publish got no answer within 15 s"
        assert "error" not in result, result.get("error")
        assert result["offset"] == 500, "acknowledged by B as the copy already at 500"

        # Published through B while the viewer moves to C.
        assert [pub.publish("resume", rows(i, i + size)) for i in range(600, 1100, size)] == [
            600,
            700,
            800,
            900,
            1000,
        ]
        reader.until(1100)
        assert reader.offsets == list(range(1100))
        assert_once(reader.values, list(range(1100)))
        assert reader.values == list(range(1100)), "in order"
        assert sub.resets == []

        assert_failed_over(pub, proxy.ws_url, b.ws_url)
        assert events(pub, "resubscribed") == [], "the publisher subscribed to nothing"
        assert_failed_over(view, a.ws_url, c.ws_url)
        (again,) = events(view, "resubscribed")
        assert (again.url, again.stream, again.offset, again.epoch) == (
            c.ws_url,
            "resume",
            600,
            epoch,
        )
        assert sub._inner.epoch == epoch

    # What the surviving nodes hold: each row once, at the offset it was acknowledged.
    wait_until(lambda: b.offset("resume") == 1100, 10, "B at 1100")
    assert c.offset("resume") == 1100
    offsets, values = stored_rows(b, "resume", 1100)
    assert offsets == list(range(1100)) and values == list(range(1100))


def test_sigkill_of_a_node_under_load_moves_the_viewer_and_the_publisher(
    redis_factory: Any,  # noqa: F811
    nodes: Any,  # noqa: F811
) -> None:
    """A publisher and a viewer stream through node A when it is SIGKILLed, at a moment
    the test does not choose; both clients move by themselves (the publisher to B, the
    viewer to C) and every row is stored and seen once, in order."""
    redis = redis_factory()
    a, b, c = nodes(redis.url)
    total, size = 200, 20
    offsets_at_loss: list[int | None] = []
    holder: dict[str, Subscription] = {}

    def on_view_event(event: ConnectionEvent) -> None:
        # On the client's loop, where rows are taken in: the offset the viewer had.
        if event.kind == "disconnected" and "sub" in holder:
            offsets_at_loss.append(holder["sub"].next_offset)

    with (
        livestream.connect([a.ws_url, b.ws_url, c.ws_url], token=TOKEN, backoff=FAST) as pub,
        livestream.connect(
            [a.ws_url, c.ws_url, b.ws_url], token=TOKEN, backoff=FAST, on_event=on_view_event
        ) as view,
    ):
        assert pub.publish("load", rows(0, size)) == 0
        sub = holder["sub"] = view.subscribe("load", since=0)
        epoch = sub._inner.epoch
        acked: list[int | None] = [0]
        failure: list[BaseException] = []

        def publisher() -> None:
            try:
                for i in range(1, total):
                    acked.append(pub.publish("load", rows(i * size, (i + 1) * size)))
            except BaseException as exc:  # reported by the assertions below
                failure.append(exc)

        thread = threading.Thread(target=publisher, name="test-publisher")
        thread.start()
        try:
            reader = Reader(sub)
            reader.until(total // 3 * size)
            # C may lag behind Redis at the kill: it waits for the rows the viewer resumes
            # from (the last test makes that lag certain).
            a.kill()
            reader.until(total * size, timeout=20)
        finally:
            thread.join(20)
        assert not thread.is_alive() and not failure, failure
        assert a.running.proc.returncode == -signal.SIGKILL

        # Each publish acknowledged at its own place: none stored twice, none lost.
        assert acked == [i * size for i in range(total)]
        assert reader.offsets == list(range(total * size))
        assert_once(reader.values, list(range(total * size)))
        assert reader.values == list(range(total * size)), "in order"
        assert sub.resets == []

        assert_failed_over(pub, a.ws_url, b.ws_url)
        assert_failed_over(view, a.ws_url, c.ws_url)
        (again,) = events(view, "resubscribed")
        assert len(offsets_at_loss) == 1 and offsets_at_loss[0] is not None
        assert (again.url, again.stream, again.offset, again.epoch) == (
            c.ws_url,
            "load",
            offsets_at_loss[0],
            epoch,
        ), "resubscribed from the offset the viewer had reached, in the same epoch"
        assert 0 < again.offset <= total * size

    offsets, values = stored_rows(b, "load", total * size)
    assert offsets == list(range(total * size)) and values == list(range(total * size))
    assert b.offset("load") == total * size


def test_a_viewer_failing_over_to_a_node_that_lags_behind_redis_gets_no_reset(
    redis_factory: Any,  # noqa: F811
    nodes: Any,  # noqa: F811
    holding_proxy: Any,
) -> None:
    """Node C reads Redis through a proxy that holds Redis's answers back, so C's copy of
    the stream stays at 10 rows while 10,000 more go through A. A is killed; the viewer
    asks C for the rows from 10,010 in the same epoch, which Redis holds: once C reads
    them, they should come next, with no reset and nothing twice."""
    redis = redis_factory()
    (a,) = nodes(redis.url, 1)
    to_redis = holding_proxy(redis.port)
    (c,) = nodes(f"redis://127.0.0.1:{to_redis.port}/0", 1)
    with (
        livestream.connect([a.ws_url, c.ws_url], token=TOKEN, backoff=FAST) as pub,
        livestream.connect([a.ws_url, c.ws_url], token=TOKEN, backoff=FAST) as view,
    ):
        assert pub.publish("lag", rows(0, 10)) == 0
        sub = view.subscribe("lag", since=0)
        epoch = sub._inner.epoch
        reader = Reader(sub)
        reader.until(10)
        wait_until(lambda: c.offset("lag") == 10, 10, "C holds the first 10 rows")
        to_redis.hold.set()
        for i in range(1, 1001):
            pub.publish("lag", rows(i * 10, i * 10 + 10))
        reader.until(10_010)
        assert c.offset("lag") == 10, "C's reads from Redis are held back"
        a.kill()
        wait_until(lambda: events(view, "resubscribed"), 10, "the viewer resubscribed on C")
        to_redis.release()
        wait_until(lambda: c.offset("lag") == 10_010, 10, "C caught up with Redis")
        assert pub.publish("lag", rows(10_010, 10_020)) == 10_010  # through C
        reader.until(10_020)
        assert reader.values == list(range(10_020)) and sub.resets == []
        assert_failed_over(view, a.ws_url, c.ws_url)
        (again,) = events(view, "resubscribed")
        assert (again.url, again.offset, again.epoch) == (c.ws_url, 10_010, epoch)
