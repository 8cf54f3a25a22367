"""Scenarios ``record`` and ``replay``: what recording costs the live feed, and how fast
recordings are written and played back (livestream/recording.py, docs/recording.md).

``record``:

* fan-out with a recorder attached vs without, in one run: a server process whose producer
  (an async generator on the server's loop, as in scenario 1) appends 1,000-row batches at full speed to one stream, N subscribers in another
  process; the same measurement with ``Stream.record`` running in the server process.
  Target: with / without >= 0.9 (rows per second per subscriber).
* the rows per second a recorder sustains when a producer thread appends 1,000-row batches
  as fast as it can (from the first append until ``stop()`` returns with the last row on
  disk; the history holds them all, so the recorder is never reset). Target >= 5 M rows/s.
* bytes per row on disk (time, a random-walk price, a volume; zstd; with ``_offset`` and
  ``_epoch``).

``replay``: a recording played back "as fast as possible" into a stream with no viewer
and the default history (100,000 rows), from ``replay()`` until its last row is appended
(reading the Parquet files included).
Target >= 10 M rows/s.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import HOST, STREAM, TOKEN, child_setup, error_reply, start_process

QUICK = {"n": 10, "seconds": 2.0, "warmup": 1.0, "rows": 2_000_000}
FULL = {"n": 10, "seconds": 5.0, "warmup": 2.0, "rows": 5_000_000}


def _batches(count: int, size: int = 1000, seed: int = 7) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    t0 = time.time() * 1000.0
    price = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-4, count * size)))
    volume = rng.integers(1, 500, count * size, dtype=np.int64) * 10
    return [
        {
            "time": t0 + np.arange(i * size, (i + 1) * size, dtype="f8") * 0.05,
            "price": np.round(price[i * size : (i + 1) * size], 4),
            "volume": volume[i * size : (i + 1) * size],
        }
        for i in range(count)
    ]


def _server(conn: Any, record_to: str | None) -> None:
    """Process entry point: a server whose producer thread appends 1,000-row batches at full
    speed (on its loop); with ``record_to``, a recorder of the stream runs in the same process."""
    child_setup()
    try:
        import livestream as ls

        server = ls.Server(HOST, 0, token=TOKEN, history=100_000).start()
        stream = server.stream(STREAM)
        batches = _batches(100)
        stop = threading.Event()

        async def produce() -> Any:
            # Scenario 1's primary producer: on the server's loop at full speed, yielding
            # to the loop between batches.
            import asyncio

            i = 0
            while not stop.is_set():
                await asyncio.sleep(0)
                yield batches[i % 100]
                i += 1

        producer = stream.producer(produce)
        rec = stream.record(record_to) if record_to else None
        conn.send({"port": server.port, "kind": "server"})
        while True:
            msg = conn.recv()
            if msg["cmd"] == "quit":
                break
            if msg["cmd"] == "stats":
                conn.send({"appended": stream.end, "recorded": rec.rows if rec else 0})
        stop.set()
        producer.stop()
        if rec is not None:
            rec.stop()
        server.stop()
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(error_reply(exc))


def fanout_with_recorder(
    n: int, seconds: float, warmup: float, log: Any, tmp: Path
) -> list[dict[str, Any]]:
    from .clients import ws_subscribers

    out = []
    # Alternated, three times each: the machine is shared, so the best of each and the
    # median of the three paired ratios are reported.
    for variant in ("without recorder", "with recorder") * 3:
        log(f"  fan-out N={n}, 1,000-row batches, {variant}")
        record_to = str(tmp / "fanout") if variant == "with recorder" else None
        with (
            start_process(_server, record_to) as server,
            start_process(ws_subscribers, "livestream", server.port, n, {}) as subs,
        ):
            time.sleep(warmup)  # a fixed warm-up before the window, as in scenario 1
            before = server.call("stats")
            t0 = time.time()
            subs.send("measure", t0=t0, t1=t0 + seconds)
            got = subs.recv(seconds + 30)
            after = server.call("stats")
        rows = got["rows"]
        out.append(
            {
                "variant": variant,
                "n": n,
                "rows_per_sub": sum(rows) / len(rows) / seconds,
                "min_rows_per_sub": min(rows) / seconds,
                "appended_per_s": (after["appended"] - before["appended"]) / seconds,
                "recorded_per_s": (after["recorded"] - before["recorded"]) / seconds,
            }
        )
    best: dict[str, dict[str, Any]] = {}
    for r in out:
        if r["variant"] not in best or r["rows_per_sub"] > best[r["variant"]]["rows_per_sub"]:
            best[r["variant"]] = r
    pairs = [
        b["rows_per_sub"] / a["rows_per_sub"]
        for a, b in zip(out[0::2], out[1::2], strict=True)
        if a["rows_per_sub"]
    ]
    best["with recorder"]["paired_ratios"] = pairs
    return [best["without recorder"], best["with recorder"]]


def recorder_throughput(rows: int, tmp: Path) -> dict[str, Any]:
    import pandas as pd

    import livestream as ls

    server = ls.Server(HOST, 0, token=TOKEN, history=rows).start()
    try:
        stream = server.stream("sustain")
        batches = _batches(rows // 1000)
        rec = stream.record(tmp / "sustain")
        started = time.perf_counter()
        for b in batches:
            stream.append(b)
        appended = time.perf_counter() - started
        rec.stop()  # returns once the recorder has read every row and written it out
        on_disk = time.perf_counter() - started
        frame = pd.read_parquet(tmp / "sustain")
        assert len(frame) == rows, (len(frame), rows)
        data = sum(p.stat().st_size for p in (tmp / "sustain" / "stream=sustain").iterdir())
        return {
            "rows": rows,
            "append_rows_per_s": rows / appended,
            "recorded_rows_per_s": rows / on_disk,
            "bytes_per_row": data / rows,
            "files": rec.files,
        }
    finally:
        server.stop()


def replay_throughput(rows: int, tmp: Path) -> dict[str, Any]:
    import livestream as ls
    from livestream.recording import finished, replay

    server = ls.Server(HOST, 0, token=TOKEN).start()
    try:
        source = tmp / "sustain"
        started = time.perf_counter()
        # The default history (100,000 rows), as ls.replay gives: a history of every row
        # would time the first touch of its fresh memory, not the replay.
        stream = replay(source, "replayed", float("inf"), server=server)
        loaded = time.perf_counter() - started
        assert finished(stream, 120)
        total = time.perf_counter() - started
        assert stream.end == rows, (stream.end, rows)
        return {
            "rows": rows,
            "rows_per_s": rows / total,
            "load_s": loaded,
            "playback_rows_per_s": rows / (total - loaded),
        }
    finally:
        server.stop()


def run(
    *, n: int, seconds: float, warmup: float, rows: int, log: Any, scenarios: Any
) -> dict[str, Any]:
    """Both scenarios, as chosen (``scenarios``: a set holding ``record`` and/or ``replay``)."""
    tmp = Path(tempfile.mkdtemp(prefix="livestream-bench-"))
    out: dict[str, Any] = {}
    try:
        if "record" in scenarios:
            out["fanout"] = fanout_with_recorder(n, seconds, warmup, log, tmp)
            log(f"  recorder throughput, {rows:,} rows in 1,000-row batches (best of 2)")
            runs = []
            for _ in range(2):
                shutil.rmtree(tmp / "sustain", ignore_errors=True)
                runs.append(recorder_throughput(rows, tmp))
            out["recorder"] = max(runs, key=lambda r: r["recorded_rows_per_s"])
        if "replay" in scenarios:
            if not (tmp / "sustain").exists():
                recorder_throughput(rows, tmp)
            log(f"  replay as fast as possible, {rows:,} rows")
            out["replay"] = replay_throughput(rows, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def render(results: dict[str, Any], fmt: Any, table: Any) -> str:
    parts = []
    fan = results.get("fanout")
    if fan:
        body = [
            [
                r["variant"],
                str(r["n"]),
                fmt(r["rows_per_sub"]),
                fmt(r["min_rows_per_sub"]),
                fmt(r["appended_per_s"]),
                fmt(r["recorded_per_s"]),
            ]
            for r in fan
        ]
        ratio = fan[1]["rows_per_sub"] / fan[0]["rows_per_sub"] if fan[0]["rows_per_sub"] else 0
        parts.append(
            "9. Record: fan-out with a recorder attached (producer on the loop, 1,000-row batches)\n"
            + table(["server", "N", "rows/s/sub", "min/sub", "appended/s", "recorded/s"], body)
            + f"\nwith / without = {ratio:.2f} best of each (target >= 0.9); paired runs: "
            + ", ".join(f"{p:.2f}" for p in fan[1].get("paired_ratios", []))
            + f" (median {float(np.median(fan[1].get('paired_ratios') or [0])):.2f})"
        )
    rec = results.get("recorder")
    if rec:
        parts.append(
            table(
                [
                    "rows",
                    "appended rows/s",
                    "recorded rows/s (target >= 5 M)",
                    "bytes/row",
                    "files",
                ],
                [
                    [
                        fmt(rec["rows"]),
                        fmt(rec["append_rows_per_s"]),
                        fmt(rec["recorded_rows_per_s"]),
                        fmt(rec["bytes_per_row"], 2),
                        fmt(rec["files"]),
                    ]
                ],
            )
        )
    rep = results.get("replay")
    if rep:
        parts.append(
            "10. Replay from Parquet, as fast as possible\n"
            + table(
                ["rows", "rows/s (target >= 10 M)", "of which loading s", "playback rows/s"],
                [
                    [
                        fmt(rep["rows"]),
                        fmt(rep["rows_per_s"]),
                        fmt(rep["load_s"], 2),
                        fmt(rep["playback_rows_per_s"]),
                    ]
                ],
            )
        )
    return "\n\n".join(parts)
