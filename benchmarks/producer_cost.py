"""Scenario 6: what ``Stream.append`` costs the producer, per call and per row.

Runs in its own process: a livestream server on its background loop (as ``ls.stream``
gives you), one stream, and a producer *thread* that appends batches in a bounded loop.
Each case is timed by wall clock and by the thread's own CPU time (``time.thread_time``),
for batches of 1, 100 and 10,000 rows in three shapes:

* ``dict of scalars / lists`` — Python values (a 1-row batch is a dict of scalars, the shape a
  tick producer returns; larger batches are a dict of Python lists);
* ``pandas DataFrame``;
* ``dict of numpy arrays``.

The inputs are built before the clock starts: the figures are the cost of ``append`` alone.
With no subscriber the loop does nothing but the coalesced wake, so this is the producer's
own cost.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from .common import HOST, TOKEN, child_setup, error_reply

SHAPES = ("python", "pandas", "numpy")
SHAPE_LABELS = {
    "python": "dict of scalars / lists",
    "pandas": "pandas DataFrame",
    "numpy": "dict of numpy arrays",
}


def _inputs(shape: str, size: int, count: int) -> list[Any]:
    import pandas as pd

    rng = np.random.default_rng(7)
    out: list[Any] = []
    for _ in range(count):
        cols = {
            "time": time.time() * 1000 + np.arange(size, dtype="f8"),
            "price": 100 + rng.normal(0, 1, size),
            "volume": rng.integers(1, 1000, size, dtype=np.int64),
        }
        if shape == "numpy":
            out.append(cols)
        elif shape == "pandas":
            out.append(pd.DataFrame(cols))
        elif size == 1:
            out.append(
                {
                    "time": float(cols["time"][0]),
                    "price": float(cols["price"][0]),
                    "volume": int(cols["volume"][0]),
                }
            )
        else:
            out.append({k: v.tolist() for k, v in cols.items()})
    return out


def run(conn: Any, sizes: list[int], seconds: float) -> None:
    """Process entry point: time every (shape, size) case and send back the results."""
    child_setup()
    try:
        from livestream.server import Server

        server = Server(HOST, 0, token=TOKEN).start()
        results: list[dict[str, Any]] = []

        def work() -> None:
            for shape in SHAPES:
                for size in sizes:
                    stream = server.stream(f"cost-{shape}-{size}")
                    # Enough distinct inputs to cycle through; the rows appended stay below
                    # what `seconds` allows (bounded in count and in time).
                    pool = _inputs(shape, size, 64 if size < 10_000 else 8)
                    stream.append(pool[0])  # infer the schema outside the clock
                    calls = 0
                    budget = max(50, int(2_000_000 / size))
                    w0, c0 = time.perf_counter(), time.thread_time()
                    deadline = w0 + seconds
                    while calls < budget and time.perf_counter() < deadline:
                        for item in pool:
                            stream.append(item)
                        calls += len(pool)
                    wall = time.perf_counter() - w0
                    cpu = time.thread_time() - c0
                    results.append(
                        {
                            "shape": shape,
                            "label": SHAPE_LABELS[shape],
                            "rows": size,
                            "calls": calls,
                            "us_per_call": 1e6 * wall / calls,
                            "ns_per_row": 1e9 * wall / (calls * size),
                            "cpu_us_per_call": 1e6 * cpu / calls,
                            "rows_per_s": calls * size / wall,
                        }
                    )

        thread = threading.Thread(target=work, name="bench-producer")
        thread.start()
        thread.join(seconds * len(SHAPES) * len(sizes) + 120)
        server.stop()
        conn.send({"port": 0, "results": results})
    except Exception as exc:
        conn.send(error_reply(exc))
