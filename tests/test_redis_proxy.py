"""The load-balancer snippets of docs/redis.md, tested: three ``livestream serve --redis``
nodes behind Debian's nginx and HAProxy, configured with the very blocks the page shows
(only the ports replaced). Through the proxy, without sticky sessions: requests spread
over the nodes, and a viewer whose node is killed (SIGKILL) reconnects through the same
URL and resumes with 0 rows lost and 0 duplicated.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from support import wait_until
from test_redis import (  # noqa: F401  (fixtures)
    TOKEN,
    Node,
    connect,
    free_port,
    nodes,
    publish,
    redis_factory,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "redis.md").read_text()


def snippet(kind: str) -> str:
    """The ```kind block of docs/redis.md."""
    found = re.findall(rf"```{kind}\n(.*?)```", DOC, re.S)
    assert len(found) == 1, f"docs/redis.md should show one {kind} block"
    return found[0]


def ported(text: str, members: list[Node], front: int) -> str:
    for doc_port, node in zip((8801, 8802, 8803), members, strict=True):
        text = text.replace(f"127.0.0.1:{doc_port}", node.base.removeprefix("http://"))
    return text.replace("8765", str(front))


def nginx_conf(folder: Path, members: list[Node], front: int) -> Path:
    body = ported(snippet("nginx"), members, front)
    temp = "\n".join(
        f"    {name}_temp_path {folder / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = folder / "nginx.conf"
    conf.write_text(
        f"daemon off;\nmaster_process off;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log off;\n{temp}\n{body}\n}}\n"
    )
    return conf


def haproxy_conf(folder: Path, members: list[Node], front: int) -> Path:
    conf = folder / "haproxy.cfg"
    conf.write_text("global\n    maxconn 256\n\n" + ported(snippet("haproxy"), members, front))
    return conf


@pytest.fixture(params=["nginx", "haproxy"])
def proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind = request.param
    exe = shutil.which(kind) or f"/usr/sbin/{kind}"
    assert Path(exe).exists(), f"{kind} is missing: scripts/test.sh installs it"
    procs: list[subprocess.Popen[bytes]] = []

    def start(members: list[Node]) -> int:
        front = free_port()
        if kind == "nginx":
            conf = nginx_conf(tmp_path, members, front)
            args = [exe, "-p", str(tmp_path), "-c", str(conf)]
        else:
            conf = haproxy_conf(tmp_path, members, front)
            args = [exe, "-db", "-f", str(conf)]
        test = [*args, "-t"] if kind == "nginx" else [exe, "-c", "-f", str(conf)]
        check = subprocess.run(test, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"{kind} refuses the docs' config: {check.stderr}"
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        wait_until(lambda: _answers(front), 15, f"{kind} answers on {front}")
        return front

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


async def test_three_nodes_behind_the_proxy_of_the_docs(
    redis_factory: Any,  # noqa: F811
    nodes: Any,  # noqa: F811
    proxy: Any,
) -> None:
    redis = redis_factory()
    members = nodes(redis.url)
    front = proxy(members)
    seen = {(await asyncio.to_thread(_health, front))["node"] for _ in range(12)}
    assert len(seen) == 3, f"no stickiness: requests reach every node; got {seen}"
    entry = Node.__new__(Node)
    entry.ws_url, entry.base = f"ws://127.0.0.1:{front}/ws", f"http://127.0.0.1:{front}"
    total, size = 60, 50
    values: list[int] = []
    cursor, epoch = 0, None
    killed = False
    async with connect(entry) as pub:
        for i in range(total // 2):
            await publish(pub, "lb", np.arange(i * size, (i + 1) * size))
        deadline = time.monotonic() + 60
        while len(values) < total * size:
            assert time.monotonic() < deadline, f"stuck at {len(values)} rows"
            try:
                async with connect(entry) as viewer:
                    request: dict[str, Any] = {"type": "subscribe", "stream": "lb", "since": cursor}
                    if epoch is not None:
                        request["epoch"] = epoch
                    reply = await viewer.request(request)
                    if reply["type"] != "subscribed":
                        await asyncio.sleep(0.05)
                        continue
                    epoch = reply["epoch"]
                    while len(values) < total * size:
                        if not killed and len(values) >= total * size // 4:
                            # Kill whichever node this viewer reached (its id from /healthz
                            # cannot tell: kill them until this connection drops).
                            killed = True
                            for node in members[:2]:
                                await asyncio.to_thread(node.kill)
                            for i in range(total // 2, total):
                                await _publish_somewhere(entry, i, size)
                        msg = await viewer.expect(lambda m: m["type"] in ("data", "reset"), 10)
                        assert msg["type"] == "data", msg
                        assert msg["offset"] == cursor, f"at {msg['offset']}, expected {cursor}"
                        values.extend(int(v) for v in msg["columns"]["v"])
                        cursor += msg["rows"]
            except (websockets.ConnectionClosed, OSError, TimeoutError):
                await asyncio.sleep(0.1)  # reconnect through the same URL
    assert killed
    assert values == list(range(total * size)), "every row once, in order, across the kill"


async def _publish_somewhere(entry: Node, i: int, size: int) -> None:
    """Publish batch ``i`` through the proxy with a publisher id, resending until it is
    acknowledged (a resend of a stored batch is not stored again)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            async with connect(entry) as pub:
                await publish(
                    pub, "lb", np.arange(i * size, (i + 1) * size), publisher="lb-pub", seq=i
                )
                return
        except (websockets.ConnectionClosed, OSError, TimeoutError):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
