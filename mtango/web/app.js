// mtango-bridge's built-in page: plain JavaScript, no framework, no build step, nothing fetched
// from anywhere but the bridge that served it. Views are chosen by the URL hash:
//   #/                                 Tango databases (the allow-list)
//   #/tango/HOST:PORT?wildcard=GLOB    devices of a database, filtered by a Tango glob
//   #/tango/HOST:PORT/dom/fam/mem      one device: state, status, attributes, commands, properties
//   #/epics?pv=A&pv=B                  a watch list of EPICS PVs
// Every live value of a view comes over ONE /live/stream (Server-Sent Events); a value whose
// source is disconnected or in error is marked stale (data-stale="true"), never left looking live.

const BASE = document.querySelector('meta[name="mtango-app-base"]').content;
const RC3 = `${BASE}/rc3`;
const EPICS = "/epics/rest/v1";
const MAX_LIVE_ELEMENTS = 100000;  // larger arrays are drawn on demand, not streamed
const MAX_STREAM_URL = 7000;       // the request line must stay under the server's head limit
const RECONNECT_MS = 3000;

const main = document.getElementById("main");
const liveBadge = document.getElementById("live");

// -- small helpers -----------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const enc = encodeURIComponent;
const encPath = (name) => name.split("/").map(enc).join("/");

function failureText(body) {
  if (body && Array.isArray(body.errors) && body.errors.length) {
    const e = body.errors[0];
    return `${e.reason}: ${e.description}`;
  }
  return typeof body === "string" ? body : JSON.stringify(body);
}

function isFailure(body) {
  return body && typeof body === "object" && !Array.isArray(body) && body.quality === "FAILURE"
    && Array.isArray(body.errors);
}

class ApiFailure extends Error {
  constructor(status, body) {
    super(isFailure(body) ? failureText(body) : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// JSON with integers beyond 2^53 (DevULong64, DevLong64) kept exact: as their source text, shown
// as it is, where the browser gives the reviver its source (JSON.parse source text access:
// Chromium 114, Firefox 135); elsewhere they are the nearest double, as before.
function parseJSON(text) {
  return JSON.parse(text, (key, value, context) => (typeof value === "number"
    && !Number.isSafeInteger(value) && Number.isInteger(value)
    && context && /^-?[0-9]+$/.test(context.source) ? context.source : value));
}

async function api(url, options = {}) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, ...options });
  const text = await response.text();
  let body = text;
  try { body = text ? parseJSON(text) : null; } catch { /* not JSON */ }
  if (!response.ok || isFailure(body)) throw new ApiFailure(response.status, body);
  return body;
}

function withoutPartial(list) {
  return Array.isArray(list) ? list.filter((item) => item.name !== "partial_content" || !item.total) : [];
}

function errorBox(error) {
  return h("div", { class: "error-box", role: "alert" }, String(error.message || error));
}

// printf-like formats of Tango attribute info ("%6.2f", "%e", "%d")
function formatNumber(value, format, precision) {
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(precision) && precision >= 0 && precision <= 15) return value.toFixed(precision);
  const match = /%[-+ 0#]*\d*(?:\.(\d+))?([dfeEgGi])/.exec(format || "");
  if (match) {
    const digits = match[1] === undefined ? 6 : Math.min(Number(match[1]), 15);
    const kind = match[2];
    if (kind === "f") return value.toFixed(digits);
    if (kind === "e" || kind === "E") return value.toExponential(digits);
    if (kind === "d" || kind === "i") return Number.isInteger(value) ? String(value) : value.toFixed(0);
    return value.toPrecision(Math.max(1, digits));
  }
  return String(value);
}

function asNumber(v) {
  if (typeof v === "number") return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return NaN;
}

function numericArray(values) {
  return Array.isArray(values) && values.length > 0 && values.every(
    (v) => typeof v === "number" || typeof v === "boolean" || v === "NaN" || v === "Infinity"
      || v === "-Infinity");
}

// -- drawing: spectra as line plots, images as pictures ----------------------------------------

// A short label for an axis: at most about 8 characters.
function axisLabel(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

const PLOT_W = 480, PLOT_H = 200, PAD_L = 56, PAD_R = 10, PAD_T = 10, PAD_B = 24;

function drawPlot(canvas, values, units) {
  canvas.width = PLOT_W;
  canvas.height = PLOT_H;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, PLOT_W, PLOT_H);
  const ys = values.map(asNumber);
  const finite = ys.filter(Number.isFinite);
  const w = PLOT_W - PAD_L - PAD_R, hgt = PLOT_H - PAD_T - PAD_B;
  ctx.strokeStyle = "#c9ced6";
  ctx.lineWidth = 1;
  ctx.strokeRect(PAD_L + 0.5, PAD_T + 0.5, w, hgt);
  ctx.fillStyle = "#5b6470";
  ctx.font = "11px sans-serif";
  if (!finite.length) {
    ctx.fillText("no finite values", PAD_L + 8, PAD_T + 16);
    return;
  }
  let lo = Math.min(...finite.slice(0, 100000)), hi = Math.max(...finite.slice(0, 100000));
  for (let i = 100000; i < finite.length; i++) { lo = Math.min(lo, finite[i]); hi = Math.max(hi, finite[i]); }
  if (lo === hi) { lo -= 1; hi += 1; }
  const margin = (hi - lo) * 0.06;
  lo -= margin; hi += margin;
  const n = ys.length;
  const xOf = (i) => PAD_L + (n === 1 ? w / 2 : (i / (n - 1)) * w);
  const yOf = (v) => PAD_T + (1 - (v - lo) / (hi - lo)) * hgt;
  ctx.textAlign = "right";
  ctx.fillText(axisLabel(hi - margin), PAD_L - 4, PAD_T + 10);
  ctx.fillText(axisLabel(lo + margin), PAD_L - 4, PAD_T + hgt);
  ctx.textAlign = "left";
  ctx.fillText(`0`, PAD_L, PLOT_H - 8);
  ctx.textAlign = "right";
  ctx.fillText(`${n - 1}${units ? `   [${units}]` : ""}`, PLOT_W - PAD_R, PLOT_H - 8);
  ctx.strokeStyle = "#1565c0";
  ctx.fillStyle = "#1565c0";
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  if (n > 2 * w) {
    // as many columns as pixels: each column's minimum to maximum (the envelope)
    ctx.beginPath();
    for (let col = 0; col < w; col++) {
      const a = Math.floor((col / w) * n), b = Math.max(a + 1, Math.floor(((col + 1) / w) * n));
      let mn = Infinity, mx = -Infinity;
      for (let i = a; i < b; i++) if (Number.isFinite(ys[i])) { mn = Math.min(mn, ys[i]); mx = Math.max(mx, ys[i]); }
      if (mn <= mx) { ctx.moveTo(PAD_L + col + 0.5, yOf(mn)); ctx.lineTo(PAD_L + col + 0.5, yOf(mx) - 0.5); }
    }
    ctx.lineWidth = 1;
    ctx.stroke();
    return;
  }
  ctx.beginPath();
  let drawing = false;
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(ys[i])) { drawing = false; continue; }
    const alone = !Number.isFinite(ys[i - 1]) && !Number.isFinite(ys[i + 1]);
    if (alone) ctx.fillRect(xOf(i) - 2, yOf(ys[i]) - 2, 4, 4);
    if (drawing) ctx.lineTo(xOf(i), yOf(ys[i]));
    else ctx.moveTo(xOf(i), yOf(ys[i]));
    drawing = true;
  }
  ctx.stroke();
}

// An image: one canvas pixel per image pixel, scaled up by CSS (image-rendering: pixelated).
// Grey levels from the minimum to the maximum of the finite pixels (as value/image does);
// 8-bit images as they are; NaN and infinities transparent.
function drawImage(canvas, image, dataType) {
  const { width, height, data } = image;
  const vs = data.map(asNumber);
  let lo = Infinity, hi = -Infinity;
  for (const v of vs) if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const raw = dataType === "DevUChar";
  paint(canvas, width, height, (rgba) => {
    for (let i = 0; i < vs.length && i < width * height; i++) {
      const v = vs[i];
      let level = 0, alpha = 255;
      if (!Number.isFinite(v)) alpha = 0;
      else if (raw) level = Math.max(0, Math.min(255, v));
      else if (hi > lo) level = Math.round(((v - lo) / (hi - lo)) * 255);
      rgba.set([level, level, level, alpha], i * 4);
    }
  });
}

// One canvas pixel per image pixel (fill sets their RGBA bytes), scaled up for the eye.
function paint(canvas, width, height, fill) {
  canvas.width = Math.max(1, width);
  canvas.height = Math.max(1, height);
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(canvas.width, canvas.height);
  fill(pixels.data);
  ctx.putImageData(pixels, 0, 0);
  fitCanvas(canvas);
}

function fitCanvas(canvas) {
  const scale = Math.max(1, Math.floor(Math.min(360 / canvas.width, 360 / canvas.height)));
  canvas.style.width = `${Math.min(canvas.width * scale, 720)}px`;
}

// DevEncoded images, drawn as value/image draws them: Tango's raw GRAY8, GRAY16 and RGB24 (the
// width and the height as big-endian 16-bit numbers, then the pixels; GRAY16's big-endian) and
// JPEG. Returns false for what is not an image (then the value is only described).
const RAW_BYTES = { GRAY8: 1, GRAY16: 2, RGB24: 3 };

function drawEncodedImage(row, value) {
  const { format } = value;
  if (!(format in RAW_BYTES) && !format.startsWith("JPEG")) return false;
  const text = atob(value.data);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  if (format.startsWith("JPEG")) {
    const canvas = row.canvasOf("picture");
    createImageBitmap(new Blob([bytes], { type: "image/jpeg" })).then((bitmap) => {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
      canvas.getContext("2d").drawImage(bitmap, 0, 0);
      fitCanvas(canvas);
    }, () => row.dropCanvas());
    return true;
  }
  const size = RAW_BYTES[format];
  const width = bytes.length >= 4 ? (bytes[0] << 8) | bytes[1] : 0;
  const height = bytes.length >= 4 ? (bytes[2] << 8) | bytes[3] : 0;
  if (!width || !height || bytes.length !== 4 + width * height * size) return false;
  const n = width * height;
  if (size === 3) {
    paint(row.canvasOf("picture"), width, height, (rgba) => {
      for (let i = 0; i < n; i++) rgba.set([bytes[4 + 3 * i], bytes[5 + 3 * i], bytes[6 + 3 * i], 255], i * 4);
    });
    return true;
  }
  const data = new Array(n);
  for (let i = 0; i < n; i++) data[i] = size === 1 ? bytes[4 + i] : (bytes[4 + 2 * i] << 8) | bytes[5 + 2 * i];
  drawImage(row.canvasOf("picture"), { width, height, data }, size === 1 ? "DevUChar" : "DevUShort");
  return true;
}

// -- the one live stream -----------------------------------------------------------------------

class Live {
  constructor() {
    this.source = null;
    this.url = "";
    this.handlers = new Map();  // target as sent -> {onValue, onStale}
    this.timer = null;
  }

  // Watch exactly these targets: [{kind: "tango"|"pv", target, onMessage, onStale}]. The one
  // stream is opened again whenever the set changes.
  watch(targets) {
    const query = [];
    const handlers = new Map();
    let length = "/live/stream?".length;
    const left = [];
    for (const t of targets) {
      const part = `${t.kind === "pv" ? "pv" : "tango"}=${enc(t.target)}`;
      if (length + part.length + 1 > MAX_STREAM_URL) { left.push(t); continue; }
      length += part.length + 1;
      query.push(part);
      handlers.set(t.target, t);
    }
    const url = query.length ? `/live/stream?${query.join("&")}` : "";
    this.handlers = handlers;
    if (url !== this.url) {
      this.close();
      this.url = url;
      this.open();
    }
    return left;
  }

  open() {
    if (!this.url) { this.setState("idle", "not watching"); return; }
    const source = new EventSource(this.url);
    this.source = source;
    this.setState("connecting", "connecting…");
    source.onopen = () => { if (this.source === source) this.setState("open", `live · ${this.handlers.size}`); };
    source.onmessage = (event) => {
      if (this.source !== source) return;
      let message;
      try { message = parseJSON(event.data); } catch { return; }
      const handler = this.handlers.get(message.target);
      if (!handler) return;
      if (message.connected) handler.onMessage(message);
      else handler.onStale(failureText(message.error));
    };
    source.onerror = () => {
      if (this.source !== source) return;
      // The bridge went away (or the stream ended): every value is stale until a new stream
      // sends the latest of each again.
      source.close();
      this.source = null;
      this.setState("lost", "connection lost · retrying");
      for (const handler of this.handlers.values()) handler.onStale("the connection to the bridge was lost");
      this.timer = setTimeout(() => { this.timer = null; if (!this.source) this.open(); }, RECONNECT_MS);
    };
  }

  close() {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.source) { this.source.close(); this.source = null; }
    this.url = "";
  }

  setState(state, text) {
    liveBadge.dataset.state = state;
    liveBadge.textContent = text;
  }
}

const live = new Live();

// -- write controls: offered only when /sys/access says this user may write --------------------

async function access(params) {
  if (!params.length) return new Map();
  try {
    const answer = await api(`${BASE}/sys/access?${params.join("&")}`);
    if (!answer.writes) return new Map();
    return new Map(answer.targets.filter((t) => t.write).map((t) => [t.target, true]));
  } catch {
    return new Map();  // no answer: no controls
  }
}

function showAnswer(output, ok, text) {
  output.dataset.ok = String(ok);
  output.textContent = text;
}

function writeForm({ label, input, run }) {
  const output = h("output", { class: "answer", "aria-live": "polite" });
  const button = h("button", { type: "submit" }, label);
  const form = h("form", {
    class: "write",
    onsubmit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      showAnswer(output, true, "…");
      try {
        showAnswer(output, true, await run());
      } catch (error) {
        showAnswer(output, false, error.message || String(error));
      } finally {
        button.disabled = false;
      }
    },
  }, input, button, output);
  return form;
}

// A text box's content as JSON when it parses, else as a string (commands, PV puts).
function jsonOf(text) {
  try { return JSON.stringify(JSON.parse(text)); } catch { return JSON.stringify(text); }
}

// -- views -------------------------------------------------------------------------------------

let generation = 0;

function setNav(which) {
  for (const id of ["nav-tango", "nav-epics"]) {
    const a = document.getElementById(id);
    if (id === `nav-${which}`) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

function render(...nodes) {
  main.replaceChildren(...nodes);
}

async function homeView(gen) {
  setNav("tango");
  live.watch([]);
  document.title = "mtango-bridge";
  const list = h("ul", { class: "links", id: "databases" });
  render(h("h1", {}, "Tango databases"), list,
    h("p", { class: "note" }, "Or watch EPICS PVs: ", h("a", { href: "#/epics" }, "the EPICS watch list"), "."));
  try {
    const hosts = await api(`${RC3}/hosts`);
    if (gen !== generation) return;
    const names = Object.keys(hosts).filter((k) => typeof hosts[k] === "string");
    list.append(...names.map((name) => h("li", {}, h("a", { href: `#/tango/${name}` }, name))));
    if (!names.length) list.replaceWith(h("p", { class: "muted" }, "No Tango database is served."));
  } catch (error) {
    list.replaceWith(errorBox(error));
  }
}

function hostParts(hostPort) {
  const cut = hostPort.lastIndexOf(":");
  return [hostPort.slice(0, cut), hostPort.slice(cut + 1)];
}

async function devicesView(gen, hostPort, params) {
  setNav("tango");
  live.watch([]);
  const [host, port] = hostParts(hostPort);
  const wildcard = params.get("wildcard") || "*";
  document.title = `${hostPort} · mtango-bridge`;
  const input = h("input", { type: "text", name: "wildcard", value: wildcard, "aria-label": "Device filter (Tango glob)",
    placeholder: "sys/*/1", size: 24 });
  const list = h("ul", { class: "links", id: "devices" });
  const count = h("p", { class: "muted" }, "Loading…");
  render(
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Databases"), " / ", hostPort),
    h("h1", {}, `Devices of ${hostPort}`),
    h("form", { class: "inline", role: "search", onsubmit: (event) => {
      event.preventDefault();
      location.hash = `#/tango/${hostPort}?wildcard=${enc(input.value.trim() || "*")}`;
    } }, h("label", {}, "Filter ", input), h("button", { type: "submit" }, "Show"),
    h("span", { class: "note" }, "a Tango glob: ", h("code", {}, "*"), " matches any characters")),
    count, list);
  try {
    const devices = withoutPartial(await api(
      `${RC3}/hosts/${enc(host)}/${enc(port)}/devices?wildcard=${enc(wildcard)}`));
    if (gen !== generation) return;
    count.textContent = `${devices.length} device${devices.length === 1 ? "" : "s"}`;
    list.append(...devices.map((d) => h("li", {}, h("a", { href: `#/tango/${hostPort}/${d.name}` }, d.name))));
  } catch (error) {
    count.replaceWith(errorBox(error));
  }
}

function qualityBadge(q) {
  return h("span", { class: "q", "data-q": q }, q ? q.replace(/^ATTR_/, "") : "");
}

// One attribute or PV on the page: its row, how a message updates it, how it goes stale.
class ValueRow {
  constructor({ name, sub, unit, kind }) {
    this.kind = kind;
    this.v = h("span", { class: "v" }, "…");
    this.quality = h("div", { class: "quality" });
    this.unit = h("div", { class: "unit" }, unit || "");
    this.note = h("div", { class: "stale-note" });
    this.extra = h("div", { class: "extra" });
    this.value = h("div", { class: "value" }, this.v, this.note);
    this.el = h("div", { class: "row waiting", "data-stale": "false" },
      h("div", { class: "name" }, h("span", {}, name), sub ? h("small", {}, sub) : null),
      this.value, this.unit, this.quality, this.extra);
    this.canvas = null;
  }

  fresh() {
    this.el.classList.remove("waiting");
    this.el.dataset.stale = "false";
    this.note.textContent = "";
  }

  stale(text) {
    this.el.classList.remove("waiting");
    this.el.dataset.stale = "true";
    this.note.textContent = text;
    this.v.title = text;
  }

  setQuality(q, attribute) {
    this.el.dataset[attribute] = q || "";
    this.quality.replaceChildren(qualityBadge(q));
  }

  canvasOf(kind) {
    if (!this.canvas || this.canvas.className !== kind) {
      this.canvas = h("canvas", { class: kind, role: "img", "aria-label": `${kind} of the value` });
      this.value.querySelectorAll("canvas").forEach((c) => c.remove());
      this.value.insertBefore(this.canvas, this.note);
    }
    return this.canvas;
  }

  dropCanvas() {
    if (this.canvas) { this.canvas.remove(); this.canvas = null; }
  }
}

function shortList(values, format, precision) {
  const shown = values.slice(0, 6).map((v) => (typeof v === "number"
    ? (format || Number.isInteger(precision) ? formatNumber(v, format, precision) : String(Number(v.toPrecision(6))))
    : String(v)));
  return `[${values.length}] ${shown.join(", ")}${values.length > 6 ? ", …" : ""}`;
}

function showTangoValue(row, info, value) {
  const format = info ? info.data_format : "SCALAR";
  const units = info && info.unit && info.unit !== "No unit" ? info.unit : "";
  if (value && typeof value === "object" && !Array.isArray(value) && "width" in value && "data" in value) {
    row.v.textContent = `${value.width} × ${value.height}`;
    if (numericArray(value.data) || value.data.length === 0) drawImage(row.canvasOf("picture"), value, info && info.data_type);
    return;
  }
  if (Array.isArray(value)) {
    row.v.textContent = shortList(value, info && info.format);
    if (numericArray(value)) drawPlot(row.canvasOf("plot"), value, units);
    else row.dropCanvas();
    return;
  }
  if (value && typeof value === "object" && "format" in value && "data" in value) {
    row.v.textContent = `encoded (${value.format}), ${Math.floor((value.data.length * 3) / 4)} bytes`;
    if (!drawEncodedImage(row, value)) row.dropCanvas();
    return;
  }
  if (format === "SCALAR" && typeof value === "number") row.v.textContent = formatNumber(value, info && info.format);
  else row.v.textContent = typeof value === "string" ? value : JSON.stringify(value);
}

function attributeWriteForm(device, info) {
  let input;
  if (info.data_type === "DevEnum" && info.enum_label && info.enum_label.length) {
    input = h("select", { "aria-label": `new value of ${info.name}` },
      info.enum_label.map((label) => h("option", { value: label }, label)));
  } else if (info.data_type === "DevBoolean") {
    input = h("select", { "aria-label": `new value of ${info.name}` },
      h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
  } else {
    // Spectra as a JSON array (or the tangojs connector's "1,2,3"), images as an array of rows.
    const placeholder = { SCALAR: "new value", SPECTRUM: "[1, 2, 3]", IMAGE: "[[1, 2], [3, 4]]" }[info.data_format] || "new value";
    input = h("input", { type: "text", "aria-label": `new value of ${info.name}`, placeholder });
  }
  const url = `${device}/attributes/${enc(info.name)}/value`;
  return writeForm({
    label: "Set",
    input,
    run: async () => {
      const answer = info.data_format === "SCALAR"
        ? await api(`${url}?v=${enc(input.value)}`, { method: "PUT" })
        : await api(url, { method: "PUT", body: input.value, headers: { Accept: "application/json", "Content-Type": "application/json" } });
      return `written; read back: ${JSON.stringify(answer.value)}`;
    },
  });
}

function commandForm(device, cmd) {
  const takes = cmd.info.in_type !== "DevVoid";
  const input = takes ? h("input", { type: "text", "aria-label": `argument of ${cmd.name}`,
    placeholder: cmd.info.in_type.startsWith("DevVar") ? "[1, 2, 3]" : "argument" }) : null;
  return writeForm({
    label: "Run",
    input,
    run: async () => {
      const body = takes ? (cmd.info.in_type === "DevString" ? JSON.stringify(input.value) : jsonOf(input.value)) : "";
      const answer = await api(`${device}/commands/${enc(cmd.name)}`, {
        method: "PUT", body, headers: { Accept: "application/json", "Content-Type": "application/json" },
      });
      return cmd.info.out_type === "DevVoid" ? "done" : `output: ${JSON.stringify(answer.output)}`;
    },
  });
}

function elementCount(info) {
  if (info.data_format === "SCALAR") return 1;
  return Math.max(1, info.max_dim_x) * Math.max(1, info.max_dim_y || 1);
}

async function deviceView(gen, hostPort, deviceName) {
  setNav("tango");
  const [host, port] = hostParts(hostPort);
  const device = `${RC3}/hosts/${enc(host)}/${enc(port)}/devices/${encPath(deviceName)}`;
  document.title = `${deviceName} · mtango-bridge`;
  const state = h("span", { class: "state", id: "state", "data-state": "", "data-stale": "false" }, "…");
  const status = h("pre", { class: "status", id: "status", "data-stale": "false" }, "");
  const attrs = h("div", { class: "rows", id: "attributes" }, h("p", { class: "muted" }, "Loading…"));
  const cmds = h("div", { class: "cmds", id: "commands" });
  const props = h("dl", { class: "props", id: "properties" });
  const notes = h("div", {});
  render(
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Databases"), " / ",
      h("a", { href: `#/tango/${hostPort}` }, hostPort), " / ", deviceName),
    h("h1", {}, deviceName),
    h("div", { class: "device-head" }, state, status),
    notes,
    h("h2", {}, "Attributes"), attrs,
    h("h2", {}, "Commands"), cmds,
    h("h2", {}, "Properties"), props,
  );
  live.watch([]);
  let names, commands, properties, head;
  try {
    [head, names, commands, properties] = await Promise.all([
      api(`${device}/state`).catch((error) => ({ state: "UNKNOWN", status: error.message })),
      api(`${device}/attributes`).then(withoutPartial),
      api(`${device}/commands`).then(withoutPartial).catch(() => []),
      api(`${device}/properties`).then(withoutPartial).catch(() => []),
    ]);
  } catch (error) {
    if (gen === generation) attrs.replaceChildren(errorBox(error));
    return;
  }
  if (gen !== generation) return;
  state.textContent = head.state;
  state.dataset.state = head.state;
  status.textContent = head.status;

  // attribute infos, a few dozen names per request
  const infos = new Map();
  const attributeNames = names.map((a) => a.name).filter((n) => n !== "State" && n !== "Status");
  for (let i = 0; i < attributeNames.length; i += 40) {
    const chunk = attributeNames.slice(i, i + 40);
    try {
      const found = await api(`${device}/attributes/info?${chunk.map((n) => `attr=${enc(n)}`).join("&")}`);
      for (const info of found) if (info && info.name) infos.set(info.name, info);
    } catch { /* rows without info */ }
  }
  if (gen !== generation) return;

  const target = (name) => `${hostPort}/${deviceName}/${name}`;
  const writable = attributeNames.filter((n) => infos.get(n) && infos.get(n).writable !== "READ");
  const allowed = await access([...writable.map((n) => `tango=${enc(target(n))}`),
    ...commands.map((c) => `tango=${enc(target(c.name))}`)]);
  if (gen !== generation) return;

  const watched = [
    { kind: "tango", target: target("State"),
      onMessage: (m) => { state.dataset.stale = "false"; state.title = ""; state.textContent = m.value.value; state.dataset.state = m.value.value; },
      onStale: (text) => { state.dataset.stale = "true"; state.title = text; } },
    { kind: "tango", target: target("Status"),
      onMessage: (m) => { status.dataset.stale = "false"; status.textContent = m.value.value; },
      onStale: (text) => { status.dataset.stale = "true"; status.textContent = `STALE · ${text}`; } },
  ];
  const rows = [];
  for (const name of attributeNames) {
    const info = infos.get(name);
    const unit = info && info.unit && info.unit !== "No unit" ? info.unit : "";
    const sub = info ? `${info.data_type} ${info.data_format.toLowerCase()}${info.writable !== "READ" ? " · writable" : ""}` : "";
    const row = new ValueRow({ name, sub, unit, kind: "tango" });
    row.el.dataset.attr = name;
    if (info && allowed.get(target(name))) row.extra.append(attributeWriteForm(device, info));
    rows.push(row.el);
    if (info && elementCount(info) > MAX_LIVE_ELEMENTS) {
      // Too large to stream: drawn on demand by the picture endpoints.
      row.el.classList.remove("waiting");
      row.v.textContent = `up to ${elementCount(info).toLocaleString()} elements: not live`;
      const picture = info.data_format === "IMAGE" ? "value/image?format=png" : "value/plot?format=svg";
      row.extra.append(h("button", { type: "button", class: "quiet", onclick: (event) => {
        const img = h("img", { class: "snapshot", alt: `${name} as read now`, src: `${device}/attributes/${enc(name)}/${picture}&t=${Date.now()}` });
        row.extra.querySelectorAll("img").forEach((old) => old.remove());
        event.target.after(img);
      } }, "Draw it now"));
      continue;
    }
    watched.push({
      kind: "tango", target: target(name),
      onMessage: (m) => { row.fresh(); row.setQuality(m.value.quality, "quality"); showTangoValue(row, info, m.value.value); },
      onStale: (text) => row.stale(text),
    });
  }
  attrs.replaceChildren(...(rows.length ? rows : [h("p", { class: "muted" }, "No attributes.")]));
  cmds.replaceChildren(...(commands.length ? commands.map((c) => h("div", { class: "cmd", "data-cmd": c.name },
    h("strong", {}, c.name),
    h("span", { class: "types" }, `${c.info.in_type} → ${c.info.out_type}`),
    allowed.get(target(c.name)) ? commandForm(device, c) : null)) : [h("p", { class: "muted" }, "No commands.")]));
  props.replaceChildren(...(properties.length ? properties.flatMap((p) => [h("dt", {}, p.name),
    h("dd", {}, (p.values || []).join("\n"))]) : [h("p", { class: "muted" }, "No properties.")]));
  const left = live.watch(watched);
  if (left.length) {
    notes.append(h("p", { class: "note" }, `${left.length} attributes are not live (too many for one stream).`));
    for (const t of left) {
      const row = main.querySelector(`[data-attr="${CSS.escape(t.target.split("/").pop())}"]`);
      if (row) { row.classList.remove("waiting"); row.querySelector(".v").textContent = "not live (too many)"; }
    }
  }
}

// -- EPICS -------------------------------------------------------------------------------------

function showPvValue(row, meta, value) {
  const v = value.value;
  if (Array.isArray(v) && value.type !== "STRING") {
    row.v.textContent = shortList(v, null, meta.precision);
    if (numericArray(v)) drawPlot(row.canvasOf("plot"), v, meta.units);
    return;
  }
  row.dropCanvas();
  if (value.text !== undefined && value.text !== null) row.v.textContent = Array.isArray(value.text) ? value.text.join(", ") : value.text;
  else if (Array.isArray(v)) row.v.textContent = v.join(", ");
  else if (typeof v === "number") row.v.textContent = formatNumber(v, null, meta.precision);
  else row.v.textContent = String(v);
}

function pvsOf(params) {
  const seen = new Set();
  for (const raw of params.getAll("pv")) for (const name of raw.split(/[\s,]+/)) if (name) seen.add(name);
  return [...seen];
}

function epicsHash(pvs) {
  // names stay readable in the address bar: ":" and "$" need no escaping in a fragment
  const readable = (p) => enc(p).replace(/%3A/gi, ":").replace(/%24/g, "$");
  return `#/epics${pvs.length ? `?${pvs.map((p) => `pv=${readable(p)}`).join("&")}` : ""}`;
}

async function epicsView(gen, params) {
  setNav("epics");
  document.title = "EPICS · mtango-bridge";
  const pvs = pvsOf(params);
  const box = h("textarea", { id: "add-pvs", rows: 2, "aria-label": "PV names to add",
    placeholder: "PV names, separated by spaces, commas or new lines (paste a list)" });
  const rows = h("div", { class: "rows", id: "pvs" });
  const info = h("div", {});
  render(
    h("h1", {}, "EPICS watch list"),
    h("form", { class: "inline", onsubmit: (event) => {
      event.preventDefault();
      const added = box.value.split(/[\s,]+/).filter(Boolean);
      location.hash = epicsHash([...new Set([...pvs, ...added])]);
    } }, box, h("button", { type: "submit" }, "Watch"),
    pvs.length ? h("button", { type: "button", class: "quiet", onclick: () => { location.hash = "#/epics"; } }, "Clear all") : null),
    info, rows);
  live.watch([]);
  try {
    await api(EPICS);
  } catch (error) {
    if (gen === generation) info.append(errorBox(`EPICS is not available here: ${error.message}`));
    return;
  }
  if (!pvs.length) {
    rows.append(h("p", { class: "muted" }, "Nothing watched yet: type or paste PV names above."));
    return;
  }
  const allowed = await access(pvs.map((p) => `pv=${enc(p)}`));
  if (gen !== generation) return;
  const watched = [];
  for (const pv of pvs) {
    const row = new ValueRow({ name: pv, kind: "pv" });
    row.el.dataset.pv = pv;
    const meta = { units: "", precision: null };
    row.el.querySelector(".name").append(h("button", { type: "button", class: "quiet remove", "aria-label": `stop watching ${pv}`,
      onclick: () => { location.hash = epicsHash(pvs.filter((p) => p !== pv)); } }, "×"));
    if (allowed.get(pv)) {
      const input = h("input", { type: "text", "aria-label": `new value of ${pv}`, placeholder: "new value" });
      row.extra.append(writeForm({ label: "Put", input, run: async () => {
        const answer = await api(`${EPICS}/pvs/${encPath(pv)}/value`, {
          method: "PUT", body: jsonOf(input.value), headers: { Accept: "application/json", "Content-Type": "application/json" } });
        return `put; read back: ${JSON.stringify(answer.value)}`;
      } }));
    }
    rows.append(row.el);
    watched.push({
      kind: "pv", target: pv,
      onMessage: (m) => {
        const value = m.value;
        if (m.first) {
          meta.units = value.units || "";
          meta.precision = Number.isInteger(value.precision) ? value.precision : null;
          row.unit.textContent = meta.units;
          const type = `${value.type || ""}${value.native_count > 1 ? `[${value.native_count}]` : ""}`;
          let small = row.el.querySelector(".name small");
          if (!small) { small = h("small", {}); row.el.querySelector(".name").append(small); }
          small.textContent = `${type} · connected`;
        }
        row.fresh();
        row.setQuality(value.severity, "severity");
        showPvValue(row, meta, value);
      },
      onStale: (text) => {
        const small = row.el.querySelector(".name small");
        if (small) small.textContent = small.textContent.replace("connected", "disconnected");
        row.stale(text);
      },
    });
  }
  live.watch(watched);
}

// -- routing -----------------------------------------------------------------------------------

function route() {
  const gen = ++generation;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "epics") return epicsView(gen, params);
  if (parts[0] === "tango" && parts.length === 2) return devicesView(gen, parts[1], params);
  if (parts[0] === "tango" && parts.length === 5) return deviceView(gen, parts[1], parts.slice(2).join("/"));
  return homeView(gen);
}

window.addEventListener("hashchange", () => { route(); main.focus({ preventScroll: true }); });
route();
