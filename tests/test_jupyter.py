"""The default server's life in a real Jupyter kernel (jupyter_client + ipykernel).

* ``import livestream`` starts nothing; the first stream starts the kernel's server;
* shutting the kernel down stops the server cleanly: a connected viewer is told "going
  away" (1001) rather than cut off, the kernel exits by itself (code 0, not killed), the
  port is closed, and the process is gone;
* two kernels have two servers on two ports;
* widgets given a standalone server's URL and token point at it and start no server in the
  kernel.
"""

from __future__ import annotations

import json
from typing import Any

import psutil
import pytest
from jupyter_support import Kernel, http_json, kernel, port_is_open, standalone_server

import livestream as ls
from livestream.errors import ConnectionClosed
from livestream.jupyter import in_kernel

pytestmark = pytest.mark.timeout(180)

START = """
import json, livestream as ls
from livestream.jupyter import default_server, in_kernel
before = default_server()
s = ls.stream("x")
s.append({"v": 1.0})
server = ls.serve()
print(json.dumps({"before": before is not None, "in_kernel": in_kernel(),
                  "port": server.port, "token": server.token, "same": ls.serve() is server}))
"""


def test_in_kernel_is_false_outside_a_kernel() -> None:
    assert in_kernel() is False


def _shut_down_under_a_viewer(
    k: Kernel, info: dict[str, Any], timeout: float
) -> tuple[list[dict[str, Any]], int | None, ConnectionClosed]:
    """A viewer of the kernel's server (``info`` from :data:`START`) takes the first batch of
    ``x``; then the kernel is asked to shut down (waiting up to ``timeout`` s for it to exit).
    Returns the batch's rows, the kernel's exit code, and what the viewer's next read raised."""
    viewer = ls.connect(f"ws://127.0.0.1:{info['port']}", token=info["token"], reconnect=False)
    try:
        subscription = viewer.subscribe("x")
        rows = subscription.next(timeout=10).to_rows()
        exit_code = k.shutdown(timeout=timeout)
        with pytest.raises(ConnectionClosed) as closed:
            subscription.next(timeout=10)
    finally:
        viewer.close()
    return rows, exit_code, closed.value


def test_server_starts_on_first_use_and_stops_with_the_kernel() -> None:
    with kernel() as k:
        info = json.loads(k.run(START).strip())
        assert info["before"] is False, "importing livestream must not start a server"
        assert info["in_kernel"] is True
        assert info["same"] is True, "ls.serve() must return the running default server"
        port = info["port"]
        assert port_is_open(port)
        assert http_json(f"http://127.0.0.1:{port}/healthz") == {"ok": True}
        rows, exit_code, closed = _shut_down_under_a_viewer(k, info, timeout=30)

    assert rows == [{"v": 1.0}]
    assert closed.code == 1001, f"the viewer was not told the server went away: {closed}"
    assert exit_code == 0, f"the kernel did not exit by itself (exit code {exit_code})"
    pid = k.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not port_is_open(port), f"port {port} still open after the kernel shut down"


def test_server_stops_at_the_shutdown_request_even_when_the_kernel_is_killed_later() -> None:
    """A kernel with a child process of its own (a publisher, as in notebook 04) does not
    exit by itself in time: ipykernel waits for the child, and Jupyter then kills the
    kernel, skipping ``atexit``. The server must already be stopped cleanly by then."""
    with kernel() as k:
        info = json.loads(
            k.run(
                START
                + """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
"""
            ).strip()
        )
        child_pid = int(k.run("print(child.pid)").strip())
        _, _, closed = _shut_down_under_a_viewer(k, info, timeout=60)
    assert closed.code == 1001, f"the viewer was cut off, not told: {closed}"
    assert not port_is_open(info["port"])
    gone = {psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD}
    for pid in (k.pid, child_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() in gone, pid


def test_two_kernels_get_two_servers() -> None:
    with kernel() as first, kernel() as second:
        a = json.loads(first.run(START).strip())
        b = json.loads(second.run(START).strip())
        assert a["port"] != b["port"]
        assert a["token"] != b["token"]
        for info in (a, b):
            streams = http_json(f"http://127.0.0.1:{info['port']}/api/streams", info["token"])
            assert [s["name"] for s in streams["streams"]] == ["x"]
        # One kernel going away leaves the other's server alone.
        first.shutdown()
        assert not port_is_open(a["port"])
        assert http_json(f"http://127.0.0.1:{b['port']}/healthz") == {"ok": True}


def test_widgets_attach_to_a_standalone_server_by_url() -> None:
    token = "standalone-token-0123456789"
    with standalone_server(token) as base, kernel() as k:
        code = f"""
import json, livestream as ls
from livestream.jupyter import default_server
plot = ls.LivePlot("prices", url={base!r}, token={token!r}, y="price")
dash = ls.Dashboard("prices", url={base + "/?token=" + token!r})
print(json.dumps({{"url": plot.url, "token": plot.token, "stream": plot.stream,
                  "dash_url": dash.url, "dash_token": dash.token,
                  "started_default": default_server() is not None}}))
"""
        info = json.loads(k.run(code).strip())
    assert info == {
        "url": base,
        "token": token,
        "stream": "prices",
        "dash_url": base,
        "dash_token": token,
        "started_default": False,
    }
