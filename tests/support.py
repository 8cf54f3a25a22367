"""Helpers shared by the tests (each exists once, here; fixtures live in tests/conftest.py).

* ``wait_until``: a bounded poll.
* The ``livestream`` command as a real process: :class:`Running` (a process whose output
  lines are read on a helper thread), :func:`livestream_cli` (one command to its end),
  :func:`livestream_env` (their environment), :data:`WS_URL` (the line ``serve`` prints)
  and :class:`Serving` (a ``serve`` process once it printed it).
* :func:`write_notebook`: a notebook of code cells for JupyterLab.
* Chromium: :data:`CHROMIUM` and :data:`CHROMIUM_ARGS`, :func:`open_pages` (pages in fresh
  contexts, failing on a JavaScript error), :data:`SOURCE_LENGTH` (the rows of a page's
  plot, read from BokehJS), :func:`refused_amplitude` (a control the server refuses). scripts/screenshots.py uses these too.

The fixtures (a live server, ``running``, ``browser``, the thread-leak and stray-error
checks) and the suite's one token live in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

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


# --------------------------------------------------------------------------- the command


#: The line ``livestream serve`` (and ``demo``) prints with its WebSocket URL; group 1 is the URL.
WS_URL = r"websocket: (ws://127\.0\.0\.1:\d+/ws)"


def livestream_env() -> dict[str, str]:
    """The environment of a ``python -m livestream`` child: no LIVESTREAM_* variable of the
    caller's, this checkout first on the path, output unbuffered (lines come as printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVESTREAM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def livestream_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m livestream ARGS`` to its end (killed after ``timeout`` s); output captured."""
    return subprocess.run(
        [sys.executable, "-m", "livestream", *args],
        cwd=ROOT,
        env=livestream_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Running:
    """A ``python -m livestream ARGS`` process whose stdout lines are read on a helper thread.

    ``expect(pattern)`` waits (bounded) for a line; ``output`` holds the lines read so far.
    ``kill()`` SIGKILLs it; ``stop()`` (SIGTERM, then SIGKILL) also ends a SIGSTOPped one.
    Tests start these through conftest's ``running`` fixture, which stops them all.
    """

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livestream", *args],
            cwd=ROOT,
            env=livestream_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # As from a terminal: a suite started in the background (`cmd &` in a script)
            # ignores SIGINT, and a child inherits that, so Ctrl-C tests would hang.
            preexec_fn=_default_sigint,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, name="cli-test-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s; got {self.output}")
            if line is None:
                pytest.fail(
                    f"the process ended (rc {self.proc.poll()}) without a line matching "
                    f"{pattern!r}; output: {self.output}"
                )
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout`` s), then close the output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen process cannot end on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Serving:
    """A ``livestream serve`` (or ``demo``) process once it printed its WebSocket URL:
    ``ws_url``, ``base`` (its http:// root), ``proc`` (to send it a signal) and ``kill()``."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.ws_url = running.expect(WS_URL).group(1)
        self.base = self.ws_url.replace("ws://", "http://").removesuffix("/ws")

    @property
    def proc(self) -> subprocess.Popen[str]:
        return self.running.proc

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.running.kill()


# --------------------------------------------------------------------------- notebooks


def write_notebook(root: Path, name: str, cells: list[str]) -> str:
    """Write a notebook of these code ``cells`` as ``root/name``, its kernel Python 3 (else
    JupyterLab asks which kernel to start); returns ``name``."""
    import nbformat

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(code) for code in cells],
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        },
    )
    nbformat.write(nb, str(root / name))
    return name


# --------------------------------------------------------------------------- Chromium


#: Rows in the plot of a stream page (from BokehJS: the source its ``data-source-id``
#: names); -1 before the plot exists.
SOURCE_LENGTH = """() => {
  const el = document.querySelector("[data-source-id]");
  if (!el || !window.Bokeh) return -1;
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_id(el.dataset.sourceId);
    if (source) return source.get_length();
  }
  return -1;
}"""


@contextlib.contextmanager
def open_pages(
    browser: Any,
    *,
    width: int = 1280,
    height: int = 900,
    init_script: str | None = None,
    console: bool = False,
    ignore: Callable[[Any], bool] | None = None,
) -> Iterator[Callable[..., Any]]:
    """Yield ``open_(url, width=None, height=None) -> Page``: a new page of ``browser`` at
    ``url``. Pages of the default size share one context (tabs of one browser); a page of
    another size gets a context of its own. ``init_script`` runs in every page before its
    own scripts; a page error for which ``ignore(error)`` is true is not counted (one that
    is not ours to fail on).

    On exit every context is closed, then the test fails if any page raised a JavaScript
    error or (with ``console``) logged a console message of warning or error level.
    """
    default = (width, height)
    contexts: dict[tuple[int, int], Any] = {}
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        if msg.type in ("warning", "error"):
            problems.append(f"{msg.type}: {msg.text} ({msg.location.get('url', '')})")

    def on_error(exc: Any) -> None:
        if ignore is None or not ignore(exc):
            problems.append(f"pageerror: {exc}\n{getattr(exc, 'stack', '') or ''}")

    def open_(url: str, width: int | None = None, height: int | None = None) -> Any:
        size = (width or default[0], height or default[1])
        if size not in contexts:
            contexts[size] = browser.new_context(viewport={"width": size[0], "height": size[1]})
            if init_script is not None:
                contexts[size].add_init_script(init_script)
        page = contexts[size].new_page()
        if console:
            page.on("console", on_console)
        page.on("pageerror", on_error)
        page.goto(url)
        return page

    try:
        yield open_
    finally:
        for context in contexts.values():
            context.close()
    what = "JavaScript errors or console warnings" if console else "JavaScript errors"
    assert not problems, f"{what} in the page: {problems}"


def refused_amplitude(page: Any, scope: str, wait_ms: float) -> None:
    """Type 50 into the controls' ``amp`` (conftest's ``wave``: 0 to 5) under the selector
    ``scope``: the server refuses it, the controls say why and show the value it holds (1)."""
    from playwright.sync_api import expect

    amplitude = page.locator(f'{scope} [data-param="amp"] input[type=number]'.strip())
    expect(amplitude).to_have_value("1", timeout=wait_ms)
    amplitude.fill("50")
    amplitude.press("Enter")
    alert = page.locator(f"{scope} .ls-controls .ls-alert".strip())
    expect(alert).to_be_visible(timeout=wait_ms)
    expect(alert).to_contain_text("between 0")
    expect(amplitude).to_have_value("1")  # back to the value the server holds
