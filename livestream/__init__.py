"""livestream: live data from Python producers to Jupyter widgets and Bokeh plots.

::

    import random, time
    import livestream as ls

    last = {"price": 100.0}
    prices = ls.stream("prices", history=50_000)     # the default server starts on first use

    @prices.producer(every=0.05, params={"volatility": ls.Float(0.02, min=0, max=0.2)})
    def tick(params):
        price = last["price"] * (1 + params.volatility * random.gauss(0, 1) * 0.2)
        last["price"] = price
        return {"time": time.time() * 1000, "price": price}

    ls.Dashboard(prices, y="price")                  # in a notebook: a live dashboard

    with ls.connect("ws://127.0.0.1:8765", token=TOKEN) as feed:   # from another process
        feed.publish("sensors", {"time": t, "temp": 21.4})
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# Names are re-exported lazily, so that importing a pure submodule such as
# ``livestream.protocol`` does not load tornado (STYLE.md rule 1).
_EXPORTS = {
    "AllServersFailed": "client",
    "AsyncClient": "client",
    "Backoff": "client",
    "ConnectionEvent": "client",
    "Client": "client",
    "Subscription": "client",
    "connect": "client",
    "Batch": "columns",
    "to_batch": "columns",
    "Action": "controls",
    "Bool": "controls",
    "Choice": "controls",
    "Float": "controls",
    "Int": "controls",
    "ConfigError": "errors",
    "ConnectionClosed": "errors",
    "LivestreamError": "errors",
    "ProtocolError": "errors",
    "SchemaMismatch": "errors",
    "ServerError": "errors",
    "Limits": "limits",
    "Producer": "producer",
    "Server": "server",
    "serve": "jupyter",
    "shutdown": "jupyter",
    "Stream": "streams",
    "Controls": "widgets",
    "Dashboard": "widgets",
    "LivePlot": "widgets",
    "LiveTable": "widgets",
    "LiveValue": "widgets",
    "Status": "widgets",
}

if _TYPE_CHECKING:
    from .client import (
        AllServersFailed,
        AsyncClient,
        Backoff,
        Client,
        ConnectionEvent,
        Subscription,
        connect,
    )
    from .columns import Batch, to_batch
    from .controls import Action, Bool, Choice, Float, Int
    from .errors import (
        ConfigError,
        ConnectionClosed,
        LivestreamError,
        ProtocolError,
        SchemaMismatch,
        ServerError,
    )
    from .jupyter import serve, shutdown
    from .limits import Limits
    from .producer import Producer
    from .server import Server
    from .streams import Stream
    from .widgets import Controls, Dashboard, LivePlot, LiveTable, LiveValue, Status


def stream(name: str, **options: _Any) -> "Stream":
    """The stream ``name`` on the default server, created when new (starting the server).

    Options: ``history`` (rows kept, default 100,000), ``max_age`` (seconds kept),
    ``schema`` ({column: dtype}), ``params`` and ``actions`` (declared controls).
    """
    from .jupyter import stream as _stream

    return _stream(name, **options)


def replay(
    source: _Any, name: str | None = None, speed: float = 1.0, loop: bool = False, **options: _Any
) -> "Stream":
    """A stream on the default server fed from a recording folder, a Parquet file or a
    pandas DataFrame, at the recorded pace times ``speed`` (``float("inf")``: as fast as
    possible), with playback controls (speed, position, loop; pause and resume) that
    every Controls widget shows. Options: ``time`` (the time column, default ``"time"``),
    ``history``, ``server``. See docs/recording.md.
    """
    from .recording import replay as _replay

    server = options.pop("server", None)
    if server is None:
        from .jupyter import serve as _serve

        server = _serve()
    return _replay(source, name, speed, loop, server=server, **options)


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'livestream' has no attribute {name!r}")
    value = getattr(_import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


from .version import __version__  # noqa: E402

__all__ = [
    "Action",
    "AllServersFailed",
    "AsyncClient",
    "Backoff",
    "Batch",
    "Bool",
    "Choice",
    "Client",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionEvent",
    "Controls",
    "Dashboard",
    "Float",
    "Int",
    "Limits",
    "LivePlot",
    "LiveTable",
    "LiveValue",
    "LivestreamError",
    "Producer",
    "ProtocolError",
    "SchemaMismatch",
    "Server",
    "ServerError",
    "Status",
    "Stream",
    "Subscription",
    "__version__",
    "connect",
    "replay",
    "serve",
    "shutdown",
    "stream",
    "to_batch",
]
