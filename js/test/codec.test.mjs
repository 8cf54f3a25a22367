// codec.js decodes the golden frames in tests/vectors/ (written by tests/test_codec_vectors.py,
// which checks that Python decodes them alike). Run: `npm test --prefix js` (tests/test_js.py
// runs it in the suite).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { NUMERIC_DTYPES, decodeBinaryFrame, decodeMessage, int64ToFloat64, isNumericDtype } from "../../livestream/static/codec.js";

const VECTORS = new URL("../../tests/vectors/", import.meta.url);
const expected = JSON.parse(readFileSync(new URL("expected.json", VECTORS), "utf8"));

/** What each dtype decodes to in the browser (int64 becomes float64: Bokeh needs numbers). */
const ARRAYS = {
  float64: Float64Array, float32: Float32Array, int32: Int32Array, int64: Float64Array,
  uint8: Uint8Array, bool: Uint8Array, str: Array, object: Array,
};

/** A frame in an ArrayBuffer of its own, as a WebSocket with binaryType "arraybuffer" gives it. */
function frame(file) {
  const bytes = readFileSync(new URL(file, VECTORS));
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

/** The expected value as JS holds it: "NaN"/"Infinity"/"-Infinity" as numbers, bool as 0/1. */
function want(dtype, v) {
  if (typeof v === "string" && (dtype === "float64" || dtype === "float32")) return Number(v);
  if (dtype === "bool") return v ? 1 : 0;
  return v;
}

test("the vectors cover every numeric dtype, str, object, an empty batch and padding", () => {
  const dtypes = new Set(Object.values(expected).flatMap((c) => Object.values(c.columns).map((d) => d.dtype)));
  assert.deepEqual([...dtypes].sort(), [...NUMERIC_DTYPES, "str", "object"].sort());
  assert.ok(Object.values(expected).some((c) => c.rows === 0), "an empty batch");
  assert.ok(Object.values(expected).some((c) => c.header_padding > 0), "header padding");
});

for (const [name, c] of Object.entries(expected)) {
  test(`decodes ${c.file}`, () => {
    for (const decoded of [decodeBinaryFrame(frame(c.file)), decodeMessage(frame(c.file))]) {
      const batch = /** @type {any} */ (decoded).batch ?? decoded;
      assert.equal(batch.stream, c.stream, name);
      assert.equal(batch.offset, c.offset, name);
      assert.equal(batch.rows, c.rows, name);
      assert.deepEqual(Object.keys(batch.columns), Object.keys(c.columns), name);
      for (const [column, { dtype, values }] of Object.entries(c.columns)) {
        const got = batch.columns[column];
        assert.ok(got instanceof ARRAYS[dtype], `${name}.${column}: ${got?.constructor?.name} for ${dtype}`);
        // Object.is: NaN is NaN, and -0 is not 0.
        assert.deepEqual(Array.from(got), values.map((v) => want(dtype, v)), `${name}.${column}`);
        for (let i = 0; i < values.length; i++) {
          assert.ok(Object.is(got[i], want(dtype, values[i])) || typeof got[i] === "object", `${name}.${column}[${i}]`);
        }
      }
    }
  });
}

test("isNumericDtype: the numeric dtypes but bool", () => {
  assert.deepEqual(NUMERIC_DTYPES.filter(isNumericDtype), ["float64", "float32", "int32", "int64", "uint8"]);
  assert.equal(isNumericDtype("str"), false);
});

test("int64ToFloat64: each value as Number(bigint) rounds it, without a BigInt per value", () => {
  const edges = [0n, 1n, -1n, 2n ** 31n, -(2n ** 31n), 2n ** 32n - 1n, 2n ** 32n, -(2n ** 32n), 2n ** 53n, 2n ** 53n + 1n,
    2n ** 53n + 3n, -(2n ** 53n) - 1n, -(2n ** 53n) - 3n, 2n ** 63n - 1n, -(2n ** 63n), 123456789012345n, -987654321098765n];
  // And a deterministic spread over the whole range (a 64-bit LCG).
  let x = 12345n;
  for (let i = 0; i < 10000; i++) {
    x = BigInt.asUintN(64, x * 6364136223846793005n + 1442695040888963407n);
    edges.push(BigInt.asIntN(64, x));
  }
  const ints = BigInt64Array.from(edges);
  const floats = int64ToFloat64(ints);
  assert.ok(floats instanceof Float64Array);
  assert.equal(floats.length, ints.length);
  for (let i = 0; i < ints.length; i++) assert.equal(floats[i], Number(ints[i]), `value ${ints[i]}`);
  // A view into a larger buffer (as in a frame) reads its own values only.
  const big = BigInt64Array.from([7n, -5n, 2n ** 40n, 9n]);
  assert.deepEqual([...int64ToFloat64(big.subarray(1, 3))], [-5, 2 ** 40]);
});
