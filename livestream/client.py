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
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import json
import logging
import random
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import tornado.httpclient
import tornado.websocket

from . import protocol as P
from .columns import Batch, check_cells, to_batch
from .errors import ConfigError, ConnectionClosed, LivestreamError, ServerError

__all__ = ["AsyncClient", "AsyncSubscription", "Client", "Subscription", "connect"]

log = logging.getLogger("livestream.client")

_CREDIT = 8  # data frames in flight per subscription


def _normalise_url(url: str, token: str | None) -> tuple[str, str | None]:
    """(ws URL ending in /ws without token, token) from what people paste."""
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
    return urlunsplit((scheme, parts.netloc, path, urlencode(rest, doseq=True), "")), token


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
    """An asyncio connection to a livestream server, reopened when it drops."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        reconnect: bool = True,
        timeout: float = 10.0,
        max_message_size: int = 256 * 1024 * 1024,
    ) -> None:
        self.url, self.token = _normalise_url(url, token)
        self.reconnect = reconnect
        self.timeout = timeout
        self.max_message_size = max_message_size
        self.roles: tuple[str, ...] = ()
        self.session: str | None = None
        self.reconnects = 0
        self._conn: tornado.websocket.WebSocketClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[P.ServerMessage]] = {}
        self._subs: dict[str, AsyncSubscription] = {}
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._fatal: BaseException | None = None
        self._waiting: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = tornado.httpclient.HTTPRequest(
            self.url, headers=headers, connect_timeout=self.timeout, request_timeout=self.timeout
        )
        try:
            conn = await tornado.websocket.websocket_connect(
                request, max_message_size=self.max_message_size
            )
        except tornado.httpclient.HTTPClientError as exc:
            if exc.response is None:
                # No HTTP answer at all (599: a timeout, a connection closed mid-handshake):
                # the server is unreachable for now, which a reconnect may cure; not a refusal.
                raise ConnectionClosed(f"cannot reach {self.url}: {exc}") from None
            refusal = _Refused.from_response(self.url, exc.code, exc.response.body, exc.message)
            raise refusal from None
        except ConnectionRefusedError:
            raise ConnectionClosed(
                f"cannot reach {self.url}: no server is listening there (connection refused); "
                "start one with `livestream serve`, or check the URL"
            ) from None
        except OSError as exc:
            raise ConnectionClosed(f"cannot reach {self.url}: {exc}") from None
        try:
            first = await asyncio.wait_for(conn.read_message(), self.timeout)
        except BaseException:
            conn.close()
            raise
        if first is None:
            raise ConnectionClosed(f"{self.url} closed the connection before `welcome`")
        welcome = P.decode_server(first)
        if not isinstance(welcome, P.Welcome):
            raise ServerError("bad_message", f"expected `welcome`, got {welcome!r}")
        self.roles, self.session = welcome.roles, welcome.session
        self._conn = conn

    async def connect(self) -> AsyncClient:
        """Open the connection (raises ``ServerError`` for a refused token or origin)."""
        await self._open()
        self._connected.set()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        return self

    async def _read_loop(self) -> None:
        delay = 0.1
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
            self._connected.clear()
            self._conn = None
            lost = ConnectionClosed(f"connection to {self.url} closed (code {code})", code)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(lost)
            self._pending.clear()
            if self._closing or not self.reconnect or code in (4001, 1008, 1009):
                self._fatal = lost
                for sub in self._subs.values():
                    sub._fail(lost)
                return
            while not self._closing:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
                try:
                    await self._open()
                except ServerError as exc:
                    self._fatal = exc
                    for sub in self._subs.values():
                        sub._fail(exc)
                    return
                except (TimeoutError, ConnectionClosed, OSError):
                    continue
                self.reconnects += 1
                delay = 0.1
                self._connected.set()
                for sub in list(self._subs.values()):
                    self._resubscribe(sub)
                break
            if self._closing:
                return

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
        elif isinstance(msg, P.StateChanged):
            sub = self._subs.get(msg.stream)
            if sub is not None:
                sub.state = msg.state
        if isinstance(msg_id, int) and msg_id in self._pending:
            fut = self._pending.pop(msg_id)
            if not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, P.Error):
            log.warning("server error: %s: %s", msg.code, msg.message)

    def _send(self, msg: P.ClientMessage) -> None:
        conn = self._conn
        if conn is None:
            return
        frame = P.encode_client(msg)
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

    async def _wait_connected(self, timeout: float) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._conn is None:
            try:
                await asyncio.wait_for(self._connected.wait(), timeout)
            except TimeoutError:
                raise ConnectionClosed(f"not connected to {self.url} after {timeout} s") from None

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

    async def publish(self, stream: str, data: Any, *, binary: bool = True) -> int:
        """Append rows to ``stream`` (created when unknown); returns the first row's offset."""
        batch = to_batch(data)
        await self._wait_connected(self.timeout)
        msg_id = next(self._ids)
        try:
            frame = P.encode_client(P.Publish(stream, batch, msg_id), binary=binary)
        except (ValueError, TypeError, RecursionError):
            # A value JSON cannot carry (NaN inside a list, a cycle): say which column and
            # row, as the server would, rather than the encoder's bare complaint.
            check_cells(batch, stream=stream)
            raise
        # Registered only once the frame exists, so a refused batch leaves no future behind.
        fut: asyncio.Future[P.ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        conn = self._conn
        assert conn is not None
        _write(conn, frame)
        try:
            reply = await asyncio.wait_for(fut, self.timeout)
        finally:
            self._pending.pop(msg_id, None)
        if isinstance(reply, P.Error):
            raise ServerError(reply.code, reply.message)
        assert isinstance(reply, P.Ack) and reply.offset is not None
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
        self, url: str, *, token: str | None = None, reconnect: bool = True, timeout: float = 10.0
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="livestream-client", daemon=True
        )
        self._thread.start()
        self.timeout = timeout
        try:
            self._async = self._run(self._make(url, token, reconnect, timeout), timeout + 5)
        except BaseException:
            self._shutdown()
            raise

    async def _make(
        self, url: str, token: str | None, reconnect: bool, timeout: float
    ) -> AsyncClient:
        client = AsyncClient(url, token=token, reconnect=reconnect, timeout=timeout)
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
        return int(self._async.reconnects)

    def publish(self, stream: str, data: Any) -> int:
        """Append rows to ``stream``; returns the offset of the first row."""
        return int(self._run(self._async.publish(stream, data), self.timeout + 5))

    def control(self, stream: str, action: str, **params: Any) -> dict[str, Any]:
        """Pause, resume, set parameters (``control("prices", "set", volatility=0.1)``) or
        trigger an action; returns the new state."""
        return dict(self._run(self._async.control(stream, action, **params), self.timeout + 5))

    def list(self) -> builtins.list[dict[str, Any]]:
        """The server's streams with schema, rows, offset and state."""
        return list(self._run(self._async.list(), self.timeout + 5))

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
    url: str, *, token: str | None = None, reconnect: bool = True, timeout: float = 10.0
) -> Client:
    """Connect to a livestream server: ``ws://host:port`` (or the ``http://...?token=``
    URL that ``livestream serve`` prints). Returns a blocking :class:`Client`."""
    return Client(url, token=token, reconnect=reconnect, timeout=timeout)
