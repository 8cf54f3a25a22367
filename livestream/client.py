"""The Python client: publish, subscribe, control and list from scripts and notebooks.

``livestream.connect(url, token=...)`` returns a :class:`Client`, a synchronous facade over
:class:`AsyncClient` (whose loop runs on a background thread), so it works the same in a
plain script and in a notebook cell::

    with ls.connect("ws://127.0.0.1:8765", token=TOKEN) as feed:
        feed.publish("sensors", {"time": t, "temp": 21.4})
        for batch in feed.subscribe("prices", last=100):
            print(batch.to_pandas())

In async code use ``AsyncClient`` directly (``async with AsyncClient(url, token=...)``).

A dropped connection is reopened with backoff and every subscription resumes from the
offset after the last row it received, so a subscriber sees each row once and in order;
when those rows are gone from the server's history it gets the current window and the
reset is recorded in ``Subscription.resets``. Subscriptions use credit flow control, so a
consumer that reads slowly makes the server wait rather than filling memory here.

Several servers (nodes of one service, see docs/failover.md) are given as a list::

    feed = ls.connect(["ws://node-a:8765", "ws://node-b:8765"], token=TOKEN)

The client connects to the first that answers; when that connection is lost it tries the
next one, and the next, with a jittered, bounded backoff (:class:`Backoff`), resubscribes
every subscription from its offset, and resends every publish not yet acknowledged (each
carries the client's ``publisher`` id and a ``seq`` number, so a server that deduplicates
adds it once). ``client.url`` is the server in use; ``client.events`` (and ``on_event=``)
tell what happened (:class:`ConnectionEvent`). When no server can be reached, the error is
:class:`AllServersFailed`, naming each URL (without its token) and why it failed.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import tornado.httpclient
import tornado.websocket

from . import protocol as P
from .columns import Batch, check_cells, to_batch
from .errors import ConfigError, ConnectionClosed, LivestreamError, ServerError

__all__ = [
    "AllServersFailed",
    "AsyncClient",
    "AsyncSubscription",
    "Backoff",
    "Client",
    "ConnectionEvent",
    "Subscription",
    "connect",
]

log = logging.getLogger("livestream.client")

_CREDIT = 8  # data frames in flight per subscription


def _normalise_url(url: str, token: str | None) -> tuple[str, str | None]:
    """(ws URL ending in /ws without token, token) from what people paste.

    The URL returned carries no secret (no token, no password in its authority), so it can
    be shown in messages and logs as is.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a server URL must be a string such as ws://host:8765; got {url!r}")
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ConfigError(f"url must be ws://, wss://, http:// or https://; got {url!r}")
    query = parse_qs(parts.query)
    if token is None and query.get("token"):
        token = query["token"][0]
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    rest = {k: v for k, v in query.items() if k != "token"}
    netloc = parts.netloc
    if "@" in netloc:  # user:password@host: the password never reaches a message
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    return urlunsplit((scheme, netloc, path, urlencode(rest, doseq=True), "")), token


def _normalise_urls(
    url: str | Sequence[str], token: str | None
) -> tuple[tuple[str, ...], tuple[str | None, ...], tuple[str, ...]]:
    """(shown URLs, tokens, URLs to dial) for one URL or a list of them."""
    given = [url] if isinstance(url, str) else list(url)
    if not given:
        raise ConfigError("connect() needs at least one server URL, such as ws://host:8765")
    shown, tokens, dial = [], [], []
    for one in given:
        clean, tok = _normalise_url(one, token)
        parts = urlsplit(one if "://" in one else f"ws://{one}")
        real = urlunsplit((urlsplit(clean).scheme, parts.netloc, *urlsplit(clean)[2:]))
        if clean in shown:
            raise ConfigError(f"the server URL {clean} is given twice; give each server once")
        shown.append(clean)
        tokens.append(tok)
        dial.append(real)
    return tuple(shown), tuple(tokens), tuple(dial)


@dataclass(frozen=True)
class Backoff:
    """How long the client waits before each attempt to reach a server again.

    The n-th attempt in a row waits ``min(cap, first * 2**n)`` seconds times a random factor
    in [0.5, 1.5) (jitter, so that many clients of a failed node do not all come back in
    the same instant), never more than ``cap``. The count starts again once a connection
    has proved healthy: it stayed up ``reset_after`` seconds, or the server answered a
    request on it (a resubscribe, a publish, a list...). A server that accepts and drops
    at once is thus not hammered, while a working connection cut often (a flaky proxy)
    comes back quickly each time.
    """

    first: float = 0.1
    cap: float = 5.0
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        if not (0 < self.first <= self.cap) or self.reset_after < 0:
            raise ConfigError(
                "Backoff needs 0 < first <= cap and reset_after >= 0 (seconds); got "
                f"first={self.first}, cap={self.cap}, reset_after={self.reset_after}"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (0 for the first)."""
        base = min(self.cap, self.first * 2.0 ** min(attempt, 32))
        return min(self.cap, base * (0.5 + random.random()))


EventKind = Literal[
    "connected", "disconnected", "connect_failed", "resubscribed", "reset", "gave_up"
]


@dataclass(frozen=True)
class ConnectionEvent:
    """Something that happened to a client's connection (``client.events``, ``on_event``).

    ``kind``:

    * ``connected``: a connection to ``url`` is open (``detail`` says ``first``, or
      ``reconnected`` / ``failed over from URL``);
    * ``disconnected``: the connection to ``url`` was lost (``detail``: the close code);
    * ``connect_failed``: an attempt to reach ``url`` failed (``detail``: why);
    * ``resubscribed``: ``stream`` was subscribed again on ``url`` from ``offset`` in
      ``epoch`` (None: from the start of what it asked for);
    * ``reset``: the server at ``url`` said rows of ``stream`` before ``offset`` are gone
      (``detail``: the reason, ``gap`` or ``restart``; ``epoch``: the new epoch). After a
      failover to a node that does not share the stream's history (another epoch), this is
      what a subscriber sees;
    * ``gave_up``: the client stopped trying (``detail``: why); it is closed.

    URLs never carry a token. ``at`` is ``time.time()``.
    """

    kind: EventKind
    url: str
    detail: str = ""
    stream: str | None = None
    offset: int | None = None
    epoch: str | None = None
    at: float = field(default_factory=time.time)


class AllServersFailed(ConnectionClosed):
    """No server of the list could be reached (or every one refused the client).

    ``failures`` maps each URL (without its token) to the last error it gave; the message
    lists them, so the first line of a traceback says what is wrong where.
    """

    def __init__(self, failures: dict[str, BaseException], waited: float | None = None) -> None:
        self.failures = dict(failures)
        count = len(self.failures)
        what = "the server" if count == 1 else f"any of the {count} servers"
        after = f" (tried for {waited:.1f} s)" if waited is not None else ""
        lines = "; ".join(f"{url}: {_reason(exc)}" for url, exc in self.failures.items())
        super().__init__(f"cannot reach {what}{after}: {lines}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time (timeout)"
    text = str(exc) or type(exc).__name__
    return text


def _write(conn: Any, frame: str | bytes) -> None:
    """Write a frame; a write that fails because the connection dropped meanwhile is the
    reconnect logic's business, so its error is retrieved here, not logged by asyncio as
    "Task exception was never retrieved"."""
    done = conn.write_message(frame, binary=isinstance(frame, bytes))
    done.add_done_callback(lambda fut: fut.cancelled() or fut.exception())


class _Refused(ServerError):
    """The server refused the WebSocket handshake: code ``refused``, with the HTTP ``status``
    and the server's ``reason`` (``missing_token``, ``bad_token``, ``bad_origin``,
    ``bad_host``; empty when the answer was not livestream's JSON) so a caller such as the
    command line can say what to do in its own terms."""

    def __init__(self, url: str, status: int, reason: str, text: str) -> None:
        super().__init__("refused", f"HTTP {status} from {url}: {text}")
        self.url = url
        self.status = status
        self.reason = reason
        self.text = text

    @classmethod
    def from_response(cls, url: str, status: int, body: bytes | None, fallback: str) -> _Refused:
        """The refusal a handshake answer carries: the message of livestream's
        ``{"error": {"code", "message"}}`` body, never the raw JSON."""
        raw = (body or b"").decode(errors="replace")
        try:
            error = json.loads(raw)["error"]
            reason, text = str(error["code"]), str(error["message"])
        except (ValueError, TypeError, KeyError):
            # Not a livestream server (a proxy, another web server): a short excerpt.
            excerpt = " ".join(raw.split())[:200]
            reason, text = "", excerpt or fallback
        return cls(url, status, reason, text)


class AsyncSubscription:
    """Batches of one stream, as an async iterator. Made by :meth:`AsyncClient.subscribe`."""

    def __init__(
        self,
        client: AsyncClient,
        stream: str,
        *,
        last: int | None,
        since: int | None,
        epoch: str | None,
        columns: tuple[str, ...] | None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.columns = columns
        self.last = last
        self.next_offset: int | None = since
        self.epoch: str | None = epoch
        self.schema: dict[str, str] = {}
        self.controls: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.resets: list[P.Reset] = []
        self.rows_received = 0
        self._queue: deque[Batch | BaseException] = deque()
        self._ready = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._closed = False
        self._active = True  # False while the server does not have the stream (no credit then)

    def _request(self) -> P.Subscribe:
        if self.next_offset is not None:
            return P.Subscribe(
                self.stream,
                since=self.next_offset,
                epoch=self.epoch,
                columns=self.columns,
                credit=_CREDIT,
            )
        return P.Subscribe(self.stream, last=self.last, columns=self.columns, credit=_CREDIT)

    def _on_subscribed(self, msg: P.Subscribed) -> None:
        self.schema, self.controls, self.state = msg.schema, msg.controls, msg.state
        self.epoch = msg.epoch
        self.next_offset = msg.offset
        self._subscribed.set()

    def _on_reset(self, msg: P.Reset) -> None:
        self.resets.append(msg)
        self.epoch = msg.epoch
        self.next_offset = msg.offset

    def _on_data(self, msg: P.Data) -> None:
        batch = msg.batch
        if self.next_offset is not None and msg.offset != self.next_offset:
            # Never deliver a duplicate; a gap is announced by the server with `reset`.
            if msg.offset + batch.rows <= self.next_offset:
                return
            if msg.offset < self.next_offset:
                batch = batch.slice(self.next_offset - msg.offset, batch.rows)
        self.next_offset = (batch.offset or msg.offset) + batch.rows
        self.rows_received += batch.rows
        self._queue.append(batch)
        self._ready.set()

    def _fail(self, exc: BaseException) -> None:
        self._queue.append(exc)
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self

    async def __anext__(self) -> Batch:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        item = self._queue.popleft()
        if isinstance(item, BaseException):
            if isinstance(item, ConnectionClosed) and self._closed:
                raise StopAsyncIteration
            raise item
        self.client._grant(self.stream, 1)
        return item

    async def next(self, timeout: float | None = None) -> Batch:
        """The next batch, waiting at most ``timeout`` seconds (``TimeoutError``)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def drain(self) -> list[Batch]:
        """Every batch received and not yet taken, without waiting."""
        out: list[Batch] = []
        while self._queue and isinstance(self._queue[0], Batch):
            item = self._queue.popleft()
            assert isinstance(item, Batch)
            out.append(item)
        if out:
            self.client._grant(self.stream, len(out))
        return out

    async def close(self) -> None:
        """Unsubscribe."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        self.client._subs.pop(self.stream, None)
        if self.client._conn is not None:
            try:
                await self.client._request(P.Unsubscribe(self.stream), timeout=5)
            except LivestreamError:
                pass


class AsyncClient:
    """An asyncio connection to a livestream server, reopened when it drops.

    ``url`` is one server, or a list of servers of one service to fail over between (in
    the order given; see the module docstring). ``backoff`` paces the attempts to reach a
    server again; ``give_up_after`` (seconds, default never) ends the attempts once no
    server has answered for that long (the client is then closed, and every call and
    subscription raises :class:`AllServersFailed`); ``on_event`` is called on the client's
    loop with each :class:`ConnectionEvent`, which ``events`` also keeps (the last 1,000).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        reconnect: bool = True,
        timeout: float = 10.0,
        max_message_size: int = 256 * 1024 * 1024,
        backoff: Backoff | None = None,
        give_up_after: float | None = None,
        on_event: Callable[[ConnectionEvent], None] | None = None,
    ) -> None:
        self.urls, self._tokens, self._dial = _normalise_urls(url, token)
        #: The server in use (or the last one tried); never carries a token.
        self.url = self.urls[0]
        self.token = self._tokens[0]
        self.reconnect = reconnect
        self.timeout = timeout
        self.max_message_size = max_message_size
        self.backoff = backoff or Backoff()
        if give_up_after is not None and give_up_after < 0:
            raise ConfigError(f"give_up_after must be >= 0 seconds or None; got {give_up_after}")
        self.give_up_after = give_up_after
        self.on_event = on_event
        #: This client's publisher id: sent with every publish, with a ``seq`` number, so
        #: that a server can tell a resent publish from a new one.
        self.publisher = uuid.uuid4().hex
        self.events: deque[ConnectionEvent] = deque(maxlen=1000)
        self.roles: tuple[str, ...] = ()
        self.session: str | None = None
        self.reconnects = 0
        self._index = 0
        self._conn: tornado.websocket.WebSocketClientConnection | None = None
        self._ids = itertools.count(1)
        self._seqs = itertools.count(1)
        self._pending: dict[int, asyncio.Future[P.ServerMessage]] = {}
        # Publishes sent (or waiting for a connection) and not yet answered, in seq order:
        # msg id -> (frame, future). They outlive a lost connection and are sent again.
        self._unacked: dict[int, tuple[str | bytes, asyncio.Future[P.ServerMessage]]] = {}
        self._subs: dict[str, AsyncSubscription] = {}
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False
        self._fatal: BaseException | None = None
        self._failures: dict[str, BaseException] = {}
        self._attempt = 0
        self._connected_at = 0.0
        self._answered = False  # whether the server answered a request on this connection
        self._waiting: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _event(self, kind: EventKind, url: str, detail: str = "", **fields: Any) -> None:
        event = ConnectionEvent(kind, url, detail, **fields)
        self.events.append(event)
        if kind in ("connected", "disconnected", "gave_up"):
            log.info("%s %s %s", kind, url, detail)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("the on_event callback failed on %s", event)

    async def _open(self, index: int = 0) -> None:
        url, dial, token = self.urls[index], self._dial[index], self._tokens[index]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = tornado.httpclient.HTTPRequest(
            dial, headers=headers, connect_timeout=self.timeout, request_timeout=self.timeout
        )
        try:
            conn = await tornado.websocket.websocket_connect(
                request, max_message_size=self.max_message_size
            )
        except tornado.httpclient.HTTPClientError as exc:
            if exc.response is None:
                # No HTTP answer at all (599: a timeout, a connection closed mid-handshake):
                # the server is unreachable for now, which a reconnect may cure; not a refusal.
                raise ConnectionClosed(f"cannot reach {url}: {exc}") from None
            refusal = _Refused.from_response(url, exc.code, exc.response.body, exc.message)
            raise refusal from None
        except ConnectionRefusedError:
            raise ConnectionClosed(
                f"cannot reach {url}: no server is listening there (connection refused); "
                "start one with `livestream serve`, or check the URL"
            ) from None
        except OSError as exc:
            raise ConnectionClosed(f"cannot reach {url}: {exc}") from None
        try:
            first = await asyncio.wait_for(conn.read_message(), self.timeout)
        except BaseException:
            conn.close()
            raise
        if first is None:
            raise ConnectionClosed(f"{url} closed the connection before `welcome`")
        welcome = P.decode_server(first)
        if not isinstance(welcome, P.Welcome):
            conn.close()
            raise ServerError("bad_message", f"expected `welcome` from {url}, got {welcome!r}")
        if self._closing:
            conn.close(1000, "client closing")
            raise ConnectionClosed("the client was closed while connecting")
        self.roles, self.session = welcome.roles, welcome.session
        self._index, self.url, self.token = index, url, token
        self._conn = conn
        self._connected_at = time.monotonic()
        self._answered = False

    async def connect(self) -> AsyncClient:
        """Open the connection: to the first server of the list that answers.

        With one URL, raises what that server's failure was (``ServerError`` for a refused
        token or origin, ``ConnectionClosed`` when nothing answers); with several, each is
        tried once, in order, and :class:`AllServersFailed` lists them all when none works.
        """
        failures: dict[str, BaseException] = {}
        for index, url in enumerate(self.urls):
            try:
                await self._open(index)
            except (LivestreamError, TimeoutError, OSError) as exc:
                if len(self.urls) == 1:
                    raise
                failures[url] = exc
                self._event("connect_failed", url, _reason(exc))
                continue
            break
        else:
            self._failures = failures
            raise AllServersFailed(failures)
        self._failures = failures
        self._connected.set()
        self._event("connected", self.url, "first")
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        return self

    async def _read_loop(self) -> None:
        while True:
            conn = self._conn
            assert conn is not None
            while True:
                frame = await conn.read_message()
                if frame is None:
                    break
                try:
                    self._dispatch(frame)
                except Exception:
                    log.exception("could not handle a frame from %s", self.url)
            code = conn.close_code
            lost_url = self.url
            self._connected.clear()
            self._conn = None
            lost = ConnectionClosed(f"connection to {lost_url} closed (code {code})", code)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(lost)
            self._pending.clear()
            if self._closing:
                self._end(lost)
                return
            self._event("disconnected", lost_url, f"code {code}")
            if not self.reconnect or code in (4001, 1008, 1009):
                self._end(lost)
                self._event("gave_up", lost_url, str(lost))
                return
            if self._answered or time.monotonic() - self._connected_at >= self.backoff.reset_after:
                self._attempt = 0  # it was a healthy connection: start the backoff again
            if not await self._reconnect(lost_url):
                return

    def _end(self, exc: BaseException) -> None:
        """No more connections: every subscription and unanswered publish gets ``exc``."""
        self._fatal = exc
        for sub in self._subs.values():
            sub._fail(exc)
        for _, fut in self._unacked.values():
            if not fut.done():
                fut.set_exception(exc)
        self._unacked.clear()

    async def _reconnect(self, lost_url: str) -> bool:
        """Reach a server again, starting with the one after ``lost_url``; True once
        connected (everything resubscribed and resent), False when the client stops."""
        count = len(self.urls)
        index = self._index
        failures: dict[str, BaseException] = {}
        down_since = time.monotonic()
        while not self._closing:
            delay = self.backoff.delay(self._attempt)
            self._attempt += 1
            if self.give_up_after is not None:
                left = self.give_up_after - (time.monotonic() - down_since)
                delay = max(0.0, min(delay, left))
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return False  # closed meanwhile
            except TimeoutError:
                pass
            index = (index + 1) % count
            url = self.urls[index]
            try:
                await self._open(index)
            except ServerError as exc:
                if count == 1:
                    self._end(exc)
                    self._event("gave_up", url, str(exc))
                    return False
                failures[url] = exc
                self._event("connect_failed", url, _reason(exc))
                if len(failures) == count and all(
                    isinstance(e, ServerError) for e in failures.values()
                ):
                    # Every server refuses this client (a token, an origin): retrying will
                    # not change that.
                    return self._give_up(failures, down_since)
            except (TimeoutError, ConnectionClosed, OSError) as exc:
                if self._closing:
                    return False
                failures[url] = exc
                self._failures = failures
                self._event("connect_failed", url, _reason(exc))
            else:
                self._failures = {}
                self.reconnects += 1
                self._connected.set()
                detail = "reconnected" if url == lost_url else f"failed over from {lost_url}"
                self._event("connected", url, detail)
                for frame, _ in list(self._unacked.values()):
                    self._send_frame(frame)
                for sub in list(self._subs.values()):
                    self._resubscribe(sub)
                return True
            if (
                self.give_up_after is not None
                and time.monotonic() - down_since >= self.give_up_after
            ):
                return self._give_up(failures, down_since)
        return False

    def _give_up(self, failures: dict[str, BaseException], since: float) -> bool:
        error = AllServersFailed(failures, time.monotonic() - since)
        self._failures = failures
        self._end(error)
        self._event("gave_up", self.url, str(error))
        return False

    def _dispatch(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            header_stream = None
            msg = P.decode_server(frame)
        else:
            msg = P.decode_server(frame, None)
            header_stream = getattr(msg, "stream", None)
            if isinstance(msg, P.Data) and header_stream in self._subs:
                msg = P.decode_server(frame, self._subs[header_stream].schema)
        if isinstance(msg, P.Data):
            sub = self._subs.get(msg.stream)
            if sub is not None:
                sub._on_data(msg)
            return
        msg_id = getattr(msg, "id", None)
        if isinstance(msg, P.Subscribed):
            sub = self._subs.get(msg.stream)
            if sub is not None:
                sub._on_subscribed(msg)
        elif isinstance(msg, P.Reset):
            sub = self._subs.get(msg.stream)
            if sub is not None:
                sub._on_reset(msg)
                self._event(
                    "reset",
                    self.url,
                    msg.reason,
                    stream=msg.stream,
                    offset=msg.offset,
                    epoch=msg.epoch,
                )
        elif isinstance(msg, P.StateChanged):
            sub = self._subs.get(msg.stream)
            if sub is not None:
                sub.state = msg.state
        if isinstance(msg_id, int) and msg_id in self._pending:
            self._answered = True
            fut = self._pending.pop(msg_id)
            if not fut.done():
                fut.set_result(msg)
        elif isinstance(msg_id, int) and msg_id in self._unacked:
            self._answered = True
            _, fut = self._unacked.pop(msg_id)
            if not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, P.Error):
            log.warning("server error: %s: %s", msg.code, msg.message)

    def _send(self, msg: P.ClientMessage) -> None:
        self._send_frame(P.encode_client(msg))

    def _send_frame(self, frame: str | bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            _write(conn, frame)
        except tornado.websocket.WebSocketClosedError:
            pass

    def _grant(self, stream: str, frames: int) -> None:
        sub = self._subs.get(stream)
        if sub is not None and not sub._active:
            return  # credit for a stream the server lacks would be a bad message
        self._send(P.Credit(stream, frames))

    def _resubscribe(self, sub: AsyncSubscription) -> None:
        """Subscribe ``sub`` again on a reopened connection (its answer is handled later).

        A restarted server may not have the stream yet (its producer or publisher has not
        come back): then wait for it with ``list``, which, unlike a refused ``subscribe``,
        does not count as a bad message. Any other refusal ends the subscription's
        iteration with a ``ServerError`` instead of leaving it waiting forever.
        """
        conn = self._conn
        if conn is None or sub._closed or self._subs.get(sub.stream) is not sub:
            return
        loop = asyncio.get_running_loop()
        msg_id = next(self._ids)
        fut: asyncio.Future[P.ServerMessage] = loop.create_future()
        self._pending[msg_id] = fut
        sub._active = True
        request = sub._request()
        self._send(type(request)(**{**request.__dict__, "id": msg_id}))
        self._event(
            "resubscribed",
            self.url,
            stream=sub.stream,
            offset=getattr(request, "since", None),
            epoch=getattr(request, "epoch", None),
        )

        def answered(done: asyncio.Future[P.ServerMessage]) -> None:
            self._pending.pop(msg_id, None)
            if done.cancelled() or done.exception() is not None:
                return  # the connection dropped again: the next reconnect resubscribes
            reply = done.result()
            if not isinstance(reply, P.Error):
                return
            sub._active = False
            if reply.code == "unknown_stream":
                task = loop.create_task(self._await_stream(sub, conn))
                self._waiting.add(task)
                task.add_done_callback(self._waiting.discard)
            else:
                sub._fail(ServerError(reply.code, reply.message))
                sub._closed = True  # ends its iteration after the error; not resubscribed
                if self._subs.get(sub.stream) is sub:
                    del self._subs[sub.stream]

        fut.add_done_callback(answered)

    async def _await_stream(
        self, sub: AsyncSubscription, conn: tornado.websocket.WebSocketClientConnection
    ) -> None:
        delay = 0.1
        while self._conn is conn and not sub._closed and self._subs.get(sub.stream) is sub:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                streams = await self.list()
            except (LivestreamError, TimeoutError):
                return  # the connection dropped: the next reconnect resubscribes
            if self._conn is conn and any(s.get("name") == sub.stream for s in streams):
                self._resubscribe(sub)
                return

    def _not_connected(self, timeout: float) -> ConnectionClosed:
        if len(self.urls) == 1:
            return ConnectionClosed(f"not connected to {self.url} after {timeout} s")
        if self._failures:
            return AllServersFailed(self._failures, timeout)
        return ConnectionClosed(f"not connected to any of {', '.join(self.urls)} after {timeout} s")

    async def _wait_connected(self, timeout: float) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._conn is None:
            try:
                await asyncio.wait_for(self._connected.wait(), timeout)
            except TimeoutError:
                raise self._not_connected(timeout) from None

    async def _request(self, msg: Any, timeout: float | None = None) -> P.ServerMessage:
        timeout = self.timeout if timeout is None else timeout
        await self._wait_connected(timeout)
        msg_id = next(self._ids)
        msg = type(msg)(**{**msg.__dict__, "id": msg_id})
        fut: asyncio.Future[P.ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        self._send(msg)
        try:
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg_id, None)
        if isinstance(reply, P.Error):
            raise ServerError(reply.code, reply.message)
        return reply

    async def publish(self, stream: str, data: Any, *, binary: bool = True) -> int | None:
        """Append rows to ``stream`` (created when unknown); returns the first row's offset.

        The publish carries this client's ``publisher`` id and the next ``seq`` number. When
        the connection is lost before the server answered, it is sent again, with the same
        ``publisher`` and ``seq``, on the next connection (to the same or the next server),
        so it returns once a server has acknowledged it. Raises ``TimeoutError`` (or
        ``ConnectionClosed`` when no connection came) when no answer came within
        ``timeout`` seconds of the call, and :class:`AllServersFailed` when the client gave
        up. Returns None only when a server that deduplicates acknowledged a resent publish
        as stored already without saying at which offset (the ack's ``duplicate``).
        """
        batch = to_batch(data)
        if self._fatal is not None:
            raise self._fatal
        msg_id = next(self._ids)
        head: dict[str, Any] = {
            "type": "publish",
            "stream": stream,
            "id": msg_id,
            "publisher": self.publisher,
            "seq": next(self._seqs),
        }
        frame: str | bytes
        try:
            if binary:
                frame = P.encode_batch_frame(head, batch)
            else:
                head["columns"] = batch.to_json_columns()
                frame = json.dumps(head, separators=(",", ":"), allow_nan=False, default=str)
        except (ValueError, TypeError, RecursionError):
            # A value JSON cannot carry (NaN inside a list, a cycle): say which column and
            # row, as the server would, rather than the encoder's bare complaint.
            check_cells(batch, stream=stream)
            raise
        # Registered only once the frame exists, so a refused batch leaves no future behind.
        fut: asyncio.Future[P.ServerMessage] = asyncio.get_running_loop().create_future()
        self._unacked[msg_id] = (frame, fut)
        self._send_frame(frame)  # without a connection, the reconnect sends it
        try:
            reply = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except TimeoutError:
            if self._conn is None:
                raise self._not_connected(self.timeout) from None
            raise
        finally:
            self._unacked.pop(msg_id, None)
        if isinstance(reply, P.Error):
            raise ServerError(reply.code, reply.message)
        assert isinstance(reply, P.Ack)
        return reply.offset

    async def control(self, stream: str, action: str, **params: Any) -> dict[str, Any]:
        """Send a control (``pause``, ``resume``, ``set`` with params, or an action);
        returns the stream's new state."""
        reply = await self._request(P.Control(stream, action, params))
        assert isinstance(reply, P.Ack)
        return reply.state or {}

    async def list(self) -> builtins.list[dict[str, Any]]:
        """The server's streams."""
        reply = await self._request(P.ListStreams())
        assert isinstance(reply, P.Streams)
        return reply.streams

    async def ping(self) -> None:
        """Round-trip a ``ping`` (raises when the server does not answer in ``timeout``)."""
        await self._request(P.Ping())

    async def view(
        self,
        stream: str,
        *,
        width: int,
        columns: Sequence[str],
        x: str | None = None,
        range: tuple[float, float] | None = None,
        read: Sequence[str] | None = None,
        key: str | None = None,
    ) -> P.ViewReply:
        """The rows to draw of ``stream`` at ``width`` pixels: per pixel column, the first,
        last, lowest and highest row of each of ``columns`` (every row when the range holds
        few enough), over ``range`` of ``x`` (a column that never decreases, or None for the
        row offset; ``range=None``: the whole history). The reply's ``batch`` holds the rows
        (``read`` columns, default all) and ``offsets`` their offsets; ``exact`` says every
        row of the range is there. A newer view with the same ``key`` (default: the stream)
        cancels this one: its reply then has ``cancelled`` set. See docs/protocol.md."""
        msg = P.ViewRequest(
            stream,
            None,
            width,
            tuple(columns),
            x,
            None if range is None else (float(range[0]), float(range[1])),
            None if read is None else tuple(read),
            key,
        )
        reply = await self._request(msg)
        assert isinstance(reply, P.ViewReply)
        return reply

    async def subscribe(
        self,
        stream: str,
        *,
        last: int | None = None,
        since: int | None = None,
        epoch: str | None = None,
        columns: builtins.list[str] | None = None,
    ) -> AsyncSubscription:
        """Subscribe to ``stream``; iterate the result for batches.

        With neither ``last`` nor ``since`` the whole history window comes first.
        """
        if stream in self._subs:
            raise ConfigError(f"already subscribed to {stream!r} on this connection")
        sub = AsyncSubscription(
            self,
            stream,
            last=last,
            since=since,
            epoch=epoch,
            columns=tuple(columns) if columns else None,
        )
        self._subs[stream] = sub
        try:
            await self._request(sub._request())
        except BaseException:
            self._subs.pop(stream, None)
            raise
        return sub

    async def close(self) -> None:
        """Close the connection (normal closure, 1000)."""
        self._closing = True
        self._stop.set()
        for sub in self._subs.values():
            sub._closed = True
            sub._ready.set()
        for task in list(self._waiting):
            task.cancel()
        conn = self._conn
        if conn is not None:
            conn.close(1000, "client closing")
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
        self._conn = None
        self._end(ConnectionClosed("the client was closed"))


class Subscription:
    """A blocking view of an :class:`AsyncSubscription`: iterate it for batches."""

    def __init__(self, client: Client, inner: AsyncSubscription) -> None:
        self._client = client
        self._inner = inner

    @property
    def stream(self) -> str:
        return self._inner.stream

    @property
    def schema(self) -> dict[str, str]:
        return self._inner.schema

    @property
    def state(self) -> dict[str, Any]:
        return self._inner.state

    @property
    def resets(self) -> list[P.Reset]:
        return self._inner.resets

    @property
    def next_offset(self) -> int | None:
        return self._inner.next_offset

    def __iter__(self) -> Iterator[Batch]:
        while True:
            try:
                yield self.next()
            except StopIteration:
                return

    def next(self, timeout: float | None = None) -> Batch:
        """The next batch; ``TimeoutError`` after ``timeout`` s; StopIteration when closed."""

        async def take() -> Batch | None:
            try:
                return await self._inner.next(timeout)
            except StopAsyncIteration:
                # Not StopIteration here: raised inside a coroutine it becomes RuntimeError.
                return None

        batch: Batch | None = self._client._run(take(), None)
        if batch is None:
            raise StopIteration
        return batch

    def to_pandas(self, timeout: float = 5.0) -> Any:
        """Rows received and not yet taken, as a DataFrame indexed by offset (waits up to
        ``timeout`` s for the first batch when none has arrived yet)."""

        async def collect() -> list[Batch]:
            got = self._inner.drain()
            if not got:
                got = [await self._inner.next(timeout), *self._inner.drain()]
            return got

        batches = self._client._run(collect(), None)
        return Batch.concat(batches).to_pandas()

    def close(self) -> None:
        """Unsubscribe."""
        self._client._run(self._inner.close(), 10)


class Client:
    """A blocking livestream connection (its asyncio loop runs on a background thread).

    Made by :func:`connect`; use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        reconnect: bool = True,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        give_up_after: float | None = None,
        on_event: Callable[[ConnectionEvent], None] | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="livestream-client", daemon=True
        )
        self._thread.start()
        self.timeout = timeout
        options: dict[str, Any] = {
            "token": token,
            "reconnect": reconnect,
            "timeout": timeout,
            "backoff": backoff,
            "give_up_after": give_up_after,
            "on_event": on_event,
        }
        connects = 1 if isinstance(url, str) else max(1, len(url))
        try:
            self._async = self._run(self._make(url, options), connects * (timeout + 5))
        except BaseException:
            self._shutdown()
            raise

    async def _make(self, url: str | Sequence[str], options: dict[str, Any]) -> AsyncClient:
        client = AsyncClient(url, **options)
        await client.connect()
        return client

    def _run(self, coro: Any, timeout: float | None) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self._async.roles)

    @property
    def reconnects(self) -> int:
        """How many times a lost connection was opened again (to any server)."""
        return int(self._async.reconnects)

    @property
    def url(self) -> str:
        """The server in use, or the one last tried while reconnecting (no token in it)."""
        return str(self._async.url)

    @property
    def urls(self) -> tuple[str, ...]:
        """Every server this client may use, in order (no token in them)."""
        return tuple(self._async.urls)

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._async._conn is not None

    @property
    def events(self) -> builtins.list[ConnectionEvent]:
        """What happened to the connection, oldest first (the last 1,000 events)."""
        return builtins.list(self._async.events.copy())  # copy(): one step, safe across threads

    @property
    def publisher(self) -> str:
        """This client's publisher id, sent with each publish with its ``seq`` number."""
        return str(self._async.publisher)

    def publish(self, stream: str, data: Any) -> int | None:
        """Append rows to ``stream``; returns the offset of the first row (None: see
        :meth:`AsyncClient.publish`)."""
        offset = self._run(self._async.publish(stream, data), self.timeout + 5)
        return None if offset is None else int(offset)

    def control(self, stream: str, action: str, **params: Any) -> dict[str, Any]:
        """Pause, resume, set parameters (``control("prices", "set", volatility=0.1)``) or
        trigger an action; returns the new state."""
        return dict(self._run(self._async.control(stream, action, **params), self.timeout + 5))

    def list(self) -> builtins.list[dict[str, Any]]:
        """The server's streams with schema, rows, offset and state."""
        return list(self._run(self._async.list(), self.timeout + 5))

    def view(self, stream: str, **options: Any) -> P.ViewReply:
        """See :meth:`AsyncClient.view`."""
        reply: P.ViewReply = self._run(self._async.view(stream, **options), self.timeout + 5)
        return reply

    def subscribe(
        self,
        stream: str,
        *,
        last: int | None = None,
        since: int | None = None,
        epoch: str | None = None,
        columns: builtins.list[str] | None = None,
    ) -> Subscription:
        """Subscribe; iterate the result for :class:`~livestream.columns.Batch` objects."""
        inner = self._run(
            self._async.subscribe(stream, last=last, since=since, epoch=epoch, columns=columns),
            self.timeout + 5,
        )
        return Subscription(self, inner)

    def close(self) -> None:
        """Close the connection and stop the background loop."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._async.close(), 10)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    url: str | Sequence[str],
    *,
    token: str | None = None,
    reconnect: bool = True,
    timeout: float = 10.0,
    backoff: Backoff | None = None,
    give_up_after: float | None = None,
    on_event: Callable[[ConnectionEvent], None] | None = None,
) -> Client:
    """Connect to a livestream server: ``ws://host:port`` (or the ``http://...?token=``
    URL that ``livestream serve`` prints). Returns a blocking :class:`Client`.

    Give a list of URLs to fail over between the nodes of one service
    (``connect(["ws://a:8765", "ws://b:8765"], token=TOKEN)``); behind a load balancer one
    URL is enough. ``backoff``, ``give_up_after`` and ``on_event`` are described on
    :class:`AsyncClient` (``on_event`` is called on the client's background thread).
    """
    return Client(
        url,
        token=token,
        reconnect=reconnect,
        timeout=timeout,
        backoff=backoff,
        give_up_after=give_up_after,
        on_event=on_event,
    )
