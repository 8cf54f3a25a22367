"""Helpers shared by the unit and integration tests of streams, producers, the client and the CLI.

Import the fixture functions into a test module to use them (``from support import
live_server_fixture, no_thread_leaks_fixture``); they are registered under the names
``live_server`` and ``no_thread_leaks``. ``no_thread_leaks`` is autouse, so importing it is
enough to check,
after every test of that module, that no ``livestream-*`` thread the test started is still
running once a bounded wait is over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from livestream import Server

TOKEN = "support-token-0123456789"

#: Debian's Chromium, never a downloaded browser; these flags keep it off the closed network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT = 5.0


def wait_until(cond: Callable[[], Any], timeout: float = TIMEOUT, message: str = "") -> Any:
    """Poll ``cond`` every 10 ms until it returns something truthy; return that.

    Fails the test with ``message`` (or the condition's source name) after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(cond, "__name__", repr(cond))
            pytest.fail(f"waited {timeout} s for: {what}")
        time.sleep(0.01)


def livestream_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("livestream-")}


@pytest.fixture(autouse=True, name="no_thread_leaks")
def no_thread_leaks_fixture() -> Iterator[None]:
    """Fail a test that leaves a ``livestream-*`` thread running (after a 5 s bounded wait)."""
    before = livestream_threads()
    yield
    deadline = time.monotonic() + TIMEOUT
    for thread in livestream_threads() - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = sorted(t.name for t in livestream_threads() - before if t.is_alive())
    assert not leaked, f"threads still running after the test: {leaked}"


@pytest.fixture(name="live_server")
def live_server_fixture() -> Iterator[Server]:
    """A real server on 127.0.0.1, port 0, on its background thread; stopped at teardown."""
    server = Server("127.0.0.1", 0, token=TOKEN).start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.running, "the server still runs after stop()"
