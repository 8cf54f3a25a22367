"""Real Jupyter parts for the notebook tests: kernels, Jupyter servers, Chromium, a standalone
livestream server, and the few page helpers that drive JupyterLab.

Everything here starts the real program and stops it at the end of its ``with`` block, on
127.0.0.1 only, with every wait bounded:

* :func:`kernel` a ``python3`` kernel through jupyter_client (:class:`Kernel`);
* :func:`jupyter_server` ``jupyter lab``, ``jupyter notebook`` or ``voila`` on a free port,
  serving a temporary copy of ``notebooks/``, with HOME and every JUPYTER_* directory in a
  temporary directory (so no user setting or old workspace leaks in), news and update
  checks off, and its kernels shut down at the end;
* :func:`chromium` Debian's Chromium through Playwright (never a downloaded browser);
* :func:`standalone_server` ``python -m livestream demo`` on a free port.

A missing program fails the test that needs it (with the command that installs it), it is
never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import CHROMIUM, CHROMIUM_ARGS

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


SERVER_START_TIMEOUT = 90.0  # a Jupyter server on a busy 2-core machine
KERNEL_TIMEOUT = 90.0


def fail_missing(what: str, install: str) -> None:
    pytest.fail(f"{what} is not installed; install it with: {install}")


# --------------------------------------------------------------------------- processes


class OutputReader:
    """Collects a subprocess's output lines on a thread, so its pipe never fills up (a
    Jupyter server that cannot write its log stops answering); :meth:`wait_for` waits,
    bounded, for a line to appear."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, name="test-output-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line (already printed or still to come) matching ``pattern``."""
        regex = re.compile(pattern)
        seen = 0
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if (m := regex.search(line)) is not None:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    break
                self._changed.wait(left)
            tail = "\n".join(self.lines[-40:])
        raise AssertionError(
            f"{self.proc.args!r} did not print a line matching {pattern!r} within {timeout} s "
            f"(exit code {self.proc.poll()}); its output ended with:\n{tail}"
        )

    def close(self) -> None:
        """Wait (bounded) for the output to end once the process has been stopped."""
        self._thread.join(10)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM (SIGINT would ask a Jupyter server to confirm), bounded wait, then SIGKILL
    the process and whatever it started. Returns the exit code."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    return code


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(
    url: str,
    token: str | None = None,
    method: str = "GET",
    timeout: float = 10,
    scheme: str = "Bearer",
) -> Any:
    """GET (or ``method``) a JSON answer; livestream takes ``Bearer`` tokens, Jupyter ``token``."""
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"{scheme} {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def wait_until(cond: Any, timeout: float, message: str, interval: float = 0.1) -> Any:
    """Poll ``cond`` (for state only an HTTP API can tell) until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = cond()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"waited {timeout} s for {message}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(interval)


# --------------------------------------------------------------------------- a kernel


def kernel_manager(sockets: Path) -> Any:
    """A KernelManager for ``python3`` talking over Unix sockets in ``sockets`` (a short
    path: a socket path has at most 107 bytes). TCP would need five free ports picked ahead
    of the kernel's start, a race with everything else on the machine."""
    from jupyter_client.manager import KernelManager

    return KernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / "k"))


@contextlib.contextmanager
def socket_dir() -> Iterator[Path]:
    """A short-lived temporary directory for a kernel's sockets."""
    path = Path(tempfile.mkdtemp(prefix="ls-kernel-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Kernel:
    """A real ``python3`` kernel (jupyter_client); ``run(code)`` returns what it printed."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._sockets = Path(tempfile.mkdtemp(prefix="ls-kernel-"))
        self.km = kernel_manager(self._sockets)
        self.km.start_kernel(env=env or dict(os.environ))
        assert self.km.provisioner is not None
        self.process: Any = self.km.provisioner.process  # the Popen, kept after shutdown
        self.pid = int(self.process.pid)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=KERNEL_TIMEOUT)

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute ``code``; fails with the traceback on an error; returns stdout text."""
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] != "ok" or errors:
            raise AssertionError(f"kernel error running {code!r}:\n" + "\n".join(errors))
        return "".join(out)

    def shutdown(self, timeout: float = 30) -> int | None:
        """Ask the kernel to shut down (as Jupyter does); returns its exit code."""
        self.kc.stop_channels()
        try:
            self.km.shutdown_kernel(now=False)
            return int(self.process.wait(timeout))
        except subprocess.TimeoutExpired:
            return None
        finally:
            shutil.rmtree(self._sockets, ignore_errors=True)


@contextlib.contextmanager
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        yield k
    finally:
        if k.km.has_kernel:
            with contextlib.suppress(Exception):
                k.shutdown()


# --------------------------------------------------------------------------- Jupyter servers


@dataclass
class JupyterServer:
    """A running ``jupyter lab`` / ``jupyter notebook`` / ``voila`` process."""

    app: str
    proc: subprocess.Popen[bytes]
    output: OutputReader
    base_url: str  # ends with "/"
    token: str
    root: Path
    home: Path
    kernel_pids: set[int] = field(default_factory=set)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return (
            f"{self.base_url}{path.lstrip('/')}{sep}token={self.token}"
            if self.token
            else f"{self.base_url}{path.lstrip('/')}"
        )

    def api(self, path: str, method: str = "GET") -> Any:
        return http_json(f"{self.base_url}{path.lstrip('/')}", self.token, method, scheme="token")

    def kernels(self) -> list[dict[str, Any]]:
        return list(self.api("api/kernels"))

    def delete_kernels(self) -> None:
        """Shut every kernel down (kernels outlive pages)."""
        for k in self.kernels():
            with contextlib.suppress(urllib.error.HTTPError):
                self.api(f"api/kernels/{k['id']}", method="DELETE")

    def kernel_processes(self) -> list[psutil.Process]:
        try:
            return [
                p
                for p in psutil.Process(self.proc.pid).children(recursive=True)
                if "ipykernel" in " ".join(p.cmdline())
            ]
        except psutil.NoSuchProcess:
            return []


def _isolated_env(home: Path, app: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "LIVESTREAM"))}
    dirs = {
        "HOME": home,
        "JUPYTER_CONFIG_DIR": home / "jupyter-config",
        "JUPYTER_DATA_DIR": home / "jupyter-data",
        "JUPYTER_RUNTIME_DIR": home / "jupyter-runtime",
        "IPYTHONDIR": home / "ipython",
        "JUPYTERLAB_SETTINGS_DIR": home / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": home / "lab-workspaces",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env.update({k: str(v) for k, v in dirs.items()})
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if app == "lab":
        # No news toast, no update check (both would also reach for the network). Notebook 7
        # has no such plugin and fails on settings for it.
        settings = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
    # The language-server extension scans the machine at start-up: not needed here.
    (dirs["JUPYTER_CONFIG_DIR"] / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_lsp": False}}})
    )
    return env


def _require(module: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        fail_missing(
            f"the Python package {package!r}",
            f"pip install -e '.[test]'  (or pip install {package})",
        )


@contextlib.contextmanager
def jupyter_server(app: str, tmp: Path, notebook: str | None = None) -> Iterator[JupyterServer]:
    """Start ``app`` ("lab", "notebook" or "voila") on 127.0.0.1 and a free port, serving a
    temporary copy of notebooks/; ``notebook`` is the file voila renders."""
    root = tmp / "notebooks"
    shutil.copytree(NOTEBOOKS, root)
    home = tmp / "home"
    env = _isolated_env(home, app)
    token = "" if app == "voila" else f"jt-{os.urandom(12).hex()}"
    common = [
        "--no-browser",
        "--ServerApp.ip=127.0.0.1" if app != "voila" else "--Voila.ip=127.0.0.1",
    ]
    if app == "lab":
        _require("jupyterlab", "jupyterlab")
        cmd = [sys.executable, "-m", "jupyterlab", *common]
    elif app == "notebook":
        _require("notebook", "notebook")
        cmd = [sys.executable, "-m", "notebook", *common]
    elif app == "voila":
        _require("voila", "voila")
        assert notebook is not None
        cmd = [
            sys.executable,
            "-m",
            "voila",
            str(root / notebook),
            *common,
            f"--port={free_port()}",
            "--Voila.port_retries=20",
            "--theme=light",
            "--show_tracebacks=True",
        ]
    else:
        raise ValueError(app)
    if app != "voila":
        cmd += [
            "--allow-root",
            f"--ServerApp.token={token}",
            "--ServerApp.port=0",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.open_browser=False",
            "--ServerApp.password=",
        ]
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = OutputReader(proc)
    server: JupyterServer | None = None
    try:
        if app == "voila":
            m = output.wait_for(r"(http://[\w.]+:(\d+)/)\s*$", SERVER_START_TIMEOUT)
            base = f"http://127.0.0.1:{m.group(2)}/"
        else:
            m = output.wait_for(r"(http://127\.0\.0\.1:(\d+)/\w*)", SERVER_START_TIMEOUT)
            base = f"http://127.0.0.1:{m.group(2)}/"
        server = JupyterServer(app, proc, output, base, token, root, home)
        status_path = "api/status" if app != "voila" else ""
        wait_until(
            lambda: _answers(server, status_path),
            SERVER_START_TIMEOUT,
            f"{app} to answer at {base}{status_path}",
        )
        yield server
    finally:
        kernels = server.kernel_processes() if server is not None else []
        if server is not None and app != "voila":
            with contextlib.suppress(Exception):
                server.delete_kernels()
        stop_process(proc)
        output.close()
        _, alive = psutil.wait_procs(kernels, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


def _answers(server: JupyterServer, path: str) -> bool:
    request = urllib.request.Request(f"{server.base_url}{path}")
    if server.token:
        request.add_header("Authorization", f"token {server.token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return bool(response.status == 200)


# --------------------------------------------------------------------------- livestream


@contextlib.contextmanager
def standalone_server(token: str) -> Iterator[str]:
    """``python -m livestream demo`` (streams ``prices`` and ``sensors``) on a free port;
    yields its http base URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LIVESTREAM_TOKEN", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "livestream",
            "demo",
            "--no-browser",
            "--port",
            "0",
            "--token",
            token,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = OutputReader(proc)
    try:
        m = output.wait_for(r"livestream demo on (http://127\.0\.0\.1:\d+)", 60)
        yield m.group(1)
    finally:
        stop_process(proc)
        output.close()


# --------------------------------------------------------------------------- Chromium


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright."""
    if not Path(CHROMIUM).exists():
        fail_missing("Chromium at /usr/bin/chromium", "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# --------------------------------------------------------------------------- in the page

#: Length of the ColumnDataSource of the first plot under ``root`` (a CSS selector), read
#: from BokehJS itself through the ``data-source-id`` the widget puts on its element.
SOURCE_LENGTH = """(root) => {
  const scope = root ? document.querySelector(root) : document;
  const el = scope && scope.querySelector("[data-source-id]");
  if (!el || !window.Bokeh) return -1;
  for (const doc of Bokeh.documents) {
    const source = doc.get_model_by_id(el.dataset.sourceId);
    if (source) return source.get_length() ?? -1;
  }
  return -1;
}"""

#: What the page holds: Bokeh documents, and per livestream connection its references and
#: the page-side subscribers of each stream (read from the module's shared registry).
PAGE_RESOURCES = """() => {
  const registry = globalThis[Symbol.for("livestream.connections.v1")];
  const connections = [];
  for (const conn of registry ? registry.values() : []) {
    const channels = {};
    for (const [name, ch] of conn._channels) channels[name] = ch.subs.size;
    connections.push({url: conn.wsUrl, refs: conn._refs, status: conn.status, channels});
  }
  return {documents: window.Bokeh ? Bokeh.documents.length : 0, connections};
}"""


def source_length(page: Any, root: str = "") -> int:
    return int(page.evaluate(SOURCE_LENGTH, root))


def wait_source_length(page: Any, root: str, at_least: int, timeout_ms: float) -> int:
    page.wait_for_function(
        f"(root) => ({SOURCE_LENGTH})(root) >= {int(at_least)}", arg=root, timeout=timeout_ms
    )
    return source_length(page, root)
