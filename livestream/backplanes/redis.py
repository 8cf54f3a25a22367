"""The Redis backplane: several livestream servers serve one set of streams.

The only module that imports ``redis`` (redis-py's asyncio client); a server started
without ``redis=`` never loads it. See docs/redis.md for the how-to and the explanation.

What lives in Redis (``P`` is the key prefix, ``livestream`` by default):

* ``P:x:NAME`` a Redis Stream, one entry per batch: field ``b`` the batch in the binary
  frame encoding, field ``e`` the epoch. An entry's ID is ``0-(first offset + 1)``, so
  offsets address entries (``XREAD`` from ``0-N`` returns the batches from offset N on)
  and trimming by offset is ``XTRIM MINID``.
* ``P:s:NAME`` a hash: ``epoch``, ``end`` (the next offset), ``schema``, and the
  ``state``, ``controls`` and ``producer`` node of the stream.
* ``P:pub:NAME`` a hash: each publisher's last ``seq`` and its first offset (a day's
  expiry after the last publish), so that a resent batch is stored once.
* ``P:streams`` the set of stream names; ``P:node:ID`` each node's heartbeat (viewers
  per stream, expires after :data:`NODE_TTL` seconds); ``P:nodes`` the node ids.
* Pub/sub: ``P:events`` (a new stream, a state change), ``P:ctl:ID`` (controls for the
  producers of node ID) and ``P:ctlr:ID`` (their answers).

One Lua script appends batches of a stream (one call per stream and round trip): it numbers their rows (``HINCRBY end``), drops a repeated
``(publisher, seq)``, adds the entry, trims to the stream's history and creates the
stream with a fresh epoch when Redis does not have it (a Redis that lost its data
gives every stream a new epoch, so every viewer is told ``reset``, never a silent gap).

Each node reads every stream once (one task, one blocking ``XREAD`` over all of them) into
its local history at the offsets Redis gave, and fans out by cursor as a single server
does. Publishes are written by one task, pipelined in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import protocol as P
from ..columns import Batch, conform
from ..errors import ConfigError, ProtocolError, SchemaMismatch
from ..hub import Hub
from ..streams import Stream

__all__ = ["RedisBackplane", "redact_url"]

log = logging.getLogger("livestream.redis")

#: Seconds a node's heartbeat lives; it is renewed every :data:`HEARTBEAT` seconds.
NODE_TTL = 5
HEARTBEAT = 1.0
#: How long a blocking XREAD waits before it is issued again (ms).
BLOCK_MS = 5000
#: Entries read per stream per XREAD.
READ_COUNT = 256
#: Batches written in one pipelined round trip, at most.
PIPELINE_MAX = 256
#: Batches of one stream stored by one script call, at most (a call holds Redis).
SCRIPT_BATCHES = 64
#: A producer's batches waiting together for the writer are stored as one entry of at
#: most this many bytes (Redis's work is per entry, and so is each reader's).
MERGE_BYTES = 512 * 1024
#: Bytes of batches a node holds for Redis, at most (the documented bound): appends
#: from producer threads wait for room, and fail after the server's write timeout.
BUFFER_BYTES = 64 * 1024 * 1024
#: A publisher's last seq is kept this many seconds after its last publish.
DEDUP_TTL = 86_400
#: Seconds a control waits for the producer's node to answer.
CONTROL_TIMEOUT = 5.0
#: Retry delays after a lost connection (seconds): doubling from the first to the last.
BACKOFF = (0.05, 2.0)

_LOST = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, TimeoutError)

APPEND = """
-- Append batches of one stream. KEYS: meta, entries, publishers, the set of streams.
-- ARGV: 1 a fresh epoch, 2 name, 3 history, 4 dedup ttl, 5 events channel, then five per
-- batch: rows, schema, batch, publisher, seq.
-- Returns the epoch, then per batch: first offset, code (0 stored, 1 a repeat, 2 another
-- schema), the schema in Redis (code 2).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local out = {}
local stored = false
local seen = false
for i = 6, #ARGV, 5 do
  local rows, schema, batch = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  local publisher, seq = ARGV[i + 3], tonumber(ARGV[i + 4])
  if not epoch then
    epoch = ARGV[1]
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'end', 0, 'schema', schema)
    redis.call('SADD', KEYS[4], ARGV[2])
    redis.call('PUBLISH', ARGV[5], cjson.encode({kind = 'new', stream = ARGV[2]}))
  end
  local known = redis.call('HGET', KEYS[1], 'schema')
  if not known or known == '' then
    redis.call('HSET', KEYS[1], 'schema', schema)
    known = schema
  end
  local code, first = 0, -1
  if known ~= schema then
    code = 2
  else
    local last = redis.call('HGET', KEYS[3], publisher)
    if last then
      local space = string.find(last, ' ')
      local lseq = tonumber(string.sub(last, 1, space - 1))
      if seq <= lseq then
        code = 1
        if seq == lseq then first = tonumber(string.sub(last, space + 1)) end
      end
    end
  end
  if code == 0 then
    first = redis.call('HINCRBY', KEYS[1], 'end', rows) - rows
    redis.call('XADD', KEYS[2], string.format('0-%d', first + 1), 'e', epoch, 'b', batch)
    redis.call('HSET', KEYS[3], publisher, string.format('%d %d', seq, first))
    stored = first + rows
    seen = true
  end
  out[#out + 1] = first
  out[#out + 1] = code
  out[#out + 1] = (code == 2) and known or ''
end
if seen then
  local cut = stored - tonumber(ARGV[3])
  if cut > 0 then
    redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('0-%d', cut + 1))
  end
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
table.insert(out, 1, epoch)
return out
"""

ENSURE = """
-- KEYS: meta, the set of streams. ARGV: a fresh epoch, name, schema, events channel
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch then return epoch end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'end', 0, 'schema', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[4], cjson.encode({kind = 'new', stream = ARGV[2]}))
return ARGV[1]
"""


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:***@host:port/db``), for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a Redis URL that does not parse>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.rstrip(".")


def _stop_if_cancelled(stopping: bool) -> None:
    """Raise CancelledError when the running task is being cancelled (or the backplane
    stops): a cancel that lands inside redis-py's own timeout comes out as TimeoutError,
    which a retry loop would otherwise take for a lost connection and retry for ever."""
    task = asyncio.current_task()
    if stopping or (task is not None and task.cancelling()):
        raise asyncio.CancelledError


def _unavailable(message: str) -> ProtocolError:
    return ProtocolError(message, code="unavailable")


def _pairs(flat: list[Any]) -> Any:
    """``[k1, v1, k2, v2, ...]`` (a raw reply's field list) as pairs."""
    return zip(flat[::2], flat[1::2], strict=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Item:
    """A batch waiting for the writer."""

    stream: Stream
    payload: bytes
    rows: int
    schema: str
    publisher: str
    seq: int
    future: asyncio.Future[tuple[int, bool]] | None = None
    #: Set for a producer's batch: counted against BUFFER_BYTES until written.
    buffered: bool = False
    #: The bytes it holds of BUFFER_BYTES (the sum of its parts' when merged).
    held: int = 0


@dataclass
class _Mirror:
    """What a node reads of one stream: the offset of the next row it needs."""

    next: int = 0
    schema: str = ""
    state: dict[str, Any] | None = None
    controls: dict[str, Any] | None = None
    producer: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def _merge(items: list[_Item]) -> list[_Item]:
    """``items`` with each run of a producer's batches of one stream (this node's own,
    which no client awaits) joined into one batch of at most :data:`MERGE_BYTES`: one
    Redis entry, one script step and one read per node instead of one per batch. It
    carries the last one's seq, so that a retry of it is stored once, as a batch's is."""
    out: list[_Item] = []
    run: list[_Item] = []

    def close_run() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            batch = Batch.concat([P.decode_batch_frame(it.payload)[1] for it in run])
            last = run[-1]
            merged = _Item(
                last.stream,
                P.encode_batch_frame({}, batch),
                batch.rows,
                last.schema,
                last.publisher,
                last.seq,
                buffered=True,
                held=sum(it.held for it in run),
            )
            out.append(merged)
        run.clear()

    # By stream, each in its order (the writer groups them so anyway).
    for it in sorted(items, key=lambda it: it.stream.name):
        if it.future is None and it.buffered:
            head = run[0] if run else None
            if head is not None and (
                head.stream is not it.stream
                or head.schema != it.schema
                or sum(len(r.payload) for r in run) + len(it.payload) > MERGE_BYTES
            ):
                close_run()
            run.append(it)
            continue
        close_run()
        out.append(it)
    close_run()
    return out


class RedisBackplane:
    """Rows numbered and stored in Redis Streams; controls and state through Redis.

    ``url`` is a ``redis://`` or ``rediss://`` URL (a password in it is never shown);
    ``prefix`` names the keys, so that several services can share one Redis.
    """

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "livestream") -> None:
        self.url = url
        self.shown = redact_url(url)
        self.prefix = prefix
        self.node = uuid.uuid4().hex[:12]
        self.hub: Hub | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connected = False
        self._client: aioredis.Redis | None = None
        self._reader: aioredis.Redis | None = None
        #: The reader's own connection, outside redis-py's pool (see _xread).
        self._read_conn: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._mirrors: dict[str, _Mirror] = {}
        self._queue: deque[_Item] = deque()
        self._queue_lock = threading.Lock()
        self._room = threading.Condition(self._queue_lock)
        self._buffered = 0
        self._queued = asyncio.Event()
        self._seq: dict[str, int] = {}
        self._wake_key = f"{prefix}:wake:{self.node}"
        self._wake_id = "$"
        self._need_sync = False
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: Stream -> (nodes, viewers on every node), from the last heartbeat.
        self._cluster: dict[str, tuple[int, int]] = {}
        self._nodes_alive: set[str] = set()
        self._last_own: dict[str, int] = {}
        self._stopping = False
        self._append_sha = ""
        self._ensure: Any = None

    def __repr__(self) -> str:
        return f"<RedisBackplane {self.shown} node={self.node}>"

    # ------------------------------------------------------------------ keys

    def _k(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"

    # ------------------------------------------------------------------ lifecycle

    def _make_client(self, timeout: float | None) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=2.0,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )

    async def start(self, hub: Hub) -> None:
        """Connect (a clear :class:`ConfigError` when Redis cannot be reached), load the
        service's streams and start the reader, writer, heartbeat and listener tasks."""
        self.hub = hub
        self.loop = asyncio.get_running_loop()
        self._queued = asyncio.Event()
        try:
            self._client = self._make_client(10.0)
            # No socket timeout on the reader: redis-py then wraps every line it reads in
            # one (about 100 µs of CPU per XREAD here); _read_once bounds the call instead.
            self._reader = self._make_client(None)
            await asyncio.wait_for(self._client.ping(), 5.0)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            await self._close_clients()
            raise ConfigError(f"cannot reach Redis at {self.shown} ({_why(exc)})") from None
        self._append_sha = await self._client.script_load(APPEND)
        self._ensure = self._client.register_script(ENSURE)
        self.connected = True
        names = await self._client.smembers(self._k("streams"))
        for raw in sorted(names):
            with contextlib.suppress(ProtocolError):  # a name no stream may have
                await self._mirror(_text(raw))
        for stream in list(hub.streams.values()):  # made before the server started
            self.adopt(stream)
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="livestream-redis-writer"),
            asyncio.create_task(self._read_loop(), name="livestream-redis-reader"),
            asyncio.create_task(self._listen_loop(), name="livestream-redis-listener"),
            asyncio.create_task(self._heartbeat_loop(), name="livestream-redis-heartbeat"),
        ]
        log.info("livestream node %s uses Redis at %s", self.node, self.shown)

    async def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(Exception):
            await self._flush(2.0)
        for task in self._tasks:
            task.cancel()
        # redis-py may swallow a cancel that lands in a blocking read; each loop checks
        # `_stopping` on its next turn, and closing the clients below ends that read.
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=0.5)
        else:
            pending = set()
        self._tasks = list(pending)
        if self._client is not None and self.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.delete(self._k("node", self.node)), 1.0)
                await asyncio.wait_for(self._client.srem(self._k("nodes"), self.node), 1.0)
        await self._close_clients()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
            for task in self._tasks:
                if not task.done():
                    log.warning("a Redis task (%s) did not stop", task.get_name())
            self._tasks = []
        with self._room:
            self._room.notify_all()

    async def _close_clients(self) -> None:
        await self._drop_read_conn()
        for client in (self._client, self._reader):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._client = self._reader = None

    async def _flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._queue and self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def health(self) -> dict[str, Any]:
        """What /healthz says of Redis (the URL without its password)."""
        return {"redis": self.shown, "connected": self.connected, "node": self.node}

    def _lost(self, exc: BaseException, what: str) -> None:
        if self.connected:
            log.warning("lost Redis at %s while %s (%s); retrying", self.shown, what, _why(exc))
        self.connected = False
        self._need_sync = True

    def _back(self) -> None:
        if not self.connected:
            log.warning("Redis at %s is back", self.shown)
        self.connected = True

    # ------------------------------------------------------------------ streams

    def adopt(self, stream: Stream) -> None:
        """A stream made in this process: its appends go to Redis."""
        stream.sink = self._sink
        if stream.name not in self._mirrors and self.loop is not None and self._client is not None:
            self._mirrors[stream.name] = _Mirror()
            self._call(self._register, stream.name)

    def _call(self, coro_fn: Any, *args: Any) -> None:
        loop = self.loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(coro_fn(*args))
        else:
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(coro_fn(*args), loop)

    async def _register(self, name: str) -> None:
        try:
            stream = await self._mirror(name, create=True)
            if stream is not None and stream.producer_of is not None:
                await self._publish_state(stream)
        except _LOST as exc:
            self._lost(exc, f"registering stream {name!r}")

    async def _mirror(self, name: str, *, create: bool = False) -> Stream | None:
        """Hold stream ``name`` here and read it from Redis (with the epoch Redis has)."""
        hub, client = self.hub, self._client
        assert hub is not None and client is not None
        meta: dict[str, Any] = {
            _text(k): v for k, v in (await client.hgetall(self._k("s", name))).items()
        }
        # A hash without an epoch holds only a state shared before the first row: the
        # stream is not there yet.
        if "epoch" not in meta and not create:
            return None
        if "epoch" not in meta:
            stream = hub.streams.get(name)
            schema = json.dumps(stream.schema) if stream is not None and stream.schema else ""
            await self._ensure(
                keys=[self._k("s", name), self._k("streams")],
                args=[self._candidate(name), name, schema, self._k("events")],
            )
            meta = {_text(k): v for k, v in (await client.hgetall(self._k("s", name))).items()}
        mirror = self._mirrors.setdefault(name, _Mirror())
        stream = hub.streams.get(name)
        if stream is None:
            P.validate_stream_name(name)
            stream = hub.stream(name)  # adopt() sets its sink
        epoch = _text(meta.get("epoch", b""))
        if epoch and epoch != stream.epoch:
            stream.restart(epoch)
            mirror.next = 0
        self._take_meta(name, meta)
        mirror.ready.set()
        self._wake_reader()
        return stream

    def _candidate(self, name: str) -> str:
        """The epoch to give stream ``name`` should Redis not have it: the one this
        process made it with, the first time (its viewers keep their epoch); a fresh one
        once Redis has known the stream (Redis lost it: everything starts over)."""
        mirror = self._mirrors.get(name)
        stream = self.hub.streams.get(name) if self.hub is not None else None
        if stream is not None and (mirror is None or not mirror.ready.is_set()):
            return stream.epoch
        return uuid.uuid4().hex[:12]

    def _take_meta(self, name: str, meta: dict[str, Any]) -> None:
        mirror = self._mirrors.get(name)
        if mirror is None:
            return
        mirror.schema = _text(meta.get("schema", b""))
        for key in ("state", "controls"):
            raw = meta.get(key)
            if raw:
                with contextlib.suppress(ValueError):
                    setattr(mirror, key, json.loads(raw))
        producer = meta.get("producer")
        mirror.producer = _text(producer) if producer else None

    async def lookup_async(self, name: str) -> Stream | None:
        if self._client is None or not self.connected:
            return None
        try:
            return await self._mirror(name)
        except _LOST as exc:
            self._lost(exc, f"looking up stream {name!r}")
            return None

    async def producer_elsewhere(self, name: str) -> str | None:
        """The id of another live node whose process runs stream ``name``'s producer."""
        client = self._client
        if client is None:
            return None
        raw = await client.hget(self._k("s", name), "producer")
        owner = _text(raw) if raw else None
        if owner is None or owner == self.node:
            return None
        return owner if await client.exists(self._k("node", owner)) else None

    def lookup(self, name: str) -> Awaitable[Stream | None] | None:
        return self.lookup_async(name)

    # ------------------------------------------------------------------ appending

    def _item(self, stream: Stream, batch: Batch, publisher: str | None, seq: int | None) -> _Item:
        if publisher is None or seq is None:
            # The node numbers its own publishes (in _enqueue, in queue order), so that
            # its retries are stored once.
            publisher, seq = "", 0
        else:
            publisher = f"client:{publisher}"
        schema = json.dumps(batch.schema)
        mirror = self._mirrors.get(stream.name)
        if mirror is not None and mirror.schema and mirror.schema != schema:
            known = json.loads(mirror.schema)
            if list(known) == list(batch.schema) or set(known) != set(batch.schema):
                raise SchemaMismatch(
                    f"stream {stream.name!r} has the schema {known} in the service; this batch "
                    f"has {batch.schema}. Send the same columns and dtypes"
                )
            batch = batch.select(list(known))
            schema = mirror.schema
        payload = P.encode_batch_frame({}, batch)
        return _Item(stream, payload, batch.rows, schema, publisher, seq)

    def publish(
        self, stream: Stream, batch: Batch, publisher: str | None, seq: int | None
    ) -> Awaitable[tuple[int, bool]]:
        """Store a batch in Redis; awaits its offset. Fails at once (``unavailable``)
        while Redis is away: nothing is stored then."""
        return self._publish(stream, batch, publisher, seq)

    async def _publish(
        self, stream: Stream, batch: Batch, publisher: str | None, seq: int | None
    ) -> tuple[int, bool]:
        if batch.rows == 0:
            return stream.end, False
        if not self.connected:
            raise _unavailable(
                f"Redis at {self.shown} is unreachable: the batch was not stored; send it "
                "again in a moment (or to another node)"
            )
        known = stream.schema
        if known:  # as Stream.append does: the same conversions as on a single server
            batch = conform(batch, known, stream.name)
        item = self._item(stream, batch, publisher, seq)
        item.future = asyncio.get_running_loop().create_future()
        self._enqueue(item)
        timeout = self.hub.write_timeout if self.hub is not None else 10.0
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except TimeoutError:
            raise _unavailable(
                f"Redis at {self.shown} did not store the batch within {timeout:.0f} s; it is "
                "stored (once) if Redis returns soon. Resend it with `publisher` and `seq` "
                "to be sure it is stored exactly once"
            ) from None

    def _enqueue(self, item: _Item) -> None:
        with self._queue_lock:
            if not item.publisher:
                item.seq = self._seq.get(item.stream.name, 0) + 1
                self._seq[item.stream.name] = item.seq
                item.publisher = f"node:{self.node}"
            self._queue.append(item)
        loop = self.loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._queued.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._queued.set)

    def _sink(self, stream: Stream, batch: Batch) -> int:
        """``Stream.append`` in this process (a producer): the batch joins the writer's
        queue and the call returns at once, with the offset the rows get unless another
        node publishes to the stream meanwhile. Within :data:`BUFFER_BYTES` a producer
        thread never waits for Redis; beyond, it waits (for the server's write timeout,
        then ``unavailable``). On the server's loop it cannot wait: ``unavailable`` then."""
        if self._stopping or self.loop is None:
            raise _unavailable("the server is stopping; the rows were not stored")
        item = self._item(stream, batch, None, None)
        item.buffered = True
        size = len(item.payload)
        on_loop = False
        with contextlib.suppress(RuntimeError):
            on_loop = asyncio.get_running_loop() is self.loop
        with self._room:
            if self._buffered + size > BUFFER_BYTES and self._buffered:
                if on_loop:
                    raise _unavailable(
                        f"{self._buffered} bytes wait for Redis at {self.shown} (at most "
                        f"{BUFFER_BYTES}): the rows were not stored"
                    )
                deadline = time.monotonic() + (self.hub.write_timeout if self.hub else 10.0)
                while self._buffered + size > BUFFER_BYTES and self._buffered:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stopping:
                        raise _unavailable(
                            f"Redis at {self.shown} has not taken the {self._buffered} bytes "
                            "waiting for it: the rows were not stored"
                        )
                    self._room.wait(min(left, 0.1))
            self._buffered += size
        item.held = size
        self._enqueue(item)
        return stream.end

    def _take(self) -> list[_Item]:
        with self._queue_lock:
            items: list[_Item] = []
            while self._queue and len(items) < PIPELINE_MAX:
                items.append(self._queue.popleft())
        return _merge(items)

    async def _write_loop(self) -> None:
        delay = BACKOFF[0]
        while True:
            _stop_if_cancelled(self._stopping)
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
            items = self._take()
            while items:
                _stop_if_cancelled(self._stopping)
                try:
                    results = await self._write(items)
                except _LOST as exc:
                    _stop_if_cancelled(self._stopping)
                    self._lost(exc, "storing batches")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF[1])
                    # Sent again with the same (publisher, seq): stored once however often.
                    continue
                delay = BACKOFF[0]
                self._back()
                self._done(items, results)
                items = []

    async def _write(self, items: list[_Item]) -> list[Any]:
        """Store ``items`` in one round trip: one script call per stream (at most
        :data:`SCRIPT_BATCHES` batches each); per item ``(epoch, first, code, schema)``
        or the exception Redis answered its call with."""
        client = self._client
        assert client is not None
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(it.stream.name, []).append(i)
        for attempt in (1, 2):
            calls, replies = await self._send(client, items, groups)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                # Redis lost its scripts (restarted): load it again; NOSCRIPT ran nothing.
                await client.script_load(APPEND)
                continue
            break
        results: list[Any] = [None] * len(items)
        for chunk, reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                for i in chunk:
                    results[i] = reply
                continue
            epoch = reply[0]
            for j, i in enumerate(chunk):
                results[i] = (epoch, *reply[1 + 3 * j : 4 + 3 * j])
        return results

    async def _send(
        self, client: aioredis.Redis, items: list[_Item], groups: dict[str, list[int]]
    ) -> tuple[list[list[int]], list[Any]]:
        """One pipelined round trip of ``EVALSHA`` calls (not redis-py's script objects,
        whose pipeline asks ``SCRIPT EXISTS`` first: a round trip more per write)."""
        calls: list[list[int]] = []
        events = self._k("events")
        async with client.pipeline(transaction=False) as pipe:
            for name, indexes in groups.items():
                for k in range(0, len(indexes), SCRIPT_BATCHES):
                    chunk = indexes[k : k + SCRIPT_BATCHES]
                    args: list[Any] = [
                        self._candidate(name),
                        name,
                        items[chunk[0]].stream.history_rows,
                        DEDUP_TTL,
                        events,
                    ]
                    for i in chunk:
                        it = items[i]
                        args += [it.rows, it.schema, it.payload, it.publisher, it.seq]
                    keys = [
                        self._k("s", name),
                        self._k("x", name),
                        self._k("pub", name),
                        self._k("streams"),
                    ]
                    pipe.evalsha(self._append_sha, len(keys), *keys, *args)
                    calls.append(chunk)
            replies = await pipe.execute(raise_on_error=False)
        return calls, replies

    def _done(self, items: list[_Item], results: list[Any]) -> None:
        freed = 0
        for it, result in zip(items, results, strict=True):
            freed += it.held
            name = it.stream.name
            if isinstance(result, Exception):
                err: ProtocolError = ProtocolError(
                    f"Redis refused a batch of stream {name!r}: {_why(result)}", code="internal"
                )
                log.warning("Redis refused a batch of stream %r: %s", name, _why(result))
                self._fail(it, err)
                continue
            epoch, first, code, schema = result
            epoch = _text(epoch)
            if code == 2:
                self._fail(
                    it,
                    SchemaMismatch(
                        f"stream {name!r} has the schema {_text(schema)} in the service; this "
                        f"batch has {it.schema}. Send the same columns and dtypes"
                    ),
                )
                continue
            if epoch != it.stream.epoch:
                self._need_sync = True  # the stream started over in Redis: read it anew
                self._wake_reader()
            elif code == 0:
                self._apply_own(it, int(first))
            if it.future is not None and not it.future.done():
                it.future.set_result((int(first), code == 1))
        if freed:
            with self._room:
                self._buffered -= freed
                self._room.notify_all()

    def _apply_own(self, it: _Item, first: int) -> None:
        """A batch this node stored goes into its own history at once when it is the next
        one the node needs, rather than coming back through the reader: this node's viewers
        get it one round trip sooner, and the reader skips it (unread, undecoded) when it
        sees it. A batch behind another node's, still unread, is left to the reader."""
        stream = it.stream
        mirror = self._mirrors.get(stream.name)
        if mirror is None or not mirror.ready.is_set() or first != mirror.next:
            return
        try:
            _, batch = P.decode_batch_frame(it.payload)
        except Exception:  # the reader meets it again, and says why
            return
        mirror.next = stream.append_at(first, batch)

    def _fail(self, it: _Item, err: ProtocolError) -> None:
        if it.future is not None:
            if not it.future.done():
                it.future.set_exception(err)
        elif it.stream.producer_of is not None:
            it.stream.set_status("error", err.message)

    # ------------------------------------------------------------------ reading

    def _wake_reader(self) -> None:
        client = self._client
        if client is None or self.loop is None:
            return

        async def wake() -> None:
            with contextlib.suppress(Exception):
                await client.xadd(self._wake_key, {"w": "1"}, maxlen=1)

        self._call(wake)

    async def _sync(self) -> None:
        """After a lost connection: every stream's epoch again (a Redis that lost its data
        gets a new one, and this node's viewers are told ``reset``)."""
        self._need_sync = False
        client = self._client
        assert client is not None
        names = {_text(n) for n in await client.smembers(self._k("streams"))}
        for name in sorted(names | set(self._mirrors)):
            with contextlib.suppress(ProtocolError):
                await self._mirror(name, create=True)

    async def _read_loop(self) -> None:
        delay = BACKOFF[0]
        while True:
            _stop_if_cancelled(self._stopping)
            try:
                if self._need_sync:
                    await self._sync()
                await self._read_once()
                delay = BACKOFF[0]
            except _LOST as exc:
                _stop_if_cancelled(self._stopping)
                self._lost(exc, "reading streams")
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])
                self._wake_id = "$"
            except asyncio.CancelledError:
                raise
            except Exception:
                _stop_if_cancelled(self._stopping)
                log.exception("the Redis reader failed; it starts again")
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])

    async def _drop_read_conn(self) -> None:
        conn, self._read_conn = self._read_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def _xread(self, keys: dict[str, str]) -> Any:
        """One blocking ``XREAD`` on the reader's own connection.

        The reader holds one connection of its own and sends the command itself, with no
        response callback and no decoding: through the client's ``xread`` each call also
        took a connection from the pool and gave it back, which with redis-py 8.2 cost
        about a third of the call's CPU (about 400 against 230 µs per 24 KB entry here),
        and this call runs once per batch on every node.
        """
        reader = self._reader
        assert reader is not None
        conn = self._read_conn
        if conn is None:
            conn = reader.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            await conn.connect()
            self._read_conn = conn
        args: list[Any] = ["XREAD", "COUNT", READ_COUNT, "BLOCK", BLOCK_MS, "STREAMS"]
        args += list(keys)
        args += list(keys.values())
        try:
            async with asyncio.timeout(BLOCK_MS / 1000 + 10.0):  # Redis gone silent: _LOST
                await conn.send_command(*args)
                return await conn.read_response(disable_decoding=True)
        except BaseException:
            # A read cut short leaves the connection mid-reply: never reuse it.
            await self._drop_read_conn()
            raise

    async def _read_once(self) -> None:
        hub = self.hub
        assert hub is not None
        keys: dict[str, str] = {self._wake_key: self._wake_id}
        names: dict[str, str] = {}
        for name, mirror in self._mirrors.items():
            if mirror.ready.is_set():
                key = self._k("x", name)
                keys[key] = f"0-{mirror.next}"
                names[key] = name
        reply: Any = await self._xread(keys)
        self._back()
        if not reply:
            return
        entries_by_key = reply.items() if isinstance(reply, dict) else reply
        for raw_key, entries in entries_by_key:
            key = _text(raw_key)
            if key == self._wake_key:
                if entries:
                    self._wake_id = _text(entries[-1][0])
                continue
            found = names.get(key)
            stream = hub.streams.get(found) if found is not None else None
            if stream is None or found is None:
                continue
            name = found
            mirror = self._mirrors[name]
            if isinstance(entries, dict):
                entries = list(entries.items())
            for raw_id, raw_fields in entries:
                first = int(_text(raw_id).split("-", 1)[1]) - 1
                pairs = raw_fields.items() if isinstance(raw_fields, dict) else _pairs(raw_fields)
                fields = {_text(k): v for k, v in pairs}
                epoch = _text(fields.get("e", b""))
                if epoch and epoch != stream.epoch:
                    if first != 0:
                        self._need_sync = True  # started over: read it from the start
                        break
                    stream.restart(epoch)
                    mirror.next = 0
                if first < mirror.next:
                    continue  # held already: a batch of this node's (_apply_own)
                try:
                    _, batch = P.decode_batch_frame(fields["b"])
                    mirror.next = stream.append_at(first, batch)
                except Exception:
                    log.exception("could not store rows from %d of stream %r", first, name)
                    mirror.next = max(mirror.next, first + 1)

    # ------------------------------------------------------------------ state and controls

    def state_of(self, stream: Stream) -> dict[str, Any]:
        mirror = self._mirrors.get(stream.name)
        if stream.producer_of is None and mirror is not None and mirror.state is not None:
            return mirror.state
        return stream.state

    def controls_of(self, stream: Stream) -> dict[str, Any]:
        mirror = self._mirrors.get(stream.name)
        if stream.producer_of is None and mirror is not None and mirror.controls is not None:
            return mirror.controls
        return stream.controls.describe()

    def state_changed(self, stream: Stream) -> None:
        """A state changed here: the stream's producer runs here, or nobody's does."""
        if self._client is None:
            return
        mirror = self._mirrors.get(stream.name)
        owner = mirror.producer if mirror is not None else None
        if stream.producer_of is None and owner is not None and owner != self.node:
            return  # the producer's node speaks for the stream
        self._call(self._publish_state, stream)

    async def _publish_state(self, stream: Stream) -> None:
        client = self._client
        if client is None:
            return
        state, controls = stream.state, stream.controls.describe()
        mapping: dict[str, str] = {"state": json.dumps(state), "controls": json.dumps(controls)}
        if stream.producer_of is not None:
            mapping["producer"] = self.node
        mirror = self._mirrors.get(stream.name)
        if mirror is not None:
            mirror.state, mirror.controls = state, controls
            if stream.producer_of is not None:
                mirror.producer = self.node
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(self._k("s", stream.name), mapping=mapping)  # type: ignore[arg-type]
                pipe.publish(
                    self._k("events"),
                    json.dumps({"kind": "state", "stream": stream.name, "node": self.node}),
                )
                await pipe.execute()
        except _LOST as exc:
            self._lost(exc, f"sharing the state of {stream.name!r}")

    def control(
        self, stream: Stream, action: str, params: dict[str, Any], by: str
    ) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        if stream.producer_of is not None or self._client is None:
            return stream.control(action, params, by=by)
        return self._route_control(stream, action, params, by)

    async def _route_control(
        self, stream: Stream, action: str, params: dict[str, Any], by: str
    ) -> dict[str, Any]:
        """A control for a stream whose producer does not run here: to the producer's
        node (asked of Redis now, not from what this node heard last), or applied here
        when no live node runs one."""
        client, name = self._client, stream.name
        if client is None or not self.connected:
            raise _unavailable(
                f"Redis at {self.shown} is unreachable: the control did not reach the "
                f"producer of {name!r}; send it again in a moment"
            )
        try:
            raw = await client.hget(self._k("s", name), "producer")
            owner = _text(raw) if raw else None
            alive = owner is not None and bool(await client.exists(self._k("node", owner)))
        except _LOST as exc:
            self._lost(exc, "routing a control")
            raise _unavailable(
                f"Redis at {self.shown} is unreachable: the control was not sent"
            ) from None
        if owner is None or owner == self.node or not alive:
            return stream.control(action, params, by=by)
        request = uuid.uuid4().hex
        request = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request] = future
        body = {
            "request": request,
            "reply": self.node,
            "stream": name,
            "action": action,
            "params": params,
            "by": by,
        }
        try:
            heard = await client.publish(self._k("ctl", owner), json.dumps(body))
            if not heard:
                raise _unavailable(
                    f"the node running the producer of {name!r} did not hear the control "
                    "(it is gone?); nothing was changed"
                )
            reply = await asyncio.wait_for(future, CONTROL_TIMEOUT)
        except TimeoutError:
            raise _unavailable(
                f"the node running the producer of {name!r} did not answer within "
                f"{CONTROL_TIMEOUT:.0f} s; the control may or may not have been applied "
                "(the stream's state says)"
            ) from None
        except _LOST as exc:
            self._lost(exc, "sending a control")
            raise _unavailable(
                f"Redis at {self.shown} is unreachable: the control was not sent"
            ) from None
        finally:
            self._replies.pop(request, None)
        if reply.get("ok"):
            state: dict[str, Any] = reply["state"]
            return state
        raise ProtocolError(str(reply.get("message")), code=str(reply.get("code", "internal")))

    async def _apply_control(self, body: dict[str, Any]) -> None:
        hub, client = self.hub, self._client
        if hub is None or client is None:
            return
        reply: dict[str, Any] = {"request": body.get("request")}
        try:
            stream = hub.get(str(body.get("stream")))
            params = body.get("params") or {}
            state = stream.control(str(body.get("action")), params, by=str(body.get("by")))
            reply.update(ok=True, state=state)
        except ProtocolError as err:
            reply.update(ok=False, code=err.code, message=err.message)
        except Exception:
            log.exception("a control from another node failed")
            reply.update(ok=False, code="internal", message="the control failed; see its log")
        with contextlib.suppress(*_LOST):
            await client.publish(self._k("ctlr", str(body.get("reply"))), json.dumps(reply))

    async def _on_event(self, channel: str, data: Any) -> None:
        try:
            body = json.loads(data)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if channel == self._k("ctl", self.node):
            await self._apply_control(body)
        elif channel == self._k("ctlr", self.node):
            future = self._replies.get(str(body.get("request")))
            if future is not None and not future.done():
                future.set_result(body)
        elif body.get("kind") == "new":
            name = str(body.get("stream"))
            if name not in self._mirrors:
                with contextlib.suppress(ProtocolError):
                    await self._mirror(name)
        elif body.get("kind") == "state" and body.get("node") != self.node:
            await self._refresh_state(str(body.get("stream")))

    async def _refresh_state(self, name: str) -> None:
        client, hub = self._client, self.hub
        if client is None or hub is None:
            return
        if name not in self._mirrors:
            with contextlib.suppress(ProtocolError):
                await self._mirror(name)
            return
        meta: Any = await client.hgetall(self._k("s", name))
        self._take_meta(name, {_text(k): v for k, v in meta.items()})
        stream = hub.streams.get(name)
        if stream is not None:
            hub.broadcast_state(stream)

    async def _listen_loop(self) -> None:
        delay = BACKOFF[0]
        channels = [self._k("events"), self._k("ctl", self.node), self._k("ctlr", self.node)]
        while True:
            _stop_if_cancelled(self._stopping)
            client = self._make_client(None)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(*channels)
                delay = BACKOFF[0]
                while True:
                    _stop_if_cancelled(self._stopping)
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    try:
                        await self._on_event(_text(msg["channel"]), msg["data"])
                    except _LOST:
                        raise
                    except Exception:
                        log.exception("handling a Redis event failed")
            except _LOST as exc:
                _stop_if_cancelled(self._stopping)
                self._lost(exc, "listening for events")
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeat_loop(self) -> None:
        while True:
            _stop_if_cancelled(self._stopping)
            try:
                await self._heartbeat()
            except _LOST as exc:
                _stop_if_cancelled(self._stopping)
                self._lost(exc, "sending the heartbeat")
            await asyncio.sleep(HEARTBEAT)

    async def _heartbeat(self) -> None:
        client, hub = self._client, self.hub
        assert client is not None and hub is not None
        key = self._k("node", self.node)
        counts = {name: hub.subscriber_count(name) for name in hub.streams}
        mapping = {name: n for name, n in counts.items() if n}
        mapping["_alive"] = 1
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            pipe.expire(key, NODE_TTL)
            pipe.sadd(self._k("nodes"), self.node)
            pipe.smembers(self._k("nodes"))
            pipe.scard(self._k("streams"))
            *_, members, known = await pipe.execute()
        ready = sum(1 for m in self._mirrors.values() if m.ready.is_set())
        if known > ready:
            # A stream this node has not heard of: its `new` event came while this node's
            # listener was (re)connecting (pub/sub is at most once). Take it up now.
            names = {_text(n) for n in await client.smembers(self._k("streams"))}
            for name in sorted(names - set(self._mirrors)):
                with contextlib.suppress(ProtocolError):
                    await self._mirror(name)
        nodes = sorted(_text(m) for m in members)
        async with client.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hgetall(self._k("node", node))
            replies = await pipe.execute()
        cluster: dict[str, int] = {}
        alive = set()
        for node, reply in zip(nodes, replies, strict=True):
            if not reply:
                await client.srem(self._k("nodes"), node)
                continue
            alive.add(node)
            for raw, value in reply.items():
                name = _text(raw)
                if name != "_alive":
                    cluster[name] = cluster.get(name, 0) + int(value)
        self._nodes_alive = alive
        self._last_own = {name: n for name, n in counts.items() if n}
        self._cluster = {name: (len(alive), n) for name, n in cluster.items()}
        self._back()

    def describe(self, info: dict[str, Any]) -> None:
        """Viewers summed over the live nodes (local ones counted now, the others as of
        their last heartbeat), and the number of nodes serving the stream."""
        hub = self.hub
        name = info["name"]
        here = hub.subscriber_count(name) if hub is not None else 0
        nodes, everywhere = self._cluster.get(name, (len(self._nodes_alive), 0))
        # The heartbeat summed this node's count as it was then; count it as it is now.
        info["subscribers"] = everywhere - self._last_own.get(name, 0) + here
        info["nodes"] = max(nodes, 1)
