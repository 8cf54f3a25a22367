"""Running the server on the caller's asyncio loop, and the default server of a process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import livestream as ls
from livestream import AsyncClient, Server

TOKEN = "lifecycle-token-0123456789"


async def test_server_runs_on_an_existing_loop_with_an_async_producer() -> None:
    server = Server("127.0.0.1", 0, token=TOKEN)
    await server.start_async()
    try:
        assert server.loop is asyncio.get_running_loop()
        ticks = server.stream("ticks")
        seen: list[float] = []

        @ticks.producer(every=0.01, params={"step": ls.Float(1.0, min=0, max=10)})
        async def tick(params: Any) -> dict[str, float]:
            seen.append(params["step"])
            return {"value": float(len(seen)) * params["step"]}

        async with AsyncClient(server.ws_url, token=TOKEN) as client:
            sub = await client.subscribe("ticks")
            first = await sub.next(timeout=5)
            assert first.rows >= 1 and first.offset == 0
            state = await client.control("ticks", "set", step=2.5)
            assert state["params"] == {"step": 2.5}

            async def sees_new_step() -> None:
                while not seen or seen[-1] != 2.5:
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(sees_new_step(), 5)
            assert ticks.state["status"] == "running"
    finally:
        await server.stop_async()
    assert not server.running
    assert ticks.state["status"] == "stopped"


def test_default_server_starts_on_first_use_and_stops_at_exit() -> None:
    # A fresh interpreter: ls.stream starts the default server; at exit it stops cleanly,
    # so the port is closed once the process has gone.
    code = textwrap.dedent(
        """
        import livestream as ls, urllib.request, json
        s = ls.stream("x")
        s.append({"v": [1, 2, 3]})
        server = ls.serve()
        assert ls.serve() is server, "serve() returns the running default server"
        with urllib.request.urlopen(f"{server.base_url}/api/streams/x?token={server.token}") as r:
            assert json.load(r)["rows"] == 3
        print(server.port, flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    port = int(proc.stdout.strip())
    import socket

    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the default server outlived its process"


def test_shutdown_stops_the_default_server_and_serve_starts_a_new_one() -> None:
    first = ls.serve()
    try:
        stream = ls.stream("lifecycle")
        assert stream.server is first
    finally:
        ls.shutdown()
    assert not first.running
    second = ls.serve()
    try:
        assert second is not first and second.running
        assert "lifecycle" not in second.hub.streams
    finally:
        ls.shutdown()


def test_starting_twice_is_refused() -> None:
    async def main() -> None:
        server = Server("127.0.0.1", 0, token=TOKEN)
        await server.start_async()
        try:
            with pytest.raises(ls.ConfigError, match="already running"):
                await server.start_async()
        finally:
            await server.stop_async()

    asyncio.run(main())


def test_a_running_server_shortens_the_gil_switch_interval_and_gives_it_back() -> None:
    """While a server runs, a thread waiting for the GIL (a producer after waking the
    loop) gets it within 0.5 ms, not Python's 5 ms; the value comes back when the last
    server stops, and a value someone else set is left alone."""
    import sys

    from livestream import ConfigError
    from livestream.server import SWITCH_INTERVAL, Server

    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL
    a = Server(port=0).start()
    b = Server(port=0).start()
    try:
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        a.stop()
        assert sys.getswitchinterval() == SWITCH_INTERVAL  # b still runs
    finally:
        a.stop()
        b.stop()
    assert sys.getswitchinterval() == before
    # None: left as it is; a value lowered by the user meanwhile is not undone.
    c = Server(port=0, switch_interval=None).start()
    try:
        assert sys.getswitchinterval() == before
    finally:
        c.stop()
    d = Server(port=0).start()
    try:
        sys.setswitchinterval(0.002)
    finally:
        d.stop()
    try:
        assert sys.getswitchinterval() == 0.002
    finally:
        sys.setswitchinterval(before)
    with pytest.raises(ConfigError, match="switch_interval must be a number of seconds above 0"):
        Server(port=0, switch_interval=0)
