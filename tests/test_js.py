"""The browser modules' toolchain in the suite: the committed widget bundle is what esbuild
builds from livestream/static/, ``tsc --checkJs --strict`` finds nothing, and the codec's
``node --test`` suite passes (the same golden frames as tests/test_codec_vectors.py).

The toolchain is pinned in js/package.json and js/package-lock.json; scripts/test.sh
installs it with ``npm ci --prefix js`` (Node.js from Debian's ``nodejs``/``npm``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"
BUNDLE = ROOT / "livestream" / "static" / "widget.bundle.js"


def _node() -> str:
    node = shutil.which("node")
    assert node, "Node.js is missing: run scripts/test.sh (it installs nodejs and npm)"
    return node


def _tool(path: str) -> Path:
    tool = JS / "node_modules" / path
    assert tool.exists(), f"{tool} is missing: run `npm ci --prefix js` (scripts/test.sh does)"
    return tool


def _run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_the_committed_widget_bundle_is_built_from_the_modules(tmp_path: Path) -> None:
    _tool("esbuild/package.json")
    done = _run(_node(), JS / "build.mjs", "--outdir", tmp_path)
    assert done.returncode == 0, done.stderr
    built = (tmp_path / "widget.bundle.js").read_text("utf-8")
    assert built == BUNDLE.read_text("utf-8"), (
        "livestream/static/widget.bundle.js is not what the modules build to: "
        "run `npm run build --prefix js` and commit the bundle with the modules"
    )


def test_the_modules_type_check_strictly() -> None:
    tsc = _tool("typescript/bin/tsc")
    done = _run(_node(), tsc, "-p", JS / "jsconfig.json", "--pretty", "false", timeout=240)
    assert done.returncode == 0, f"tsc --checkJs --strict found:\n{done.stdout}{done.stderr}"


@pytest.mark.timeout(180)
def test_the_codec_decodes_the_golden_frames_in_node() -> None:
    done = _run(_node(), "--test", JS / "test", timeout=120)
    assert done.returncode == 0, f"node --test js/test failed:\n{done.stdout}\n{done.stderr}"
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout, done.stdout
