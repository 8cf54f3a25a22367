"""Every notebook in notebooks/ runs headless, top to bottom, without an error.

Each notebook is executed by nbclient in a real ``python3`` kernel, from a temporary copy
of the notebooks folder (so outputs are never written back and files a notebook creates
land in the copy). A cell that raises fails the test with the cell's source and the
traceback. After the last cell, one more cell runs in the same kernel and reports every
stream of the default server: a producer that failed (status ``error``) fails the test
too, since a failing producer does not raise in any cell.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from jupyter_support import kernel_manager, socket_dir
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds per cell; a notebook's slowest cell waits for a subprocess

REPORT = """
import json, livestream.jupyter as _jupyter
_default = _jupyter._default
print(json.dumps({
    "running": _default is not None and _default.running,
    "streams": {name: {"state": s.state, "rows": s.end}
                for name, s in (_default.hub.streams.items() if _default else [])},
}))
"""


def test_there_are_notebooks() -> None:
    names = [p.name for p in NOTEBOOK_PATHS]
    assert names[:7] == [
        "01-quickstart.ipynb",
        "02-market-feed.ipynb",
        "03-sensor-dashboard.ipynb",
        "04-remote-producer.ipynb",
        "05-bring-your-own-bokeh.ipynb",
        "06-pandas.ipynb",
        "07-record-replay.ipynb",
    ], names


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_notebook_is_a_tutorial(path: Path) -> None:
    """Prose between the steps: a title, and a markdown cell before most code cells."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), (
        f"{path.name} must open with a markdown title"
    )
    code = [c for c in nb.cells if c.cell_type == "code"]
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert len(markdown) >= len(code) // 2 + 1, f"{path.name}: too little prose for its code"
    assert all(not c.get("outputs") for c in code), f"{path.name} is stored with outputs"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.timeout(400)
@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_notebook_runs_headless(path: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, workdir)
    nb = nbformat.read(workdir / path.name, as_version=4)
    with socket_dir() as sockets:
        client = NotebookClient(
            nb,
            km=kernel_manager(sockets),
            timeout=CELL_TIMEOUT,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
            allow_errors=False,
            startup_timeout=120,
            shutdown_kernel="graceful",
        )
        with client.setup_kernel():
            try:
                for index, cell in enumerate(list(nb.cells)):
                    client.execute_cell(cell, index)
            except CellExecutionError as err:
                pytest.fail(f"{path.name} failed:\n{err}")
            report_cell = nbformat.v4.new_code_cell(REPORT)
            nb.cells.append(report_cell)
            client.execute_cell(report_cell, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in report_cell.outputs if o.output_type == "stream")
    report = json.loads(text.strip().splitlines()[-1])

    assert report["running"], f"{path.name}: the default server is not running after the notebook"
    failed = {
        n: s["state"] for n, s in report["streams"].items() if s["state"]["status"] == "error"
    }
    assert not failed, f"{path.name}: producers failed: {failed}"
    empty = [n for n, s in report["streams"].items() if s["rows"] == 0]
    assert not empty, f"{path.name}: streams that never got a row: {empty}"

    errors = [
        (i, o.get("text", ""))
        for i, cell in enumerate(nb.cells)
        for o in cell.get("outputs", [])
        if o.output_type == "stream"
        and o.name == "stderr"
        and ("Traceback" in o.get("text", "") or "failed" in o.get("text", ""))
    ]
    assert not errors, f"{path.name}: errors printed by the notebook: {errors}"
    # The copy is what ran: the repository's notebook keeps no outputs.
    assert not any(c.get("outputs") for c in nbformat.read(path, as_version=4).cells)
