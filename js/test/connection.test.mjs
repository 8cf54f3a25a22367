// connection.js without a server: what connect() refuses before any socket opens, and that a
// list of servers is one connection with the URLs in order. The failover itself runs against
// real servers in Chromium (tests/test_failover.py). Run: `npm test --prefix js`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { connect } from "../../livestream/static/connection.js";

test("connect() needs at least one URL", () => {
  assert.throws(() => connect({ url: [] }), { code: "bad_url", message: /at least one server URL/ });
});

test("a server given twice is refused, naming it without its token", () => {
  assert.throws(
    () => connect({ url: ["http://127.0.0.1:1/?token=sekret", "ws://127.0.0.1:1/ws?token=sekret"] }),
    (err) => err.code === "bad_url" && err.message.includes("ws://127.0.0.1:1/ws is given twice") && !err.message.includes("sekret"),
  );
});

test("a bad backoff is refused with what it needs", () => {
  assert.throws(
    () => connect({ url: ["http://127.0.0.1:9/"], backoff: { first: 500, cap: 100 } }),
    { code: "bad_argument", message: /0 < first <= cap/ },
  );
});
