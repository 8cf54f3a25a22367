"""Scenario 8, ``abuse``: what a bystander sees while an abusive client runs (issue 8).

For each attack a fresh livestream server (``benchmarks.ls_server``, in its own process,
with the fixtures the attack needs) streams a modest live stream (``rate`` rows/s in
``batch``-row appends from a producer thread). Three more processes take part:

* the **bystander** (:func:`bystander`), a client written with the ``websockets`` library
  (what most users have): it subscribes to the live stream and sends ``{"type": "ping",
  "id": n}`` every 20 ms, recording the ping -> pong latency and when each data frame came;
* the **attacker** (:func:`attacker`): one abusive client (below), which treats a refusal
  or a close as the end of its attack and records what the server answered;
* this process, which steers both and samples the server's RSS every 50 ms (psutil).

Each row: ``warm`` seconds of quiet (the RSS baseline), then the attack for ``duration``
seconds (the bystander window is that long even when the server ends the attack sooner),
then ``after`` seconds to settle (RSS after = the median of its last half second). Ping
figures are over the pings sent during the attack (one never answered counts with the
time it waited); the data gap is the longest time without a data frame from the attack's
start to the end of the settle window. ``recovered``: in the settle window (from 0.3 s
after the attack) every ping came back, their p99 under 200 ms, and data arrived. Also
recorded (in the JSON; some in the table): the CPU of the server, the attacker and the
bystander over the window, the machine's 1-minute load (the machine is shared: a row
measured under load has slower pings everywhere, the reference rows included), the
server's thread count, and what the server logged at ERROR.

Attacks (class 3: memory amplification; class 5: freezing the loop):

1. ``resubscribe``: a raw socket with a tiny receive buffer that never reads, repeating
   ``subscribe`` with ``since: 0`` to a stream holding a long history;
2. ``list_noread``: the same socket repeating ``list`` on a server holding many streams;
3. ``wide_publish``: a JSON publish of one row in ``columns`` one-row columns (~8 MB);
4. ``big_json`` / ``big_binary``: a publish of ``big_mib`` MiB, as JSON numbers and as a
   binary frame;
5. ``list_pipelined``: ``list`` over many streams, ``list_window`` requests outstanding,
   the replies read;
6. ``plot_wide``: ``GET /api/streams/<name>/plot`` (HTTP, token in ``Authorization``) on
   a stream of ``wide_columns`` numeric columns;
7. ``slow_action``: ``control`` invoking a producer's action whose callback sleeps
   ``action_sleep`` seconds.

The single-request attacks (3, 4, 6, 7) repeat their request, one at a time, each sent
when the previous one was answered, until the duration is over (at most
``max_requests``). The pipelined ``list`` then waits (at most ``grace`` seconds) for the
replies it is owed, and the bystander's window runs until they came. Two reference rows come first: raw Tornado (``benchmarks.raw_tornado``,
answering pings) and livestream with no attack. Every loop is bounded in count and time;
every socket goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.client
import itertools
import json
import math
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from . import ls_server, raw_tornado, wsclient
from .common import (
    HOST,
    STREAM,
    TOKEN,
    ServerProcess,
    child_setup,
    percentile,
    read_header,
    serve_commands,
    start_process,
)

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent

#: Rows in table order: (key, label template). ``reference`` rows have no attacker.
ATTACKS: tuple[tuple[str, str], ...] = (
    ("raw", "raw Tornado, no attack (reference)"),
    ("none", "livestream, no attack"),
    ("resubscribe", "1. re-subscribe since:0 spam, never reading ({history_rows:,}-row history)"),
    ("list_noread", "2. list spam, never reading ({streams:,} streams)"),
    ("wide_publish", "3. publish of {columns:,} one-row columns ({wide_mb:.1f} MB JSON)"),
    ("big_json", "4a. {big_mib:g} MiB JSON publish (numbers)"),
    ("big_binary", "4b. {big_mib:g} MiB binary publish"),
    ("list_pipelined", "5. list pipelined ({list_window} outstanding, {streams:,} streams)"),
    ("plot_wide", "6. GET plot spec of a {wide_columns:,}-column stream"),
    ("slow_action", "7. control: action sleeping {action_sleep:g} s"),
)
KEYS = tuple(k for k, _ in ATTACKS)

DEFAULTS: dict[str, Any] = {
    "duration": 4.0,  # seconds of attack per row
    "warm": 1.0,  # seconds before it (RSS baseline)
    "after": 1.5,  # seconds after it (recovery, RSS after)
    "rate": 200.0,  # the live stream, rows/s
    "batch": 4,  # rows per append (50 appends/s)
    "ping_ms": 20.0,
    "rss_ms": 50.0,
    "history_rows": 1_000_000,
    "streams": 10_000,
    "columns": 400_000,
    "big_mib": 15.0,
    "list_window": 32,
    "wide_columns": 2_000,
    "action_sleep": 2.0,
    "max_requests": 500,  # per single-request attack (bounds the action threads too)
    "attacks": list(KEYS),
}


def _wide_mb(columns: int) -> float:
    return len(_wide_publish_text(columns)) / 1e6


def label(key: str, cfg: dict[str, Any]) -> str:
    template = dict(ATTACKS)[key]
    fields = dict(cfg)
    if "{wide_mb" in template:
        fields["wide_mb"] = _wide_mb(cfg["columns"])
    return template.format(**fields)


# =========================================================================== payloads


def _wide_publish_text(columns: int) -> str:
    cols = ",".join(f'"c{i:06d}":[{i}.5]' for i in range(columns))
    return '{"type":"publish","stream":"wide_publish","id":"a","columns":{' + cols + "}}"


def _big_json_text(nbytes: int) -> str:
    head = '{"type":"publish","stream":"big_json","id":"a","columns":{"v":['
    block = ",".join(f"{x:.6f}" for x in np.random.default_rng(3).uniform(0, 1000, 10_000))
    parts, size = [], len(head) + 3
    while size + len(block) + 1 < nbytes:
        parts.append(block)
        size += len(block) + 1
    return head + ",".join(parts) + "]}}"


def _big_binary_frame(nbytes: int) -> bytes:
    rows = max(1, (nbytes - 512) // 8)
    header = {
        "type": "publish",
        "stream": "big_binary",
        "id": "a",
        "rows": rows,
        "columns": [{"name": "v", "dtype": "float64", "offset": 0, "nbytes": rows * 8}],
    }
    head = json.dumps(header).encode()
    pad = b"\0" * (-(4 + len(head)) % 8)
    return struct.pack("<I", len(head)) + head + pad + np.arange(rows, dtype="<f8").tobytes()


# =========================================================================== bystander


class _Bystander:
    """A ``websockets`` client on a loop of its own thread; records pings and data."""

    def __init__(self, ping_ms: float) -> None:
        self.ping_s = ping_ms / 1000.0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ws: Any = None
        self.tasks: list[Any] = []
        self._reset()

    def _reset(self) -> None:
        self.sent: dict[int, float] = {}
        self.pong: dict[int, float] = {}
        self.frames: list[tuple[float, int]] = []
        self.resets = 0
        self.discontinuities = 0
        self.next_offset: int | None = None
        self.closed: str | None = None

    def run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def connect(self, kind: str, port: int) -> dict[str, Any]:
        from websockets.asyncio.client import connect

        self._reset()
        self.ws = await connect(
            f"ws://{HOST}:{port}/ws",
            additional_headers={"Authorization": f"Bearer {TOKEN}"},
            max_size=None,
            open_timeout=20,
        )
        if kind == "livestream":
            welcome = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
            assert welcome.get("type") == "welcome", welcome
            await self.ws.send(json.dumps({"type": "subscribe", "stream": STREAM, "last": 0}))
            while True:
                msg = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
                if msg.get("type") == "subscribed":
                    break
                if msg.get("type") == "error":
                    raise RuntimeError(f"subscribe failed: {msg}")
        self.tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._ping())]
        return {"ok": True}

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        ws, frames, pong = self.ws, self.frames, self.pong
        try:
            for _ in range(100_000_000):
                msg = await ws.recv()
                t = time.monotonic()
                if isinstance(msg, bytes):
                    header, _area = read_header(msg)
                    if self.next_offset is not None and header["offset"] != self.next_offset:
                        self.discontinuities += 1
                    self.next_offset = header["offset"] + header["rows"]
                    frames.append((t, header["rows"]))
                    continue
                obj = json.loads(msg)
                kind = obj.get("type")
                if kind == "pong" and isinstance(obj.get("id"), int):
                    pong.setdefault(obj["id"], t)
                elif kind == "reset":
                    self.resets += 1
                    self.next_offset = None
        except ConnectionClosed as exc:
            self.closed = _closed_label(exc)
        except Exception as exc:
            self.closed = f"{type(exc).__name__}: {exc}"

    async def _ping(self) -> None:
        ws, step = self.ws, self.ping_s
        next_at = time.monotonic()
        for n in range(10_000_000):
            next_at += step
            now = time.monotonic()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            elif next_at < now - 1.0:
                next_at = now  # fell behind (a blocked send): go on from now
            self.sent[n] = time.monotonic()
            try:
                await ws.send(f'{{"type":"ping","id":{n}}}')
            except Exception:
                return

    async def disconnect(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 3)
        self.ws = None

    def stats(self, t0: float, t1: float, t2: float, rate: float) -> dict[str, Any]:
        """Pings sent in [t0, t1]; frames in [t0, t2]; recovery in [t1 + 0.3, t2]."""
        now = time.monotonic()
        sent, pong = dict(self.sent), dict(self.pong)
        frames = list(self.frames)
        lat, unanswered = [], 0
        for n, ts in sent.items():
            if t0 <= ts <= t1:
                if n in pong:
                    lat.append(pong[n] - ts)
                else:
                    lat.append(now - ts)
                    unanswered += 1
        lat_ms = np.array(lat) * 1000.0
        times = [t for t, _ in frames if t0 <= t <= t2]
        before = [t for t, _ in frames if t < t0]
        edges = [before[-1] if before else t0, *times, t2]
        gap = max(b - a for a, b in itertools.pairwise(edges)) if len(edges) > 1 else 0
        rows_attack = sum(r for t, r in frames if t0 <= t <= t1)
        late = [n for n, ts in sent.items() if t1 + 0.3 <= ts <= t2 - 0.2]
        late_lat = [pong[n] - sent[n] for n in late if n in pong]
        rows_after = sum(r for t, r in frames if t1 + 0.3 <= t <= t2)
        recovered = (
            bool(late)
            and len(late_lat) == len(late)
            and percentile(late_lat, 99) < 0.2
            and rows_after > 0
        )
        return {
            "pings": len(lat),
            "unanswered": unanswered,
            "ping_p50_ms": percentile(lat_ms, 50),
            "ping_p99_ms": percentile(lat_ms, 99),
            "ping_max_ms": float(lat_ms.max()) if lat_ms.size else math.nan,
            "gap_max_ms": gap * 1000.0,
            "rows_per_s": rows_attack / (t1 - t0) if t1 > t0 else math.nan,
            "rows_expected_per_s": rate,
            "resets": self.resets,
            "discontinuities": self.discontinuities,
            "recovered": recovered,
            "after_ping_p99_ms": percentile(np.array(late_lat) * 1000.0, 99),
            "closed": self.closed,
        }


def bystander(conn: Any, options: dict[str, Any]) -> None:
    """Process entry point: the bystander; commands ``connect`` {kind, port}, ``stats``
    {t0, t1, t2, rate}, ``disconnect``, ``quit``."""
    child_setup()
    b = _Bystander(options.get("ping_ms", 20.0))
    conn.send({"kind": "bystander", "port": 0, "pid": os.getpid()})

    def disconnect(msg: dict[str, Any]) -> dict[str, Any]:
        b.run(b.disconnect(), 10)
        return {"ok": True}

    try:
        serve_commands(
            conn,
            {
                "connect": lambda msg: b.run(b.connect(msg["kind"], msg["port"]), 60),
                "stats": lambda msg: b.stats(msg["t0"], msg["t1"], msg["t2"], msg["rate"]),
                "disconnect": disconnect,
            },
            limit=100_000,
        )
    finally:
        with contextlib.suppress(Exception):
            b.run(b.disconnect(), 5)
        b.loop.call_soon_threadsafe(b.loop.stop)


# =========================================================================== attacker


def _closed_label(exc: Any) -> str:
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return f"closed {rcvd.code}" + (f" {rcvd.reason!r}" if rcvd.reason else "")
    return "connection lost (no close frame)"


def _reply_label(msg: dict[str, Any]) -> str:
    if msg.get("type") == "error":
        return str(msg.get("code"))
    return str(msg.get("type"))


def _kind_of(head: bytes) -> str:
    """``type`` of a JSON message from its first bytes (``code`` for an error), without
    parsing a reply that may be megabytes long."""
    text = head.decode("utf-8", "replace")
    if '"type":"' not in text:
        return "?"
    kind = text.split('"type":"', 1)[1].split('"', 1)[0]
    if kind == "error" and '"code":"' in text:
        kind = text.split('"code":"', 1)[1].split('"', 1)[0]
    return kind


def _summary(counts: collections.Counter[str], end: str | None) -> str:
    parts = [f"{k} x{v:,}" for k, v in counts.most_common(3)]
    if end:
        parts.append(end)
    return "; ".join(parts) or "nothing"


class _NonReader:
    """A raw WebSocket over a socket with a tiny receive buffer that is never read
    during the attack: the server's replies pile up wherever it lets them."""

    def __init__(self, port: int, rcvbuf: int = 4096) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(20)
        s.connect((HOST, port))
        wsclient.handshake(s, HOST, port, "/ws", f"Authorization: Bearer {TOKEN}\r\n")
        self.sock = s
        self.pending = bytearray()  # frames received and not parsed yet

    def spam(self, text: str, deadline: float, max_msgs: int = 5_000_000) -> dict[str, Any]:
        frames = [wsclient.masked(text.encode()) for _ in range(64)]
        size = len(frames[0])
        block = b"".join(frames)
        s = self.sock
        s.setblocking(False)
        out = bytearray()
        sent_bytes, stalled, end = 0, 0.0, None
        first_stall: float | None = None
        t0 = time.monotonic()
        for _ in range(100_000_000):
            now = time.monotonic()
            if now >= deadline or sent_bytes // size >= max_msgs:
                break
            if len(out) < 65536:
                out += block
            _, writable, _ = select.select([], [s], [], min(0.05, deadline - now))
            if not writable:
                stalled += time.monotonic() - now
                if first_stall is None:
                    first_stall = now - t0
                continue
            try:
                n = s.send(out)
            except BlockingIOError:
                continue
            except OSError as exc:
                end = f"send failed after {now - t0:.1f} s: {exc.strerror or exc}"
                break
            del out[:n]
            sent_bytes += n
        return {
            "requests": sent_bytes // size,
            "stalled_s": round(stalled, 2),
            "server_stopped_reading_at_s": None if first_stall is None else round(first_stall, 2),
            "end": end,
            "t_end": time.monotonic(),
        }

    def drain(self, seconds: float, limit: int = 512 * MiB) -> dict[str, Any]:
        """Read what the server sent (bounded): counts of replies, data bytes, close code."""
        s = self.sock
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
        s.setblocking(True)
        s.settimeout(0.25)
        buf = self.pending
        counts: collections.Counter[str] = collections.Counter()
        total, data_bytes, close, eof = 0, 0, None, False
        deadline = time.monotonic() + seconds
        for _ in range(10_000_000):
            if time.monotonic() >= deadline or total >= limit or close is not None:
                break
            try:
                chunk = s.recv(1 << 20)
            except TimeoutError:
                if eof:
                    break
                continue
            except OSError as exc:
                counts[f"recv failed: {exc.strerror or exc}"] += 1
                break
            if not chunk:
                eof = True
            total += len(chunk)
            buf += chunk
            pos = 0
            while len(buf) - pos >= 2:
                b0, b1 = buf[pos], buf[pos + 1]
                n, at = b1 & 0x7F, pos + 2
                if n == 126:
                    if len(buf) - at < 2:
                        break
                    (n,) = struct.unpack_from("!H", buf, at)
                    at += 2
                elif n == 127:
                    if len(buf) - at < 8:
                        break
                    (n,) = struct.unpack_from("!Q", buf, at)
                    at += 8
                if len(buf) - at < n:
                    break
                opcode = b0 & 0x0F
                if opcode == 0x2:
                    data_bytes += n
                    counts["data"] += 1
                elif opcode == 0x1:
                    counts[_kind_of(bytes(buf[at : at + min(n, 200)]))] += 1
                elif opcode == 0x8:
                    close = struct.unpack_from("!H", buf, at)[0] if n >= 2 else 1005
                pos = at + n
                if close is not None:
                    break
            del buf[:pos]
            if eof:
                break
        with contextlib.suppress(OSError):
            s.close()
        return {
            "drained_mib": round(total / MiB, 1),
            "data_mib": round(data_bytes / MiB, 1),
            "replies": dict(counts),
            "close_code": close,
            "eof": eof,
        }


async def _ws_connect(port: int) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(
        f"ws://{HOST}:{port}/ws",
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
        max_size=None,
        compression=None,
        open_timeout=20,
        ping_interval=None,
        close_timeout=2,
    )
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 20))
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"no welcome: {welcome}")
    return ws


async def _answer(ws: Any, want_id: Any, timeout: float) -> dict[str, Any]:
    """The next message answering ``want_id`` (others skipped), within ``timeout``."""
    deadline = time.monotonic() + timeout
    for _ in range(1_000_000):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        raw = await asyncio.wait_for(ws.recv(decode=False), left)
        if raw[:1] != b"{":
            continue  # a binary data frame
        if len(raw) > 65536:  # a large reply (`streams`): look at its ends only
            ends = raw[:200].decode("utf-8", "replace") + raw[-100:].decode("utf-8", "replace")
            if f'"id":{json.dumps(want_id)}' in ends:
                return {"type": ends.split('"type":"', 1)[1].split('"', 1)[0]}
            continue
        msg = json.loads(raw)
        if msg.get("id") == want_id:
            return msg
        if msg.get("type") == "error" and "id" not in msg:
            return msg  # a request refused unread (too large to parse) gets no id back
    raise TimeoutError


class _Tally:
    """Requests sent one at a time, each when the previous one was answered, until the
    deadline or the cap of ``max_requests``: the answers by kind, how long each took, and
    what ended the run (``end``; ``None`` when the deadline did)."""

    def __init__(self, deadline: float, max_requests: int) -> None:
        self.deadline = deadline
        self.max_requests = max_requests
        self.counts: collections.Counter[str] = collections.Counter()
        self.took: list[float] = []
        self.end: str | None = None

    def starts(self) -> Iterator[float]:
        """When each request starts (``time.monotonic()``), while there is time and room
        under the cap (the caller stops at a failure, setting ``end``)."""
        for n in range(self.max_requests + 1):
            now = time.monotonic()
            if now >= self.deadline:
                return
            if n == self.max_requests:
                self.end = f"stopped at the cap of {self.max_requests:,} requests"
                return
            yield now

    def answered(self, kind: str, since: float) -> None:
        self.counts[kind] += 1
        self.took.append(time.monotonic() - since)

    def figures(self, t_end: float, outcome_more: str = "") -> dict[str, Any]:
        took = self.took
        return {
            "requests": sum(self.counts.values()),
            "replies": dict(self.counts),
            "end": self.end,
            "outcome": _summary(self.counts, self.end) + outcome_more,
            "answer_ms_p50": percentile(np.array(took) * 1000, 50),
            "answer_ms_max": float(max(took) * 1000) if took else math.nan,
            "t_end": t_end,
        }


async def _request_loop(
    port: int, payload: str | bytes, deadline: float, grace: float, max_requests: int
) -> dict[str, Any]:
    """Send ``payload`` (whose ``id`` is ``"a"``), wait for its answer, repeat."""
    from websockets.exceptions import ConnectionClosed

    ws = await _ws_connect(port)
    tally = _Tally(deadline, max_requests)
    try:
        for now in tally.starts():
            try:
                await asyncio.wait_for(ws.send(payload), deadline - now + grace)
                reply = await _answer(ws, "a", deadline - time.monotonic() + grace)
            except ConnectionClosed as exc:
                tally.end = _closed_label(exc)
                break
            except TimeoutError:
                tally.end = f"no answer within {time.monotonic() - now:.1f} s"
                break
            tally.answered(_reply_label(reply), now)
    finally:
        t_end = time.monotonic()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 3)
    return tally.figures(t_end)


async def _list_pipelined(port: int, deadline: float, window: int, grace: float) -> dict[str, Any]:
    from websockets.exceptions import ConnectionClosed

    ws = await _ws_connect(port)
    counts: collections.Counter[str] = collections.Counter()
    free = asyncio.Semaphore(window)
    sent = 0
    end: str | None = None
    reply_bytes = 0

    async def reader() -> None:
        nonlocal reply_bytes
        for _ in range(10_000_000):
            raw = await ws.recv(decode=False)
            if raw[:1] != b"{":
                continue
            kind = _kind_of(raw[:200])
            if kind not in ("state", "reset", "pong", "welcome"):
                counts[kind] += 1
                reply_bytes += len(raw)
                free.release()

    task = asyncio.ensure_future(reader())
    try:
        for n in range(10_000_000):
            left = deadline - time.monotonic()
            if left <= 0 or task.done():
                break
            try:
                await asyncio.wait_for(free.acquire(), left)
            except TimeoutError:
                break
            await ws.send(f'{{"type":"list","id":{n}}}')
            sent += 1
        # The replies still owed, bounded by the grace time.
        wait_until = time.monotonic() + grace
        while sum(counts.values()) < sent and not task.done() and time.monotonic() < wait_until:
            await asyncio.sleep(0.02)
        if sum(counts.values()) < sent and not task.done():
            end = f"{sent - sum(counts.values())} replies missing after {grace:.0f} s"
    except ConnectionClosed as exc:
        end = _closed_label(exc)
    t_end = time.monotonic()
    if task.done() and not task.cancelled():
        exc = task.exception()
        if isinstance(exc, ConnectionClosed):
            end = _closed_label(exc)
        elif exc is not None:
            end = f"{type(exc).__name__}: {exc}"
    task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 3)
    return {
        "requests": sent,
        "replies": dict(counts),
        "reply_mib": round(reply_bytes / MiB, 1),
        "end": end,
        "outcome": _summary(counts, end),
        "t_end": t_end,
    }


def _plot_loop(port: int, name: str, deadline: float, grace: float, max_requests: int) -> dict:
    tally = _Tally(deadline, max_requests)
    sizes: list[int] = []
    conn = http.client.HTTPConnection(HOST, port, timeout=deadline - time.monotonic() + grace)
    try:
        for now in tally.starts():
            try:
                conn.request(
                    "GET", f"/api/streams/{name}/plot", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                tally.end = f"{type(exc).__name__}: {exc}"
                break
            sizes.append(len(body))
            tally.answered(f"HTTP {resp.status}", now)
    finally:
        t_end = time.monotonic()
        conn.close()
    out = tally.figures(t_end, f" ({max(sizes) / 1e6:.2f} MB each)" if sizes else "")
    out["body_bytes"] = max(sizes) if sizes else 0
    return out


class _Attacker:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.kind = ""
        self.port = 0
        self.cfg: dict[str, Any] = {}
        self.payload: Any = None
        self.raw: _NonReader | None = None

    def prepare(self, kind: str, port: int, cfg: dict[str, Any]) -> dict[str, Any]:
        self.kind, self.port, self.cfg = kind, port, cfg
        self.payload, self.raw = None, None
        if kind == "resubscribe":
            self.raw = _NonReader(port)
            self.payload = json.dumps({"type": "subscribe", "stream": "history", "since": 0})
        elif kind == "list_noread":
            self.raw = _NonReader(port)
            self.payload = '{"type":"list"}'
        elif kind == "wide_publish":
            self.payload = _wide_publish_text(cfg["columns"])
        elif kind == "big_json":
            self.payload = _big_json_text(int(cfg["big_mib"] * MiB))
        elif kind == "big_binary":
            self.payload = _big_binary_frame(int(cfg["big_mib"] * MiB))
        elif kind == "slow_action":
            self.payload = json.dumps(
                {"type": "control", "stream": "slowaction", "action": "nap", "id": "a"}
            )
        size = len(self.payload) if self.payload is not None else 0
        return {"ok": True, "payload_bytes": size}

    def go(self, duration: float) -> dict[str, Any]:
        cfg, port = self.cfg, self.port
        t0 = time.monotonic()
        deadline = t0 + duration
        grace = cfg.get("grace", 8.0)
        out: dict[str, Any]
        if self.kind == "none":
            time.sleep(duration)
            out = {"requests": 0, "outcome": "-", "t_end": time.monotonic()}
        elif self.raw is not None:
            out = self.raw.spam(self.payload, deadline)
            t_end = out["t_end"]
            drained = self.raw.drain(cfg.get("drain_s", 2.0))
            out.update(drained)
            parts = [f"sent {out['requests']:,}"]
            if out["server_stopped_reading_at_s"] is not None:
                parts.append(f"server stopped reading at {out['server_stopped_reading_at_s']} s")
            counts = collections.Counter(drained["replies"])
            parts += [f"{k} x{v:,}" for k, v in counts.most_common(2)]
            if out["end"]:
                parts.append(out["end"])
            if drained["close_code"] is not None:
                parts.append(f"closed {drained['close_code']}")
            elif drained["eof"]:
                parts.append("connection closed (no close frame)")
            else:
                parts.append("still open")
            out["outcome"] = "; ".join(parts)
            out["t_end"] = t_end
        elif self.kind == "list_pipelined":
            out = self.loop.run_until_complete(
                _list_pipelined(port, deadline, cfg["list_window"], grace)
            )
        elif self.kind == "plot_wide":
            out = _plot_loop(port, "wide", deadline, grace, cfg["max_requests"])
        else:
            out = self.loop.run_until_complete(
                _request_loop(port, self.payload, deadline, grace, cfg["max_requests"])
            )
        out["t_start"] = t0
        out["t_done"] = time.monotonic()
        return out


def attacker(conn: Any) -> None:
    """Process entry point: the abusive client; commands ``prepare`` {kind, port, cfg},
    ``go`` {duration}, ``quit``."""
    child_setup()
    a = _Attacker()
    conn.send({"kind": "attacker", "port": 0, "pid": os.getpid()})
    serve_commands(
        conn,
        {
            "prepare": lambda msg: a.prepare(msg["kind"], msg["port"], msg["cfg"]),
            "go": lambda msg: a.go(msg["duration"]),
        },
        limit=100_000,
    )


# =========================================================================== the scenario


class _RssSampler:
    def __init__(self, pid: int, every: float) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self.threads: list[tuple[float, int]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(10_000_000):
            if self.stop_event.is_set():
                return
            try:
                now = time.monotonic()
                self.samples.append((now, self.proc.memory_info().rss))
                self.threads.append((now, self.proc.num_threads()))
            except psutil.Error:
                return
            self.stop_event.wait(self.every)

    def __enter__(self) -> _RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)

    def between(self, a: float, b: float, what: str = "samples") -> list[int]:
        return [r for t, r in list(getattr(self, what)) if a <= t <= b]


def _fixtures_for(key: str, cfg: dict[str, Any]) -> dict[str, Any]:
    if key == "resubscribe":
        return {
            "fixtures": {"history": {"name": "history", "rows": cfg["history_rows"]}},
        }
    if key in ("list_noread", "list_pipelined"):
        return {"fixtures": {"streams": cfg["streams"]}}
    if key == "plot_wide":
        n = cfg["wide_columns"]
        return {
            "fixtures": {"wide": {"name": "wide", "columns": n, "rows": 100}},
            "limits": {"max_columns": max(n, 1000)},
        }
    if key == "slow_action":
        return {"fixtures": {"slow_action": {"name": "slowaction", "sleep": cfg["action_sleep"]}}}
    return {}


def git_state() -> dict[str, Any]:
    """The commit the server code came from, and whether livestream/ differed from it.

    The server imports ``livestream`` as this process does: from the checkout the command
    runs in. In a tree exported with ``git archive`` (no ``.git``), a file ``COMMIT`` at its
    top names the commit (see docs/benchmarks.md, section 8)."""
    import importlib.util

    out: dict[str, Any] = {}
    spec = importlib.util.find_spec("livestream")
    where = Path(spec.origin).resolve().parent.parent if spec and spec.origin else ROOT
    out["livestream_from"] = str(where)
    with contextlib.suppress(Exception):
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--", "livestream"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.split("\n")
            out["livestream_uncommitted"] = [line[3:] for line in dirty if line.strip()]
        elif (where / "COMMIT").is_file():
            out["commit"] = (where / "COMMIT").read_text().strip()
            out["livestream_uncommitted"] = []
    return out


def _one_row(
    key: str, cfg: dict[str, Any], by: ServerProcess, at: ServerProcess, log: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {"attack": key, "label": label(key, cfg)}
    try:
        if key == "raw":
            server = start_process(raw_tornado.serve, {}, timeout=60)
        else:
            server = start_process(ls_server.serve, _fixtures_for(key, cfg), timeout=120)
    except Exception as exc:
        row["error"] = f"server did not start: {type(exc).__name__}: {exc}"
        log(f"    {row['error']}")
        return row
    row["fixtures"] = server.info.get("fixtures", {})
    try:
        if key == "raw":
            server.call("produce", batch=cfg["batch"], rate=cfg["rate"], mode="await", duration=600)
        else:
            server.call("produce", batch=cfg["batch"], rate=cfg["rate"], on="thread", duration=600)
        by.call("connect", kind="raw" if key == "raw" else "livestream", port=server.port)
        prep = at.call(
            "prepare", timeout=120, kind="none" if key == "raw" else key, port=server.port, cfg=cfg
        )
        row["payload_bytes"] = prep.get("payload_bytes", 0)
        me = psutil.Process(server.pid)
        others = {"attacker": psutil.Process(at.pid), "bystander": psutil.Process(by.pid)}
        with _RssSampler(server.pid, cfg["rss_ms"] / 1000.0) as rss:
            time.sleep(cfg["warm"])
            cpu0 = sum(me.cpu_times()[:2])
            others0 = {k: sum(p.cpu_times()[:2]) for k, p in others.items()}
            timeout = cfg["duration"] + 2 * cfg.get("grace", 8.0) + 30
            result = at.call("go", timeout=timeout, duration=cfg["duration"])
            t0 = result["t_start"]
            t1 = max(t0 + cfg["duration"], result["t_end"])
            t2 = max(time.monotonic(), t1) + cfg["after"]
            time.sleep(max(0.0, t2 - time.monotonic()))
            cpu1 = sum(me.cpu_times()[:2])
            for k, p in others.items():
                row[f"{k}_cpu_pct"] = 100.0 * (sum(p.cpu_times()[:2]) - others0[k]) / (t2 - t0)
            stats = by.call("stats", t0=t0, t1=t1, t2=t2, rate=cfg["rate"])
        if key != "raw":
            info = server.call("info", timeout=20)
            row["server_errors"] = info.get("errors_logged", 0)
            row["server_first_errors"] = info.get("first_errors", [])
        base = rss.between(t0 - cfg["warm"], t0)
        peak = rss.between(t0, t2)
        after = rss.between(t2 - 0.5, t2 + 0.1)
        threads_base = rss.between(t0 - cfg["warm"], t0, "threads")
        threads_peak = rss.between(t0, t2, "threads")
        row.update(
            {
                "outcome": result.get("outcome", "-"),
                "requests": result.get("requests", 0),
                "attack_s": round(result["t_end"] - t0, 2),
                "attacker": {
                    k: v for k, v in result.items() if k not in ("t_start", "t_end", "t_done")
                },
                "rss_base_mib": float(np.median(base)) / MiB if base else math.nan,
                "rss_peak_mib": max(peak) / MiB if peak else math.nan,
                "rss_after_mib": float(np.median(after)) / MiB if after else math.nan,
                "server_cpu_pct": 100.0 * (cpu1 - cpu0) / (t2 - t0),
                "load_1min": os.getloadavg()[0],
                "threads_base": max(threads_base) if threads_base else 0,
                "threads_peak": max(threads_peak) if threads_peak else 0,
                **stats,
            }
        )
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  {key} failed: {row['error']}")
    finally:
        with contextlib.suppress(Exception):
            by.call("disconnect", timeout=15)
        server.stop(timeout=3)
    return row


def run(log: Any = print, **options: Any) -> dict[str, Any]:
    """The whole scenario; ``options`` override :data:`DEFAULTS`."""
    cfg = {**DEFAULTS, **options}
    chosen = [k for k in KEYS if k in cfg["attacks"]]
    out: dict[str, Any] = {"config": cfg, **git_state(), "rows": []}
    by = start_process(bystander, {"ping_ms": cfg["ping_ms"]}, timeout=60)
    at = start_process(attacker, timeout=60)
    try:
        for key in chosen:
            log(f"  {label(key, cfg)}")
            t = time.monotonic()
            row = _one_row(key, cfg, by, at, log)
            row["row_s"] = round(time.monotonic() - t, 1)
            out["rows"].append(row)
            if "error" not in row:
                log(
                    f"    {row['outcome']}; ping p99 {row['ping_p99_ms']:.1f} ms, "
                    f"max {row['ping_max_ms']:.0f} ms; gap {row['gap_max_ms']:.0f} ms; "
                    f"RSS {row['rss_base_mib']:.0f}/{row['rss_peak_mib']:.0f}/"
                    f"{row['rss_after_mib']:.0f} MiB ({row['row_s']:.0f} s)"
                )
    finally:
        at.stop(timeout=5)
        by.stop(timeout=5)
    return out


HEADERS = [
    "attack",
    "outcome (what the server answered)",
    "ping p50 ms",
    "p99",
    "max",
    "unanswered",
    "data gap max ms",
    "rows/s",
    "RSS base MiB",
    "peak",
    "after",
    "recovered",
    "server CPU%",
    "load",
]


def _cells(r: dict[str, Any], fmt: Any) -> list[str]:
    if "error" in r:
        return [r["label"], "failed: " + r["error"][:100]] + [""] * (len(HEADERS) - 2)
    outcome = r["outcome"]
    if r.get("threads_peak", 0) > r.get("threads_base", 0) + 10:
        outcome += f"; server threads {r['threads_base']} -> {r['threads_peak']}"
    if r.get("server_errors"):
        first = (r.get("server_first_errors") or [""])[0]
        kind = re.search(r"\((\w+)\)$", first)
        if kind:  # "Exception in callback Subscription._written(<Task ...>) (RecursionError)"
            where = first[: kind.start()].replace("Exception in callback ", "in ").split("(")[0]
            what = f"{kind.group(1)} {where.strip()}"
        else:
            what = first
        n = r["server_errors"]
        outcome += f"; server logged {n:,} error{'s' if n > 1 else ''} ({what[:70]})"
    return [
        r["label"],
        outcome,
        fmt(r["ping_p50_ms"], 1),
        fmt(r["ping_p99_ms"], 1),
        fmt(r["ping_max_ms"], 1 if r["ping_max_ms"] < 10 else 0),
        fmt(r["unanswered"]),
        fmt(r["gap_max_ms"]),
        fmt(r["rows_per_s"]),
        fmt(r["rss_base_mib"]),
        fmt(r["rss_peak_mib"]),
        fmt(r["rss_after_mib"]),
        "yes" if r["recovered"] else "NO",
        fmt(r.get("server_cpu_pct")),
        fmt(r.get("load_1min"), 1),
    ]


def _note(results: dict[str, Any]) -> str:
    commit = results.get("commit") or "?"
    dirty = results.get("livestream_uncommitted") or []
    return f"server code: commit {commit[:12]}" + (
        f" plus uncommitted changes to {', '.join(dirty)}" if dirty else " (livestream/ clean)"
    )


def _title(cfg: dict[str, Any]) -> str:
    return (
        f"a bystander (websockets client, ping every {cfg['ping_ms']:g} ms, subscribed to a "
        f"{cfg['rate']:g} rows/s stream) while an abusive client runs {cfg['duration']:g} s"
    )


def render(results: dict[str, Any], fmt: Any, table: Any = None) -> str:
    """The text table for run.py (``fmt`` is its number formatter); the two text columns
    are left-aligned, the figures right-aligned."""
    rows = [_cells(r, fmt) for r in results["rows"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    text = {0, 1}
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i in text else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return f"8. Abuse: {_title(results['config'])}\n" + "\n".join(lines) + f"\n{_note(results)}"


def markdown(results: dict[str, Any]) -> str:
    """The same table in Markdown (for docs/benchmarks.md)."""
    from .run import _fmt

    out = [
        "| " + " | ".join(HEADERS) + " |",
        "| " + " | ".join(["---", "---"] + ["--:"] * (len(HEADERS) - 2)) + " |",
    ]
    for r in results["rows"]:
        cells = [c.replace("|", "\\|") for c in _cells(r, _fmt)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + f"\n\n{_note(results)}; {_title(results['config'])}."


#: Cells of the several-runs table shown as "median (lowest-highest)".
SPREAD = ("ping_p99_ms", "ping_max_ms", "gap_max_ms", "rss_peak_mib", "rss_after_mib")


def markdown_runs(runs: list[dict[str, Any]]) -> str:
    """Several runs of the scenario as one Markdown table: each figure the median of the
    runs, with the lowest and highest in brackets for the noisy ones (:data:`SPREAD`); the
    outcome of each run, when they differ. The brackets use a hyphen: "16.6 (10.3-335.2)"."""
    from .run import _fmt

    by: dict[str, list[dict[str, Any]]] = {}
    for results in runs:
        for r in results["rows"]:
            if "error" not in r:
                by.setdefault(r["attack"], []).append(r)

    def cell(rows: list[dict[str, Any]], key: str, digits: int = 0) -> str:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return "-"
        if key == "ping_max_ms" and min(values) < 10:
            digits = 1
        mid = _fmt(float(np.median(values)), digits)
        if key in SPREAD and len(values) > 1:
            return f"{mid} ({_fmt(min(values), digits)}-{_fmt(max(values), digits)})"
        return mid

    out = [
        "| " + " | ".join(HEADERS) + " |",
        "| " + " | ".join(["---", "---"] + ["--:"] * (len(HEADERS) - 2)) + " |",
    ]
    for key in KEYS:
        rows = by.get(key)
        if not rows:
            continue
        outcomes = [_cells(r, _fmt)[1] for r in rows]
        shapes = {re.sub(r"[0-9][0-9,.]*", "N", o) for o in outcomes}
        if len(shapes) == 1 and len(set(outcomes)) > 1:  # the same answers, other counts
            counts = " / ".join(f"{r['requests']:,}" for r in rows)
            outcomes = [f"{outcomes[0]} (requests in each run: {counts})"]
        outcomes = list(dict.fromkeys(outcomes))
        recovered = sum(bool(r["recovered"]) for r in rows)
        cells = [
            rows[0]["label"],
            " / ".join(outcomes),
            cell(rows, "ping_p50_ms", 1),
            cell(rows, "ping_p99_ms", 1),
            cell(rows, "ping_max_ms"),
            cell(rows, "unanswered"),
            cell(rows, "gap_max_ms"),
            cell(rows, "rows_per_s"),
            cell(rows, "rss_base_mib"),
            cell(rows, "rss_peak_mib"),
            cell(rows, "rss_after_mib"),
            "yes" if recovered == len(rows) else f"{recovered} of {len(rows)}",
            cell(rows, "server_cpu_pct"),
            cell(rows, "load_1min", 1),
        ]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    commits = sorted({str(r.get("commit", "?"))[:12] for r in runs})
    return "\n".join(out) + (
        f"\n\n{len(runs)} runs; server code: commit {', '.join(commits)}; "
        f"{_title(runs[0]['config'])}."
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.abuse FIGURES.json [MORE.json ...]``: the Markdown table of a
    run written with ``python -m benchmarks --scenarios abuse --json FIGURES.json``; of
    several runs, one table of their medians (with the spread of the noisy figures)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(main.__doc__, file=sys.stderr)
        return 2
    runs = [json.loads(Path(a).read_text()) for a in args]
    runs = [d.get("abuse", d) for d in runs]
    print(markdown(runs[0]) if len(runs) == 1 else markdown_runs(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
