// @ts-check
// errors.js — the errors the browser code raises or reports: LivestreamError (with a
// protocol or local `code`) and ProtocolError.

/** Base class of every error this module raises or reports. */
export class LivestreamError extends Error {
  /**
   * @param {string} message what happened, what was expected, and the fix when known
   * @param {string} [code] a protocol error code (`unknown_stream`, `forbidden`, ...) or a
   *   local one (`unreachable`, `token_rejected`, `timeout`, `closed`, `http_<status>`)
   * @param {{status?: number, id?: unknown}} [detail]
   */
  constructor(message, code = "error", detail = {}) {
    super(message);
    this.name = "LivestreamError";
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} HTTP status, for errors from fetch */
    this.status = detail.status;
  }
}

/** A frame or message that does not follow the protocol. */
export class ProtocolError extends LivestreamError {
  /** @param {string} message */
  constructor(message) {
    super(message, "protocol_error");
    this.name = "ProtocolError";
  }
}
