"""What every benchmark shares: the rows, the frame reader, process plumbing and statistics.

The rows are always ``{time: float64, price: float64, volume: int64}`` (24 bytes a row), with
``time`` the append time in milliseconds since the Unix epoch (Bokeh's convention), so any
receiver on this machine can compute the latency of a row from ``time.time()``.

Servers run in their own process (:func:`start_process`) and are steered over a
``multiprocessing`` pipe by small command dicts: ``{"cmd": "produce", ...}``, ``{"cmd":
"stop"}``, ``{"cmd": "quit"}``. Every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import resource
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "HOST",
    "TOKEN",
    "Batches",
    "PacedProducer",
    "ProducerSlot",
    "ServerProcess",
    "ServerThread",
    "percentile",
    "raise_nofile",
    "read_header",
    "read_times",
    "serve_commands",
    "serve_commands_async",
    "start_process",
]

HOST = "127.0.0.1"
TOKEN = "bench-token-0123456789abcdef"
STREAM = "bench"
ROW_BYTES = 24
_U32 = struct.Struct("<I")
CTX = mp.get_context("spawn")  # no fork: the parent may hold threads (Playwright, psutil)


class Pace:
    """A producer's schedule: batches of ``batch`` rows at ``rate`` rows/s (``None``: as
    fast as it can) for ``duration`` seconds from now. Every producer of the benchmarks
    (livestream's thread and async ones, raw Tornado's) follows it the same way."""

    def __init__(self, batch: int, rate: float | None, duration: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + duration
        self.interval = batch / rate if rate else 0.0
        self.next_at = self.start

    def wait(self) -> float | None:
        """``None``: the run is over; ``0``: make the next batch now; else wait that many
        seconds and ask again. A producer that fell more than 1 s behind starts over from
        now rather than bursting to catch up."""
        now = time.monotonic()
        if now >= self.deadline:
            return None
        if self.interval:
            if now < self.next_at:
                return self.next_at - now
            self.next_at += self.interval
            if self.next_at < now - 1.0:
                self.next_at = now
        return 0.0

    def beats(self, stop: threading.Event) -> Iterator[None]:
        """For a producer on a thread: yields each time a batch is due, waiting on ``stop``
        in between, until the run is over or ``stop`` is set."""
        while not stop.is_set():
            wait = self.wait()
            if wait is None:
                return
            if wait:
                stop.wait(wait)
                continue
            yield

    async def abeats(self, stopped: Callable[[], bool]) -> AsyncIterator[None]:
        """For a producer on an asyncio loop: :meth:`beats`, sleeping on the loop in
        between, until the run is over or ``stopped()``."""
        while not stopped():
            wait = self.wait()
            if wait is None:
                return
            if wait:
                await asyncio.sleep(wait)
                continue
            yield


class PacedProducer:
    """What every producer of the benchmarks shares (livestream's thread and loop ones, raw
    Tornado's, Perspective's): its schedule's parameters, the rows it appended, when it
    started and stopped, and the figures a ``stop`` command answers from them."""

    def __init__(self, batch: int, rate: float | None, duration: float) -> None:
        self.batch = batch
        self.rate = rate
        self.duration = duration
        self.appended = 0
        self.started = 0.0
        self.stopped = 0.0

    def pace(self) -> Pace:
        """A :class:`Pace` for this producer's run, starting now (the run's start)."""
        pace = Pace(self.batch, self.rate, self.duration)
        self.started = pace.start
        return pace

    def figures(self) -> dict[str, Any]:
        """``{"appended", "elapsed"}``: rows appended, seconds from start to stop (to now
        while it runs)."""
        return {
            "appended": self.appended,
            "elapsed": (self.stopped or time.monotonic()) - self.started,
        }

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop (bounded): when it returns, :meth:`figures` are final."""
        raise NotImplementedError


class ProducerSlot:
    """The one producer a server process runs at a time, for its ``produce`` and ``stop``
    commands: :meth:`run` stops the current one and starts the next, :meth:`stop` answers
    the figures of the one that ran (zeros when none did)."""

    def __init__(self) -> None:
        self.current: PacedProducer | None = None

    def run(self, producer: PacedProducer) -> None:
        self.stop()
        producer.start()
        self.current = producer

    def stop(self) -> dict[str, Any]:
        producer, self.current = self.current, None
        if producer is None:
            return {"appended": 0, "elapsed": 0.0}
        producer.stop()
        return producer.figures()


class Batches:
    """Fast source of ``{time, price, volume}`` batches of a fixed size.

    Prices and volumes come from a few precomputed blocks (a random walk), so making a batch
    costs one ``np.full`` for the time column and two slices: the benchmark measures the
    server, not the random number generator.
    """

    def __init__(self, size: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.size = size
        blocks = 8
        n = size * blocks
        self._price = 100.0 + np.cumsum(rng.normal(0, 0.01, n))
        self._volume = rng.integers(1, 1000, n, dtype=np.int64)
        self._i = 0
        self._blocks = blocks

    def columns(self, now_ms: float | None = None) -> dict[str, np.ndarray]:
        """A dict of numpy arrays (the fastest shape ``Stream.append`` takes)."""
        k = self._i % self._blocks
        self._i += 1
        lo, hi = k * self.size, (k + 1) * self.size
        t = time.time() * 1000.0 if now_ms is None else now_ms
        return {
            "time": np.full(self.size, t),
            "price": self._price[lo:hi],
            "volume": self._volume[lo:hi],
        }

    def row(self) -> dict[str, Any]:
        """One row as a dict of Python scalars: what a tick producer returns."""
        k = self._i % len(self._price)
        self._i += 1
        return {
            "time": time.time() * 1000.0,
            "price": float(self._price[k]),
            "volume": int(self._volume[k]),
        }


# --------------------------------------------------------------------------- frames


def read_header(frame: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header of a binary data frame and where its buffer area starts."""
    (hlen,) = _U32.unpack_from(frame, 0)
    header = json.loads(frame[4 : 4 + hlen])
    return header, 4 + hlen + (-(4 + hlen) % 8)


def read_times(frame: bytes, header: dict[str, Any], area: int) -> np.ndarray:
    """The ``time`` column of a binary data frame (a view, no copy)."""
    for col in header["columns"]:
        if col["name"] == "time":
            return np.frombuffer(frame, "<f8", count=header["rows"], offset=area + col["offset"])
    raise ValueError("frame has no time column")


def percentile(values: Iterable[float] | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.percentile(arr, q)) if arr.size else math.nan


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit towards ``want`` (bounded by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- processes


class ServerProcess:
    """A server (or client) running in a child process, steered over a pipe."""

    def __init__(self, proc: Any, conn: Any, info: dict[str, Any]) -> None:
        self.proc = proc
        self.conn = conn
        self.info = info

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def port(self) -> int:
        return int(self.info["port"])

    def call(self, cmd: str, timeout: float = 60.0, **args: Any) -> Any:
        """Send a command and wait (bounded) for its answer."""
        self.conn.send({"cmd": cmd, **args})
        if not self.conn.poll(timeout):
            raise TimeoutError(
                f"{self.info.get('kind', 'child')} did not answer {cmd!r} within {timeout} s"
            )
        reply = self.conn.recv()
        if isinstance(reply, dict) and reply.get("error"):
            raise RuntimeError(f"child failed on {cmd!r}: {reply['error']}")
        return reply

    def send(self, cmd: str, **args: Any) -> None:
        self.conn.send({"cmd": cmd, **args})

    def recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{self.info.get('kind', 'child')} sent nothing within {timeout} s")
        reply = self.conn.recv()
        if isinstance(reply, dict) and reply.get("error"):
            raise RuntimeError(f"child failed: {reply['error']}")
        return reply

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the child to quit, then make sure it is gone (bounded)."""
        if self.proc.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self.conn.send({"cmd": "quit"})
            self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_process(target: Callable[..., None], *args: Any, timeout: float = 60.0) -> ServerProcess:
    """Run ``target(conn, *args)`` in a spawned process; wait for its first message (a dict
    with at least ``port`` for servers) and return a handle."""
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    child.close()
    if not parent.poll(timeout):
        proc.terminate()
        raise TimeoutError(f"{target.__name__} did not start within {timeout} s")
    info = parent.recv()
    if isinstance(info, dict) and info.get("error"):
        proc.join(5)
        raise RuntimeError(f"{target.__name__} failed to start: {info['error']}")
    return ServerProcess(proc, parent, info)


def child_setup() -> None:
    """Common start of a child process: quiet logs, more file descriptors."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    logging.getLogger("bokeh").setLevel(logging.ERROR)
    raise_nofile(16384)
    os.environ.setdefault("PYTHONHASHSEED", "0")


def error_reply(exc: BaseException) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}"}


#: A child's answer to one pipe command: what the command's handler returns is sent back.
Handler = Callable[[dict[str, Any]], Any]


def _answer(handlers: Mapping[str, Handler], msg: dict[str, Any]) -> Any:
    handler = handlers.get(msg["cmd"])
    if handler is None:
        return {"error": f"unknown command {msg['cmd']!r}"}
    try:
        return handler(msg)
    except Exception as exc:
        return error_reply(exc)


def serve_commands(conn: Any, handlers: Mapping[str, Handler], limit: int = 10_000_000) -> None:
    """A child's command loop: answer each ``{"cmd": name, ...}`` read from ``conn`` with
    what ``handlers[name](msg)`` returns, until ``quit`` or the parent's end of the pipe
    closes (at most ``limit`` commands). An unknown name, or a handler that raises, is
    answered with an error reply (see :func:`error_reply`) and the loop goes on."""
    try:
        for _ in range(limit):
            msg = conn.recv()
            if msg["cmd"] == "quit":
                return
            conn.send(_answer(handlers, msg))
    except (EOFError, KeyboardInterrupt):
        pass


async def serve_commands_async(
    conn: Any, handlers: Mapping[str, Callable[[dict[str, Any]], Awaitable[Any]]]
) -> None:
    """:func:`serve_commands` for a child whose work runs on its asyncio loop (the
    subscriber processes): the pipe is read in an executor thread, so the loop goes on
    receiving frames meanwhile, and each handler is a coroutine function."""
    loop = asyncio.get_running_loop()
    for _ in range(10_000_000):
        msg = await loop.run_in_executor(None, conn.recv)
        cmd = msg["cmd"]
        if cmd == "quit":
            return
        handler = handlers.get(cmd)
        if handler is None:
            conn.send({"error": f"unknown command {cmd!r}"})
            continue
        try:
            reply = await handler(msg)
        except Exception as exc:
            reply = error_reply(exc)
        conn.send(reply)


class ServerThread:
    """A Tornado HTTP server on a thread of its own, with its own asyncio loop (``loop``,
    for ``asyncio.run_coroutine_threadsafe``), on ``HOST`` at a free ``port``: how the
    raw Tornado, ceiling and Perspective servers run in their processes.

    ``make_app()`` is called on that loop and returns the ``tornado.web.Application``;
    ``backlog`` is the listening socket's, ``http_options`` go to ``HTTPServer``. Raises
    when the server has not started within ``timeout`` seconds (``what`` names it)."""

    def __init__(
        self,
        make_app: Callable[[], Any],
        what: str,
        *,
        backlog: int = 128,
        timeout: float = 30.0,
        **http_options: Any,
    ) -> None:
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        started = threading.Event()
        failed: list[BaseException] = []

        async def main() -> None:
            import tornado.httpserver
            import tornado.netutil

            try:
                sockets = tornado.netutil.bind_sockets(0, HOST, backlog=backlog)
                http = tornado.httpserver.HTTPServer(make_app(), **http_options)
                http.add_sockets(sockets)
            except BaseException as exc:
                failed.append(exc)
                started.set()
                return
            self.port = sockets[0].getsockname()[1]
            self._stop = asyncio.Event()
            self.loop = asyncio.get_running_loop()
            started.set()
            await self._stop.wait()
            http.stop()

        self.thread = threading.Thread(target=asyncio.run, args=(main(),), name=what, daemon=True)
        self.thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"{what} did not start within {timeout:g} s")
        if failed:
            raise failed[0]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its loop; wait (bounded) for the thread to end."""
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)
