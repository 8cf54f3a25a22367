"""The demo feeds: a random-walk market and a set of room sensors.

``livestream demo`` runs both on one server; notebooks use :func:`market` and
:func:`sensors` to get the same feeds on the default server.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from .controls import Choice, Float, Int
from .streams import Stream

__all__ = ["install", "market", "sensors"]

#: Declared up front so a dashboard opened before the first tick knows the columns.
MARKET_SCHEMA = {"time": "float64", "price": "float64", "volume": "int64"}
SENSOR_SCHEMA = {
    "time": "float64",
    "lab": "float64",
    "server_room": "float64",
    "outdoor": "float64",
    "humidity": "float64",
}

SYMBOLS = {"ACME": 100.0, "GLOBEX": 42.0, "INITECH": 7.5}


def market(stream: Stream, *, every: float = 0.05, seed: int | None = None) -> Any:
    """Attach a random-walk tick producer (time, price, volume) to ``stream``.

    Parameters viewers can change: ``volatility`` (0-0.2 per sqrt-second), ``drift``
    (-0.5 to 0.5 per second), ``symbol``; action ``shock`` jumps the price by 5%.
    """
    rng = random.Random(seed)
    price: dict[str, Any] = {"value": SYMBOLS["ACME"], "symbol": "ACME"}

    def shock(params: Any) -> None:
        price["value"] *= 1.05 if rng.random() < 0.5 else 0.95

    @stream.producer(
        every=every,
        params={
            "volatility": Float(0.02, min=0.0, max=0.2, step=0.005, label="Volatility"),
            "drift": Float(0.0, min=-0.5, max=0.5, step=0.01, label="Drift"),
            "symbol": Choice("ACME", choices=list(SYMBOLS), label="Symbol"),
        },
        actions={"shock": shock},
    )
    def tick(params: Any) -> dict[str, Any]:
        if params["symbol"] != price["symbol"]:
            price["symbol"], price["value"] = params["symbol"], SYMBOLS[params["symbol"]]
        dt = every
        ret = params["drift"] * dt + params["volatility"] * math.sqrt(dt) * rng.gauss(0, 1)
        price["value"] = max(0.01, price["value"] * math.exp(ret))
        return {
            "time": time.time() * 1000.0,
            "price": round(price["value"], 4),
            "volume": rng.randint(1, 500) * 10,
        }

    return tick


def sensors(stream: Stream, *, every: float = 0.1, seed: int | None = None) -> Any:
    """Attach a multi-sensor producer: three temperatures and a humidity, with noise.

    Parameters: ``noise`` (0-2 °C) and ``setpoint`` (15-30 °C, the indoor target).
    """
    rng = random.Random(seed)
    start = time.time()

    @stream.producer(
        every=every,
        params={
            "noise": Float(0.2, min=0.0, max=2.0, step=0.05, label="Noise (°C)"),
            "setpoint": Int(21, min=15, max=30, label="Setpoint (°C)"),
        },
    )
    def read(params: Any) -> dict[str, Any]:
        t = time.time()
        phase = (t - start) / 60.0 * 2 * math.pi
        noise = params["noise"]
        return {
            "time": t * 1000.0,
            "lab": params["setpoint"] + 0.8 * math.sin(phase) + rng.gauss(0, noise),
            "server_room": params["setpoint"]
            + 4
            + 1.5 * math.sin(phase * 1.7)
            + rng.gauss(0, noise),
            "outdoor": 8 + 3 * math.sin(phase / 4) + rng.gauss(0, noise),
            "humidity": min(1.0, max(0.0, 0.45 + 0.05 * math.sin(phase / 2) + rng.gauss(0, 0.01))),
        }

    return read


def install(server: Any) -> dict[str, Any]:
    """Create the ``prices`` and ``sensors`` streams with their producers on ``server``."""
    return {
        "prices": market(server.stream("prices", history=50_000, schema=MARKET_SCHEMA)),
        "sensors": sensors(server.stream("sensors", history=50_000, schema=SENSOR_SCHEMA)),
    }
