"""Helpers shared by the tests: Chromium's path and flags, and a bounded ``wait_until``.

The fixtures (a live server, the thread-leak and stray-error checks) and the suite's one
token live in tests/conftest.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

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
