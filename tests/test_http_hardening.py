"""HTTP hardening (livestream/handlers.py and server.py): what one request or connection may cost.

Every test talks to a real server on 127.0.0.1 over raw sockets, so that it controls
exactly which bytes have been sent when the server answers: a refusal that arrives while
the client has sent only the headers proves the body was never waited for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from livestream.limits import Limits
from livestream.server import Server

TOKEN = "hardening-token-0123456789"
TIMEOUT = 5.0
ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

Factory = Callable[..., Server]


@pytest.fixture
def make_server() -> Iterator[Factory]:
    """Servers on 127.0.0.1 port 0 with :data:`TOKEN`; all stopped at teardown."""
    started: list[Server] = []

    def make(**options: Any) -> Server:
        server = Server("127.0.0.1", 0, token=TOKEN, **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
        assert not server.running


class Raw:
    """One raw HTTP/1.1 connection; every read is bounded by :data:`TIMEOUT`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: Server) -> Raw:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.port), TIMEOUT
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), TIMEOUT)

    async def response(self) -> tuple[int, dict[str, str], Any]:
        """(status, headers with lower-case names, JSON body or the raw bytes)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(size), TIMEOUT)
        if headers.get("content-type", "").startswith("application/json"):
            return status, headers, json.loads(body)
        return status, headers, body

    async def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """Whether the server closes the connection within ``timeout`` (reading what comes)."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), timeout)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert rest == b"", f"the server sent more after its answer: {rest[:200]!r}"
        return True

    def close(self) -> None:
        self.writer.close()


def head(
    server: Server,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    extra: dict[str, str] | None = None,
) -> bytes:
    """A request head (no body) for ``path``, with ``?token=`` when ``token`` is given."""
    if token is not None:
        path += ("&" if "?" in path else "?") + f"token={token}"
    fields = {"Host": f"127.0.0.1:{server.port}", **(extra or {})}
    text = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return (text + "\r\n").encode("latin-1")


async def ask(server: Server, data: bytes) -> tuple[int, dict[str, str], Any]:
    """Send ``data`` on a fresh connection and read one response."""
    raw = await Raw.open(server)
    try:
        await raw.send(data)
        return await raw.response()
    finally:
        raw.close()


def publish_body(rows: int) -> bytes:
    return json.dumps({"columns": {"x": list(range(rows)), "y": [0.5] * rows}}).encode()


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("token", "extra", "status", "code"),
    [
        (None, {}, 401, "missing_token"),
        ("wrong-token-000", {}, 403, "bad_token"),
        (TOKEN, {"Origin": "http://evil.example"}, 403, "bad_origin"),
        (TOKEN, {"Host": "evil.example"}, 403, "bad_host"),
    ],
)
async def test_a_refused_request_is_answered_from_its_headers_before_its_body(
    make_server: Factory, token: str | None, extra: dict[str, str], status: int, code: str
) -> None:
    """60 x 15 MiB bodies that were buffered before the token was checked took the server
    from 45 MB to 990 MB. Now the refusal comes while the client has sent only headers."""
    server = make_server()
    raw = await Raw.open(server)
    try:
        extra = {"Content-Length": str(15 * MiB), **extra}
        await raw.send(head(server, "POST", "/api/streams/big", token=token, extra=extra))
        got, headers, body = await raw.response()
        assert got == status, body
        assert body["error"]["code"] == code
        assert headers["connection"] == "close"
        assert await raw.closed_by_server(), "a refused connection must not wait for its body"
    finally:
        raw.close()
    assert "big" not in server.hub.streams


async def test_a_body_over_the_json_cap_is_413_from_its_content_length(
    make_server: Factory,
) -> None:
    server = make_server(limits=Limits(max_json_size=4000))
    raw = await Raw.open(server)
    try:
        await raw.send(
            head(server, "POST", "/api/streams/s", extra={"Content-Length": str(15 * MiB)})
        )
        status, headers, body = await raw.response()
        assert status == 413 and headers["connection"] == "close"
        assert body["error"]["code"] == "too_large"
        message = body["error"]["message"]
        assert f"{15 * MiB} bytes" in message and "4000 bytes" in message
        assert "--max-json-size" in message
        assert await raw.closed_by_server()
    finally:
        raw.close()


async def test_the_cap_is_the_smaller_of_max_message_size_and_max_json_size(
    make_server: Factory,
) -> None:
    server = make_server(limits=Limits(max_message_size=3000, max_json_size=4000))
    status, _, body = await ask(
        server, head(server, "POST", "/api/streams/s", extra={"Content-Length": "3001"})
    )
    assert status == 413 and "limit of 3000 bytes" in body["error"]["message"]
    # A body of exactly the cap is read and appended.
    rows = json.dumps([{"x": i} for i in range(250)]).encode()
    rows = rows[:-1] + b" " * (3000 - len(rows)) + b"]"
    assert len(rows) == 3000
    extra = {"Content-Length": "3000", "Connection": "close"}
    status, _, body = await ask(server, head(server, "POST", "/api/streams/s", extra=extra) + rows)
    assert (status, body) == (200, {"stream": "s", "offset": 0, "rows": 250})


async def test_a_chunked_body_growing_past_the_cap_is_413(make_server: Factory) -> None:
    server = make_server(limits=Limits(max_json_size=1000))
    raw = await Raw.open(server)
    try:
        extra = {"Transfer-Encoding": "chunked"}
        await raw.send(head(server, "POST", "/api/streams/s", extra=extra))
        await raw.send(b"258\r\n" + b" " * 600 + b"\r\n")  # 600 bytes: under the cap
        await raw.send(b"258\r\n" + b" " * 600)  # 1200: over it
        status, headers, body = await raw.response()
        assert status == 413 and body["error"]["code"] == "too_large"
        assert "more than 1000 bytes" in body["error"]["message"]
        assert headers["connection"] == "close"
        assert await raw.closed_by_server()
    finally:
        raw.close()
    assert "s" not in server.hub.streams


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/streams"), ("GET", "/ws"), ("POST", "/"), ("GET", "/healthz")],
)
async def test_a_route_that_reads_no_body_refuses_a_large_one_from_its_headers(
    make_server: Factory, method: str, path: str
) -> None:
    server = make_server()
    raw = await Raw.open(server)
    try:
        await raw.send(head(server, method, path, extra={"Content-Length": str(15 * MiB)}))
        status, headers, body = await raw.response()
        assert status == 413, body
        assert body["error"]["code"] == "too_large"
        assert "reads no request body" in body["error"]["message"]
        assert headers["connection"] == "close"
        assert await raw.closed_by_server()
    finally:
        raw.close()


async def test_a_large_body_is_converted_off_the_loop_and_appended(
    make_server: Factory,
) -> None:
    server = make_server()
    body = publish_body(40_000)  # ~400 KiB: decoded on a worker thread
    assert len(body) > 256 * 1024
    data = head(
        server,
        "POST",
        "/api/streams/wide",
        extra={"Content-Length": str(len(body)), "Connection": "close"},
    )
    status, _, answer = await ask(server, data + body)
    assert (status, answer) == (200, {"stream": "wide", "offset": 0, "rows": 40_000})
    assert server.hub.streams["wide"].end == 40_000


@pytest.mark.parametrize("depth", [5_000, 200_000])
async def test_deeply_nested_json_is_a_400_not_a_500(make_server: Factory, depth: int) -> None:
    """A small one parsed on the loop, a large one (over 64 KiB) on a worker thread."""
    server = make_server()
    body = b"[" * depth
    extra = {"Content-Length": str(len(body)), "Connection": "close"}
    status, _, answer = await ask(
        server, head(server, "POST", "/api/streams/deep", extra=extra) + body
    )
    assert status == 400, answer
    assert answer["error"]["code"] == "bad_message"
    assert "nested too deeply" in answer["error"]["message"]


async def test_columns_and_cells_are_counted_before_the_body_is_converted(
    make_server: Factory,
) -> None:
    """Rows naming different columns each get every column: 300 such rows would make
    90,000 cells out of a few KiB of JSON."""
    server = make_server(limits=Limits(max_cells=10_000, max_columns=500))
    rows = json.dumps([{f"c{i}": i} for i in range(300)]).encode()
    extra = {"Content-Length": str(len(rows)), "Connection": "close"}
    status, _, answer = await ask(
        server, head(server, "POST", "/api/streams/t", extra=extra) + rows
    )
    assert status == 413 and answer["error"]["code"] == "too_large"
    assert "90000 cells" in answer["error"]["message"] and "max_cells" in answer["error"]["message"]

    wide = json.dumps({"columns": {f"c{i}": [i] for i in range(600)}}).encode()
    extra = {"Content-Length": str(len(wide)), "Connection": "close"}
    status, _, answer = await ask(
        server, head(server, "POST", "/api/streams/t", extra=extra) + wide
    )
    assert status == 413 and "max_columns of 500" in answer["error"]["message"]
    assert "t" not in server.hub.streams


# --------------------------------------------------------------------------- errors


async def test_api_mistakes_answer_json_never_html_or_500(make_server: Factory) -> None:
    server = make_server()
    cases = [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/api/nope/deeper/still", 404, "not_found"),
        ("PUT", "/api/streams", 405, "method_not_allowed"),
        ("DELETE", "/api/streams/s", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("PATCH", "/api/streams/s/plot", 405, "method_not_allowed"),
    ]
    for method, path, status, code in cases:
        extra = {"Connection": "close", "Content-Length": "0"}
        got, headers, body = await ask(server, head(server, method, path, extra=extra))
        assert got == status, (method, path, body)
        assert headers["content-type"].startswith("application/json"), (method, path)
        assert body["error"]["code"] == code, (method, path, body)
        if status == 405:
            assert method in body["error"]["message"] and path in body["error"]["message"]
            assert "GET" in headers["allow"]
    # A body Tornado cannot parse (on a route that reads none) is a JSON 400 too.
    extra = {"Content-Type": "multipart/form-data", "Content-Length": "3", "Connection": "close"}
    got, _, body = await ask(server, head(server, "POST", "/api/streams", extra=extra) + b"abc")
    assert got == 400 and body["error"]["code"] == "bad_request"
    assert "Invalid body" in body["error"]["message"]


@pytest.mark.expect_errors("Uncaught exception")
async def test_no_token_reaches_a_log_line(
    make_server: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """Tornado's own error lines print the URI with its query; ours print the path."""
    caplog.set_level(logging.DEBUG)
    server = make_server()
    deep = b"[" * 100_000
    requests = [
        # Deep JSON (a RecursionError, once a 500 with the URL in the error log).
        head(server, "POST", "/api/streams/x", extra={"Content-Length": str(len(deep))}) + deep,
        # Tornado's HTTPError path: a 403 it logs itself, with the request's URI.
        head(server, "GET", "/static/..%2fserver.py"),
        head(server, "GET", "/static/..%2fserver.py", token=None)[:-2]
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode(),
        head(server, "GET", f"/nope?livestream_token={TOKEN}"),
        head(server, "PUT", "/api/streams"),
        head(server, "GET", "/api/streams/unknown"),
        head(server, "POST", "/api/streams/x", extra={"Content-Length": str(15 * MiB)}),
    ]
    for data in requests:
        status, _, _ = await ask(server, data)
        assert status >= 400
    # Tornado's summary lines name the query, redacted (so the filter did run).
    assert any("token=***" in r.getMessage() for r in caplog.records), caplog.text
    # A record Tornado logs with a traceback whose text holds the token.
    try:
        raise ValueError(f"bad request GET /x?token={TOKEN} Authorization: Bearer {TOKEN}")
    except ValueError:
        logging.getLogger("tornado.application").exception("Uncaught exception /?token=%s", TOKEN)
    for record in caplog.records:
        assert TOKEN not in record.getMessage(), record.getMessage()
        assert TOKEN not in (record.exc_text or ""), record.exc_text
    assert TOKEN not in caplog.text


# --------------------------------------------------------------------------- timeouts


async def test_headers_that_never_end_are_cut_after_header_timeout(
    make_server: Factory,
) -> None:
    server = make_server(limits=Limits(header_timeout=0.5))
    raw = await Raw.open(server)
    try:
        started = time.monotonic()
        await raw.send(head(server, "GET", "/healthz")[:-2])  # no blank line: never done
        assert await raw.closed_by_server(TIMEOUT), "slow headers were held past 5 s"
        assert 0.4 <= time.monotonic() - started < 3.0
    finally:
        raw.close()


async def test_a_body_that_never_ends_is_cut_after_body_timeout(make_server: Factory) -> None:
    server = make_server(limits=Limits(body_timeout=0.5))
    raw = await Raw.open(server)
    try:
        started = time.monotonic()
        await raw.send(
            head(server, "POST", "/api/streams/s", extra={"Content-Length": "100"}) + b"[{"
        )
        assert await raw.closed_by_server(TIMEOUT), "a slow body was held past 5 s"
        assert 0.4 <= time.monotonic() - started < 3.0
    finally:
        raw.close()
    assert "s" not in server.hub.streams


async def test_websockets_are_not_cut_by_the_header_or_body_timeouts(
    make_server: Factory,
) -> None:
    server = make_server(limits=Limits(header_timeout=0.3, body_timeout=0.3))
    async with websockets.connect(f"{server.ws_url}?token={TOKEN}", open_timeout=TIMEOUT) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert welcome["type"] == "welcome"
        # Two HTTP connections opened after the WebSocket, one stalled in its headers and
        # one in its body: once both are cut, the WebSocket has been idle for longer.
        stalled_head, stalled_body = await Raw.open(server), await Raw.open(server)
        try:
            await stalled_head.send(head(server, "GET", "/healthz")[:-2])
            await stalled_body.send(
                head(server, "POST", "/api/streams/s", extra={"Content-Length": "9"}) + b"["
            )
            assert await stalled_head.closed_by_server()
            assert await stalled_body.closed_by_server()
        finally:
            stalled_head.close()
            stalled_body.close()
        await ws.send(json.dumps({"type": "ping", "id": "p"}))
        pong = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert pong["type"] == "pong" and pong.get("id") == "p", pong


# --------------------------------------------------------------------------- descriptors

_FD_SERVER = r"""
import asyncio, logging, resource, sys

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
)
from livestream.limits import Limits
from livestream.server import Server

soft, hard = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def main() -> None:
    server = Server("127.0.0.1", 0, token=sys.argv[3], limits=Limits(header_timeout=60))
    await server.start_async()
    print(server.port, resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


def _healthz(sock: socket.socket, port: int) -> bytes:
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    answer = b""
    while b'{"ok": true}' not in answer:
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the connection; got {answer!r}"
        answer += chunk
    return answer


def test_running_out_of_descriptors_backs_off_logs_little_and_recovers() -> None:
    """Once, 137,000 tracebacks (83 MB) were logged before accepting recovered."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("LIVESTREAM_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _FD_SERVER, "40", "64", TOKEN],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    log_lines: list[str] = []

    def read_log() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log_lines.append(line)
            lines.put(line)

    reader = threading.Thread(target=read_log, name="fd-test-log", daemon=True)
    reader.start()

    def wait_for_log(pattern: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(
                    f"no log line matching {pattern!r} within {timeout} s; "
                    f"{len(log_lines)} lines, the first: {''.join(log_lines[:20])}"
                )
            if re.search(pattern, line):
                return line

    flood: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first, f"the server did not start: {log_lines}"
        port, soft_now = int(first[0]), int(first[1])
        assert soft_now == 64, "the soft open-files limit was not raised to the hard one"
        wait_for_log(r"raised the open-files limit from 40 to 64")

        keeper = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        flood.append(keeper)
        assert b"200 OK" in _healthz(keeper, port)
        # More connections than descriptors: the rest wait in the listen queue.
        for _ in range(100):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
        failing = wait_for_log(r"could not accept")
        assert "Too many open files" in failing and f"port {port}" in failing
        # While accepting fails, the connection it already has is served.
        assert b"200 OK" in _healthz(keeper, port)
        # Let accepting keep failing for a while: Tornado's handler would log on every try.
        time.sleep(1.5)
        for sock in flood[1:]:
            sock.close()
        del flood[1:]
        # Descriptors free: a new connection is accepted again (within a backoff pause).
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as fresh:
            assert b"200 OK" in _healthz(fresh, port)
        assert b"200 OK" in _healthz(keeper, port)
    finally:
        for sock in flood:
            sock.close()
        proc.terminate()
        proc.wait(TIMEOUT)
        reader.join(TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    text = "".join(log_lines)
    assert "Traceback" not in text, text[:3000]
    accept_lines = [line for line in log_lines if "accept" in line]
    assert 1 <= len(accept_lines) <= 2, accept_lines[:20]
    assert len(log_lines) < 20, text[:3000]
