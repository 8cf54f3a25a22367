"""The benchmark scenarios. Each returns a list of result rows (dicts) for the table.

Every server runs in its own process and every subscriber in a client process (several
connections per process); this process only steers them and samples the server's CPU and
memory with psutil. Every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

from . import bokeh_server, clients, ls_server, raw_tornado, wslib_client
from .common import ServerProcess, percentile, start_process

SERVERS: dict[str, Callable[..., None]] = {
    "livestream": ls_server.serve,
    "raw": raw_tornado.serve,
    "bokeh": bokeh_server.serve,
}
MiB = 1024 * 1024


def _split(n: int, parts: int) -> list[int]:
    parts = max(1, min(n, parts))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def client_procs(n: int) -> int:
    """Subscriber processes for ``n`` connections (the machine has 2 cores)."""
    return 1 if n <= 10 else 2 if n <= 100 else 4


#: Subscriber clients of livestream and raw Tornado (``--client``): ``light`` reads only
#: each frame's header (``benchmarks.wsclient``); ``websockets`` is the ``websockets``
#: library, decoding every frame and checking offsets row by row (``benchmarks.wslib_client``).
CLIENTS = ("light", "websockets")


def start_clients(
    kind: str,
    port: int,
    n: int,
    options: dict[str, Any] | None = None,
    procs: int | None = None,
    client: str = "light",
) -> list[ServerProcess]:
    options = options or {}
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}; got {client!r}")
    if kind == "bokeh":
        return [start_process(clients.bokeh_pages, port, n, options, timeout=300)]
    if kind == "bokeh-ws":
        return [
            start_process(clients.bokeh_ws_sessions, port, k, options, timeout=300)
            for k in _split(n, procs or client_procs(n))
        ]
    target = wslib_client.subscribers if client == "websockets" else clients.ws_subscribers
    return [
        start_process(target, kind, port, k, options, timeout=120)
        for k in _split(n, procs or client_procs(n))
    ]


def stop_all(procs: list[ServerProcess]) -> None:
    for p in procs:
        with contextlib.suppress(Exception):
            p.stop()


class _Sampler:
    """CPU and RSS of the server process over a window."""

    def __init__(self, pid: int, with_children: bool = False) -> None:
        self.proc = psutil.Process(pid)
        self.with_children = with_children
        self.cpu0 = 0.0
        self.t0 = 0.0

    def _total(self) -> float:
        times = self.proc.cpu_times()
        total = times.user + times.system
        if self.with_children:
            for child in self.proc.children(recursive=True):
                try:
                    t = child.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
        return total

    def start(self) -> None:
        self.cpu0 = self._total()
        self.t0 = time.monotonic()

    def cpu(self) -> float:
        """CPU use since ``start``, in per cent of one core."""
        return 100.0 * (self._total() - self.cpu0) / (time.monotonic() - self.t0)

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)


def _renice(pids: list[int], nice: int) -> None:
    """Give the processes of a latency run a higher scheduling priority (root only): they use
    a few per cent of a core, but on a machine busy with other work a runnable process can
    wait tens of milliseconds for a core, which would measure the machine, not the server."""
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.nice(nice)
            for child in proc.children(recursive=True):
                child.nice(nice)
        except (psutil.AccessDenied, psutil.NoSuchProcess, PermissionError):
            pass


def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def measure(
    kind: str,
    n: int,
    *,
    batch: int,
    shape: str = "arrays",
    rate: float | None = None,
    duration: float,
    warmup: float,
    latency: bool = False,
    keep_latency: bool = False,
    nice: int | None = None,
    server_options: dict[str, Any] | None = None,
    produce_options: dict[str, Any] | None = None,
    client_kind: str | None = None,
    client: str = "light",
) -> dict[str, Any]:
    """Run one server with ``n`` subscribers and its producer; count what they receive in a
    ``duration``-second window after ``warmup`` seconds. ``client_kind`` picks other
    subscribers than the server's own kind (``bokeh-ws``: Bokeh's protocol, no page);
    ``client`` the subscriber code for livestream and raw (:data:`CLIENTS`)."""
    server = start_process(SERVERS[kind], server_options or {})
    subs: list[ServerProcess] = []
    try:
        subs = start_clients(client_kind or kind, server.port, n, client=client)
        connected = sum(s.info["connected"] for s in subs)
        if connected != n:
            raise RuntimeError(f"{kind}: {connected} of {n} subscribers connected")
        if nice is not None:
            _renice([server.pid, *(s.pid for s in subs)], nice)
        sampler = _Sampler(server.pid)
        client_samplers = [_Sampler(s.pid, with_children=True) for s in subs]
        server.call(
            "produce",
            batch=batch,
            shape=shape,
            rate=rate,
            duration=warmup + duration + 30,
            **(produce_options or {}),
        )
        t0 = time.time() + warmup
        t1 = t0 + duration
        for s in subs:
            s.send("measure", t0=t0, t1=t1, latency=latency)
        _sleep_until(t0)
        sampler.start()
        for cs in client_samplers:
            cs.start()
        _sleep_until(t1)
        cpu = sampler.cpu()
        client_cpu = sum(cs.cpu() for cs in client_samplers)
        rss = sampler.rss()
        replies = [s.recv(duration + 60) for s in subs]
        produced = server.call("stop")
    finally:
        stop_all(subs)
        server.stop()
    rows = [r for rep in replies for r in rep["rows"]]
    frames = [f for rep in replies for f in rep["frames"]]
    nbytes = sum(b for rep in replies for b in rep["bytes"])
    gap = sum(g for rep in replies for g in rep["gap"])
    resets = sum(g for rep in replies for g in rep["resets"])
    lat = [x for rep in replies for x in rep.get("latency", [])]
    lags = [x for rep in replies for x in rep.get("lag", [])]
    offered = produced["appended"] / produced["elapsed"] if produced.get("elapsed") else math.nan
    per_sub = statistics.fmean(rows) / duration if rows else 0.0
    out: dict[str, Any] = {
        "server": kind,
        "client": client if kind != "bokeh" else (client_kind or "bokeh"),
        "n": n,
        "batch": batch,
        "duration": duration,
        "rows_per_sub": per_sub,
        "min_rows_per_sub": min(rows) / duration if rows else 0.0,
        "total_rows": sum(rows) / duration,
        "mb_per_s": nbytes / duration / 1e6,
        "frames_per_sub": statistics.fmean(frames) / duration if frames else 0.0,
        "rows_per_frame": sum(rows) / sum(frames) if sum(frames) else 0.0,
        "cpu": cpu,
        "client_cpu": client_cpu,
        "rss_mib": rss / MiB,
        "offered": offered,
        "gap_rows": gap,
        "resets": resets,
    }
    if any("errors" in rep for rep in replies):  # the websockets client checks every row
        out["skipped_rows"] = sum(x for rep in replies for x in rep.get("skipped_win", []))
        out["errors_run"] = sum(x for rep in replies for x in rep.get("errors", []))
        out["skipped_run"] = sum(x for rep in replies for x in rep.get("skipped", []))
    if latency:
        out.update(
            p50=percentile(lat, 50),
            p99=percentile(lat, 99),
            max=float(np.max(lat)) if lat else math.nan,
            samples=len(lat),
        )
        if keep_latency:
            out["latency_values"] = lat
    if lags:
        out.update(lag_p50=percentile(lags, 50), lag_p99=percentile(lags, 99))
    return out


# --------------------------------------------------------------------------- 1 and 2: fan-out

FANOUT_VARIANTS = {
    # name: (server, produce options, label)
    "raw": ("raw", {"mode": "await"}, "raw Tornado broadcast, awaits every write"),
    "livestream": (
        "livestream",
        {"on": "loop"},
        "livestream, async producer on the server's loop (as raw's), as fast as it can",
    ),
    "livestream-paced": (
        "livestream",
        {"on": "loop"},
        "livestream, async producer on the server's loop, offers the raw ceiling's rate",
    ),
    "livestream-thread": (
        "livestream",
        {"on": "thread"},
        "livestream, producer thread, offers the raw ceiling's rate",
    ),
    "livestream-thread-free": (
        "livestream",
        {"on": "thread"},
        "livestream, producer thread, as fast as it can",
    ),
    "livestream-thread-wait": (
        "livestream",
        {"on": "thread", "server_options": {"overflow": "wait"}},
        'livestream, producer thread, as fast as it can, stream(overflow="wait") (lossless)',
    ),
    "bokeh": ("bokeh", {}, "Bokeh server, one Chromium page per session"),
    "bokeh-ws": (
        "bokeh",
        {"client_kind": "bokeh-ws"},
        "Bokeh server, sessions speaking Bokeh's WebSocket protocol (no page)",
    ),
}


def fanout(
    ns: list[int],
    *,
    batch: int,
    shape: str,
    duration: float,
    warmup: float,
    variants: list[str],
    bokeh_max_n: int,
    log: Callable[[str], None],
    clients: tuple[str, ...] = ("light",),
) -> list[dict[str, Any]]:
    """Scenario 1 (``batch=1000``) and 2 (``batch=1``, ``shape="scalars"``).

    ``raw`` runs first at each N (its producer is a coroutine on its loop, awaiting every
    write). ``livestream`` runs its producer where raw's runs, on the server's loop (an
    async generator given to ``stream.producer``), as fast as it can. ``livestream-paced``
    (same place) and ``livestream-thread`` (a producer thread) offer exactly the rate the
    raw ceiling delivered per subscriber in this run; ``livestream-thread-free`` is a
    thread appending as fast as it can, never waiting for a viewer. Rows a subscriber
    cannot take before they leave the history are skipped with ``reset``: the loss
    column."""
    rows = []
    for n in ns:
        for client in clients:
            raw_rate: float | None = None
            for name in variants:
                kind, options, label = FANOUT_VARIANTS[name]
                options = dict(options)
                client_kind = options.pop("client_kind", None)
                server_options = options.pop("server_options", None)
                if name == "bokeh" and n > bokeh_max_n:
                    continue
                if kind == "bokeh" and client != clients[0]:
                    continue  # Bokeh's sessions have their own clients: measured once
                rate = None
                tag = f"N={n}" + (f", {client} client" if len(clients) > 1 else "")
                if name in ("livestream-paced", "livestream-thread"):
                    if not raw_rate:
                        log(f"  fan-out batch={batch} {tag}: {label}: skipped, no raw figure")
                        continue
                    rate = raw_rate
                log(f"  fan-out batch={batch} {tag}: {label}")
                try:
                    r = measure(
                        kind,
                        n,
                        batch=batch,
                        shape=shape,
                        rate=rate,
                        duration=duration,
                        warmup=warmup,
                        produce_options=options,
                        server_options=server_options,
                        client_kind=client_kind,
                        client=client,
                    )
                except Exception as exc:
                    log(f"    failed: {type(exc).__name__}: {exc}")
                    r = {
                        "server": kind,
                        "n": n,
                        "client": client,
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                r["variant"] = name
                r["label"] = label
                if name == "raw" and "error" not in r:
                    raw_rate = r["rows_per_sub"]
                # Rows the subscribers skipped (sent `reset` past them) among all rows that
                # went by them in the window.
                r["loss_pct"] = (
                    100.0 * r["gap_rows"] / max(1.0, r["gap_rows"] + r["total_rows"] * duration)
                    if "gap_rows" in r
                    else math.nan
                )
                rows.append(r)
                if "error" not in r:
                    extra = (
                        f", errors (gaps/duplicates) {r['errors_run']}" if "errors_run" in r else ""
                    )
                    log(
                        f"    {r['rows_per_sub']:,.0f} rows/s per subscriber, server CPU "
                        f"{r['cpu']:.0f}%, clients CPU {r['client_cpu']:.0f}%, "
                        f"{r['rows_per_frame']:,.0f} rows/frame, loss {r['loss_pct']:.1f}%{extra}"
                    )
    return rows


# --------------------------------------------------------------------------- 3: latency


def latency(
    *,
    n: int,
    rate: float,
    batch: int,
    duration: float,
    warmup: float,
    rounds: int,
    nice: int | None,
    log: Callable[[str], None],
    loop_producer: bool = False,
    client: str = "light",
) -> list[dict[str, Any]]:
    """Scenario 3. The two servers take turns (``rounds`` runs each of ``duration / rounds``
    seconds), so that load from outside the benchmark hits both alike; the percentiles are
    over the rows of all rounds together. ``livestream`` is a producer thread; with
    ``loop_producer`` a third, ``livestream-loop``, is an async producer on the server's
    loop. ``client``: the subscribers' code (:data:`CLIENTS`)."""
    turns: list[tuple[str, str, dict[str, Any]]] = [
        ("raw", "raw", {"mode": "nowait"}),
        ("livestream", "livestream", {}),
    ]
    if loop_producer:
        turns.append(("livestream-loop", "livestream", {"on": "loop"}))
    pooled: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in turns}
    lat: dict[str, list[float]] = {name: [] for name, _, _ in turns}
    for i in range(rounds):
        for name, kind, options in turns:
            log(
                f"  latency round {i + 1}/{rounds}, {name} ({client} client): {rate:,.0f} "
                f"rows/s in batches of {batch} to {n} subscribers"
            )
            r = measure(
                kind,
                n,
                batch=batch,
                rate=rate,
                duration=duration / rounds,
                warmup=warmup,
                latency=True,
                keep_latency=True,
                nice=nice,
                produce_options=options,
                client=client,
            )
            lat[name].extend(r.pop("latency_values"))
            pooled[name].append(r)
    rows = []
    for name, runs in pooled.items():
        kind = "raw" if name == "raw" else "livestream"
        values = np.asarray(lat[name])
        r = {
            "variant": name,
            "server": kind,
            "client": client,
            "n": n,
            "rate": rate,
            "batch": batch,
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "p99": percentile(values, 99),
            "max": float(values.max()) if values.size else math.nan,
            "samples": int(values.size),
            "cpu": statistics.fmean(x["cpu"] for x in runs),
            "rounds_p99": [x["p99"] for x in runs],
            "p99_median_of_rounds": float(np.median([x["p99"] for x in runs])),
        }
        rows.append(r)
        log(
            f"    {name}: p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, max {r['max']:.2f} ms "
            f"({r['samples']:,} rows)"
        )
    return rows


# --------------------------------------------------------------------------- 4: slow viewer


def _rss_series(
    sampler: _Sampler,
    seconds: float,
    every: float,
    t_start: float,
    stop_if: Callable[[int], bool] | None = None,
) -> list[tuple[float, float]]:
    series = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rss = sampler.rss()
        series.append((round(time.monotonic() - t_start, 2), rss / MiB))
        if stop_if is not None and stop_if(rss):
            break
        time.sleep(every)
    return series


def _slow_run(with_slow: bool, seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    log(
        f"  slow viewer: livestream, producer at full speed for {seconds:.0f} s, "
        f"{'with' if with_slow else 'without'} a subscriber that never reads"
    )
    server = start_process(SERVERS["livestream"], {})
    subs: list[ServerProcess] = []
    slow = None
    try:
        subs = start_clients("livestream", server.port, 1)
        sampler = _Sampler(server.pid)
        if with_slow:
            slow = clients.open_slow_socket(server.port)
            time.sleep(0.3)
        rss0 = sampler.rss()
        t_start = time.monotonic()
        server.call("produce", batch=1000, duration=seconds + 30)
        t0 = time.time() + 1.0
        t1 = time.time() + seconds
        subs[0].send("measure", t0=t0, t1=t1)
        sampler.start()
        series = _rss_series(sampler, seconds, 0.5, t_start)
        cpu = sampler.cpu()
        reply = subs[0].recv(60)
        info = server.call("info")
        server.call("stop")
    finally:
        if slow is not None:
            slow.close()
        stop_all(subs)
        server.stop()
    rate = reply["rows"][0] / (t1 - t0)
    warm = [v for t, v in series if t >= 3.0] or [series[-1][1]]
    out = {
        "rows_per_s": rate,
        "rss_start_mib": rss0 / MiB,
        "rss_at_3s_mib": warm[0],
        "rss_max_mib": max(v for _, v in series),
        "rss_end_mib": series[-1][1],
        "growth_mib": max(v for _, v in series) - rss0 / MiB,
        "growth_after_3s_mib": max(warm) - warm[0],
        "series": series,
        "gap": reply["gap"][0],
        "resets": reply["resets"][0],
        "cpu": cpu,
        "sessions_at_end": info["sessions"],
        "seconds": seconds,
    }
    log(
        f"    normal subscriber {rate:,.0f} rows/s; RSS {rss0 / MiB:.0f} -> max "
        f"{out['rss_max_mib']:.0f} MiB; sessions at end {info['sessions']}"
    )
    return out


def slow_viewer(
    *,
    duration: float,
    baseline: float,
    raw_limit_s: float,
    raw_limit_mib: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Scenario 4. Runs without, with, and again without the slow reader (A-B-A), so that a
    change of load from outside the benchmark does not pass for the slow reader's effect."""
    out: dict[str, Any] = {}
    before = _slow_run(False, baseline, log)
    out["with_slow"] = _slow_run(True, duration, log)
    after = _slow_run(False, baseline, log)
    out["without_slow"] = dict(before)
    out["without_slow"]["rows_per_s"] = (before["rows_per_s"] + after["rows_per_s"]) / 2
    out["without_slow"]["runs_rows_per_s"] = [before["rows_per_s"], after["rows_per_s"]]
    out["without_slow"]["resets"] = before["resets"] + after["resets"]
    out["ratio"] = out["with_slow"]["rows_per_s"] / max(1.0, out["without_slow"]["rows_per_s"])

    log(
        f"  slow viewer: raw Tornado that does not wait for writes (stops at {raw_limit_s:.0f} s "
        f"or {raw_limit_mib:.0f} MiB)"
    )
    server = start_process(SERVERS["raw"], {})
    subs = []
    slow = None
    try:
        subs = start_clients("raw", server.port, 1)
        slow = clients.open_slow_socket(server.port, subscribe=False)
        time.sleep(0.3)
        sampler = _Sampler(server.pid)
        rss0 = sampler.rss()
        t_start = time.monotonic()
        server.call("produce", batch=1000, mode="nowait", duration=raw_limit_s + 5)
        series = _rss_series(
            sampler, raw_limit_s, 0.5, t_start, stop_if=lambda rss: rss / MiB > raw_limit_mib
        )
        server.call("stop", timeout=60)
    finally:
        if slow is not None:
            slow.close()
        stop_all(subs)
        server.stop()
    out["raw_nowait"] = {
        "rss_start_mib": rss0 / MiB,
        "rss_max_mib": max(v for _, v in series),
        "growth_mib": max(v for _, v in series) - rss0 / MiB,
        "seconds": series[-1][0],
        "series": series,
    }
    log(
        f"    raw nowait RSS {rss0 / MiB:.0f} -> {out['raw_nowait']['rss_max_mib']:.0f} MiB "
        f"in {series[-1][0]:.1f} s"
    )
    return out


# --------------------------------------------------------------------------- 5: many viewers


def many_viewers(
    *, n: int, rate: float, duration: float, log: Callable[[str], None]
) -> dict[str, Any]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log(
        f"  many viewers: {n} subscribers at {rate:,.0f} rows/s (1-row appends) for "
        f"{duration:.0f} s; ulimit -n {soft} (hard {hard}); each process raises a lower soft limit to 16384"
    )
    server = start_process(SERVERS["livestream"], {})
    subs: list[ServerProcess] = []
    try:
        sampler = _Sampler(server.pid)
        time.sleep(0.5)
        rss_base = sampler.rss()
        t_connect = time.monotonic()
        subs = start_clients("livestream", server.port, n, procs=4)
        connect_s = time.monotonic() - t_connect
        connected = sum(s.info["connected"] for s in subs)
        time.sleep(0.5)
        rss_connected = sampler.rss()
        start = server.call("info")["end"]
        server.call("produce", batch=1, shape="scalars", rate=rate, duration=duration + 30)
        t0, t1 = time.time() + 0.5, time.time() + 0.5 + duration
        for s in subs:
            s.send("measure", t0=t0, t1=t1)
        _sleep_until(t0)
        sampler.start()
        _sleep_until(t1)
        cpu = sampler.cpu()
        rss_streaming = sampler.rss()
        windows = [s.recv(60) for s in subs]
        produced = server.call("stop")
        end = produced["end"]
        for s in subs:
            s.send("drain", end=end, timeout=20.0)
        drained = [s.recv(40) for s in subs]
        info = server.call("info")
    finally:
        stop_all(subs)
        server.stop()
    received = sum(sum(d["received"]) for d in drained)
    expected = sum(sum(d["expected"]) for d in drained)
    out = {
        "n": n,
        "connected": connected,
        "connect_s": connect_s,
        "rate": rate,
        "rows_appended": end - start,
        "rows_delivered": received,
        "rows_expected": expected,
        "lost": expected - received,
        "gaps": sum(sum(d["gap"]) for d in drained),
        "resets": sum(sum(d["resets"]) for d in drained),
        "complete": sum(d["complete"] for d in drained),
        "rows_per_sub_per_s": statistics.fmean(r for w in windows for r in w["rows"]) / duration,
        "frames_per_sub_per_s": statistics.fmean(f for w in windows for f in w["frames"])
        / duration,
        "cpu": cpu,
        "rss_base_mib": rss_base / MiB,
        "rss_connected_mib": rss_connected / MiB,
        "rss_streaming_mib": rss_streaming / MiB,
        "kib_per_conn_idle": (rss_connected - rss_base) / 1024 / max(1, n),
        "kib_per_conn_streaming": (rss_streaming - rss_base) / 1024 / max(1, n),
        "nofile_soft": soft,
        "subscribers_at_end": info["subscribers"],
    }
    log(
        f"    delivered {received:,} of {expected:,} rows (lost {out['lost']}), "
        f"{out['kib_per_conn_streaming']:.1f} KiB per connection, CPU {cpu:.0f}%"
    )
    return out
