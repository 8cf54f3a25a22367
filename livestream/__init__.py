"""livestream: live data from Python producers to Jupyter widgets and Bokeh plots.

::

    import livestream as ls

    prices = ls.stream("prices", history=50_000)     # the default server starts on first use

    @prices.producer(every=0.05, params={"volatility": ls.Float(0.02, min=0, max=0.2)})
    def tick(params):
        return {"time": now_ms(), "price": next_price(params.volatility)}

    with ls.connect("ws://127.0.0.1:8765", token=TOKEN) as feed:   # from another process
        feed.publish("sensors", {"time": t, "temp": 21.4})
"""

from .client import AsyncClient, Client, Subscription, connect
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
from .producer import Producer
from .server import Server, serve, shutdown, stream
from .stream import Stream

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AsyncClient",
    "Batch",
    "Bool",
    "Choice",
    "Client",
    "ConfigError",
    "ConnectionClosed",
    "Float",
    "Int",
    "LivestreamError",
    "Producer",
    "ProtocolError",
    "SchemaMismatch",
    "Server",
    "ServerError",
    "Stream",
    "Subscription",
    "__version__",
    "connect",
    "serve",
    "shutdown",
    "stream",
    "to_batch",
]
