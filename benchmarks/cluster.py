"""Issue 10: several livestream servers serving one set of streams through Redis, beside a
single server in the same run.

    python -m benchmarks --scenarios cluster          # about 2 minutes
    python -m benchmarks --scenarios cluster --quick  # a smoke run

A ``redis-server`` (Debian's, ``/usr/bin/redis-server``) runs on a free port in its own
folder without persistence. Every livestream server is ``benchmarks.ls_server`` (the
server a user runs, a producer thread calling ``stream.append``), started with
``LIVESTREAM_REDIS`` set for the cluster's nodes; the subscribers are
``benchmarks.clients.ws_subscribers``. Measured:

1. **Latency** at 1,000 rows/s (batches of 10), p50/p99 of ``arrival - append time`` over
   every row, with the subscribers on *another* node than the producer (each row goes
   producer → Redis → the node's reader → fan-out), against a single server. The two take
   turns (``rounds``), so load from outside hits both alike.
2. **Throughput** of one producer in 1,000-row batches as fast as it can: rows numbered in
   Redis per second (``end`` in the stream's hash), until the producer stops and Redis has
   every row; against the single server's appended rows per second.
3. **CPU per delivered row** with ``viewers`` subscribers spread over 3 nodes, against the
   same subscribers on one server: the servers' CPU seconds (psutil) over the rows the
   subscribers received in the window. Once with 10 viewers a node at 100,000 rows/s, and
   once with 100 a node at 20,000 rows/s (300 viewers at 100,000 rows/s would need more
   than the single server's one core): a node's reading is paid per batch, whatever its
   viewers, so the ratio depends on how many viewers share it, not on the rate. Each
   ``rounds`` times, single and Redis taking turns; the ratio is the median of the rounds.
4. **Redis CPU per batch**: ``used_cpu_user + used_cpu_sys`` from ``INFO cpu`` over the
   batches stored in the window of 3.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil

from . import clients, ls_server
from .common import STREAM, ServerProcess, percentile, start_process

REDIS_SERVER = "/usr/bin/redis-server"

FULL: dict[str, dict[str, Any]] = {
    "latency": {"n": 10, "rate": 1000.0, "batch": 10, "duration": 12.0, "rounds": 4},
    "throughput": {"batch": 1000, "duration": 5.0},
    "cpu": {
        "viewers": [30, 300],
        "rate": [100_000.0, 20_000.0],
        "batch": 1000,
        "duration": 8.0,
        "warmup": 2.0,
        "rounds": 2,
    },
}
QUICK: dict[str, dict[str, Any]] = {
    "latency": {"n": 4, "rate": 1000.0, "batch": 10, "duration": 4.0, "rounds": 2},
    "throughput": {"batch": 1000, "duration": 2.0},
    "cpu": {
        "viewers": [6],
        "rate": [50_000.0],
        "batch": 1000,
        "duration": 3.0,
        "warmup": 1.0,
        "rounds": 1,
    },
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """A throwaway ``redis-server``: (URL, pid)."""
    if not os.path.exists(REDIS_SERVER):
        raise RuntimeError(f"{REDIS_SERVER} is missing (apt-get install redis-server)")
    folder = tempfile.mkdtemp(prefix="livestream-bench-redis-")
    port = _free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            folder,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _redis_cpu(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def _redis_end(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        raw = client.hget(f"livestream:s:{STREAM}", "end")
        return int(raw) if raw else 0
    finally:
        client.close()


def start_nodes(count: int, redis_url: str | None) -> list[ServerProcess]:
    """``count`` livestream servers; with ``redis_url``, nodes of one service."""
    old = os.environ.get("LIVESTREAM_REDIS")
    try:
        if redis_url:
            os.environ["LIVESTREAM_REDIS"] = redis_url  # the spawned server reads it
        return [start_process(ls_server.serve, {}, timeout=60) for _ in range(count)]
    finally:
        if old is None:
            os.environ.pop("LIVESTREAM_REDIS", None)
        else:
            os.environ["LIVESTREAM_REDIS"] = old


def _stop(procs: list[ServerProcess]) -> None:
    for p in procs:
        with contextlib.suppress(Exception):
            p.stop()


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def _subscribers(port: int, n: int, latency: bool = False) -> ServerProcess:
    return start_process(clients.ws_subscribers, "livestream", port, n, {}, timeout=120)


def _measure(subs: list[ServerProcess], seconds: float, latency: bool) -> list[dict[str, Any]]:
    t0 = time.time() + 0.05
    for s in subs:
        s.send("measure", t0=t0, t1=t0 + seconds, latency=latency)
    return [s.recv(seconds + 60) for s in subs]


def latency(
    *, n: int, rate: float, batch: int, duration: float, rounds: int, redis_url: str, log: Any
) -> list[dict[str, Any]]:
    pooled: dict[str, list[float]] = {"single": [], "redis": []}
    resets = {"single": 0, "redis": 0}
    for i in range(rounds):
        for name in ("single", "redis"):
            log(f"  cluster latency round {i + 1}/{rounds}, {name}: {rate:,.0f} rows/s, N={n}")
            nodes = start_nodes(2 if name == "redis" else 1, redis_url if name == "redis" else None)
            subs: list[ServerProcess] = []
            try:
                viewer_node = nodes[-1]  # through Redis: another node than the producer's
                subs = [_subscribers(viewer_node.port, n)]
                nodes[0].call("produce", batch=batch, rate=rate, duration=duration + 30)
                time.sleep(1.0)  # warm up
                got = _measure(subs, duration / rounds, latency=True)
                nodes[0].call("stop")
                pooled[name] += [v for g in got for v in g["latency"]]
                resets[name] += sum(sum(g["resets"]) for g in got)
            finally:
                _stop(subs)
                _stop(nodes)
    rows = []
    for name, values in pooled.items():
        arr = np.asarray(values)
        rows.append(
            {
                "variant": name,
                "n": n,
                "rate": rate,
                "batch": batch,
                "rows": len(arr),
                "p50": percentile(arr, 50),
                "p99": percentile(arr, 99),
                "resets": resets[name],
            }
        )
    return rows


def throughput(*, batch: int, duration: float, redis_url: str, log: Any) -> list[dict[str, Any]]:
    rows = []
    for name in ("single", "redis"):
        log(f"  cluster throughput, {name}: one producer, {batch}-row batches, {duration} s")
        nodes = start_nodes(1, redis_url if name == "redis" else None)
        try:
            start_end = _redis_end(redis_url) if name == "redis" else 0
            cpu0 = _redis_cpu(redis_url)
            t0 = time.monotonic()
            nodes[0].call("produce", batch=batch, rate=None, duration=duration)
            time.sleep(duration)
            out = nodes[0].call("stop", timeout=120)
            appended = int(out["appended"])
            if name == "redis":
                # Done when Redis has numbered every appended row (the node buffers up to
                # 64 MiB for Redis; that wait counts).
                deadline = time.monotonic() + 120
                while _redis_end(redis_url) - start_end < appended:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                stored = _redis_end(redis_url) - start_end
                elapsed = time.monotonic() - t0
                redis_cpu = _redis_cpu(redis_url) - cpu0
            else:
                stored, elapsed, redis_cpu = appended, float(out["elapsed"]), 0.0
            rows.append(
                {
                    "variant": name,
                    "batch": batch,
                    "rows": stored,
                    "seconds": elapsed,
                    "rows_per_s": stored / elapsed if elapsed else 0.0,
                    "redis_cpu_per_batch_us": 1e6 * redis_cpu / max(1, stored // batch),
                }
            )
        finally:
            _stop(nodes)
    return rows


def cpu_per_row(
    *,
    viewers: list[int],
    rate: list[float],
    rounds: int,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Every viewer count (at its rate), ``rounds`` times, single and Redis taking turns
    (the order alternates from round to round)."""
    rows = []
    for n, r in zip(viewers, rate, strict=True):
        for i in range(rounds):
            order = ("single", "redis") if i % 2 == 0 else ("redis", "single")
            for variant in order:
                row = _cpu_per_row_once(variant=variant, viewers=n, rate=r, **kwargs)
                row["round"] = i
                rows.append(row)
    return rows


def _cpu_per_row_once(
    *,
    variant: str,
    viewers: int,
    rate: float,
    batch: int,
    duration: float,
    warmup: float,
    redis_url: str,
    log: Any,
) -> dict[str, Any]:
    rows = []
    for name, count in (("single", 1), ("redis", 3)):
        if name != variant:
            continue
        log(
            f"  cluster CPU per row, {name}: {viewers} viewers over {count} node(s), {rate:,.0f} rows/s"
        )
        nodes = start_nodes(count, redis_url if name == "redis" else None)
        subs: list[ServerProcess] = []
        try:
            per = [viewers // count + (1 if i < viewers % count else 0) for i in range(count)]
            subs = [_subscribers(node.port, k) for node, k in zip(nodes, per, strict=True) if k]
            nodes[0].call("produce", batch=batch, rate=rate, duration=duration + warmup + 30)
            time.sleep(warmup)
            pids = [node.pid for node in nodes]
            cpu0 = [_cpu([pid]) for pid in pids]
            rcpu0 = _redis_cpu(redis_url)
            end0 = _redis_end(redis_url) if name == "redis" else 0
            got = _measure(subs, duration, latency=False)
            cpu1 = [_cpu([pid]) for pid in pids]
            rcpu1 = _redis_cpu(redis_url)
            end1 = _redis_end(redis_url) if name == "redis" else 0
            nodes[0].call("stop")
            delivered = [sum(g["rows"]) for g in got]
            node_cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
            total_rows = sum(delivered)
            batches = max(1, (end1 - end0) // batch)
            rows.append(
                {
                    "variant": name,
                    "nodes": count,
                    "viewers": viewers,
                    "rate": rate,
                    "delivered_rows": total_rows,
                    "node_cpu_s": node_cpu,
                    "cpu_us_per_row": 1e6 * sum(node_cpu) / max(1, total_rows),
                    "producer_node_cpu_s": node_cpu[0],
                    "viewer_node_cpu_us_per_row": [
                        1e6 * c / max(1, d) for c, d in zip(node_cpu, delivered, strict=True)
                    ],
                    "redis_cpu_s": rcpu1 - rcpu0 if name == "redis" else 0.0,
                    "redis_cpu_per_batch_us": (
                        1e6 * (rcpu1 - rcpu0) / batches if name == "redis" else 0.0
                    ),
                    "resets": sum(sum(g["resets"]) for g in got),
                }
            )
        finally:
            _stop(subs)
            _stop(nodes)
    return rows[0]


def cpu_ratios(res_cpu: list[dict[str, Any]]) -> dict[int, list[float]]:
    """Viewers -> the Redis / single ratio of CPU per delivered row, one per round."""
    out: dict[int, list[float]] = {}
    by: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for r in res_cpu:
        by.setdefault((r["viewers"], r.get("round", 0)), {})[r["variant"]] = r
    for (viewers, _), pair in sorted(by.items()):
        if "single" in pair and "redis" in pair:
            single = max(1e-9, pair["single"]["cpu_us_per_row"])
            out.setdefault(viewers, []).append(pair["redis"]["cpu_us_per_row"] / single)
    return out


def run(*, log: Callable[[str], None], quick: bool = False) -> dict[str, Any]:
    cfg = QUICK if quick else FULL
    with redis_server() as (url, _pid):
        out: dict[str, Any] = {"config": cfg}
        out["latency"] = latency(redis_url=url, log=log, **cfg["latency"])
        out["throughput"] = throughput(redis_url=url, log=log, **cfg["throughput"])
        out["cpu"] = cpu_per_row(redis_url=url, log=log, **cfg["cpu"])
    return out


def render(res: dict[str, Any], fmt: Callable[..., str], table: Callable[..., str]) -> str:
    parts = []
    lat = {r["variant"]: r for r in res["latency"]}
    body = [
        [
            r["variant"],
            fmt(r["rows"]),
            fmt(r["p50"], 2),
            fmt(r["p99"], 2),
            str(r["resets"]),
        ]
        for r in res["latency"]
    ]
    extra = lat["redis"]["p99"] - lat["single"]["p99"]
    parts.append(
        "Cluster 1: latency at 1,000 rows/s, viewers on another node than the producer (ms)\n"
        + table(["variant", "rows", "p50", "p99", "resets"], body)
        + f"\n  p99 through Redis - single node: {extra:+.2f} ms (target <= +2 ms)"
    )
    body = [
        [
            r["variant"],
            fmt(r["rows"]),
            fmt(r["seconds"], 2),
            fmt(r["rows_per_s"]),
            fmt(r["redis_cpu_per_batch_us"], 1) if r["variant"] == "redis" else "",
        ]
        for r in res["throughput"]
    ]
    parts.append(
        "Cluster 2: one producer, 1,000-row batches, as fast as it can (target >= 5 M rows/s "
        "through Redis)\n" + table(["variant", "rows", "s", "rows/s", "Redis CPU us/batch"], body)
    )
    body = []
    for r in res["cpu"]:
        body.append(
            [
                r["variant"],
                str(r["viewers"]),
                str(r.get("round", 0) + 1),
                str(r["nodes"]),
                fmt(r["delivered_rows"]),
                fmt(r["cpu_us_per_row"], 3),
                " / ".join(f"{c:.2f}" for c in r["node_cpu_s"]),
                fmt(r["redis_cpu_per_batch_us"], 1) if r["variant"] == "redis" else "",
                str(r["resets"]),
            ]
        )
    lines = []
    rates = {r["viewers"]: r["rate"] for r in res["cpu"]}
    for viewers, ratios in cpu_ratios(res["cpu"]).items():
        each = ", ".join(f"{x:.2f}" for x in ratios)
        lines.append(
            f"\n  {viewers} viewers ({viewers // 3} a node, {rates[viewers]:,.0f} rows/s): "
            "through Redis / single node "
            f"{float(np.median(ratios)):.2f}x (rounds: {each}; target <= 1.2x)"
        )
    parts.append(
        "Cluster 3: server CPU per delivered row, viewers spread over the nodes\n"
        + table(
            [
                "variant",
                "viewers",
                "round",
                "nodes",
                "rows delivered",
                "CPU us/row",
                "CPU s per node",
                "Redis CPU us/batch",
                "resets",
            ],
            body,
        )
        + "".join(lines)
    )
    return "\n\n".join(parts)
