"""livestream in a Jupyter kernel: the default server's life, and attaching to another server.

Nothing needs setting up in a notebook. The kernel's *default server* behaves like this:

* **It starts on first use.** ``import livestream`` starts nothing; the first
  ``ls.stream(...)``, ``ls.serve()`` or widget given a stream name without ``url=`` starts
  a server on ``127.0.0.1``, on a free port, on a background thread with its own event loop
  (so plots keep moving while a cell runs), with a random token unless ``LIVESTREAM_TOKEN``
  is set.
* **One per kernel.** Each kernel is a process with its own default server on its own port,
  so two notebooks never share or collide; ``ls.serve()`` in a kernel returns that kernel's.
* **It stops with the kernel.** When Jupyter asks the kernel to shut down or restart, the
  server stops first (:func:`stop_with_kernel`, installed by :func:`livestream.serve`):
  producers stop, every viewer's socket is closed with code 1001 ("server going away",
  which the widgets show), and the port is released. This happens at the start of the
  kernel's shutdown, not at interpreter exit, because the rest of the shutdown may never
  finish: ipykernel then terminates the processes the kernel started and waits for them,
  and Jupyter kills a kernel that takes more than a few seconds, which would skip
  ``atexit``. The ``atexit`` hook remains for plain scripts. A kernel killed outright
  leaves nothing behind either: the port closes with the process. ``ls.shutdown()`` stops
  the server earlier.
* **Widgets can watch another server.** Pass a stream *name* with ``url=`` and ``token=``
  (``ls.LivePlot("prices", url="http://127.0.0.1:8765", token=TOKEN)``) to watch a
  standalone ``livestream serve`` process; no default server is started in the kernel then.

How the page reaches the server is the widgets' business, by one of three routes: ``direct``
(a WebSocket to the server's own port, where the browser runs on the kernel's machine),
``proxy`` (the same through jupyter-server-proxy under the Jupyter base URL: JupyterHub,
remote or https Jupyter; the kernel admits the page's origin) and ``relay`` (protocol frames
through the widget's comm and the kernel, :mod:`livestream.relay`: VS Code, Colab). See
``docs/jupyter-routes.md``. The notebooks, the lifecycle and attaching to a standalone
server: ``docs/notebooks.md``.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Server
    from .streams import Stream

__all__ = ["default_server", "in_kernel", "serve", "shutdown", "stop_with_kernel", "stream"]

log = logging.getLogger("livestream.jupyter")


def in_kernel() -> bool:
    """True when this code runs inside a Jupyter (IPython) kernel.

    ``False`` in a plain script, in the ``python``/``ipython`` terminal and in a process
    started from a notebook (a subprocess is not the kernel).
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell: Any = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def default_server() -> Any:
    """The running default server of this process, or ``None`` when none was started.

    Unlike :func:`livestream.serve` this never starts one: use it to ask whether a
    notebook has started its server yet, e.g. after attaching widgets to another server.
    """
    current = _default
    return current if current is not None and current.running else None


def _kernel() -> Any:
    ipython = sys.modules.get("IPython")
    shell: Any = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) if shell is not None else None


def stop_with_kernel() -> bool:
    """Make the kernel's shutdown (and restart) stop the default server before anything else.

    Wraps the kernel's ``do_shutdown``, which ipykernel calls as soon as a shutdown request
    arrives, while the kernel still runs normally. Called by :func:`livestream.serve` when
    it starts the default server; safe to call more than once. Returns False outside a
    kernel (where the ``atexit`` hook does the job).
    """
    kernel = _kernel()
    if kernel is None:
        return False
    if getattr(kernel, "_livestream_stop_hook", False):
        return True
    original = kernel.do_shutdown

    def do_shutdown(restart: bool) -> Any:
        try:
            shutdown()
        except Exception:  # the kernel must shut down whatever happens here
            log.exception("livestream: stopping the default server at kernel shutdown failed")
        return original(restart)

    # Keep a coroutine function a coroutine function: ipykernel checks what it gets back.
    if inspect.iscoroutinefunction(original):

        async def do_shutdown_async(restart: bool) -> Any:
            try:
                shutdown()
            except Exception:
                log.exception("livestream: stopping the default server at kernel shutdown failed")
            return await original(restart)

        kernel.do_shutdown = do_shutdown_async
    else:
        kernel.do_shutdown = do_shutdown
    kernel._livestream_stop_hook = True
    return True


# ---------------------------------------------------------------------- the default server

_default: Server | None = None
_default_lock = threading.Lock()


def serve(host: str = "127.0.0.1", port: int = 0, **options: Any) -> Server:
    """Start the process's default server on a background thread (once) and return it.

    Called again, it returns the running default server; to change its options, call
    :func:`shutdown` first. Options are those of :class:`~livestream.server.Server`
    (``token``, ``history``, ``allow_origins``, ``limits``, ...). ``livestream.stream()``
    starts it on first use. In a kernel it stops at the kernel's shutdown request
    (:func:`stop_with_kernel`), elsewhere at interpreter exit.
    """
    global _default
    with _default_lock:
        if _default is None:
            import atexit

            from .server import Server

            _default = Server(host, port, **options).start()
            atexit.register(shutdown)
            stop_with_kernel()  # in a kernel: stop at its shutdown request, not at exit
        return _default


def shutdown() -> None:
    """Stop the default server (streams, producers and connections with it)."""
    global _default
    with _default_lock:
        server, _default = _default, None
    if server is not None:
        server.stop()


def stream(name: str, **options: Any) -> Stream:
    """The stream ``name`` on the default server, created when new (starting the server).

    Options: ``history`` (rows kept, default 100,000), ``max_age`` (seconds kept),
    ``schema`` ({column: dtype}), ``params`` and ``actions`` (declared controls).
    """
    return serve().stream(name, **options)
