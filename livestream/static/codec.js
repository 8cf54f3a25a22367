// @ts-check
// codec.js — protocol v1 frames (docs/protocol.md), no I/O: JSON messages in and out, binary
// `data` frames decoded into typed-array views without copying, batches sliced and merged;
// the numeric dtype list (NUMERIC_DTYPES), once for JS.
import { LivestreamError, ProtocolError } from "./errors.js";

/** The wire protocol version this module speaks. */
export const PROTOCOL_VERSION = 1;
/** Column names taken as time (ms since the Unix epoch), in order of preference. */
export const TIME_COLUMNS = Object.freeze(["time", "timestamp", "t"]);
/** The synthetic plot column holding each row's stream offset (see livestream/plots.py). */
export const OFFSET_COLUMN = "__offset__";

/**
 * @typedef {Float64Array | Float32Array | Int32Array | Uint8Array | Array<unknown>} Column
 *   A column of values: a typed array for numeric dtypes, a plain array otherwise.
 */
/**
 * @typedef {object} Batch  Rows `offset .. offset + rows - 1` of a stream, by column.
 * @property {string} stream
 * @property {number} offset  offset of the first row
 * @property {number} rows    number of rows (every column has this length)
 * @property {Record<string, Column>} columns
 */
/**
 * @typedef {{name: string, dtype: string, offset: number, nbytes: number}} BufferColumnHeader
 * @typedef {{name: string, values: unknown[], dtype?: string}} ValuesColumnHeader
 */
/**
 * @typedef {object} StreamState  Broadcast stream state (`state` message).
 * @property {"idle"|"running"|"paused"|"stopped"|"error"|string} status
 * @property {boolean} paused
 * @property {Record<string, unknown>} params
 * @property {string} [error]  set when status is "error"
 */
/**
 * @typedef {object} ParamSpec
 * @property {"float"|"int"|"bool"|"choice"|string} type
 * @property {unknown} [default]
 * @property {number} [min]
 * @property {number} [max]
 * @property {number} [step]
 * @property {unknown[]} [choices]
 * @property {string} [label]
 */
/**
 * @typedef {{params?: Record<string, ParamSpec>, actions?: Record<string, {label?: string}>}} ControlsSpec
 */
/**
 * @typedef {object} SubscribedInfo  The `subscribed` reply.
 * @property {string} stream
 * @property {string} epoch
 * @property {Record<string, string>} schema
 * @property {ControlsSpec} controls
 * @property {StreamState} state
 * @property {number} offset  the offset of the first row that will be sent
 */
/**
 * @typedef {{type: "reset", stream: string, epoch: string, offset: number, reason: string}} ResetMessage
 */

/**
 * The protocol's numeric dtypes (docs/protocol.md, "Binary frames"), each with the typed array
 * a buffer column of it decodes to: the one list of them in JS (Python's is
 * livestream/columns.py NUMERIC_DTYPES; tests/test_codec_vectors.py checks both against the doc).
 * @type {Record<string, {ctor: Float64ArrayConstructor | Float32ArrayConstructor | Int32ArrayConstructor | BigInt64ArrayConstructor | Uint8ArrayConstructor, size: number}>}
 */
const BUFFER_DTYPES = {
  float64: { ctor: Float64Array, size: 8 },
  float32: { ctor: Float32Array, size: 4 },
  int32: { ctor: Int32Array, size: 4 },
  int64: { ctor: BigInt64Array, size: 8 },
  uint8: { ctor: Uint8Array, size: 1 },
  bool: { ctor: Uint8Array, size: 1 },
};
/** The numeric dtypes, in the protocol's order: they travel as raw buffers in binary frames. */
export const NUMERIC_DTYPES = Object.freeze(Object.keys(BUFFER_DTYPES));
/** The same list, by its older name. */
export const BINARY_DTYPES = NUMERIC_DTYPES;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
export const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

/** @param {unknown} v @returns {v is Record<string, any>} */
export function isObject(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** @param {unknown} v */
function describe(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (v instanceof ArrayBuffer) return "an ArrayBuffer";
  if (typeof Blob !== "undefined" && v instanceof Blob) return "a Blob";
  return `a ${typeof v}`;
}

/** @param {string} name @returns {boolean} */
export function isTimeColumn(name, dtype = "float64") {
  return TIME_COLUMNS.includes(name) || dtype.startsWith("datetime");
}

/** A dtype whose values are numbers to show or plot: the numeric dtypes but bool. @param {string} dtype */
export function isNumericDtype(dtype) {
  return dtype !== "bool" && NUMERIC_DTYPES.includes(dtype);
}

/**
 * Encode a client message (`subscribe`, `control`, `credit`, ...) as the JSON text of a frame.
 * @param {{type: string} & Record<string, unknown>} msg
 * @returns {string}
 */
export function encodeMessage(msg) {
  if (!isObject(msg) || typeof msg.type !== "string" || !msg.type) {
    throw new ProtocolError(`a message must be an object with a string "type", got ${describe(msg)}`);
  }
  return JSON.stringify(msg);
}

/**
 * Decode one WebSocket frame from the server: a text frame (JSON) or a binary `data` frame.
 * `data` messages come back as {@link Batch} objects (plus `type: "data"`), whichever form
 * they travelled in.
 * @param {string | ArrayBuffer | ArrayBufferView} data  the frame (`ws.binaryType = "arraybuffer"`)
 * @param {Record<string, string> | ((stream: string) => Record<string, string> | undefined)} [schema]
 *   the stream's schema (or a lookup by stream name), to type the columns of JSON data
 * @returns {Record<string, any> & {type: string}}
 */
export function decodeMessage(data, schema) {
  if (typeof data === "string") {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      throw new ProtocolError(`a text frame must hold one JSON object; parsing failed: ${/** @type {Error} */ (err).message}`);
    }
    if (!isObject(msg) || typeof msg.type !== "string") {
      throw new ProtocolError(`a message must be a JSON object with a string "type", got ${describe(msg)}`);
    }
    if (msg.type === "data") {
      const s = typeof schema === "function" ? (typeof msg.stream === "string" ? schema(msg.stream) : undefined) : schema;
      return { ...decodeJsonData(msg, s), type: "data" };
    }
    return /** @type {any} */ (msg);
  }
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    return { ...decodeBinaryFrame(data), type: "data" };
  }
  throw new ProtocolError(`a frame must be a string or an ArrayBuffer, got ${describe(data)}; set ws.binaryType = "arraybuffer"`);
}

/**
 * Turn one JSON column into the same kind of column a binary frame would give.
 * @param {string} name
 * @param {unknown} values
 * @param {string | undefined} dtype
 * @returns {Column}
 */
function jsonColumn(name, values, dtype) {
  if (!Array.isArray(values)) {
    throw new ProtocolError(`column "${name}" must be a JSON array of values, got ${describe(values)}`);
  }
  const numeric = dtype === undefined
    ? values.some((v) => typeof v === "number") && values.every((v) => v === null || typeof v === "number")
    : NUMERIC_DTYPES.includes(dtype);
  if (!numeric) return values;
  let out;
  switch (dtype) {
    case "float32": out = new Float32Array(values.length); break;
    case "int32": out = new Int32Array(values.length); break;
    case "uint8": case "bool": out = new Uint8Array(values.length); break;
    default: out = new Float64Array(values.length); // float64, int64 (as in binary frames), others
  }
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    // null is NaN in float columns; in an integer column it can only be a server bug, so 0.
    out[i] = v === null ? NaN : typeof v === "boolean" ? Number(v) : /** @type {number} */ (v);
  }
  return out;
}

/** @param {Record<string, any>} msg @param {string} what */
function checkDataHeader(msg, what) {
  if (typeof msg.stream !== "string") throw new ProtocolError(`${what} needs a string "stream", got ${describe(msg.stream)}`);
  if (!Number.isInteger(msg.offset) || msg.offset < 0) {
    throw new ProtocolError(`${what} needs a non-negative integer "offset", got ${JSON.stringify(msg.offset)}`);
  }
  if (msg.rows !== undefined && (!Number.isInteger(msg.rows) || msg.rows < 0)) {
    throw new ProtocolError(`${what} has an invalid "rows": ${JSON.stringify(msg.rows)}`);
  }
}

/** @param {Record<string, Column>} columns @param {number | undefined} rows @param {string} what */
function checkRows(columns, rows, what) {
  const names = Object.keys(columns);
  const n = rows ?? (names.length ? columns[names[0]].length : 0);
  for (const name of names) {
    if (columns[name].length !== n) {
      throw new ProtocolError(`${what}: column "${name}" has ${columns[name].length} values, expected rows = ${n}`);
    }
  }
  return n;
}

/**
 * Decode the JSON form of a `data` message: `columns` is `{name: [values]}`; null means NaN in
 * float columns. With a schema, numeric columns become typed arrays like in binary frames.
 * @param {Record<string, any>} msg
 * @param {Record<string, string>} [schema]
 * @returns {Batch}
 */
export function decodeJsonData(msg, schema) {
  checkDataHeader(msg, "a data message");
  if (!isObject(msg.columns)) throw new ProtocolError(`a JSON data message needs "columns" {name: [values]}, got ${describe(msg.columns)}`);
  /** @type {Record<string, Column>} */
  const columns = {};
  for (const [name, values] of Object.entries(msg.columns)) {
    columns[name] = jsonColumn(name, values, schema?.[name]);
  }
  const rows = checkRows(columns, msg.rows, `data for "${msg.stream}" at offset ${msg.offset}`);
  return { stream: msg.stream, offset: msg.offset, rows, columns };
}

/**
 * Decode a binary `data` frame: uint32 LE header length H, H bytes of UTF-8 JSON header,
 * zero padding to an 8-byte boundary, then the buffer area. Each buffer column becomes a typed
 * array *view* over `buffer` (no copy); int64 becomes a Float64Array copy (Bokeh needs numbers);
 * a buffer that is not aligned for its type (never the case for a conforming server) is copied.
 * @param {ArrayBuffer | ArrayBufferView} buffer  the whole frame
 * @returns {Batch}
 */
export function decodeBinaryFrame(buffer) {
  const bytes = buffer instanceof ArrayBuffer
    ? new Uint8Array(buffer)
    : new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  if (bytes.byteLength < 4) throw new ProtocolError(`a binary frame needs at least 4 bytes, got ${bytes.byteLength}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(0, true);
  if (4 + headerLength > bytes.byteLength) {
    throw new ProtocolError(`binary frame header length ${headerLength} exceeds the frame (${bytes.byteLength} bytes)`);
  }
  let header;
  try {
    header = JSON.parse(utf8Decoder.decode(bytes.subarray(4, 4 + headerLength)));
  } catch (err) {
    throw new ProtocolError(`binary frame header is not UTF-8 JSON: ${/** @type {Error} */ (err).message}`);
  }
  if (!isObject(header)) throw new ProtocolError(`binary frame header must be a JSON object, got ${describe(header)}`);
  if (header.type !== undefined && header.type !== "data") {
    throw new ProtocolError(`binary frames carry "data" messages, got type ${JSON.stringify(header.type)}`);
  }
  checkDataHeader(header, "a binary data frame");
  if (!Array.isArray(header.columns)) {
    throw new ProtocolError(`a binary frame header needs "columns" [{name, dtype, offset, nbytes} | {name, values}], got ${describe(header.columns)}`);
  }
  const area = (4 + headerLength + 7) & ~7; // the buffer area starts 8-byte aligned
  const areaBytes = bytes.byteLength - area;
  /** @type {Record<string, Column>} */
  const columns = {};
  for (const col of header.columns) {
    if (!isObject(col) || typeof col.name !== "string") {
      throw new ProtocolError(`each binary frame column needs a "name", got ${JSON.stringify(col)}`);
    }
    if ("values" in col) {
      columns[col.name] = jsonColumn(col.name, col.values, col.dtype);
      continue;
    }
    const spec = BUFFER_DTYPES[col.dtype];
    if (!spec) {
      throw new ProtocolError(`column "${col.name}" has dtype ${JSON.stringify(col.dtype)}; binary columns must be one of ${BINARY_DTYPES.join(", ")}`);
    }
    const { offset, nbytes } = col;
    if (!Number.isInteger(offset) || !Number.isInteger(nbytes) || offset < 0 || nbytes < 0 || offset + nbytes > areaBytes) {
      throw new ProtocolError(`column "${col.name}" spans bytes ${offset}..${offset + nbytes} of a ${areaBytes}-byte buffer area`);
    }
    if (nbytes % spec.size !== 0) {
      throw new ProtocolError(`column "${col.name}" (${col.dtype}) has ${nbytes} bytes, not a multiple of ${spec.size}`);
    }
    const start = bytes.byteOffset + area + offset;
    const length = nbytes / spec.size;
    let array;
    if (!LITTLE_ENDIAN && spec.size > 1) {
      array = readBigEndianHost(view, area + offset, length, col.dtype);
    } else if (start % spec.size === 0) {
      array = new spec.ctor(/** @type {ArrayBuffer} */ (bytes.buffer), start, length); // the zero-copy view
    } else {
      array = new spec.ctor(/** @type {ArrayBuffer} */ (bytes.slice(area + offset, area + offset + nbytes).buffer));
    }
    if (array instanceof BigInt64Array) array = int64ToFloat64(array);
    columns[col.name] = /** @type {Column} */ (array);
  }
  const rows = checkRows(columns, header.rows, `binary data for "${header.stream}" at offset ${header.offset}`);
  return { stream: header.stream, offset: header.offset, rows, columns };
}

/**
 * int64 values as the nearest float64 each (as `Number(bigint)` gives), without making a
 * BigInt per value: from the two 32-bit halves, `hi * 2^32` exact and one rounding of the
 * sum (about 20 times faster at 10,000 rows a frame).
 * @param {BigInt64Array} ints @returns {Float64Array}
 */
export function int64ToFloat64(ints) {
  const n = ints.length;
  const out = new Float64Array(n);
  const words = new Int32Array(ints.buffer, ints.byteOffset, 2 * n);
  const low = new Uint32Array(ints.buffer, ints.byteOffset, 2 * n);
  for (let i = 0; i < n; i++) out[i] = words[2 * i + 1] * 4294967296 + low[2 * i];
  return out;
}

/**
 * Slow path for big-endian hosts (no browser in use today): read little-endian values.
 * @param {DataView} view @param {number} at @param {number} n @param {string} dtype
 */
function readBigEndianHost(view, at, n, dtype) {
  const out = dtype === "float32" ? new Float32Array(n) : dtype === "int32" ? new Int32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (dtype === "float64") out[i] = view.getFloat64(at + 8 * i, true);
    else if (dtype === "float32") out[i] = view.getFloat32(at + 4 * i, true);
    else if (dtype === "int32") out[i] = view.getInt32(at + 4 * i, true);
    else out[i] = Number(view.getBigInt64(at + 8 * i, true));
  }
  return out;
}

/**
 * Encode a binary frame (for `publish` from the browser, and for tests): typed-array columns
 * go into the buffer area, 8-byte aligned; other arrays travel as JSON `values`.
 * @param {Record<string, unknown>} header  `type`, `stream`, `offset`, `rows`, ...
 * @param {Record<string, Column | BigInt64Array>} columns
 * @param {Record<string, string>} [dtypes]  overrides (e.g. `{flag: "bool"}` for a Uint8Array)
 * @returns {ArrayBuffer}
 */
export function encodeBinaryFrame(header, columns, dtypes = {}) {
  /** @type {Array<BufferColumnHeader | ValuesColumnHeader>} */
  const cols = [];
  /** @type {Array<[number, Uint8Array]>} */
  const parts = [];
  let size = 0;
  for (const [name, values] of Object.entries(columns)) {
    if (ArrayBuffer.isView(values)) {
      const dtype = dtypes[name] ?? dtypeOf(values);
      const raw = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      cols.push({ name, dtype, offset: size, nbytes: raw.byteLength });
      parts.push([size, raw]);
      size += (raw.byteLength + 7) & ~7;
    } else {
      cols.push({ name, values: Array.from(values) });
    }
  }
  const head = utf8Encoder.encode(JSON.stringify({ type: "data", ...header, columns: cols }));
  const area = (4 + head.byteLength + 7) & ~7;
  const out = new Uint8Array(area + size);
  new DataView(out.buffer).setUint32(0, head.byteLength, true);
  out.set(head, 4);
  for (const [at, raw] of parts) out.set(raw, area + at);
  return out.buffer;
}

/** @param {ArrayBufferView} a */
function dtypeOf(a) {
  if (a instanceof Float64Array) return "float64";
  if (a instanceof Float32Array) return "float32";
  if (a instanceof Int32Array) return "int32";
  if (a instanceof BigInt64Array) return "int64";
  if (a instanceof Uint8Array) return "uint8";
  throw new ProtocolError(`cannot send ${a.constructor.name} columns; use ${BINARY_DTYPES.join(", ")}`);
}

/**
 * Rows `start .. end - 1` of a batch (indices within the batch), as views where possible.
 * @param {Batch} batch @param {number} start @param {number} [end]
 * @returns {Batch}
 */
export function sliceBatch(batch, start, end = batch.rows) {
  start = Math.max(0, Math.min(start, batch.rows));
  end = Math.max(start, Math.min(end, batch.rows));
  if (start === 0 && end === batch.rows) return batch;
  /** @type {Record<string, Column>} */
  const columns = {};
  for (const [name, col] of Object.entries(batch.columns)) {
    columns[name] = Array.isArray(col) ? col.slice(start, end) : col.subarray(start, end);
  }
  return { stream: batch.stream, offset: batch.offset + start, rows: end - start, columns };
}

/**
 * Concatenate contiguous batches of one stream into one (a single batch is returned as is,
 * keeping its zero-copy views).
 * @param {Batch[]} batches
 * @returns {Batch}
 */
export function mergeBatches(batches) {
  if (batches.length === 0) throw new LivestreamError("mergeBatches needs at least one batch");
  if (batches.length === 1) return batches[0];
  const rows = batches.reduce((n, b) => n + b.rows, 0);
  /** @type {Record<string, Column>} */
  const columns = {};
  for (const name of Object.keys(batches[0].columns)) {
    const parts = batches.map((b) => b.columns[name]);
    if (parts.some((p) => p === undefined)) continue;
    columns[name] = concatColumns(parts, rows);
  }
  return { stream: batches[0].stream, offset: batches[0].offset, rows, columns };
}

/** @param {Column[]} parts @param {number} total @returns {Column} */
function concatColumns(parts, total) {
  const first = parts[0];
  if (!Array.isArray(first) && parts.every((p) => !Array.isArray(p) && p.constructor === first.constructor)) {
    const Ctor = /** @type {any} */ (first.constructor);
    const out = new Ctor(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  /** @type {unknown[]} */
  const out = [];
  for (const p of parts) for (let i = 0; i < p.length; i++) out.push(p[i]);
  return out;
}
