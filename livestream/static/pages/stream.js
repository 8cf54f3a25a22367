// pages/stream.js — the standalone dashboard of one stream (`/streams/<name>`,
// stream.html). A file of its own, not an inline script: the page's
// Content-Security-Policy allows scripts from the server alone (`script-src 'self'`).
// Query parameters: `x`, `y` (comma-separated), `kind`, `window`, as for the plot endpoint.

import { connect, pageToken, renderDashboard, renderStatus } from "../livestream.js";

/**
 * The stream's name: the last segment of `/streams/<name>`, URL-decoded (as it stands when
 * it is not valid percent-encoding: the server then says what is wrong with it).
 * @param {string} path
 */
function streamName(path) {
  const segment = path.replace(/\/+$/, "").split("/").pop() ?? "";
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

// First: take a `?token=` out of the address bar (into this tab's sessionStorage).
const token = pageToken();
const params = new URLSearchParams(location.search);
const name = streamName(location.pathname);
// The stream's name is the publisher's text: it goes in as text, never as markup.
document.title = `${name} · livestream`;
/** @type {HTMLElement} */ (document.getElementById("stream-name")).textContent = name;

const conn = connect({ token });
const alert = /** @type {HTMLElement} */ (document.getElementById("page-alert"));
conn.onStatus((status, message) => {
  // A refused token or an unreachable server concerns the whole page: say it up top.
  const show = status === "error" || status === "reconnecting";
  alert.hidden = !show;
  alert.textContent = show ? message : "";
  alert.dataset.level = status === "error" ? "error" : "warning";
});
const header = renderStatus(/** @type {HTMLElement} */ (document.getElementById("header-status")), conn, name, { compact: true });
const windowParam = Number(params.get("window"));
const y = params.get("y");
const dashboard = renderDashboard(/** @type {HTMLElement} */ (document.getElementById("dashboard")), conn, name, {
  x: params.get("x") || undefined,
  y: y ? y.split(",") : undefined,
  kind: params.get("kind") || undefined,
  window: Number.isInteger(windowParam) && windowParam > 0 ? windowParam : undefined,
  rows: 15,
  connectionAlert: false, // the banner above shows them
});
/** @type {any} */ (window).livestreamPage = { conn, dashboard, header };
