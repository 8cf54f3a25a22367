// widget.js — the anywidget adapter. `livestream/widgets.py` appends this file to
// livestream.js to make each widget's ES module, so the widgets and the standalone pages
// run the same code (the shared connection registry lives on globalThis, so every widget
// on a page shares one socket per server even when their modules are separate copies).

/**
 * @typedef {object} WidgetModel  the subset of the anywidget model API used here
 * @property {(name: string) => any} get
 * @property {(name: string, value: any) => void} set
 * @property {() => void} save_changes
 * @property {(event: string, cb: (...args: any[]) => void) => void} on
 * @property {(event: string, cb?: (...args: any[]) => void) => void} off
 */

/**
 * Render one widget view: `kind` picks the renderer; `url`, `token` and `stream` say what to
 * show; `options` carries the renderer's options (a plot's spec among them). The view
 * reports its connection state back to Python in `status` and `message`.
 * @param {{model: WidgetModel, el: HTMLElement}} ctx
 * @returns {Promise<() => void>} cleanup, called when the view is removed (cell re-run)
 */
async function renderWidget({ model, el }) {
  const kind = String(model.get("kind"));
  const stream = String(model.get("stream") || "");
  const options = /** @type {Record<string, any>} */ (model.get("options") || {});
  el.classList.add("ls-root", "ls-widget", `ls-widget-${kind}`);
  const conn = connect({ url: String(model.get("url")), token: String(model.get("token")) });
  el.dataset.livestreamRoute = "direct";
  /** @param {string} status @param {string} [message] */
  const report = (status, message = "") => {
    el.dataset.livestreamStatus = status;
    if (model.get("status") === status && model.get("message") === message) return;
    model.set("status", status);
    model.set("message", message);
    model.set("route", "direct");
    model.save_changes();
  };
  const stopStatus = conn.onStatus(report);
  report(conn.status, conn.message);
  /** @type {{dispose: () => void}} */
  let handle;
  switch (kind) {
    case "plot":
      handle = renderPlot(el, conn, stream, options);
      break;
    case "table":
      handle = renderTable(el, conn, stream, options);
      break;
    case "value":
      handle = renderValue(el, conn, stream, options);
      break;
    case "controls":
      handle = renderControls(el, conn, stream, options);
      break;
    case "status":
      handle = renderStatus(el, conn, stream || undefined, options);
      break;
    case "dashboard":
      handle = renderDashboard(el, conn, stream, options);
      break;
    default:
      el.textContent = `livestream: unknown widget kind ${JSON.stringify(kind)}`;
      handle = { dispose() {} };
  }
  return () => {
    stopStatus();
    handle.dispose();
    conn.release();
    el.classList.remove("ls-root", "ls-widget", `ls-widget-${kind}`);
  };
}

export default { render: renderWidget };
