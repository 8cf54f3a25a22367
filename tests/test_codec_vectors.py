"""Golden binary frames, decoded alike by Python (``livestream.protocol``) and JS (codec.js).

``tests/vectors/`` holds one binary ``data`` frame per case (every numeric dtype, ``str`` and
``object`` columns as JSON values, an empty batch, a frame with padding between buffers)
and ``expected.json``, what each decodes to. This module writes them (run it:
``python tests/test_codec_vectors.py``), checks the committed files are what the Python
encoder writes, and decodes them with ``livestream.protocol``; ``js/test/codec.test.mjs``
decodes the same files with codec.js (run by tests/test_js.py). In ``expected.json`` a
float that JSON cannot hold is a string: ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.

The numeric dtype list is written once per language (livestream/columns.py NUMERIC_DTYPES,
codec.js NUMERIC_DTYPES); the last test checks both against docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from livestream.columns import NUMERIC_DTYPES, Batch
from livestream.protocol import decode_batch_frame, encode_batch_frame

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"

#: name -> columns as {column: (dtype, values)}: the cases, in the order written.
CASES: dict[str, dict[str, tuple[str, list[Any]]]] = {
    "float64": {"x": ("float64", [1.5, -2.25, 1e300, -0.0, math.nan, math.inf, -math.inf])},
    "float32": {"x": ("float32", [0.5, -1.25, 1024.75, math.inf])},
    "int32": {"x": ("int32", [0, -1, 2**31 - 1, -(2**31)])},
    "int64": {"x": ("int64", [0, -1, 2**53, -(2**53), 1_700_000_000_000])},
    "uint8": {"x": ("uint8", [0, 255, 7])},
    "bool": {"x": ("bool", [True, False, True])},
    "str_object": {
        "s": ("str", ["a", "é ☃", "", "<b>x</b>"]),
        "o": ("object", [{"k": 1}, [1, 2], None, "text"]),
    },
    "empty": {"x": ("float64", []), "n": ("int32", []), "s": ("str", [])},
    # uint8 (3 bytes) and bool (3 bytes) leave 5 zero bytes before the next buffer.
    "padding": {
        "u": ("uint8", [1, 2, 3]),
        "b": ("bool", [False, True, False]),
        "t": ("float64", [1.7e12, 1.7e12 + 50, 1.7e12 + 100]),
        "i": ("int32", [-5, 0, 5]),
        "sym": ("str", ["AAPL", "MSFT", "AAPL"]),
    },
}


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def _array(dtype: str, values: list[Any]) -> np.ndarray:
    if dtype in NUMERIC_DTYPES:
        return np.array(values, dtype=NUMERIC_DTYPES[dtype])
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def write_vectors(folder: Path) -> None:
    """Write every case's frame and ``expected.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Any] = {}
    for offset, (name, columns) in enumerate(CASES.items()):
        batch = Batch(
            {c: _array(d, v) for c, (d, v) in columns.items()},
            {c: d for c, (d, _) in columns.items()},
        )
        header = {"type": "data", "stream": f"vectors-{name}", "offset": 100 * offset}
        frame = encode_batch_frame(header, batch)
        (folder / f"{name}.bin").write_bytes(frame)
        head_len = int.from_bytes(frame[:4], "little")
        expected[name] = {
            "file": f"{name}.bin",
            "stream": header["stream"],
            "offset": header["offset"],
            "rows": batch.rows,
            "header_padding": -(4 + head_len) % 8,
            "columns": {
                c: {"dtype": d, "values": [_json_value(x) for x in v]}
                for c, (d, v) in columns.items()
            },
        }
    text = json.dumps(expected, indent=1, ensure_ascii=False) + "\n"
    (folder / "expected.json").write_text(text, "utf-8")


def _same(dtype: str, got: Any, want: Any) -> bool:
    """Whether a decoded value is the expected one (NaN is NaN, -0.0 is not 0.0)."""
    if dtype in ("float64", "float32"):
        w = float(want)  # also parses "NaN", "Infinity", "-Infinity"
        if math.isnan(w):
            return math.isnan(got)
        return float(got) == w and math.copysign(1, got) == math.copysign(1, w)
    if dtype == "bool":
        return isinstance(got, np.bool_) and bool(got) is want
    if dtype in NUMERIC_DTYPES:
        return isinstance(got, np.integer) and int(got) == want
    return bool(got == want)


def test_the_vectors_are_what_the_python_encoder_writes(tmp_path: Path) -> None:
    write_vectors(tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in VECTORS.iterdir())
    assert written == committed, "run `python tests/test_codec_vectors.py` to rewrite them"
    for name in written:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), (
            f"tests/vectors/{name} differs from what the encoder writes now; if the change "
            "is meant, run `python tests/test_codec_vectors.py` (and check codec.js still agrees)"
        )


def test_python_decodes_every_vector() -> None:
    expected = json.loads((VECTORS / "expected.json").read_text("utf-8"))
    assert set(expected) == set(CASES)
    assert {c["dtype"] for case in expected.values() for c in case["columns"].values()} == {
        *NUMERIC_DTYPES,
        "str",
        "object",
    }, "the vectors must cover every dtype"
    assert any(case["header_padding"] for case in expected.values()), "no header padding"
    for name, case in expected.items():
        header, batch = decode_batch_frame((VECTORS / case["file"]).read_bytes())
        assert header == {
            "type": "data",
            "stream": case["stream"],
            "offset": case["offset"],
            "rows": case["rows"],
        }
        assert batch.rows == case["rows"], name
        assert list(batch.columns) == list(case["columns"]), name
        for column, want in case["columns"].items():
            assert batch.dtypes[column] == want["dtype"], (name, column)
            got = batch.columns[column]
            assert len(got) == len(want["values"]), (name, column)
            for g, w in zip(got, want["values"], strict=True):
                assert _same(want["dtype"], g, w), (name, column, g, w)


def test_the_numeric_dtypes_are_the_protocol_docs_in_python_and_js() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text("utf-8")
    section = doc[doc.index("## Binary frames") :]
    # The stream names and dtypes section lists them; the binary section says how many.
    listed = doc[doc.index("## Stream names and dtypes") : doc.index("## Binary frames")]
    table = re.findall(r"^\| `(\w+)` \|", listed, re.M)
    numeric = [d for d in table if d not in ("str", "object")]
    assert "one of the six numeric" in section and len(numeric) == 6, numeric
    assert list(NUMERIC_DTYPES) == numeric, "livestream/columns.py NUMERIC_DTYPES"
    codec = (ROOT / "livestream" / "static" / "codec.js").read_text("utf-8")
    block = codec[codec.index("const BUFFER_DTYPES = {") :]
    js = re.findall(r"^  (\w+): \{ ctor:", block[: block.index("};")], re.M)
    assert js == numeric, "codec.js BUFFER_DTYPES (its NUMERIC_DTYPES)"


if __name__ == "__main__":
    write_vectors(VECTORS)
    print(f"wrote {len(CASES)} frames and expected.json to {VECTORS}", file=sys.stderr)
