"""The hub: streams by name, subscriptions, fan-out by cursor, and control routing.

Every subscriber holds a *cursor* (the offset of the next row it needs) into its stream's
history, never a queue. When rows arrive the hub wakes each idle subscriber; a subscriber
is sent everything past its cursor as one merged frame, and is *busy* until the transport
reports that frame written. A slow reader therefore gets fewer, larger frames; one that
falls behind the history gets ``reset``. Memory is bounded by the history, not by the
number or slowness of viewers (see docs/explanation.md).

The hub runs on one event loop. It knows a transport only by :class:`Transport`: ``send``
a frame and get an awaitable that completes when it is written, and ``close``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from . import protocol as P
from .columns import Batch
from .errors import ProtocolError, TooLarge, UnknownStream
from .limits import Limits
from .streams import DEFAULT_HISTORY, Stream
from .version import __version__

__all__ = ["Backplane", "Hub", "LocalBackplane", "Subscription", "Transport", "Viewer"]

log = logging.getLogger("livestream.hub")

#: Frames never cross a multiple of this many bytes' worth of rows (see ``Hub.frame_for``);
#: docs/protocol.md promises clients at most about 4 MiB of column data a frame.
CHUNK_BYTES = 256 * 1024
#: Encoded frames kept for reuse by other subscribers, at most this many bytes.
CACHE_BYTES = 8 * 1024 * 1024
#: A wake the loop has not run after this many seconds means a producer thread starves it.
STARVED_AFTER = 0.002
#: The longest an ``append`` from a thread waits for a starved loop (seconds).
YIELD_MAX = 0.005
#: Streams described per loop turn when answering ``list`` (a few ms of work).
LIST_SLICE = 200
#: The longest a producer on the loop waits for a write of its viewers (see ``Hub.turn``).
TURN_MAX = 0.005
#: A frame in flight for longer than this is a stalled viewer's, which paces nobody.
TURN_STALLED = 0.1


class Transport(Protocol):
    """What the hub needs from a connection."""

    def send(self, frame: str | bytes) -> Awaitable[None] | None:
        """Queue a frame; the awaitable completes when it has been written out."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code."""


class Viewer(Protocol):
    """What the hub needs from a subscriber's connection: a :class:`~livestream.session.
    Session`. The hub calls down into it only through these (the session imports the hub,
    never the other way round)."""

    peer: str
    transport: Transport
    subscriptions: dict[str, Subscription]
    waiting: set[Subscription]

    def send(self, msg: P.ServerMessage) -> None:
        """Encode and send a control-plane message."""

    def send_frame(self, frame: str | bytes) -> Awaitable[None] | None:
        """Send an encoded frame; the awaitable completes when it is written."""

    def room_for(self, size: int) -> bool:
        """Whether a data frame of ``size`` bytes fits the connection's outbound budget."""

    def close(self) -> None:
        """Forget the connection (it is gone or being closed)."""


class Backplane(Protocol):
    """Where a hub's rows are numbered and its controls go (DESIGN.md decision 8).

    :class:`LocalBackplane` (this process only) is the default; the Redis one
    (livestream.backplanes.redis) lets several servers serve one set of streams. A method
    answers at once (a value) or later (an awaitable): the session and the HTTP handler
    await what needs awaiting, so the loop never blocks on a backplane.
    """

    #: ``local`` or ``redis``: what /healthz and the logs call it.
    kind: str

    def adopt(self, stream: Stream) -> None:
        """A stream was created in this process (by name, a publisher or a producer)."""

    def publish(
        self, stream: Stream, batch: Batch, publisher: str | None, seq: int | None
    ) -> tuple[int, bool] | Awaitable[tuple[int, bool]]:
        """Store a publisher's batch; ``(first offset, duplicate)``. A batch whose ``seq``
        is not above the last one stored for ``publisher`` is not stored again."""

    def control(
        self, stream: Stream, action: str, params: dict[str, Any], by: str
    ) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Apply a control where the stream's producer runs; the new state."""

    def lookup(self, name: str) -> Awaitable[Stream | None] | None:
        """A stream this process does not hold yet but the service has (None: no such)."""

    def state_of(self, stream: Stream) -> dict[str, Any]:
        """The stream's state as the service knows it."""

    def controls_of(self, stream: Stream) -> dict[str, Any]:
        """The stream's declared controls as the service knows them."""

    def state_changed(self, stream: Stream) -> None:
        """The stream's state changed in this process (called on the hub's loop)."""

    def describe(self, info: dict[str, Any]) -> None:
        """Add the service's figures (nodes, viewers on every node) to a description."""


class LocalBackplane:
    """This process is the whole service: offsets are numbered by each stream's history,
    controls go to the stream's producer here. Publishers' ``seq`` numbers are kept for
    the :data:`DEDUP_KEEP` most recent publishers, so a resend is stored once here too."""

    kind = "local"
    #: Publishers (stream, publisher id) whose last ``seq`` is remembered.
    DEDUP_KEEP = 100_000

    def __init__(self) -> None:
        self._last: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()

    def adopt(self, stream: Stream) -> None:
        pass

    def publish(
        self, stream: Stream, batch: Batch, publisher: str | None, seq: int | None
    ) -> tuple[int, bool]:
        if publisher is None or seq is None:
            return stream.append(batch), False
        key = (stream.name, publisher)
        last = self._last.get(key)
        if last is not None and seq <= last[0]:
            self._last.move_to_end(key)
            return (last[1] if seq == last[0] else -1), True
        offset = stream.append(batch)
        self._last[key] = (seq, offset)
        self._last.move_to_end(key)
        while len(self._last) > self.DEDUP_KEEP:
            self._last.popitem(last=False)
        return offset, False

    def control(
        self, stream: Stream, action: str, params: dict[str, Any], by: str
    ) -> dict[str, Any]:
        return stream.control(action, params, by=by)

    def lookup(self, name: str) -> None:
        return None

    def state_of(self, stream: Stream) -> dict[str, Any]:
        return stream.state

    def controls_of(self, stream: Stream) -> dict[str, Any]:
        return stream.controls.describe()

    def state_changed(self, stream: Stream) -> None:
        pass

    def describe(self, info: dict[str, Any]) -> None:
        pass


class Subscription:
    """One subscriber's cursor into one stream."""

    __slots__ = (
        "busy_since",
        "closed",
        "columns",
        "credit",
        "cursor",
        "epoch",
        "format",
        "hub",
        "session",
        "stream",
        "successor",
        "wire",
    )

    def __init__(self, session: Viewer, stream: Stream, cursor: int, sub: P.Subscribe) -> None:
        self.hub: Hub | None = None  # set by Hub.subscribe
        self.session = session
        self.stream = stream
        self.cursor = cursor
        self.columns = sub.columns
        self.format = sub.format
        self.credit: int | None = sub.credit
        self.busy_since: float | None = None
        self.closed = False
        self.epoch = stream.epoch  # the stream's epoch its cursor belongs to
        # The subscription that replaced this one while its frame was being written: it
        # waits for that write, so that a re-subscribe never stacks frames on a connection.
        self.successor: Subscription | None = None
        # For a successor: the subscription whose frame it waits for.
        self.wire: Subscription | None = None

    def pump(self) -> None:
        """Send what lies past the cursor, if the previous frame is written and credit allows."""
        if self.closed or self.busy_since is not None or self.credit == 0:
            return
        stream = self.stream
        if self.epoch != stream.epoch:  # the stream started over (Stream.restart)
            self.epoch = stream.epoch
            self.cursor = stream.window()[0]
            self.session.send(P.Reset(stream.name, stream.epoch, self.cursor, "restart"))
        start, end = stream.window()
        if self.cursor < start:
            self.session.send(P.Reset(stream.name, stream.epoch, start, "gap"))
            self.cursor = start
        if self.cursor >= end:
            return
        if self.columns is not None and not self._columns_exist():
            return
        session = self.session
        try:
            frame, first, stop = self.hub_of().frame_for(self, end)
        except Exception:
            # The door (check_cells) should make this impossible; if it happens anyway, this
            # viewer hears of it and moves on, and the stream and its other viewers carry on.
            log.exception("could not encode rows %d..%d of %r", self.cursor, end, stream.name)
            session.send(
                P.Error(
                    "internal",
                    f"rows {self.cursor} to {end - 1} of stream {stream.name!r} could not be "
                    "encoded and are skipped; the server's log says why",
                )
            )
            self.cursor = end
            return
        if not session.room_for(len(frame)):
            session.waiting.add(self)  # pumped again as the connection drains
            return
        if first > self.cursor:
            # Rows aged out between window() and read(): say so rather than skip silently.
            session.send(P.Reset(stream.name, stream.epoch, first, "gap"))
        self.cursor = stop
        stream.room_made()
        if self.credit is not None:
            self.credit -= 1
        self.busy_since = self.hub_of().clock()
        done = session.send_frame(frame)
        if done is None:
            self.busy_since = None
            return
        done.add_done_callback(self._written)  # type: ignore[attr-defined]

    def _columns_exist(self) -> bool:
        """False (and the subscription ended with an error) when ``columns`` names a column
        the stream does not have: possible when it was subscribed before the stream had a
        schema. Reading it would raise inside the fan-out and starve the other subscribers."""
        schema = self.stream.schema
        unknown = [c for c in self.columns or () if c not in schema]
        if not unknown:
            return True
        session, name = self.session, self.stream.name
        self.hub_of().drop(self)
        if session.subscriptions.get(name) is self:
            del session.subscriptions[name]
        session.send(
            P.Error(
                "bad_message",
                f"stream {name!r} has no column {unknown[0]!r}; its columns are "
                f"{', '.join(schema)}. The subscription is ended: subscribe again with columns "
                "from that list.",
            )
        )
        return False

    def hub_of(self) -> Hub:
        assert self.hub is not None, "a subscription made by Hub.subscribe"
        return self.hub

    def _written(self, fut: Any) -> None:
        hub = self.hub_of()
        hub.loop_seen = hub.clock()
        self.busy_since = None
        hub.turn_given(self.stream.name)
        if fut.cancelled() or fut.exception() is not None:
            self.closed = True
            return
        successor, self.successor = self.successor, None
        if successor is not None and successor.wire is self:
            successor.wire = None
            successor.busy_since = None
            successor.pump()
        self.pump()


class Hub:
    """Streams by name, and the subscriptions that read them. Lives on one event loop."""

    version = __version__

    def __init__(
        self,
        *,
        history: int = DEFAULT_HISTORY,
        max_age: float | None = None,
        limits: Limits | None = None,
        server: Any = None,
        clock: Callable[[], float] = time.monotonic,
        backplane: Backplane | None = None,
    ) -> None:
        #: The hub's and its sessions' only clock (seconds, monotonic); tests inject one.
        self.clock = clock
        self.limits = limits = limits or Limits()
        self.max_streams = limits.max_streams
        self.history = history
        self.max_age = max_age
        self.write_timeout = limits.write_timeout
        self.server = server
        self.streams: dict[str, Stream] = {}
        self.subscribers: dict[str, set[Subscription]] = {}
        self.sessions: set[Viewer] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._pending: dict[str, float] = {}  # stream name -> when its wake was scheduled
        self._pending_lock = threading.Lock()
        self._pending_done = threading.Condition(self._pending_lock)
        #: Producer threads waiting in `_appended` for a wake (see `_wake`).
        self._yielding = 0
        self.loop_seen = 0.0  # when the loop last ran fan-out code (a wake or a write done)
        self._cache: OrderedDict[tuple[Any, ...], tuple[str | bytes, int, int]] = OrderedDict()
        self._cache_bytes = 0
        # Stream name -> the future a producer on the loop awaits: the next write done.
        self._turns: dict[str, asyncio.Future[None]] = {}
        #: The longest a producer on the loop waits for its turn (seconds).
        self.turn_max = TURN_MAX
        self._lock = threading.Lock()
        self._sweeper: asyncio.TimerHandle | None = None
        self._decoder: concurrent.futures.ThreadPoolExecutor | None = None
        self.on_stream_created: list[Callable[[Stream], None]] = []
        #: Where rows are numbered and controls go: this process, or a shared engine.
        self.backplane: Backplane = backplane if backplane is not None else LocalBackplane()

    # ------------------------------------------------------------------ lifecycle

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the hub to the loop it runs on (called by the server when it starts)."""
        self.loop = loop
        self._loop_thread = threading.get_ident()
        with self._pending_lock:
            self._pending.clear()  # wakes scheduled on a loop that has since stopped
        self._sweeper = loop.call_later(1.0, self._sweep)

    def start_producers(self) -> None:
        """The loop runs: start the async producers that waited for it."""
        for stream in list(self.streams.values()):
            stream.loop_started()

    def stop_producers(self) -> None:
        """Stop every stream's producer (the server is stopping)."""
        for stream in list(self.streams.values()):
            stream.stop_producer()

    def detach(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._decoder is not None:
            self._decoder.shutdown(wait=False, cancel_futures=True)
            self._decoder = None
        self.loop = None

    def decoder(self) -> concurrent.futures.Executor:
        """The worker threads that decode large frames off the loop (two: decoding holds
        the interpreter, so more would only queue behind it)."""
        if self._decoder is None:
            self._decoder = concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="livestream-decode"
            )
        return self._decoder

    def describe_streams(self) -> list[dict[str, Any]]:
        """What ``list`` answers: every stream's description, with its viewers."""
        return [self.describe_stream(s) for s in list(self.streams.values())]

    async def describe_streams_async(self) -> AsyncIterator[dict[str, Any]]:
        """The same, :data:`LIST_SLICE` streams per loop turn, so that describing ten
        thousand streams never holds the loop for long."""
        streams = list(self.streams.values())
        for i in range(0, len(streams), LIST_SLICE):
            if i:
                await asyncio.sleep(0)
            for stream in streams[i : i + LIST_SLICE]:
                yield self.describe_stream(stream)

    def describe_stream(self, stream: Stream) -> dict[str, Any]:
        """One stream's summary (``Stream.describe``) with its number of subscribers."""
        info = stream.describe()
        info["subscribers"] = self.subscriber_count(stream.name)
        backplane = self.backplane
        info["state"] = backplane.state_of(stream)
        info["controls"] = backplane.controls_of(stream)
        backplane.describe(info)
        return info

    # ------------------------------------------------------------------ streams

    def stream(self, name: str, **options: Any) -> Stream:
        """The stream called ``name``, created with ``options`` when it does not exist."""
        stream = self.streams.get(name)
        if stream is not None:
            return stream
        with self._lock:
            stream = self.streams.get(name)
            if stream is None:
                P.validate_stream_name(name)
                options.setdefault("history", self.history)
                options.setdefault("max_age", self.max_age)
                stream = Stream(name, host=self, **options)
                stream.max_depth = self.limits.max_depth
                stream.max_columns = self.limits.max_columns
                stream.wait_timeout = self.limits.write_timeout
                stream.slowest_cursor = lambda name=name: self.slowest_cursor(name)
                stream.on_append = self._appended
                stream.on_state = self._state_changed
                self.streams[name] = stream
                self.backplane.adopt(stream)
                for callback in self.on_stream_created:
                    callback(stream)
        return stream

    def stream_for_publish(self, name: str, *, id: P.Id = None) -> Stream:
        """The stream a publisher appends to, created when new unless the server holds
        ``max_streams`` already (a publisher must not be able to exhaust memory by names)."""
        stream = self.streams.get(name)
        if stream is None and len(self.streams) >= self.max_streams:
            raise TooLarge(
                f"the server already holds {len(self.streams)} streams, its limit; publish to "
                "an existing stream, or start the server with a higher max_streams",
                id=id,
            )
        return stream if stream is not None else self.stream(name)

    def get(self, name: str, *, id: P.Id = None) -> Stream:
        """The stream called ``name``; raises ``UnknownStream`` listing the known ones."""
        stream = self.streams.get(name)
        if stream is None:
            known = ", ".join(sorted(self.streams)[:20]) or "none yet"
            raise UnknownStream(
                f"unknown stream {name!r}; known streams: {known}. Publish to it first "
                "(publish role) or check the name.",
                id=id,
            )
        return stream

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, session: Viewer, msg: P.Subscribe) -> None:
        stream = self.get(msg.stream, id=msg.id)
        if msg.columns is not None and stream.schema:
            unknown = [c for c in msg.columns if c not in stream.schema]
            if unknown:
                raise ProtocolError(
                    f"stream {stream.name!r} has no column {unknown[0]!r}; its columns are "
                    f"{', '.join(stream.schema)}",
                    id=msg.id,
                    code="bad_message",
                )
        start, end = stream.window()
        reset: str | None = None
        if msg.since is not None:
            if msg.epoch is not None and msg.epoch != stream.epoch:
                cursor, reset = start, "restart"
            elif msg.since < start or msg.since > end:
                cursor, reset = start, "gap"
            else:
                cursor = msg.since
        elif msg.last is not None:
            cursor = max(start, end - msg.last)
        else:
            cursor = start
        old = session.subscriptions.pop(stream.name, None)
        if old is not None:
            self.drop(old)
            session.waiting.discard(old)
        sub = Subscription(session, stream, cursor, msg)
        sub.hub = self
        if old is not None and old.busy_since is not None:
            # A re-subscribe replaces, never stacks: the new cursor waits for the frame still
            # on the wire. That frame's sender keeps one successor, the newest, so a peer
            # that re-subscribes a million times builds no chain.
            sender = old.wire or old
            sub.busy_since = old.busy_since
            sub.wire = sender
            sender.successor = sub
        session.subscriptions[stream.name] = sub
        self.subscribers.setdefault(stream.name, set()).add(sub)
        session.send(
            P.Subscribed(
                stream.name,
                stream.epoch,
                stream.schema,
                self.backplane.controls_of(stream),
                self.backplane.state_of(stream),
                cursor,
                msg.id,
            )
        )
        if reset is not None:
            session.send(P.Reset(stream.name, stream.epoch, cursor, reset))
        sub.pump()

    def drop(self, sub: Subscription) -> None:
        sub.closed = True
        subs = self.subscribers.get(sub.stream.name)
        if subs is not None:
            subs.discard(sub)
        sub.stream.room_made()

    def slowest_cursor(self, name: str) -> int | None:
        """The lowest cursor among the viewers of ``name`` that read (not those that paused
        themselves with credit), or None when there are none: what a stream in
        ``overflow="wait"`` mode waits for."""
        cursors = [
            sub.cursor
            for sub in list(self.subscribers.get(name, ()))
            if not sub.closed and sub.credit != 0
        ]
        return min(cursors) if cursors else None

    def subscriber_count(self, name: str) -> int:
        return len(self.subscribers.get(name, ()))

    # ------------------------------------------------------------------ fair turns

    def lagging(self, stream: Stream) -> bool:
        """Whether a viewer of ``stream`` that is moving lags by more than one chunk (it
        has a frame in flight, started less than :data:`TURN_STALLED` ago, and more rows
        wait behind it than one frame carries)."""
        subs = self.subscribers.get(stream.name)
        if not subs:
            return False
        now = behind = -1.0
        for sub in subs:  # no await in here: the set cannot change meanwhile
            since = sub.busy_since
            if since is None or sub.closed or sub.credit == 0:
                continue
            if behind < 0:
                now = self.clock()
                behind = stream.end - max(1, CHUNK_BYTES // stream.row_bytes)
            if now - since < TURN_STALLED and sub.cursor < behind:
                return True
        return False

    def turn(self, stream: Stream) -> Awaitable[Any] | None:
        """The fair turn of a producer on the loop, taken after each of its steps: None
        (go on at once), or something to await first.

        A producer on the loop runs once per loop iteration. While the viewers' sockets
        are full, an iteration has nothing else to do, so the producer's turns come faster
        and faster, it outruns the viewers and takes the CPU their clients need, and they
        fall out of the history (the bistability of issue 14). So while a viewer that is
        moving lags by more than one frame, the producer waits for the next frame of this
        stream to be written (at most :data:`TURN_MAX`): writes and the producer take
        turns. A stalled viewer (its frame in flight for :data:`TURN_STALLED`) or a paused
        one paces nobody, and a producer thread never waits here.
        """
        if self.loop is None or not self.lagging(stream):
            return None
        fut = self._turns.get(stream.name)
        if fut is None or fut.done():
            fut = self._turns[stream.name] = self.loop.create_future()
        return asyncio.wait((fut,), timeout=self.turn_max)

    def turn_given(self, name: str) -> None:
        """A frame of stream ``name`` was written: a producer waiting for its turn goes on."""
        fut = self._turns.pop(name, None) if self._turns else None
        if fut is not None and not fut.done():
            fut.set_result(None)

    # ------------------------------------------------------------------ fan-out

    def frame_for(self, sub: Subscription, end: int) -> tuple[str | bytes, int, int]:
        """The encoded frame of rows from ``sub.cursor`` up to ``end``, cut at the next chunk
        boundary: ``(frame, first row, row after the last)``.

        Rows are grouped in fixed chunks of about :data:`CHUNK_BYTES` by offset, and a frame
        never crosses a chunk boundary. A subscriber that keeps up gets everything since its
        cursor in one frame (merging); one that is behind walks the chunks, and subscribers
        walking the same chunks get the same frame object, encoded once. Rows never change
        once appended (a new stream by the same name has a new epoch), so an encoded frame
        stays valid: the cache is bounded by size (:data:`CACHE_BYTES`), not cleared.
        """
        stream = sub.stream
        cursor = sub.cursor
        chunk = max(1, CHUNK_BYTES // stream.row_bytes)
        stop = min(end, (cursor // chunk + 1) * chunk)
        key = (stream.name, stream.epoch, cursor, stop, sub.columns, sub.format)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        binary = sub.format == "binary"
        # The frame is encoded straight from the history's memory (one copy, into the
        # frame), then checked: rows a producer thread overwrote meanwhile are read again.
        batch = stream.read_rows(cursor, stop, sub.columns, copy=False)
        first = cursor if batch.offset is None else batch.offset
        frame = P.encode_server(P.Data(stream.name, first, batch), binary=binary)
        if not stream.intact(first):
            batch = stream.read_rows(cursor, stop, sub.columns, copy=True)
            first = cursor if batch.offset is None else batch.offset
            frame = P.encode_server(P.Data(stream.name, first, batch), binary=binary)
        result = (frame, first, first + batch.rows)
        if first == cursor and batch.rows == stop - cursor:  # a partial read is not reusable
            cache[key] = result
            self._cache_bytes += len(frame)
            while self._cache_bytes > CACHE_BYTES and len(cache) > 1:
                _, (old, _, _) = cache.popitem(last=False)
                self._cache_bytes -= len(old)
        return result

    def _appended(self, stream: Stream) -> None:
        """Called by ``Stream.append`` from any thread: schedule one wake per stream.

        A producer thread that keeps the GIL busy can starve the server's loop: the loop
        gets the GIL only every switch interval (5 ms), gives it up at its next socket
        write, and waits again, while viewers fall out of the history. So when a wake has
        waited longer than :data:`STARVED_AFTER` and the loop has run no fan-out code in
        that time either (a loop busy writing to many viewers is not starved), the
        appending thread waits (at most :data:`YIELD_MAX`) until the loop has run it.
        This waits for the server's loop to take the rows, never for a viewer: busy
        subscribers are skipped by the wake, and a loop that stays away costs the producer
        at most ``YIELD_MAX``.
        """
        loop = self.loop
        if loop is None:
            return
        name = stream.name
        with self._pending_lock:
            since = self._pending.get(name)
            if since is None:
                self._pending[name] = self.clock()
        if since is None:
            if threading.get_ident() == self._loop_thread:
                loop.call_soon(self._wake, stream)
            else:
                try:
                    loop.call_soon_threadsafe(self._wake, stream)
                except RuntimeError:  # loop closed while a producer thread was appending
                    with self._pending_lock:
                        self._pending.pop(name, None)
            return
        if (
            self.clock() - max(since, self.loop_seen) > STARVED_AFTER
            and threading.get_ident() != self._loop_thread
        ):
            with self._pending_done:
                self._yielding += 1
                try:
                    self._pending_done.wait_for(lambda: name not in self._pending, YIELD_MAX)
                finally:
                    self._yielding -= 1

    def wake_pending(self, name: str) -> bool:
        """Whether a wake of stream ``name`` is scheduled and has not run yet."""
        with self._pending_lock:
            return name in self._pending

    def _wake(self, stream: Stream) -> None:
        self.loop_seen = self.clock()
        with self._pending_lock:
            self._pending.pop(stream.name, None)
        for sub in list(self.subscribers.get(stream.name, ())):
            try:
                sub.pump()
            except Exception:
                log.exception("fan-out to %s failed; dropping that subscription", sub.session.peer)
                self.drop(sub)
        # A producer thread waiting for this wake may go on. It counts itself in
        # `_yielding` before it checks `_pending`, which was updated above: so a count
        # of 0 read here means nobody can be waiting for this wake.
        if self._yielding:
            with self._pending_done:
                self._pending_done.notify_all()

    def _state_changed(self, stream: Stream) -> None:
        loop = self.loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._broadcast_state(stream)
        else:
            try:
                loop.call_soon_threadsafe(self._broadcast_state, stream)
            except RuntimeError:
                pass

    def _broadcast_state(self, stream: Stream) -> None:
        self.backplane.state_changed(stream)
        self.broadcast_state(stream)

    def broadcast_state(self, stream: Stream) -> None:
        """Send the stream's state (as the backplane knows it) to its viewers here."""
        frame = P.encode_server(P.StateChanged(stream.name, self.backplane.state_of(stream)))
        for sub in list(self.subscribers.get(stream.name, ())):
            sub.session.send_frame(frame)

    def _sweep(self) -> None:
        try:
            self.sweep()
        finally:
            if self.loop is not None:
                self._sweeper = self.loop.call_later(1.0, self._sweep)

    def sweep(self) -> None:
        """Close peers that have not drained a frame within ``write_timeout`` seconds (run
        every second on the loop; a test calls it after moving its clock on)."""
        now = self.clock()
        for subs in list(self.subscribers.values()):
            for sub in list(subs):
                if sub.busy_since is not None and now - sub.busy_since > self.write_timeout:
                    log.info(
                        "closing %s: a frame of %r unread for %.0f s",
                        sub.session.peer,
                        sub.stream.name,
                        now - sub.busy_since,
                    )
                    sub.session.transport.close(1008, "peer is not reading its socket")
                    # Forget the session now: the transport may wait seconds for a close
                    # handshake the stalled peer will never read.
                    sub.session.close()
