"""Reaching the kernel's server from the notebook page: direct, through jupyter-server-proxy,
and relayed through the widget's comm.

The first tests check the parts on their own: the route a widget asks for, the admission of
a notebook page's origin (``Security.admit_page``) against a real server and real sockets,
and the kernel's end of the relay (:class:`livestream.relay.Relay`) against a real server,
with a list standing in for the comm that Jupyter provides.

The browser tests run a small notebook in a real JupyterLab (with the real
jupyter-server-proxy) in Debian's Chromium, and assert the route each widget reports:

* direct: the page at ``http://127.0.0.1:<lab>``, the normal local case;
* proxy: the page at ``http://lab.test:<lab>`` (Chromium maps the name to 127.0.0.1), an
  origin and ``Host`` the server does not admit by default, as on JupyterHub; every
  request and WebSocket from the page to 127.0.0.1 is aborted by Playwright, so the direct
  port is unreachable from the page. The plot grows, keeps growing while a cell sleeps
  (``time.sleep(6)``), and Pause reaches the server;
* relay: ``LIVESTREAM_ROUTE=relay`` set in the kernel; the page opens no WebSocket to the
  livestream server at all, the plot grows, and Pause reaches the server. While a cell
  sleeps, the plot keeps moving if (and only if) the kernel handles the widget's messages
  off its main thread, on a kernel subshell (ipykernel 7 with this JupyterLab's widget
  manager); without subshells it stands still and catches up after the cell.
* auto falling back: the page reaches neither 127.0.0.1 nor ``{base}/proxy/`` (answered 404,
  as by a Jupyter without jupyter-server-proxy); the widget tries direct, then proxy, and
  uses the relay.
* https: a second JupyterLab serves the page at ``https://lab.test:<lab>`` (its own
  certificate), as a hub does: the widget does not even try http:// (mixed content) and
  uses the proxy over wss://.

The server's state is read from its HTTP API by the test process, never through the page.
A missing Chromium, JupyterLab or jupyter-server-proxy fails these tests; none is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jupyter_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SERVER_START_TIMEOUT,
    JupyterServer,
    OutputReader,
    _isolated_env,
    fail_missing,
    http_json,
    source_length,
    stop_process,
    wait_source_length,
    wait_until,
)
from support import write_notebook
from test_jupyterlab import run_all, wait_kernel
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from conftest import TOKEN, decode_binary
from livestream.errors import ConfigError
from livestream.relay import MAX_SESSIONS, Relay
from livestream.security import Refusal, Security
from livestream.server import Server
from livestream.widgets import LivePlot

WAIT_MS = 30_000
RUN_ALL_MS = 120_000
PAGE_HOST = "lab.test"  # resolved to 127.0.0.1 by Chromium only: a non-loopback page origin
DASHBOARD = ".ls-widget-dashboard"


# =========================================================================== the parts alone


def test_route_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    server = Server(port=0, token=TOKEN).start()
    try:
        stream = server.stream("prices")
        monkeypatch.delenv("LIVESTREAM_ROUTE", raising=False)
        assert LivePlot(stream).requested_route == "auto"
        assert LivePlot(stream, route="relay").requested_route == "relay"
        monkeypatch.setenv("LIVESTREAM_ROUTE", "proxy")
        assert LivePlot(stream).requested_route == "proxy"
        assert LivePlot(stream, route="direct").requested_route == "direct"  # argument wins
        monkeypatch.setenv("LIVESTREAM_ROUTE", "carrier-pigeon")
        with pytest.raises(ConfigError, match="LIVESTREAM_ROUTE must be one of auto, direct"):
            LivePlot(stream)
        with pytest.raises(ConfigError, match="route= must be one of"):
            LivePlot(stream, route="ws")
    finally:
        server.stop()


def test_admit_page_admits_that_exact_page_only() -> None:
    sec = Security.create(token=TOKEN)
    hub_origin = "https://hub.example.org"
    with pytest.raises(Refusal):
        sec.check_host("hub.example.org")
    # A page's own origin already passes the same-origin rule; its host is what fails.
    assert sec.admit_page(hub_origin) is True
    assert sec.admit_page(hub_origin + "/") is False  # already admitted
    sec.check_origin(hub_origin)
    sec.check_host("hub.example.org")
    sec.check_host("hub.example.org:443")
    for origin in (
        "https://hub.example.org.evil.example",
        "http://hub.example.org",
        "https://hub.example.org:8443",
        "https://evil.example",
    ):
        with pytest.raises(Refusal, match="is not allowed"):
            sec.check_origin(origin, "127.0.0.1:8765")
    for host in ("evil.example", "hub.example.org.evil.example", "example.org"):
        with pytest.raises(Refusal, match="DNS rebinding"):
            sec.check_host(host)
    # The loopback defaults stay; a loopback page needs nothing.
    assert sec.admit_page("http://127.0.0.1:8888") is False
    for bad in (
        "null",
        "vscode-webview://abc123",
        "https://*.example.org",
        "https://x.org/path",
        "file://",
        "hub.example.org",
        "https://hub.example.org:*",
    ):
        with pytest.raises(ConfigError, match="cannot admit origin"):
            sec.admit_page(bad)


def test_proxied_requests_need_the_page_admitted_and_the_token() -> None:
    """What jupyter-server-proxy forwards: the page's Origin and Host, from 127.0.0.1."""
    server = Server(port=0, token=TOKEN).start()
    page = "https://hub.example.org"

    async def attempt(origin: str, host: str, query: str) -> int:
        request = HTTPRequest(f"{server.ws_url}?{query}", headers={"Origin": origin, "Host": host})
        try:
            ws = await asyncio.wait_for(websocket_connect(request), 5)
        except HTTPClientError as err:
            return err.code
        ws.close()
        return 101

    async def main() -> None:
        good = f"livestream_token={TOKEN}"
        assert await attempt(page, "hub.example.org", good) == 403  # not admitted yet
        server.security.admit_page(page)
        assert await attempt(page, "hub.example.org", good) == 101
        assert await attempt(page, "hub.example.org", f"token={TOKEN}") == 101
        assert await attempt(page, "hub.example.org", "livestream_token=wrong-token-123") == 403
        assert await attempt(page, "hub.example.org", "") == 401
        assert await attempt("https://evil.example", "hub.example.org", good) == 403
        assert await attempt(page, "evil.example", good) == 403
        # Direct connections keep the exact-match rule.
        port = server.port
        assert await attempt(f"http://127.0.0.1:{port + 1}", f"127.0.0.1:{port}", good) == 101
        assert await attempt("http://evil.example", f"127.0.0.1:{port}", good) == 403

    try:
        asyncio.run(main())
    finally:
        server.stop()


class CommStandIn:
    """What the relay sends through ``widget.send``, collected; Jupyter's comm is the real one."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict[str, Any], list[bytes]]] = []
        self.changed = threading.Condition()

    def send(self, content: dict[str, Any], buffers: Any) -> None:
        with self.changed:
            self.messages.append((dict(content), [bytes(b) for b in buffers or []]))
            self.changed.notify_all()

    def wait(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> tuple[dict[str, Any], list[bytes]]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for item in self.messages:
                    if match(item[0]):
                        self.messages.remove(item)
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching relay message in {timeout} s; got "
                        f"{[m for m, _ in self.messages]}"
                    )
                self.changed.wait(left)

    def frame(self, sid: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of relay socket ``sid``, decoded by the protocol document."""
        content, buffers = self.wait(
            lambda c: c.get("ls") == "frame" and c.get("id") == sid, timeout
        )
        if "text" in content:
            return dict(json.loads(content["text"]))
        assert len(buffers) == 1
        return decode_binary(buffers[0])


def test_relay_carries_the_protocol_through_the_comm() -> None:
    server = Server(port=0, token=TOKEN).start()
    comm = CommStandIn()
    relay = Relay(server, TOKEN, comm.send, url=server.base_url)
    try:
        server.stream("prices").append({"time": [1.0, 2.0, 3.0], "price": [10.0, 11.0, 12.0]})
        relay.handle(None, {"ls": "open", "id": "a"})
        comm.wait(lambda c: c == {"ls": "opened", "id": "a"})
        welcome = comm.frame("a")
        assert welcome["type"] == "welcome" and sorted(welcome["roles"]) == [
            "control",
            "publish",
            "view",
        ]
        subscribe = {"type": "subscribe", "stream": "prices", "id": 1, "credit": 1}
        relay.handle(None, {"ls": "frame", "id": "a", "text": json.dumps(subscribe)})
        assert comm.frame("a")["type"] == "subscribed"
        data = comm.frame("a")  # a binary frame, as the comm's one buffer
        assert data["binary"] and list(data["columns"]["price"]) == [10.0, 11.0, 12.0]
        # Credit paces the relay: no more frames until the page grants one.
        server.stream("prices").append({"time": [4.0], "price": [13.0]})
        with pytest.raises(AssertionError, match="no matching relay message"):
            comm.frame("a", timeout=0.5)
        relay.handle(
            None,
            {
                "ls": "frame",
                "id": "a",
                "text": json.dumps({"type": "credit", "stream": "prices", "frames": 1}),
            },
        )
        assert list(comm.frame("a")["columns"]["price"]) == [13.0]
        # Controls reach the stream; errors come back as protocol errors.
        control = {"type": "control", "stream": "prices", "action": "pause", "id": 2}
        relay.handle(None, {"ls": "frame", "id": "a", "text": json.dumps(control)})
        frames = [comm.frame("a"), comm.frame("a")]
        assert {f["type"] for f in frames} == {"ack", "state"}
        assert server.stream("prices").state["paused"] is True
        relay.handle(None, {"ls": "frame", "id": "a", "text": "{not json"})
        assert comm.frame("a")["code"] == "bad_message"

        # GETs of the server through the kernel: BokehJS and plot specs, nothing else.
        relay.handle(None, {"ls": "get", "id": "g1", "path": "/healthz"})
        reply, body = comm.wait(lambda c: c.get("id") == "g1")
        assert reply["status"] == 200 and json.loads(body[0]) == {"ok": True}
        relay.handle(
            None,
            {"ls": "get", "id": "g2", "path": f"/api/streams/prices/plot?y=price&token={TOKEN}"},
        )
        reply, body = comm.wait(lambda c: c.get("id") == "g2")
        assert reply["status"] == 200 and json.loads(body[0])["source_id"]
        relay.handle(None, {"ls": "get", "id": "g3", "path": "/api/streams?token=wrong-token-1"})
        assert comm.wait(lambda c: c.get("id") == "g3")[0]["status"] == 403
        relay.handle(None, {"ls": "get", "id": "g4", "path": "/static/js/bokeh.min.js"})
        reply, body = comm.wait(lambda c: c.get("id") == "g4")
        assert reply["status"] == 200 and b"Bokeh" in body[0][:2000]
        for i, path in enumerate(
            (
                "/",
                "/static/../../etc/passwd",
                "//evil.example/x",
                "@evil.example/",
                "http://evil.example/",
            )
        ):
            relay.handle(None, {"ls": "get", "id": f"b{i}", "path": path})
            assert comm.wait(lambda c, i=i: c.get("id") == f"b{i}")[0]["status"] == 400

        # Close: the session leaves the hub.
        assert len(server.hub.sessions) == 1
        relay.handle(None, {"ls": "close", "id": "a", "code": 1000, "reason": ""})
        wait_until(lambda: not server.hub.sessions, 5, "the relay session to end")
        assert server.hub.subscriber_count("prices") == 0
    finally:
        server.stop()


def test_relay_refuses_what_it_must() -> None:
    server = Server(port=0, tokens={"viewer-token-123": ["view"]}, max_message_size=1000).start()
    comm = CommStandIn()
    try:
        # A view-only token: its sessions cannot control.
        viewer = Relay(server, "viewer-token-123", comm.send, url=server.base_url)
        viewer.handle(None, {"ls": "open", "id": "v"})
        assert comm.frame("v")["roles"] == ["view"]
        control = {"type": "control", "stream": "s", "action": "pause", "id": 1}
        viewer.handle(None, {"ls": "frame", "id": "v", "text": json.dumps(control)})
        assert comm.frame("v")["code"] == "forbidden"
        # Too big: closed with 1009, as a socket would be.
        viewer.handle(None, {"ls": "frame", "id": "v", "text": " " * 2000})
        closed, _ = comm.wait(lambda c: c.get("ls") == "closed" and c.get("id") == "v")
        assert closed["code"] == 1009

        # A token the server does not know.
        stranger = Relay(server, "not-the-token-1", comm.send, url=server.base_url)
        stranger.handle(None, {"ls": "open", "id": "x"})
        closed, _ = comm.wait(lambda c: c.get("ls") == "closed" and c.get("id") == "x")
        assert closed["code"] == 1008 and "token" in closed["reason"]

        # A widget watching a server outside this kernel cannot be relayed or admitted.
        elsewhere = Relay(None, "some-token-1234", comm.send, url="http://10.0.0.5:8765")
        elsewhere.handle(None, {"ls": "open", "id": "e"})
        closed, _ = comm.wait(lambda c: c.get("ls") == "closed" and c.get("id") == "e")
        assert "only this kernel's own" in closed["reason"]
        elsewhere.handle(None, {"ls": "hello", "origin": "https://hub.example.org"})
        answer, _ = comm.wait(lambda c: c.get("ls") == "admitted")
        assert (
            answer["ok"] is False and "--allow-origin https://hub.example.org" in answer["message"]
        )

        # Admission through the comm: exact origins only.
        viewer.handle(None, {"ls": "hello", "origin": "null"})
        answer, _ = comm.wait(lambda c: c.get("ls") == "admitted")
        assert answer["ok"] is False and "cannot admit" in answer["message"]
        viewer.handle(None, {"ls": "hello", "origin": "https://hub.example.org"})
        answer, _ = comm.wait(lambda c: c.get("ls") == "admitted")
        assert answer == {
            "ls": "admitted",
            "origin": "https://hub.example.org",
            "ok": True,
            "message": "",
        }
        server.security.check_host("hub.example.org")

        # A page that went away never says so: the oldest session makes room.
        for i in range(MAX_SESSIONS + 2):
            viewer.handle(None, {"ls": "open", "id": f"m{i}"})
            comm.wait(lambda c, i=i: c == {"ls": "opened", "id": f"m{i}"})
        wait_until(
            lambda: len(server.hub.sessions) == MAX_SESSIONS, 5, f"{MAX_SESSIONS} relay sessions"
        )
        closed, _ = comm.wait(lambda c: c.get("ls") == "closed" and c.get("id") == "m0")
        assert "too many relay sockets" in closed["reason"]
    finally:
        server.stop()


# =========================================================================== in JupyterLab

NOTEBOOK_SETUP = """\
import math, os, random, time
import livestream as ls
{env}server = ls.serve()
print("LS", server.base_url, server.token)"""

NOTEBOOK_STREAM = """\
prices = ls.stream("prices", history=50_000)
last = {"price": 100.0}

@prices.producer(every=0.05, params={"volatility": ls.Float(0.02, min=0, max=0.2)})
def tick(params):
    last["price"] *= math.exp(params.volatility * 0.2 * random.gauss(0, 1))
    return {"time": time.time() * 1000, "price": last["price"]}"""

NOTEBOOK_DASHBOARD = """\
dash = ls.Dashboard(prices, y="price")
dash"""


def routes_notebook(root: Path, name: str, env: str = "") -> str:
    """The notebook of these tests (its route forced by ``LIVESTREAM_ROUTE=env`` if given)."""
    setup = NOTEBOOK_SETUP.format(env=f'os.environ["LIVESTREAM_ROUTE"] = "{env}"\n' if env else "")
    return write_notebook(root, name, [setup, NOTEBOOK_STREAM, NOTEBOOK_DASHBOARD])


@dataclass
class RoutesLab(JupyterServer):
    """A JupyterLab of these tests: maybe served over https (its own certificate)."""

    tls: ssl.SSLContext | None = None

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"{self.base_url}{path.lstrip('/')}", method=method)
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=10, context=self.tls) as response:
            body = response.read()
        return json.loads(body) if body else None


def self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """A certificate for ``hostname`` and 127.0.0.1, valid for a day, and its key."""
    if importlib.util.find_spec("cryptography") is None:
        fail_missing("the Python package 'cryptography'", "pip install -e '.[test]'")
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "lab.crt", directory / "lab.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.contextmanager
def lab_accepting(tmp: Path, hostname: str, https: bool = False) -> Iterator[RoutesLab]:
    """``jupyter lab`` on 127.0.0.1 that also answers pages at ``hostname`` (as a JupyterHub
    user's server answers at the hub's name), over https with its own certificate when
    ``https``: jupyter_support's server with those options."""
    for module, package in (
        ("jupyterlab", "jupyterlab"),
        ("jupyter_server_proxy", "jupyter-server-proxy"),
    ):
        if importlib.util.find_spec(module) is None:
            fail_missing(
                f"the Python package {package!r}",
                f"pip install -e '.[test]'  (or pip install {package})",
            )
    root = tmp / "root"
    root.mkdir()
    home = tmp / "home"
    env = _isolated_env(home, "lab")
    token = f"jt-{os.urandom(12).hex()}"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--allow-root",
        f"--ServerApp.token={token}",
        "--ServerApp.port=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--ServerApp.password=",
        f"--ServerApp.local_hostnames={json.dumps(['localhost', hostname])}",
    ]
    tls = None
    if https:
        cert, key = self_signed(tmp, hostname)
        cmd += [f"--ServerApp.certfile={cert}", f"--ServerApp.keyfile={key}"]
        tls = ssl.create_default_context(cafile=str(cert))
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = OutputReader(proc)
    server: RoutesLab | None = None
    try:
        m = output.wait_for(r"(https?)://127\.0\.0\.1:(\d+)/", SERVER_START_TIMEOUT)
        base = f"{m.group(1)}://127.0.0.1:{m.group(2)}/"
        server = RoutesLab("lab", proc, output, base, token, root, home, tls=tls)
        wait_until(lambda: server.api("api/status"), SERVER_START_TIMEOUT, "JupyterLab to answer")
        yield server
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                server.delete_kernels()
        stop_process(proc)
        output.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with lab_accepting(tmp_path_factory.mktemp("routes-lab"), PAGE_HOST) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, resolving ``lab.test`` to 127.0.0.1 (nothing else changes)."""
    if not Path(CHROMIUM).exists():
        fail_missing("Chromium at /usr/bin/chromium", "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {PAGE_HOST} 127.0.0.1"],
        )
        try:
            yield b
        finally:
            b.close()


class Page:
    """One JupyterLab page with what it did: its livestream WebSockets and blocked requests."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.sockets: list[str] = []
        self.blocked: list[str] = []
        self.requests: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))

    def block_loopback(self) -> None:
        """Make every 127.0.0.1 / localhost port unreachable from the page (as from a browser
        on another machine than the kernel), WebSockets included."""
        loopback = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/")

        def abort(route: Any) -> None:
            self.blocked.append(route.request.url)
            route.abort()

        def refuse(ws: Any) -> None:
            self.blocked.append(ws.url)
            ws.close(code=1011, reason="blocked by the test")

        self.page.route(loopback, abort)
        self.page.route_web_socket(loopback, refuse)

    def block_proxy(self) -> None:
        """Answer ``{base}/proxy/...`` as a Jupyter server without jupyter-server-proxy does:
        404 for HTTP; and no WebSocket there either."""
        proxied = re.compile(r"^(https?|wss?)://[^/]+/proxy/")

        def not_found(route: Any) -> None:
            self.blocked.append(route.request.url)
            route.fulfill(status=404, content_type="text/html", body="<h1>404: Not Found</h1>")

        def refuse(ws: Any) -> None:
            self.blocked.append(ws.url)
            ws.close(code=1011, reason="blocked by the test")

        self.page.route(proxied, not_found)
        self.page.route_web_socket(proxied, refuse)

    def livestream_sockets(self) -> list[str]:
        return [u for u in self.sockets if re.search(r"/ws(\?|$)", u) and "/api/kernels/" not in u]

    # ------------------------------------------------------------------ JupyterLab steps

    def wait_kernel(self, status: str, timeout_ms: float = WAIT_MS) -> None:
        wait_kernel(self.page, status, timeout_ms)

    def run_all(self) -> None:
        run_all(self.page)

    def add_cell_and_run(self, code: str) -> Any:
        """Append a code cell, type ``code``, run it (Ctrl+Enter); returns the cell's prompt
        (``[*]:`` while it runs, ``[n]:`` once done)."""
        page = self.page
        cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
        count = cells.count()
        cells.last.locator(".jp-InputArea-prompt").click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        page.keyboard.press("Enter")
        page.keyboard.type(code)
        page.keyboard.press("Control+Enter")
        return cells.nth(count).locator(".jp-InputArea-prompt")

    def run_cell(self, code: str) -> None:
        """Run ``code`` in a new cell and wait until it is done."""
        prompt = self.add_cell_and_run(code)
        expect_text(prompt, re.compile(r"\[\d+\]"), RUN_ALL_MS)

    def run_busy_cell(self, code: str) -> Any:
        """Run ``code`` in a new cell and wait until the kernel runs it; returns its prompt."""
        prompt = self.add_cell_and_run(code)
        expect_text(prompt, re.compile(r"\[\*\]"), WAIT_MS)
        return prompt

    def output(self, pattern: str) -> re.Match[str]:
        """The first cell output matching ``pattern`` (waits for it)."""
        locator = self.page.locator(".jp-OutputArea-output", has_text=re.compile(pattern)).first
        locator.wait_for(timeout=WAIT_MS)
        m = re.search(pattern, locator.inner_text())
        assert m, f"no output matching {pattern!r}"
        return m

    def server_api(self) -> tuple[str, str]:
        m = self.output(r"LS (http://127\.0\.0\.1:\d+) ([\w-]+)")
        return m.group(1), m.group(2)

    def wait_route(self, route: str) -> None:
        self.page.wait_for_function(
            f"""() => {{
              const el = document.querySelector('{DASHBOARD}');
              return el && el.dataset.livestreamStatus === 'open' && el.dataset.livestreamRoute;
            }}""",
            timeout=WAIT_MS,
        )
        got = self.page.evaluate(
            f"() => document.querySelector('{DASHBOARD}').dataset.livestreamRoute"
        )
        assert got == route, f"the widget reports route {got!r}, expected {route!r}"

    def python_route(self) -> str:
        """The route as the kernel sees it: the widget's ``route`` trait, synced back."""
        self.run_cell('print("ROUTE", dash.route, dash.status)')
        return self.output(r"ROUTE (\w*) (\w+)").group(1)


def expect_text(locator: Any, pattern: re.Pattern[str], timeout_ms: float) -> None:
    from playwright.sync_api import expect

    expect(locator).to_have_text(pattern, timeout=timeout_ms)


def is_running(prompt: Any) -> bool:
    return "[*]" in prompt.inner_text()


@pytest.fixture
def open_notebook(lab: JupyterServer, browser: Any) -> Iterator[Callable[..., Page]]:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pages: list[Page] = []

    def open_(
        name: str, host: str = "127.0.0.1", block_loopback: bool = False, block_proxy: bool = False
    ) -> Page:
        page = Page(context.new_page())
        pages.append(page)
        if block_loopback:
            page.block_loopback()
        if block_proxy:
            page.block_proxy()
        port = lab.base_url.rsplit(":", 1)[1].rstrip("/")
        # A workspace per notebook, so that no other notebook is reopened.
        stem = Path(name).stem
        page.page.goto(f"http://{host}:{port}/lab/workspaces/{stem}/tree/{name}?token={lab.token}")
        page.wait_kernel("Idle", 90_000)
        return page

    yield open_
    context.close()
    lab.delete_kernels()
    errors = [e for p in pages for e in p.errors]
    assert not errors, f"JavaScript errors in the page: {errors}"


def stream_info(base: str, token: str) -> dict[str, Any]:
    return dict(http_json(f"{base}/api/streams/prices", token))


def pause_reaches_server(page: Page, base: str, token: str) -> None:
    page.page.locator(DASHBOARD).locator("button[data-action=pause]").click()
    wait_until(
        lambda: stream_info(base, token)["state"]["status"] == "paused",
        WAIT_MS / 1000,
        "the stream to be paused by the widget's Pause button",
    )


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_direct_route_in_local_jupyterlab(
    lab: JupyterServer, open_notebook: Callable[..., Page]
) -> None:
    page = open_notebook(routes_notebook(lab.root, "direct.ipynb"))
    page.run_all()
    base, token = page.server_api()
    page.wait_route("direct")
    first = wait_source_length(page.page, DASHBOARD, 5, WAIT_MS)
    wait_source_length(page.page, DASHBOARD, first + 10, WAIT_MS)
    port = base.rsplit(":", 1)[1]
    assert page.livestream_sockets() == [f"ws://127.0.0.1:{port}/ws?token={token}"]
    assert page.python_route() == "direct"
    pause_reaches_server(page, base, token)


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_proxy_route_when_the_port_is_unreachable(
    lab: JupyterServer, open_notebook: Callable[..., Page]
) -> None:
    page = open_notebook(
        routes_notebook(lab.root, "proxy.ipynb"), host=PAGE_HOST, block_loopback=True
    )
    page.run_all()
    base, token = page.server_api()
    port = base.rsplit(":", 1)[1]
    # jupyter-server-proxy is there: Jupyter serves our health check under its base URL.
    assert http_json(f"{lab.base_url}proxy/{port}/healthz", lab.token, scheme="token") == {
        "ok": True
    }

    page.wait_route("proxy")
    first = wait_source_length(page.page, DASHBOARD, 5, WAIT_MS)
    wait_source_length(page.page, DASHBOARD, first + 10, WAIT_MS)
    assert any(f"127.0.0.1:{port}/" in u for u in page.blocked), (
        f"the page never tried the direct route: blocked {page.blocked}"
    )
    sockets = page.livestream_sockets()
    assert sockets and all(
        u.startswith(f"ws://{PAGE_HOST}:") and f"/proxy/{port}/ws?livestream_token=" in u
        for u in sockets
    ), sockets
    assert page.python_route() == "proxy"

    # The kernel is busy: the plot keeps growing through the proxy.
    sleeping = page.run_busy_cell("time.sleep(6)")
    busy_from = source_length(page.page, DASHBOARD)
    wait_source_length(page.page, DASHBOARD, busy_from + 30, 4_500)  # 20 rows/s: ~1.5 s
    assert is_running(sleeping), "the plot only grew once the kernel was idle again"
    expect_text(sleeping, re.compile(r"\[\d+\]"), 60_000)

    pause_reaches_server(page, base, token)


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_relay_route_through_the_comm(
    lab: JupyterServer, open_notebook: Callable[..., Page]
) -> None:
    page = open_notebook(
        routes_notebook(lab.root, "relay.ipynb", env="relay"), host=PAGE_HOST, block_loopback=True
    )
    page.run_all()
    base, token = page.server_api()
    page.wait_route("relay")
    first = wait_source_length(page.page, DASHBOARD, 5, WAIT_MS)
    wait_source_length(page.page, DASHBOARD, first + 10, WAIT_MS)
    assert page.livestream_sockets() == [], "the relay route opened a WebSocket of its own"
    assert page.blocked == [], f"the relay route tried to reach the server: {page.blocked}"
    assert page.python_route() == "relay"
    assert stream_info(base, token)["subscribers"] == 1  # the relay's one session

    # While a cell runs: the relay moves only if the kernel takes widget messages off its
    # main thread (a kernel subshell: ipykernel 7 with a recent JupyterLab widget manager,
    # as here); otherwise the page's credit waits in the kernel's queue and the plot stands
    # still until the cell ends. The docs say both; this checks the one this stack has.
    # Each custom message the widget takes is logged with the time it was handled; the busy
    # cell logs when it slept. A message handled inside that sleep was handled off the main
    # thread (the main thread was asleep); idle-time messages may go to either thread, so
    # only the busy window tells which case this stack is in.
    page.run_cell(
        "import threading, time\n"
        "comm_log = []\n"
        "dash.on_msg(lambda w, c, b: comm_log.append(time.monotonic()))"
    )
    sleeping = page.run_busy_cell(
        "busy_t0 = time.monotonic(); time.sleep(5); busy_t1 = time.monotonic()"
    )
    page.page.wait_for_timeout(1500)  # frames already on their way land
    busy_from = source_length(page.page, DASHBOARD)
    page.page.wait_for_timeout(2000)  # a window inside the busy cell
    busy_growth = source_length(page.page, DASHBOARD) - busy_from
    assert is_running(sleeping), "the window did not fall inside the busy cell"
    expect_text(sleeping, re.compile(r"\[\d+\]"), 60_000)
    wait_source_length(page.page, DASHBOARD, busy_from + busy_growth + 20, WAIT_MS)
    page.run_cell('print("IN_BUSY", sum(busy_t0 + 1.5 < t < busy_t1 for t in comm_log))')
    in_busy = int(page.output(r"IN_BUSY (\d+)").group(1))
    if in_busy:
        # Messages reached the widget while the cell ran: the page's credit was answered.
        assert busy_growth >= 20, (
            f"{in_busy} widget messages were handled during the busy cell, "
            f"yet the relay stood still ({busy_growth} rows)"
        )
    else:
        assert busy_growth == 0, (
            f"no widget message was handled, yet the relay moved ({busy_growth} rows)"
        )

    pause_reaches_server(page, base, token)
    rows = source_length(page.page, DASHBOARD)
    page.page.locator(DASHBOARD).locator("button[data-action=resume]").click()
    wait_source_length(page.page, DASHBOARD, rows + 10, WAIT_MS)

    # Re-running the dashboard cell: the old widget's relay closes with it, the new widget
    # carries the page's connection on, and the server is left with one subscriber.
    page.page.evaluate(f"() => document.querySelector('{DASHBOARD}').dataset.testOld = '1'")
    cell = page.page.locator(".jp-CodeCell", has_text="ls.Dashboard(prices")
    cell.locator(".jp-InputArea-editor").click()
    page.page.keyboard.press("Control+Enter")
    page.page.wait_for_function(
        f"""() => {{
          const el = document.querySelector('{DASHBOARD}');
          return el && !el.dataset.testOld && el.dataset.livestreamRoute === 'relay' &&
                 el.dataset.livestreamStatus === 'open' && !!el.querySelector('[data-source-id]');
        }}""",
        timeout=WAIT_MS,
    )
    rows = wait_source_length(page.page, DASHBOARD, 1, WAIT_MS)
    wait_source_length(page.page, DASHBOARD, rows + 10, WAIT_MS)
    wait_until(
        lambda: stream_info(base, token)["subscribers"] == 1,
        WAIT_MS / 1000,
        "one subscriber once the old widget's relay closed",
    )


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_auto_falls_back_to_the_relay(
    lab: JupyterServer, open_notebook: Callable[..., Page]
) -> None:
    """Neither the port nor a proxy answers (as in a Jupyter without jupyter-server-proxy):
    ``auto`` tries both, in order, and the relay carries the plot."""
    page = open_notebook(
        routes_notebook(lab.root, "fallback.ipynb"),
        host=PAGE_HOST,
        block_loopback=True,
        block_proxy=True,
    )
    page.run_all()
    base, token = page.server_api()
    port = base.rsplit(":", 1)[1]
    page.wait_route("relay")
    first = wait_source_length(page.page, DASHBOARD, 5, WAIT_MS)
    wait_source_length(page.page, DASHBOARD, first + 10, WAIT_MS)
    tried = page.blocked
    direct = next(i for i, u in enumerate(tried) if f"127.0.0.1:{port}/" in u)
    proxy = next(i for i, u in enumerate(tried) if f"/proxy/{port}/" in u)
    assert direct < proxy, f"auto did not try direct, then proxy: {tried}"
    assert page.livestream_sockets() == [], page.livestream_sockets()
    assert page.python_route() == "relay"
    pause_reaches_server(page, base, token)


@pytest.fixture(scope="module")
def https_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoutesLab]:
    with lab_accepting(tmp_path_factory.mktemp("routes-https-lab"), PAGE_HOST, https=True) as s:
        yield s


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_proxy_route_from_an_https_page(https_lab: RoutesLab, browser: Any) -> None:
    """JupyterHub's case: an https page on a public name. The browser refuses http:// and
    ws:// from it (mixed content), so the widget does not try the direct route at all, and
    reaches the server over wss:// through the proxy, its origin admitted by the kernel."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1300, "height": 900})
    page = Page(context.new_page())
    try:
        name = routes_notebook(https_lab.root, "https.ipynb")
        port = https_lab.base_url.rsplit(":", 1)[1].rstrip("/")
        page.page.goto(
            f"https://{PAGE_HOST}:{port}/lab/workspaces/https/tree/{name}?token={https_lab.token}"
        )
        page.wait_kernel("Idle", 90_000)
        page.run_all()
        base, token = page.server_api()
        ls_port = base.rsplit(":", 1)[1]
        page.wait_route("proxy")
        first = wait_source_length(page.page, DASHBOARD, 5, WAIT_MS)
        wait_source_length(page.page, DASHBOARD, first + 10, WAIT_MS)
        sockets = page.livestream_sockets()
        assert sockets and all(
            u.startswith(f"wss://{PAGE_HOST}:{port}/proxy/{ls_port}/ws?") for u in sockets
        ), sockets
        assert not [u for u in page.requests if "127.0.0.1" in u], "tried http:// from https"
        assert page.python_route() == "proxy"
        pause_reaches_server(page, base, token)
    finally:
        context.close()
        https_lab.delete_kernels()
    assert not page.errors, f"JavaScript errors in the page: {page.errors}"
