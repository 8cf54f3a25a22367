"""Scenario 7, second half: the same rows pushed with Bokeh's ``push_notebook``.

A real JupyterLab (``jupyter lab`` on 127.0.0.1, its own token) opens a notebook in Debian's
Chromium; the notebook shows a Bokeh figure with ``show(fig, notebook_handle=True)`` and then,
for each offered rate, streams ``rate / 100`` rows into its ``ColumnDataSource`` (rollover
100,000) and calls ``push_notebook`` 100 times a second. The page counts what BokehJS
applies, exactly as for the livestream page (``ColumnsStreamed`` document events, animation
frames, lag of the newest row).

``push_notebook`` in JupyterLab 4 and Notebook 7 needs the ``jupyter_bokeh`` extension: it
hands BokehJS the kernel (``Bokeh.embed.kernels``) on which the comm target is registered;
without it ``push_notebook`` sends comm messages that nothing in the page receives. When
``jupyter_bokeh`` or JupyterLab is missing this scenario says so and measures nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .clients import CHROMIUM, CHROMIUM_ARGS
from .common import HOST, percentile

NOTEBOOK_CODE = [
    """\
import json, time
import numpy as np
from bokeh.io import output_notebook, push_notebook, show
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from bokeh.resources import INLINE
output_notebook(resources=INLINE, hide_banner=True)  # BokehJS inlined: no CDN on this machine
source = ColumnDataSource(data={"time": np.zeros(0), "price": np.zeros(0),
                                "volume": np.zeros(0, dtype=np.int64)})
fig = figure(width=900, height=350, x_axis_type="datetime")
fig.line("time", "price", source=source)
handle = show(fig, notebook_handle=True)""",
    """\
RATES, WARMUP, SECONDS = {rates!r}, {warmup!r}, {seconds!r}
import os
ready_by = time.time() + 120  # the benchmark says when the page shows the figure (bounded)
while not os.path.exists({ready!r}) and time.time() < ready_by:
    time.sleep(0.1)
rng = np.random.default_rng(1)
schedule = []
for rate in RATES:
    batch = max(1, rate // 100)
    price = 100 + np.cumsum(rng.normal(0, 0.01, batch * 8))
    volume = rng.integers(1, 1000, batch * 8, dtype=np.int64)
    start = time.time()
    end = start + WARMUP + SECONDS
    due = time.monotonic()
    k = 0
    while time.time() < end:
        lo = (k % 8) * batch
        source.stream({{"time": np.full(batch, time.time() * 1000.0),
                        "price": price[lo:lo + batch], "volume": volume[lo:lo + batch]}},
                      rollover=100_000)
        push_notebook(handle=handle)
        k += 1
        due += batch / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            due = time.monotonic()
    schedule.append([rate, start + WARMUP, end, k * batch / (end - start)])
    time.sleep(1.0)
with open({done!r}, "w") as f:
    json.dump(schedule, f)""",
]

# Records every ColumnsStreamed event and every animation frame (page clock = machine clock).
PAGE_RECORDER = """
() => {
  const w = window;
  if (w.__bench) return true;
  const docs = (w.Bokeh && w.Bokeh.documents) || [];
  if (!docs.length) return false;
  const b = w.__bench = {events: [], frames: []};
  for (const doc of docs) {
    doc.on_change((ev) => {
      if (ev.kind !== "ColumnsStreamed") return;
      const t = ev.data.time;
      const n = t.length;
      b.events.push([Date.now(), n, n ? t[n - 1] : 0]);
    });
  }
  const tick = () => { b.frames.push(Date.now()); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  return true;
}
"""


def missing() -> str | None:
    """Why push_notebook cannot be measured here, or None when it can."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "JupyterLab is not installed"
    try:
        import jupyter_bokeh  # noqa: F401
    except ImportError:
        return (
            "the jupyter_bokeh extension is not installed: in JupyterLab 4 and Notebook 7 "
            "it is what registers push_notebook's comm target in the page "
            "(pip install jupyter_bokeh)"
        )
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def push_notebook_page(
    rates: list[int], *, seconds: float, warmup: float, log: Any
) -> list[dict[str, Any]]:
    reason = missing()
    if reason is not None:
        log(f"  push_notebook: not measured: {reason}")
        return [{"server": "push_notebook", "error": reason}]
    from playwright.sync_api import sync_playwright

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        done = root / "schedule.json"
        cells = [
            NOTEBOOK_CODE[0],
            NOTEBOOK_CODE[1].format(
                rates=list(rates),
                warmup=warmup,
                seconds=seconds,
                done=str(done),
                ready=str(root / "ready"),
            ),
        ]
        nb = {
            "cells": [
                {
                    "cell_type": "code",
                    "metadata": {},
                    "execution_count": None,
                    "outputs": [],
                    "source": c,
                }
                for c in cells
            ],
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        (root / "push.ipynb").write_text(json.dumps(nb))
        port, token = _free_port(), secrets.token_hex(16)
        lab = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                f"--ip={HOST}",
                f"--port={port}",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True",
                "--ServerApp.open_browser=False",
                *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(root / "runtime")},
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection((HOST, port), timeout=1):
                        break
                except OSError:
                    time.sleep(0.3)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.goto(
                        f"http://{HOST}:{port}/lab/tree/push.ipynb?token={token}", timeout=90_000
                    )
                    page.wait_for_function(
                        "() => { const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
                        " const k = w && w.sessionContext && w.sessionContext.session &&"
                        " w.sessionContext.session.kernel; return !!k && k.status === 'idle'; }",
                        timeout=120_000,
                        polling=250,
                    )
                    page.evaluate(
                        "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"
                    )
                    page.wait_for_function(PAGE_RECORDER, timeout=120_000, polling=100)
                    (root / "ready").touch()  # the push loop may start
                    total = len(rates) * (warmup + seconds + 1.0) + 60
                    end = time.monotonic() + total
                    while not done.exists() and time.monotonic() < end:
                        time.sleep(0.5)
                    if not done.exists():
                        raise TimeoutError("the notebook's push loop did not finish in time")
                    schedule = json.loads(done.read_text())
                    rec = page.evaluate("() => window.__bench")
                finally:
                    browser.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lab.pid, signal.SIGTERM)
            try:
                lab.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(lab.pid, signal.SIGKILL)
                lab.wait(5)
    for rate, start, stop, pushed in schedule:
        t0, t1 = start * 1000.0, stop * 1000.0
        events = [e for e in rec["events"] if t0 <= e[0] < t1]
        frames = [f for f in rec["frames"] if t0 <= f < t1]
        span = (t1 - t0) / 1000.0
        lags = [e[0] - e[2] for e in events if e[1] and e[2] > 1e12]
        r = {
            "server": "push_notebook (JupyterLab)",
            "offered": rate,
            "rows_per_s": sum(e[1] for e in events) / span,
            "streams_per_s": len(events) / span,
            "fps": len(frames) / span,
            "lag_p50": percentile(lags, 50),
            "lag_p99": percentile(lags, 99),
            "lag_max": max(lags) if lags else float("nan"),
            "appended_per_s": pushed,
        }
        rows.append(r)
        log(
            f"  push_notebook {rate:,} rows/s offered: {r['rows_per_s']:,.0f} rows/s into the "
            f"plot, {r['fps']:.0f} fps, lag p50 {r['lag_p50']:.0f} ms, p99 {r['lag_p99']:.0f} ms"
        )
    return rows
