"""One connection's protocol state: frames in, frames out, no I/O of its own.

A :class:`Session` is what a peer is to the server, whatever carries its frames: the
WebSocket handler (handlers.py) and the widget's comm relay (relay.py) are thin adapters
that hand it each frame the peer sent (:meth:`Session.receive`) and write what it sends
through their :class:`~livestream.hub.Transport`. It decodes and checks each frame
(livestream.protocol), enforces roles, the bad-message limit and the connection's
outbound budget, and asks the hub (livestream.hub) for streams and subscriptions.

Time comes from the hub's injected clock, and deferred work goes through the hub's loop
(any object with asyncio's ``call_soon``/``call_later``/``run_in_executor``), so a test
drives a session with bytes in and bytes out: no socket, no sleep.

Imports point down only: this module imports the hub and the protocol; neither imports it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections import deque
from collections.abc import Awaitable
from typing import Any

from . import protocol as P
from .errors import Forbidden, ProtocolError, RateLimited, UnknownStream
from .hub import LIST_SLICE, Hub, Subscription, Transport

__all__ = ["Session"]

log = logging.getLogger("livestream.session")

#: Bad messages within the window that close a connection (4001).
BAD_MESSAGE_LIMIT = 20
BAD_MESSAGE_WINDOW = 10.0
#: Frames larger than this are decoded on a worker thread, not on the loop.
DECODE_OFF_LOOP = 64 * 1024
#: Messages one connection may have handled before it lets the loop take a turn.
BURST = 16
#: Of a connection's outbound budget, what only replies and notices may use: data waits
#: before it would fill this, so a slow viewer is not closed for a ``state`` notice.
RESERVE_BYTES = 1024 * 1024
#: Seconds a resume may wait for this node to read, from a shared backplane, rows another
#: node already stored (a viewer that failed over from it).
CATCH_UP_WAIT = 5.0
#: ``view`` requests one connection may have being computed at once (beyond: rate_limited).
VIEWS_IN_FLIGHT = 4
#: View keys a connection keeps track of (the oldest is forgotten, its view cancelled).
VIEW_KEYS = 64


def _retrieve(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()


class Session:
    """One connection's protocol state: its roles, subscriptions and bad-message count.

    The server's WebSocket handler and the comm relay feed it the peer's frames
    (:meth:`receive`); everything it answers goes through the transport. Everything queued
    for the transport and not yet written counts against one outbound budget
    (``Limits.outbound_budget``): data waits for room, and any other frame that finds none
    closes the connection (1008), so a peer that does not read costs at most the budget.
    """

    def __init__(
        self, hub: Hub, transport: Transport, roles: tuple[str, ...], peer: str = ""
    ) -> None:
        self.hub = hub
        self.clock = hub.clock
        self.transport = transport
        self.roles = roles
        self.peer = peer
        self.id = uuid.uuid4().hex[:12]
        self.subscriptions: dict[str, Subscription] = {}
        self.closed = False
        self._bad: deque[float] = deque()
        self.messages_in = 0
        self._burst = 0  # messages handled since this connection last let the loop turn
        #: Bytes handed to the transport and not yet written out.
        self.outbound = 0
        #: Subscriptions whose next frame waits for the outbound budget to drain.
        self.waiting: set[Subscription] = set()
        #: The newest ``view`` request per key (a number): an older one is cancelled.
        self._view_gens: dict[str, int] = {}
        self._views_in_flight = 0
        self._view_tasks: set[Any] = set()

    # ------------------------------------------------------------------ frames in

    def receive(self, frame: str | bytes) -> Awaitable[None] | None:
        """Decode one frame from the peer and carry it out.

        Returns an awaitable when the work goes on past this call: a large frame decoded on
        a worker thread (JSON parsing holds the interpreter), or a ``list`` built over
        several loop turns. The adapter reads nothing more from this peer until it is done,
        so one connection's messages are handled in order and never pile up.
        """
        if self.closed:
            return None
        loop = self.hub.loop
        if len(frame) > DECODE_OFF_LOOP and loop is not None:
            return asyncio.ensure_future(self._receive_off_loop(frame))
        try:
            msg = P.decode_client(frame, self.hub.limits)
        except ProtocolError as err:
            self.reject(err)
            pending = None
        else:
            pending = self.handle(msg)
        if pending is None and loop is not None:
            # Fair turns: a peer that pipelines thousands of small messages is read from a
            # buffer without the loop ever getting a turn. After a burst, this connection
            # waits one loop turn, and every other connection gets its go.
            self._burst += 1
            if self._burst >= BURST:
                self._burst = 0
                return asyncio.ensure_future(asyncio.sleep(0))
        return pending

    async def _receive_off_loop(self, frame: str | bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            msg = await loop.run_in_executor(
                self.hub.decoder(), P.decode_client, frame, self.hub.limits
            )
        except ProtocolError as err:
            self.reject(err)
            return
        except Exception:
            log.exception("internal error decoding a %d-byte frame", len(frame))
            self.send(P.Error("internal", "the server failed to decode this message; see its log"))
            return
        pending = self.handle(msg)
        if pending is not None:
            await pending

    # ------------------------------------------------------------------ frames out

    def send(self, msg: P.ServerMessage) -> None:
        self.send_frame(P.encode_server(msg))

    def room_for(self, size: int) -> bool:
        """Whether a data frame of ``size`` bytes fits the outbound budget now (one always
        fits an idle connection, however large)."""
        budget = self.hub.limits.outbound_budget
        reserve = min(RESERVE_BYTES, budget // 4)
        return self.outbound == 0 or self.outbound + size <= budget - reserve

    def send_frame(self, frame: str | bytes) -> Awaitable[None] | None:
        if self.closed:
            return None
        size = len(frame)
        budget = self.hub.limits.outbound_budget
        if self.outbound and self.outbound + size > budget:
            log.info(
                "closing %s: %d bytes queued and unread, over its outbound budget of %d",
                self.peer,
                self.outbound,
                budget,
            )
            self.transport.close(
                1008,
                f"the client is not reading: {self.outbound} bytes wait for it, over the "
                f"server's outbound_budget of {budget}",
            )
            self.close()
            return None
        try:
            done = self.transport.send(frame)
        except Exception:
            self.closed = True
            return None
        add_done_callback = getattr(done, "add_done_callback", None)
        if add_done_callback is not None:
            self.outbound += size
            add_done_callback(lambda fut: self._written(fut, size))
        return done

    def _written(self, fut: Any, size: int) -> None:
        # A peer gone mid-write fails the write; nobody awaits most writes, and an
        # unretrieved failure would be logged as an error by asyncio.
        _retrieve(fut)
        self.outbound -= size
        if (
            self.waiting
            and not self.closed
            and self.outbound <= self.hub.limits.outbound_budget // 2
        ):
            waiting, self.waiting = self.waiting, set()
            for sub in waiting:
                sub.pump()

    def welcome(self) -> None:
        self.send(P.Welcome(self.id, self.roles, server=f"livestream/{self.hub.version}"))

    def reject(self, err: ProtocolError) -> None:
        """Answer a refused message and close the connection if it keeps sending them."""
        if self.closed:
            return
        err_id = err.id if isinstance(err.id, (str, int)) else None
        self.send(P.Error(err.code, err.message, err_id))
        if err.code in ("rate_limited", "unavailable"):
            # A well-formed request that came too often, or while the backplane was away:
            # told so, not a bad message.
            return
        now = self.clock()
        self._bad.append(now)
        while self._bad and now - self._bad[0] > BAD_MESSAGE_WINDOW:
            self._bad.popleft()
        if len(self._bad) >= BAD_MESSAGE_LIMIT:
            log.info(
                "closing %s: %d bad messages in %.0f s",
                self.peer,
                len(self._bad),
                BAD_MESSAGE_WINDOW,
            )
            self.transport.close(4001, "too many bad messages")
            # What the peer sent behind it until it sees the close is not carried out.
            self.closed = True

    def _need(self, role: str, what: str, id: P.Id) -> None:
        if role not in self.roles:
            raise Forbidden(
                f"{what} needs the {role!r} role; this connection's token grants "
                f"{', '.join(self.roles) or 'no roles'}. Use a token with the {role!r} role.",
                id=id,
            )

    def handle(self, msg: P.ClientMessage) -> Awaitable[None] | None:
        """Carry out one decoded client message (none once the session is closing);
        an awaitable when the work goes on (see :meth:`receive`)."""
        if self.closed:
            return None
        self.messages_in += 1
        try:
            return self._dispatch(msg)
        except ProtocolError as err:
            if err.id is None:
                err.id = getattr(msg, "id", None)
            self.reject(err)
        except Exception:
            log.exception("internal error handling %r", type(msg).__name__)
            msg_id: P.Id = getattr(msg, "id", None)
            self.send(
                P.Error("internal", "the server failed to handle this message; see its log", msg_id)
            )
        return None

    def _dispatch(self, msg: P.ClientMessage) -> Awaitable[None] | None:
        hub = self.hub
        if isinstance(msg, P.Ping):
            self.send(P.Pong(msg.id))
        elif isinstance(msg, P.ListStreams):
            self._need("view", "`list`", msg.id)
            if len(hub.streams) <= LIST_SLICE or hub.loop is None:
                self.send(P.Streams(hub.describe_streams(), msg.id))
            else:
                return asyncio.ensure_future(self._list(msg.id))
        elif isinstance(msg, P.Subscribe):
            self._need("view", "`subscribe`", msg.id)
            if msg.stream not in hub.streams:
                found = hub.backplane.lookup(msg.stream)
                if found is not None:  # another node may have it: ask, then subscribe
                    return asyncio.ensure_future(
                        self._later(found, lambda _: hub.subscribe(self, msg), msg.id)
                    )
            stream = hub.streams.get(msg.stream)
            if (
                stream is not None
                and hub.backplane.kind != "local"
                and msg.since is not None
                and msg.epoch == stream.epoch
                and msg.since > stream.end
            ):
                # A viewer that failed over from another node of a shared service asks for
                # rows this node has not read from the backplane yet: wait (bounded) for
                # them, rather than answer with a gap and send rows it already has.
                return asyncio.ensure_future(
                    self._later(
                        self._caught_up(stream, msg.since),
                        lambda _: hub.subscribe(self, msg),
                        msg.id,
                    )
                )
            hub.subscribe(self, msg)
        elif isinstance(msg, P.Unsubscribe):
            sub = self.subscriptions.pop(msg.stream, None)
            if sub is None:
                raise UnknownStream(
                    f"not subscribed to stream {msg.stream!r}; subscribed to: "
                    f"{', '.join(self.subscriptions) or 'nothing'}",
                    id=msg.id,
                )
            hub.drop(sub)
            self.send(P.Unsubscribed(msg.stream, msg.id))
        elif isinstance(msg, P.Credit):
            sub = self.subscriptions.get(msg.stream)
            if sub is None:
                raise UnknownStream(
                    f"`credit` for stream {msg.stream!r}, which this connection "
                    "has not subscribed to",
                    id=msg.id,
                )
            if sub.credit is not None:
                sub.credit = min(sub.credit + msg.frames, 1_000_000)
                sub.pump()
        elif isinstance(msg, P.Control):
            self._need("control", "`control`", msg.id)
            stream = hub.get(msg.stream, id=msg.id)
            state = hub.backplane.control(stream, msg.action, msg.params, ",".join(self.roles))
            if inspect.isawaitable(state):
                return asyncio.ensure_future(
                    self._later(state, lambda s: self.send(P.Ack(msg.id, True, state=s)), msg.id)
                )
            self.send(P.Ack(msg.id, True, state=state))
        elif isinstance(msg, P.Publish):
            self._need("publish", "`publish`", msg.id)
            stream = hub.stream_for_publish(msg.stream, id=msg.id)
            stored = hub.backplane.publish(stream, msg.batch, msg.publisher, msg.seq)
            if inspect.isawaitable(stored):
                return asyncio.ensure_future(
                    self._later(stored, lambda r: self._published(msg, *r), msg.id)
                )
            self._published(msg, *stored)
        elif isinstance(msg, P.ViewRequest):
            self._need("view", "`view`", msg.id)
            self._view(hub.get(msg.stream, id=msg.id), msg)
        return None

    async def _caught_up(self, stream: Any, offset: int) -> None:
        """Wait until this node's copy of ``stream`` reaches ``offset`` (its epoch unchanged),
        at most :data:`CATCH_UP_WAIT` seconds; past that the subscribe goes on and a row
        range the node still lacks is a gap, as it would be without a backplane."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_WAIT
        epoch = stream.epoch
        while stream.end < offset and stream.epoch == epoch and not self.closed:
            if loop.time() >= deadline:
                log.info(
                    "%s resumes %r at %d; this node holds up to %d after %.0f s",
                    self.peer,
                    stream.name,
                    offset,
                    stream.end,
                    CATCH_UP_WAIT,
                )
                return
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ views

    def _view(self, stream: Any, msg: P.ViewRequest) -> None:
        """Answer a ``view`` off the loop (the first view of ten million rows summarises
        them: a quarter of a second). The peer's next messages are read meanwhile, so a
        newer view with the same key (a zoom, a pan) cancels this one: it is answered
        ``cancelled``, and not computed at all if it had not started."""
        if self._views_in_flight >= VIEWS_IN_FLIGHT:
            raise RateLimited(
                f"{VIEWS_IN_FLIGHT} views are being computed for this connection already; "
                "wait for an answer (a newer view with the same `key` cancels an older one)",
                id=msg.id,
            )
        key = msg.key if msg.key is not None else msg.stream
        gen = self._view_gens.pop(key, 0) + 1
        self._view_gens[key] = gen
        while len(self._view_gens) > VIEW_KEYS:
            del self._view_gens[next(iter(self._view_gens))]
        loop = self.hub.loop
        if loop is None:  # a session driven without a loop (tests): at once
            self._send_view(msg, key, gen, self._compute_view(stream, msg, key, gen))
            return
        self._views_in_flight += 1
        fut = loop.run_in_executor(self.hub.decoder(), self._compute_view, stream, msg, key, gen)
        task = asyncio.ensure_future(self._finish_view(fut, msg, key, gen))
        self._view_tasks.add(task)
        task.add_done_callback(self._view_tasks.discard)

    def _compute_view(
        self, stream: Any, msg: P.ViewRequest, key: str, gen: int
    ) -> str | bytes | ProtocolError | None:
        """On a worker thread: the encoded answer, the error to send, or None when a
        newer request replaced this one before it started."""
        if self.closed or self._view_gens.get(key) != gen:
            return None
        try:
            for _ in range(3):
                epoch = stream.epoch
                view = stream.overview().view(
                    x=msg.x,
                    x_range=msg.range,
                    width=msg.width,
                    columns=list(msg.columns),
                    read=None if msg.read is None else list(msg.read),
                )
                if stream.epoch == epoch:
                    break
            reply = P.ViewReply(
                msg.stream,
                msg.id,
                msg.key,
                epoch,
                view.first,
                view.stop,
                view.end,
                view.exact,
                view.buckets,
                view.offsets,
                view.batch,
            )
            return P.encode_view_reply(reply, msg.format == "binary")
        except ProtocolError as err:
            return err

    async def _finish_view(self, fut: Any, msg: P.ViewRequest, key: str, gen: int) -> None:
        try:
            result = await fut
        except Exception:
            log.exception("internal error computing a view of %r", msg.stream)
            result = ProtocolError(
                "the server failed to compute this view; see its log", code="internal"
            )
        finally:
            self._views_in_flight -= 1
        self._send_view(msg, key, gen, result)

    def _send_view(
        self, msg: P.ViewRequest, key: str, gen: int, result: str | bytes | ProtocolError | None
    ) -> None:
        if self.closed:
            return
        if result is None or self._view_gens.get(key) != gen:
            self.send_frame(
                P.encode_view_reply(P.ViewReply(msg.stream, msg.id, msg.key, cancelled=True))
            )
            return
        if isinstance(result, ProtocolError):
            if result.id is None:
                result.id = msg.id
            if result.code == "internal":
                self.send(P.Error("internal", result.message, msg.id))
            else:
                self.reject(result)
            return
        if not self.room_for(len(result)):
            self.send(
                P.Error(
                    "too_large",
                    f"the view of {msg.stream!r} takes {len(result)} bytes, more than this "
                    "connection has room for now (its outbound budget is "
                    f"{self.hub.limits.outbound_budget} bytes); ask for fewer `read` "
                    "columns or a smaller `width`, or again once data has drained",
                    msg.id,
                )
            )
            return
        self.send_frame(result)

    def _published(self, msg: P.Publish, offset: int, duplicate: bool) -> None:
        self.send(
            P.Ack(
                msg.id,
                True,
                offset=offset if offset >= 0 else None,
                rows=msg.batch.rows,
                duplicate=True if duplicate else None,
            )
        )

    async def _later(self, pending: Awaitable[Any], then: Any, id: P.Id) -> None:
        """Finish a message whose answer comes from the backplane (Redis): this peer's
        next message waits for it, so its messages stay in order; the loop goes on."""
        try:
            result = await pending
            if not self.closed:
                then(result)
        except ProtocolError as err:
            if err.id is None:
                err.id = id
            self.reject(err)
        except Exception:
            log.exception("internal error finishing a request through the backplane")
            self.send(
                P.Error("internal", "the server failed to handle this message; see its log", id)
            )

    async def _list(self, id: P.Id) -> None:
        # Described and encoded a slice per loop turn: ten thousand streams take ~100 ms.
        entries = []
        async for info in self.hub.describe_streams_async():
            if self.closed:  # the peer left: stop describing for nobody
                return
            entries.append(P.encode_stream_info(info))
        if not self.closed:
            self.send_frame(P.encode_streams_reply(entries, id))

    def close(self) -> None:
        """Forget this session's subscriptions (the connection is gone)."""
        self.closed = True
        self.waiting.clear()
        for task in list(self._view_tasks):  # views nobody will read (the loop may stop next)
            task.cancel()
        for sub in self.subscriptions.values():
            self.hub.drop(sub)
        self.subscriptions.clear()
        self.hub.sessions.discard(self)
