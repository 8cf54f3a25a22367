"""Failover between several servers: the Python client against real servers on 127.0.0.1.

Without Redis each server has its own streams and epochs, so after a failover a subscriber
sees a ``reset`` to the new node's window (asserted here); the lossless resume across nodes
sharing Redis is tested with the Redis backplane. One server is a real ``livestream serve``
process killed with SIGKILL (frozen with SIGSTOP first where a publish must stay
unanswered), the others are in-process servers stopped with ``stop()``.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from support import Running, Serving, wait_until

import livestream
from conftest import TOKEN
from livestream import Batch, ServerError
from livestream.client import AllServersFailed, AsyncClient, Backoff, Client, ConnectionEvent
from livestream.errors import ConfigError, ConnectionClosed
from livestream.server import Server

FAST = Backoff(first=0.05, cap=0.3, reset_after=5.0)


def free_port() -> int:
    """A port nothing listens on once released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kinds(client: Client, since: int = 0) -> list[tuple[str, str]]:
    return [(e.kind, e.url) for e in client.events[since:]]


def find(client: Client, kind: str, **fields: Any) -> ConnectionEvent | None:
    for event in client.events:
        if event.kind == kind and all(getattr(event, k) == v for k, v in fields.items()):
            return event
    return None


def take(sub: livestream.Subscription, rows: int, timeout: float = 10.0) -> Batch:
    """Batches until ``rows`` rows arrived (contiguous), concatenated."""
    got: list[Batch] = []
    deadline = time.monotonic() + timeout
    while sum(b.rows for b in got) < rows:
        left = deadline - time.monotonic()
        assert left > 0, f"only {sum(b.rows for b in got)} of {rows} rows within {timeout} s"
        batch = sub.next(timeout=left)
        if got:
            assert batch.offset == got[-1].offset + got[-1].rows, "a gap or a duplicate"
        got.append(batch)
    return Batch.concat(got)


@pytest.fixture
def serve_process(running: Callable[..., Running]) -> Callable[[], Serving]:
    """``python -m livestream serve --port 0`` in its own process (so it can be SIGKILLed)."""
    return lambda: Serving(running("serve", "--port", "0", "--token", TOKEN))


# --------------------------------------------------------------------------- connecting


def test_the_first_server_that_answers_is_used(server_factory: Callable[..., Server]) -> None:
    a, b = server_factory(), server_factory()
    dead = f"ws://127.0.0.1:{free_port()}/ws"
    seen: list[ConnectionEvent] = []
    with livestream.connect([dead, a.ws_url, b.ws_url], token=TOKEN, on_event=seen.append) as c:
        assert c.url == a.ws_url
        assert c.urls == (dead, a.ws_url, b.ws_url)
        assert c.connected
        assert kinds(c) == [("connect_failed", dead), ("connected", a.ws_url)]
        assert "no server is listening there" in c.events[0].detail
        assert c.publish("one", {"x": [1.0]}) == 0
        assert a.hub.get("one").window() == (0, 1)
    with livestream.connect(b.ws_url, token=TOKEN) as other:
        assert other.list() == []  # b was never used
    assert [e.kind for e in seen] == ["connect_failed", "connected"]


def test_a_list_of_one_url_behaves_as_one_url() -> None:
    port = free_port()
    with pytest.raises(ConnectionClosed) as info:
        livestream.connect([f"ws://127.0.0.1:{port}"], token=TOKEN, reconnect=False)
    assert not isinstance(info.value, AllServersFailed)
    assert f"cannot reach ws://127.0.0.1:{port}/ws: no server is listening there" in str(info.value)


def test_every_server_down_at_connect_names_each_without_its_token() -> None:
    secret = "s3cret-token-value"
    urls = [f"http://127.0.0.1:{free_port()}/?token={secret}" for _ in range(3)]
    start = time.monotonic()
    with pytest.raises(AllServersFailed) as info:
        livestream.connect(urls)
    assert time.monotonic() - start < 5
    error = info.value
    message = str(error)
    assert message.startswith("cannot reach any of the 3 servers: ws://127.0.0.1:")
    for url in urls:
        shown = url.replace("http://", "ws://").replace(f"/?token={secret}", "/ws")
        assert f"{shown}: cannot reach {shown}: no server is listening there" in message
        assert shown in error.failures
    assert secret not in message
    assert isinstance(error, ConnectionClosed)  # `except ConnectionClosed` still catches it


def test_every_server_refusing_the_token_says_so_for_each(
    server_factory: Callable[..., Server],
) -> None:
    a, b = server_factory(), server_factory()
    with pytest.raises(AllServersFailed) as info:
        livestream.connect([a.ws_url, b.ws_url], token="not-the-token-at-all")
    failures = info.value.failures
    assert list(failures) == [a.ws_url, b.ws_url]
    for error in failures.values():
        assert isinstance(error, ServerError)
        assert (error.code, getattr(error, "status", None)) == ("refused", 403)
    assert str(info.value).count("HTTP 403") == 2
    assert "not-the-token-at-all" not in str(info.value)


def test_bad_arguments_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="at least one server URL"):
        livestream.connect([])
    with pytest.raises(ConfigError, match="given twice"):
        livestream.connect(["ws://127.0.0.1:1", "http://127.0.0.1:1/"])
    with pytest.raises(ConfigError, match="0 < first <= cap"):
        Backoff(first=2.0, cap=1.0)
    with pytest.raises(ConfigError, match="give_up_after"):
        AsyncClient(["ws://127.0.0.1:1"], give_up_after=-1)


def test_a_password_in_a_url_is_never_shown() -> None:
    client = AsyncClient(["ws://user:hunter2@127.0.0.1:1", "ws://127.0.0.1:2"])
    assert client.urls[0] == "ws://user:***@127.0.0.1:1/ws"
    assert "hunter2" not in repr(client.urls)


def test_backoff_is_jittered_bounded_and_grows() -> None:
    backoff = Backoff(first=0.1, cap=1.0, reset_after=10.0)
    firsts = [backoff.delay(0) for _ in range(200)]
    assert all(0.05 <= d < 0.15 for d in firsts)
    assert len(set(firsts)) > 150, "no jitter"
    assert all(0.1 <= backoff.delay(1) < 0.3 for _ in range(100))
    assert all(0.5 <= backoff.delay(n) <= 1.0 for n in (4, 10, 100, 10_000) for _ in range(50))


# --------------------------------------------------------------------------- failing over


def test_a_stopped_server_fails_over_resubscribes_from_its_offset_and_resets(
    server_factory: Callable[..., Server],
) -> None:
    a, b = server_factory(), server_factory()
    a.stream("feed").append({"i": np.arange(100)})
    b.stream("feed").append({"i": np.arange(1000, 1040)})
    epoch_a, epoch_b = a.hub.get("feed").epoch, b.hub.get("feed").epoch
    assert epoch_a != epoch_b  # without Redis every node has its own streams
    with livestream.connect([a.ws_url, b.ws_url], token=TOKEN, backoff=FAST) as c:
        sub = c.subscribe("feed", since=0)
        assert take(sub, 100).columns["i"].tolist() == list(range(100))
        mark = len(c.events)

        a.stop()

        wait_until(lambda: find(c, "connected", url=b.ws_url), 10, "the failover to b")
        assert c.url == b.ws_url
        assert kinds(c, mark)[:2] == [("disconnected", a.ws_url), ("connected", b.ws_url)]
        connected = find(c, "connected", url=b.ws_url)
        assert connected is not None and connected.detail == f"failed over from {a.ws_url}"
        resubscribed = find(c, "resubscribed", stream="feed")
        assert resubscribed is not None
        assert (resubscribed.url, resubscribed.offset, resubscribed.epoch) == (
            b.ws_url,
            100,
            epoch_a,
        )
        # b's `feed` is another stream (another epoch): the subscriber is told, then gets
        # b's window; nothing of it is mistaken for rows 100.. of a's stream.
        window = take(sub, 40)
        assert window.offset == 0
        assert window.columns["i"].tolist() == list(range(1000, 1040))
        assert [(r.epoch, r.offset) for r in sub.resets] == [(epoch_b, 0)]
        reset = find(c, "reset", stream="feed")
        assert reset is not None and (reset.url, reset.epoch, reset.offset) == (
            b.ws_url,
            epoch_b,
            0,
        )
        assert c.reconnects == 1
        # And the stream goes on from b.
        b.hub.get("feed").append({"i": np.array([1040, 1041])})
        assert take(sub, 2).columns["i"].tolist() == [1040, 1041]
        assert c.publish("feed", {"i": [1042]}) == 42


def test_sigkill_of_the_node_in_use_fails_over_and_resends_the_unanswered_publish(
    serve_process: Callable[[], Serving], server_factory: Callable[..., Server]
) -> None:
    node = serve_process()
    other = server_factory()
    other.stream("feed").append({"i": np.arange(5)})
    with livestream.connect([node.ws_url, other.ws_url], token=TOKEN, backoff=FAST) as c:
        assert c.publish("feed", {"i": np.arange(10)}) == 0
        sub = c.subscribe("feed", since=0)
        assert take(sub, 10).columns["i"].tolist() == list(range(10))

        # Freeze the node: the next publish is sent and never answered; then kill it.
        node.proc.send_signal(signal.SIGSTOP)
        result: dict[str, Any] = {}

        def publish() -> None:
            try:
                result["offset"] = c.publish("feed", {"i": np.array([777, 778])})
            except BaseException as exc:  # reported by the assertion below
                result["error"] = exc

        publisher = threading.Thread(target=publish, name="failover-publisher")
        publisher.start()
        wait_until(lambda: c._async._unacked, 5, "the publish to be in flight")
        assert not result, "the frozen node cannot have answered"
        node.kill()

        publisher.join(15)
        assert not publisher.is_alive()
        assert "error" not in result, result.get("error")
        # Sent again to the other node, once: its `feed` had rows 0..4.
        assert result["offset"] == 5
        assert other.hub.get("feed").read(0).columns["i"].tolist() == [0, 1, 2, 3, 4, 777, 778]
        assert c.url == other.ws_url
        assert find(c, "disconnected", url=node.ws_url) is not None
        connected = find(c, "connected", url=other.ws_url)
        assert connected is not None and connected.detail == f"failed over from {node.ws_url}"
        resubscribed = find(c, "resubscribed", stream="feed")
        assert resubscribed is not None and resubscribed.offset == 10
        window = take(sub, 7)
        assert window.columns["i"].tolist() == [0, 1, 2, 3, 4, 777, 778]
        assert len(sub.resets) == 1 and sub.resets[0].epoch == other.hub.get("feed").epoch


def test_publishes_carry_the_publisher_and_a_growing_seq(
    server_factory: Callable[..., Server],
) -> None:
    a = server_factory()
    with (
        livestream.connect(a.ws_url, token=TOKEN) as c,
        livestream.connect(a.ws_url, token=TOKEN) as d,
    ):
        assert re.fullmatch(r"[0-9a-f]{32}", c.publisher)
        assert c.publisher != d.publisher  # random, per client
        # The server accepts the optional fields (binary and JSON publishes alike).
        assert c.publish("p", {"x": [1.0, 2.0]}) == 0
        assert c._run(c._async.publish("p", {"x": [3.0]}, binary=False), 10) == 2
        assert next(c._async._seqs) == 3


# --------------------------------------------------------------------------- giving up


def test_every_server_lost_gives_a_clear_error_within_the_bound(
    server_factory: Callable[..., Server],
) -> None:
    a, b = server_factory(), server_factory()
    a.stream("feed").append({"i": [1]})
    with livestream.connect(
        [f"{a.ws_url}?token={TOKEN}", b.ws_url], token=TOKEN, backoff=FAST, give_up_after=1.0
    ) as c:
        sub = c.subscribe("feed", since=0)
        assert take(sub, 1).rows == 1
        a.stop()
        b.stop()
        start = time.monotonic()
        with pytest.raises(AllServersFailed) as info:
            sub.next(timeout=10)
        assert time.monotonic() - start < 5
        message = str(info.value)
        assert message.startswith("cannot reach any of the 2 servers (tried for ")
        assert f"{a.ws_url}: cannot reach {a.ws_url}" in message
        assert f"{b.ws_url}: cannot reach {b.ws_url}" in message
        assert TOKEN not in message
        assert c.events[-1].kind == "gave_up" and c.events[-1].detail == message
        assert not c.connected
        with pytest.raises(AllServersFailed):
            c.publish("feed", {"i": [2]})
        with pytest.raises(AllServersFailed):
            c.list()


def test_without_give_up_after_a_call_fails_after_its_timeout_naming_every_server(
    server_factory: Callable[..., Server],
) -> None:
    a, b = server_factory(), server_factory()
    with livestream.connect([a.ws_url, b.ws_url], token=TOKEN, backoff=FAST, timeout=1.0) as c:
        a.stop()
        b.stop()
        wait_until(lambda: find(c, "connect_failed", url=b.ws_url), 5, "a failed attempt at b")
        start = time.monotonic()
        with pytest.raises(AllServersFailed) as info:
            c.list()
        assert time.monotonic() - start < 3
        assert a.ws_url in str(info.value) and b.ws_url in str(info.value)
        # Still trying (no give_up_after): the attempts go on, paced by the backoff.
        count = len([e for e in c.events if e.kind == "connect_failed"])
        wait_until(
            lambda: len([e for e in c.events if e.kind == "connect_failed"]) > count + 2,
            5,
            "more attempts",
        )
        assert all(e.kind != "gave_up" for e in c.events)


def test_the_backoff_starts_again_only_after_a_healthy_period(
    server_factory: Callable[..., Server],
) -> None:
    a = server_factory()

    def drop() -> None:
        for session in list(a.hub.sessions):
            session.transport.close(1001, "test")

    assert a.loop is not None
    for reset_after, expected in ((60.0, [1, 2, 3]), (0.0, [1, 1, 1])):
        backoff = Backoff(first=0.02, cap=0.2, reset_after=reset_after)
        with livestream.connect(a.ws_url, token=TOKEN, backoff=backoff) as c:
            attempts = []
            for n in range(3):
                a.loop.call_soon_threadsafe(drop)
                wait_until(lambda n=n: c.reconnects == n + 1, 5, "the reconnect")
                attempts.append(c._async._attempt)
            assert attempts == expected, f"reset_after={reset_after}"
    # A connection on which the server answered a request (here the resubscribe) was
    # healthy too: a connection cut often while it works comes back quickly each time.
    a.stream("feed").append({"i": [1]})
    backoff = Backoff(first=0.02, cap=0.2, reset_after=60.0)
    with livestream.connect(a.ws_url, token=TOKEN, backoff=backoff) as c:
        c.subscribe("feed")
        for n in range(3):
            mark = len(c.events)
            a.loop.call_soon_threadsafe(drop)
            wait_until(lambda n=n: c.reconnects == n + 1, 5, "the reconnect")
            wait_until(lambda: c._async._answered, 5, "the answer to the resubscribe")
            assert [e.kind for e in c.events[mark:]][:3] == [
                "disconnected",
                "connected",
                "resubscribed",
            ]
            assert c._async._attempt == 1


# --------------------------------------------------------------------------- the browser


PAGE_SETUP = """async ([urls, token]) => {
  const ls = await import("/static/livestream.js");
  const conn = ls.connect({url: urls, token, backoff: {first: 50, cap: 300}, giveUpAfter: 1500});
  const t = {conn, events: [], rows: [], resets: [], errors: [], statuses: []};
  window.failover = t;
  conn.onEvent((e) => t.events.push(e));
  conn.onStatus((status, message) => t.statuses.push([status, message]));
  conn.subscribe("feed", {
    onData: (batch) => t.rows.push(...Array.from(batch.columns.i, (v, k) => [batch.offset + k, v])),
    onReset: (msg) => t.resets.push({epoch: msg.epoch, offset: msg.offset, reason: msg.reason}),
    onError: (err) => t.errors.push({code: err.code, message: err.message}),
  });
}"""


@pytest.mark.browser
def test_the_browser_module_fails_over_resends_and_gives_up_naming_every_server(
    serve_process: Callable[[], Serving], server_factory: Callable[..., Server], browser: Any
) -> None:
    node = serve_process()
    other = server_factory()
    other.stream("feed").append({"i": np.arange(1000, 1005)})
    with livestream.connect(node.ws_url, token=TOKEN) as c:
        c.publish("feed", {"i": np.arange(10)})
    # The dashboard pages allow sockets to their own server only (connect-src 'self');
    # a page of the user's, such as a notebook, has no such policy.
    context = browser.new_context(bypass_csp=True)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(other.url)
        page.evaluate(PAGE_SETUP, [[node.ws_url, other.ws_url], TOKEN])

        def state() -> Any:
            return page.evaluate(
                "() => { const t = window.failover; return {url: t.conn.url, "
                "status: t.conn.status, message: t.conn.message, events: t.events, "
                "rows: t.rows, resets: t.resets, errors: t.errors, publisher: t.conn.publisher}; }"
            )

        wait_until(lambda: len(state()["rows"]) == 10, 10, "the node's 10 rows")
        first = state()
        assert first["url"] == node.ws_url
        assert first["rows"] == [[k, k] for k in range(10)]
        assert re.fullmatch(r"[0-9a-f]{32}", first["publisher"])
        assert [(e["kind"], e["url"], e["detail"]) for e in first["events"]] == [
            ("connected", node.ws_url, "first")
        ]

        # Freeze the node, publish from the page (never answered), then kill the node.
        node.proc.send_signal(signal.SIGSTOP)
        page.evaluate(
            "() => { window.failover.ack = window.failover.conn.publish('feed', {i: [777, 778]})"
            ".then((a) => (window.failover.acked = a), (e) => (window.failover.nack = e.message)); }"
        )
        node.kill()

        wait_until(
            lambda: page.evaluate("() => window.failover.acked || window.failover.nack"),
            10,
            "the publish to be answered",
        )
        assert page.evaluate("() => window.failover.nack") is None
        ack = page.evaluate("() => window.failover.acked")
        assert ack["offset"] == 5  # sent again to the other node, once
        assert other.hub.get("feed").read(0).columns["i"].tolist() == [
            1000, 1001, 1002, 1003, 1004, 777, 778,
        ]  # fmt: skip
        wait_until(lambda: len(state()["rows"]) == 17, 10, "the other node's window")
        after = state()
        assert after["url"] == other.ws_url
        assert after["status"] == "open"
        kinds_seen = [(e["kind"], e["url"]) for e in after["events"]]
        assert kinds_seen[:3] == [
            ("connected", node.ws_url),
            ("disconnected", node.ws_url),
            ("connected", other.ws_url),
        ], after["events"]
        assert after["events"][2]["detail"] == f"failed over from {node.ws_url}"
        resub = next(e for e in after["events"] if e["kind"] == "resubscribed")
        assert (resub["url"], resub["stream"], resub["offset"]) == (other.ws_url, "feed", 10)
        epoch = other.hub.get("feed").epoch
        assert resub["epoch"] != epoch  # the node's epoch, which the other does not know
        # Without Redis the other node's `feed` is another stream: a reset, then its window.
        assert after["resets"] == [
            {"epoch": epoch, "offset": 0, "reason": after["resets"][0]["reason"]}
        ]
        assert after["rows"][10:] == [
            [0, 1000], [1, 1001], [2, 1002], [3, 1003], [4, 1004], [5, 777], [6, 778],
        ]  # fmt: skip
        assert after["errors"] == []

        # Now every server is gone: within giveUpAfter (1.5 s) the page says so, naming both.
        start = time.monotonic()
        other.stop()
        wait_until(lambda: state()["errors"], 10, "the subscriber's onError")
        assert time.monotonic() - start < 6
        end = state()
        assert end["status"] == "error"
        message = end["message"]
        assert message.startswith("Cannot reach any of the 2 servers (tried for ")
        assert f"{node.ws_url} (" in message and f"{other.ws_url} (" in message
        assert TOKEN not in message
        assert end["errors"][-1] == {"code": "unreachable", "message": message}
        assert end["events"][-1]["kind"] == "gave_up"
        assert not errors, errors
    finally:
        context.close()
