"""The benchmark code must keep working: run the quick fan-out scenario for one subscriber.

``python -m benchmarks --quick --scenarios fanout --n 1`` starts, in separate processes, the
livestream server, the raw Tornado broadcast and the Bokeh server (whose session is a
Chromium page), each with one subscriber, and prints its table. This test runs it the same
way (a subprocess, bounded in time) and checks that every server delivered rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.browser
@pytest.mark.timeout(90)
def test_quick_fanout_for_one_subscriber_gives_figures_for_all_three_servers(
    tmp_path: Path,
) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--scenarios",
            "fanout",
            "--n",
            "1",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    rows = {r["variant"]: r for r in figures["fanout"]}
    assert set(rows) == {"raw", "livestream", "livestream-thread", "bokeh"}, rows
    for name, row in rows.items():
        assert "error" not in row, f"{name}: {row.get('error')}"
        assert row["n"] == 1
        assert row["rows_per_sub"] > 0, f"{name} delivered no rows: {row}"
        assert row["total_rows"] > 0 and row["cpu"] > 0, row
    assert "ratios (same run" in proc.stdout
