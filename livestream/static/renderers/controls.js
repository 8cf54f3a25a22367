// @ts-check
// renderers/controls.js — renderControls: pause/resume, the producer's parameters and actions.
import { isObject } from "../codec.js";
import { Connection, Subscription } from "../connection.js";
import { h, icon, isConnectionError, isSharedError, prettify } from "../dom.js";
/** @typedef {import("../codec.js").ControlsSpec} ControlsSpec */
/** @typedef {import("../codec.js").ParamSpec} ParamSpec */
/** @typedef {import("../codec.js").StreamState} StreamState */
/** @typedef {import("../dom.js").Handle} Handle */

/** @param {number} span */
function niceStep(span) {
  if (!(span > 0)) return 0.01;
  const raw = span / 200;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? raw;
}

/**
 * Controls for a stream, generated from the `controls` its producer declared: a Pause
 * toggle, one input per parameter, one button per action. They follow the broadcast state (another
 * viewer's pause shows here), and show the server's message when a control is refused.
 * @param {HTMLElement} el @param {Connection} conn @param {string} stream
 * @param {{quietErrors?: boolean}} [options]  `quietErrors`: leave connection and
 *   unknown-stream errors to the container (see renderDashboard)
 * @returns {Handle & {subscription: Subscription}}
 */
export function renderControls(el, conn, stream, { quietErrors = false } = {}) {
  el.classList.add("ls-controls");
  // One toggle whose state is the stream's: "Pause" (not pressed) while it runs, "Paused"
  // (pressed) while it is paused. `data-action` is what a press sends.
  const runLabel = h("span", { class: "ls-run-label", text: "Pause" });
  const runIcon = h("span", { class: "ls-run-icon" }, icon("pause"));
  const runBtn = h("button", { type: "button", class: "ls-btn ls-run-toggle", "aria-pressed": "false", dataset: { action: "pause" } }, runIcon, runLabel);
  const runRow = h("div", { class: "ls-run-row" }, runBtn);
  const paramsEl = h("div", { class: "ls-params" });
  const actionsEl = h("div", { class: "ls-actions" });
  const alert = h("div", { class: "ls-alert", role: "alert", hidden: true, dataset: { level: "error" } });
  const note = h("div", { class: "ls-note", hidden: true });
  el.replaceChildren(runRow, alert, paramsEl, actionsEl, note);

  /** @type {StreamState | null} */
  let state = null;
  /** @type {string | null} message of the last refused control (shown for a few seconds) */
  let refused = null;
  /** @type {any} */
  let refusedTimer = null;
  /** @type {Map<string, {spec: ParamSpec, set: (v: unknown) => void, busy: () => boolean}>} */
  const inputs = new Map();
  /** @type {Map<string, any>} */
  const debounce = new Map();

  const showAlert = () => {
    const text = refused ?? (state?.status === "error" ? `Stream error: ${state.error ?? "the producer failed"}` : "");
    alert.hidden = !text;
    alert.textContent = text;
  };
  const reflect = () => {
    const paused = !!state?.paused || state?.status === "paused";
    if (runBtn.getAttribute("aria-pressed") !== String(paused)) {
      runBtn.setAttribute("aria-pressed", String(paused));
      runBtn.dataset.action = paused ? "resume" : "pause";
      runLabel.textContent = paused ? "Paused" : "Pause";
      runIcon.replaceChildren(icon(paused ? "play" : "pause"));
    }
    runBtn.title = paused ? "Paused: press to resume the producer" : "Running: press to pause the producer";
    for (const [name, input] of inputs) {
      if (state?.params && name in state.params && !input.busy()) input.set(state.params[name]);
    }
    showAlert();
    el.dataset.status = state?.status ?? "";
  };
  /** @param {string} action @param {Record<string, unknown>} [params] @param {HTMLElement} [button] */
  const send = async (action, params = {}, button) => {
    if (button) button.setAttribute("aria-busy", "true");
    try {
      const ack = await conn.control(stream, action, params);
      refused = null;
      if (ack && isObject(ack.state)) state = /** @type {StreamState} */ (ack.state);
      reflect();
      return true;
    } catch (err) {
      refused = /** @type {Error} */ (err).message;
      clearTimeout(refusedTimer);
      refusedTimer = setTimeout(() => {
        refused = null;
        showAlert();
      }, 8000);
      reflect(); // back to the state the server holds
      return false;
    } finally {
      button?.removeAttribute("aria-busy");
    }
  };
  runBtn.addEventListener("click", () => {
    if (runBtn.getAttribute("aria-busy") === "true") return; // one press, one control
    void send(runBtn.dataset.action === "resume" ? "resume" : "pause", {}, runBtn);
  });

  /** @param {string} name @param {ParamSpec} spec */
  const buildParam = (name, spec) => {
    const id = `ls-${stream}-${name}-${Math.random().toString(36).slice(2, 8)}`;
    const labelText = spec.label ?? prettify(name);
    const row = h("div", { class: "ls-param", dataset: { param: name, type: spec.type } });
    let focused = false;
    let dragging = false;
    const busy = () => focused || dragging || debounce.has(name);
    /** @param {unknown} value @param {number} [delay] */
    const setParam = (value, delay = 0) => {
      clearTimeout(debounce.get(name));
      const go = () => {
        debounce.delete(name);
        void send("set", { [name]: value });
      };
      if (delay) debounce.set(name, setTimeout(go, delay));
      else go();
    };
    if (spec.type === "bool") {
      const input = /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", id, role: "switch", class: "ls-switch" }));
      input.addEventListener("change", () => setParam(input.checked));
      row.append(h("label", { class: "ls-param-label ls-switch-label", for: id }, input, h("span", { text: labelText })));
      inputs.set(name, { spec, set: (v) => { input.checked = !!v; }, busy: () => false });
    } else if (spec.type === "choice") {
      const choices = Array.isArray(spec.choices) ? spec.choices : [];
      const select = /** @type {HTMLSelectElement} */ (h("select", { id, class: "ls-input" }));
      choices.forEach((c, i) => select.append(h("option", { value: String(i), text: String(c) })));
      select.addEventListener("change", () => setParam(choices[Number(select.value)]));
      select.addEventListener("focus", () => { focused = true; });
      select.addEventListener("blur", () => { focused = false; });
      row.append(h("label", { class: "ls-param-label", for: id, text: labelText }), select);
      inputs.set(name, {
        spec,
        set: (v) => {
          const i = choices.findIndex((c) => c === v);
          if (i >= 0) select.value = String(i);
        },
        busy,
      });
    } else {
      const isInt = spec.type === "int";
      const hasRange = typeof spec.min === "number" && typeof spec.max === "number";
      const step = typeof spec.step === "number" && spec.step > 0
        ? spec.step
        : isInt ? 1 : hasRange ? niceStep(/** @type {number} */ (spec.max) - /** @type {number} */ (spec.min)) : "any";
      const parse = (/** @type {string} */ s) => (isInt ? Math.round(Number(s)) : Number(s));
      const number = /** @type {HTMLInputElement} */ (h("input", {
        type: "number", id, class: "ls-input ls-number", step: String(step), inputmode: isInt ? "numeric" : "decimal",
        min: spec.min ?? undefined, max: spec.max ?? undefined,
      }));
      row.append(h("label", { class: "ls-param-label", for: id, text: labelText }));
      /** @type {HTMLInputElement | null} */
      let range = null;
      if (hasRange) {
        range = /** @type {HTMLInputElement} */ (h("input", {
          type: "range", class: "ls-range", min: String(spec.min), max: String(spec.max), step: String(step), "aria-label": labelText,
        }));
        const r = range;
        r.addEventListener("pointerdown", () => { dragging = true; });
        const up = () => { dragging = false; };
        r.addEventListener("pointerup", up);
        r.addEventListener("pointercancel", up);
        r.addEventListener("input", () => {
          number.value = r.value;
          setParam(parse(r.value), 120); // live while dragging, without a message per pixel
        });
        row.append(h("div", { class: "ls-range-row" }, r, number));
      } else {
        row.append(number);
      }
      number.addEventListener("focus", () => { focused = true; });
      number.addEventListener("blur", () => { focused = false; });
      number.addEventListener("change", () => {
        if (number.value === "" || !Number.isFinite(Number(number.value))) return;
        if (range) range.value = number.value;
        setParam(parse(number.value));
      });
      number.addEventListener("keydown", (e) => {
        if (/** @type {KeyboardEvent} */ (e).key === "Enter") number.blur();
      });
      inputs.set(name, {
        spec,
        set: (v) => {
          if (typeof v !== "number") return;
          number.value = String(v);
          if (range) range.value = String(v);
        },
        busy,
      });
    }
    return row;
  };

  /** @param {ControlsSpec | null | undefined} controls */
  const build = (controls) => {
    inputs.clear();
    const params = controls?.params ?? {};
    const actions = controls?.actions ?? {};
    paramsEl.replaceChildren(...Object.entries(params).map(([n, s]) => buildParam(n, s)));
    paramsEl.hidden = Object.keys(params).length === 0;
    actionsEl.replaceChildren(...Object.entries(actions).map(([n, a]) => {
      const b = h("button", { type: "button", class: "ls-btn", dataset: { action: n } }, a?.label ?? prettify(n));
      b.addEventListener("click", () => void send(n, {}, b));
      return b;
    }));
    actionsEl.hidden = Object.keys(actions).length === 0;
    for (const [n, input] of inputs) input.set(state?.params?.[n] ?? input.spec.default);
    const allowed = conn.canControl;
    for (const c of el.querySelectorAll("button, input, select")) /** @type {HTMLInputElement} */ (c).disabled = !allowed;
    note.hidden = allowed;
    note.textContent = allowed ? "" : "This token may watch but not control this stream.";
  };

  const subscription = conn.subscribe(stream, {
    last: 0,
    onSubscribed(info) {
      state = info.state ?? state;
      refused = null;
      build(info.controls); // (re-)enables the inputs the token may use
      reflect();
    },
    onState(s) {
      state = s;
      reflect();
    },
    onError(err) {
      if (isConnectionError(err) || err.code === "unknown_stream") {
        for (const c of el.querySelectorAll("button, input, select")) /** @type {HTMLInputElement} */ (c).disabled = true;
      }
      if (quietErrors && isSharedError(err)) return;
      refused = err.message;
      showAlert();
    },
  });
  reflect();
  return {
    subscription,
    dispose() {
      clearTimeout(refusedTimer);
      for (const t of debounce.values()) clearTimeout(t);
      subscription.unsubscribe();
      el.replaceChildren();
      el.classList.remove("ls-controls");
    },
  };
}
