// pages/index.js — the standalone home page (`/`, index.html): the server's streams, each
// card with a sparkline while in view, and the server's totals. A file of its own, not an
// inline script: the page's Content-Security-Policy allows scripts from the server alone
// (`script-src 'self'`), never inline ones.

import { connect, defaultHttpBase, pageToken, renderStreamList } from "../livestream.js";

// First: take a `?token=` out of the address bar (into this tab's sessionStorage).
const token = pageToken();
const httpBase = defaultHttpBase();
const pill = /** @type {HTMLElement} */ (document.getElementById("server-status"));
const summary = /** @type {HTMLElement} */ (document.getElementById("summary"));
/** @type {Record<string, string>} */
const labels = { open: "Live", error: "Error", reconnecting: "Unreachable" };

// The sparklines' subscriptions share one WebSocket, opened once a card is in view (after
// the server took the token); the list itself is polled over HTTP.
/** @type {import("../livestream.js").Connection | null} */
let conn = null;
const list = renderStreamList(/** @type {HTMLElement} */ (document.getElementById("streams")), {
  httpBase,
  token,
  interval: 2000,
  conn: () => (conn ??= connect({ token })),
  totals: document.getElementById("totals"),
  // No token in links: the stream page reads it from this tab's sessionStorage.
  href: (name) => `streams/${encodeURIComponent(name)}`,
  onStatus(status, message) {
    pill.dataset.status = status;
    if (pill.lastChild) pill.lastChild.textContent = labels[status] ?? status;
    pill.title = message;
    summary.textContent = status === "open"
      ? `Updated ${new Date().toLocaleTimeString([], { hour12: false })}`
      : "";
  },
});
/** @type {any} */ (window).livestreamPage = { list, get conn() { return conn; } };
