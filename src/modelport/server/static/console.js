// modelport console: the glue between this server's JSON routes and the page.
// Charts are uPlot's (static/vendor/uplot), the API tab is Swagger UI's (static/vendor/swagger-ui);
// every request goes to this server only, with relative URLs (a path prefix in front works too).
"use strict";

const TOKEN_KEY = "modelport-token";
const POLL_MS = 2000;
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  server: null,
  models: [],
  tab: null,
  timer: null,
  charts: {},
  swagger: null,
};

// -- helpers ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function $(id) {
  return document.getElementById(id);
}

/** An element with attributes (on* as listeners) and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "className") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function enc(part) {
  return encodeURIComponent(part);
}

/** fetch() against this server, with the bearer token when there is one. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", "Bearer " + state.token);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    showSignin(state.token ? "That token was refused." : "");
    throw new ApiError(401, "missing or wrong bearer token");
  }
  return response;
}

async function errorOf(response) {
  const text = await response.text();
  try {
    return JSON.parse(text).error || text;
  } catch {
    return text || response.statusText;
  }
}

async function getJSON(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw new ApiError(response.status, await errorOf(response));
  return response.json();
}

function fmt(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits);
}

function setStatus(text) {
  $("status").textContent = text;
}

// -- sign-in and tabs ------------------------------------------------------------------------

function showSignin(message) {
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  for (const section of document.querySelectorAll(".tab")) section.hidden = true;
  stopPolling();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  try {
    await loadModels();
  } catch (error) {
    return;
  }
  $("signin").hidden = true;
  showTab(state.tab || "models", true);
});

const TABS = {
  models: { poll: refreshModels },
  metrics: { poll: refreshMetrics },
  try: { open: openTry },
  report: { open: openReport },
  api: { open: openApi },
};

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = null;
}

function showTab(name, force = false) {
  if (!TABS[name]) name = "models";
  if (name === state.tab && !force) return;
  state.tab = name;
  stopPolling();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.tab === name);
  }
  if (!$("signin").hidden) return;
  for (const section of document.querySelectorAll(".tab")) {
    section.hidden = section.id !== "tab-" + name;
  }
  const tab = TABS[name];
  if (tab.open) tab.open();
  if (tab.poll) poll(tab.poll, name);
}

async function poll(refresh, name) {
  if (state.tab !== name) return;
  if (!document.hidden) {
    try {
      await refresh();
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (error) {
      if (error.status !== 401) setStatus("error: " + error.message);
      if (error.status === 401) return;
    }
  }
  if (state.tab === name) state.timer = setTimeout(() => poll(refresh, name), POLL_MS);
}

window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));

// -- models ----------------------------------------------------------------------------------

async function loadModels() {
  const answer = await getJSON("console/api/models");
  state.server = answer.server;
  state.models = answer.models;
  $("server-version").textContent =
    "v" + answer.server.version + (answer.server.admin ? " · admin API on" : "");
  return answer;
}

function model(name) {
  return state.models.find((m) => m.name === name);
}

function signatureText(specs) {
  return (specs || []).map((s) => `${s.name} ${s.datatype} [${s.shape.join(", ")}]`).join(", ");
}

function roleText(version, entry) {
  if (version.role === "canary" && entry.policy) return `canary ${entry.policy.percent}%`;
  return version.role || "";
}

async function refreshModels(force = false) {
  await loadModels();
  const root = $("models");
  // Redrawn only when something changed, and not under a person typing a canary share.
  const key = JSON.stringify([state.server, state.models]);
  if (!force && (key === state.modelsKey || root.contains(document.activeElement))) return;
  state.modelsKey = key;
  const cards = state.models.map(modelCard);
  if (!cards.length) cards.push(el("p", { className: "muted" }, "No model is served."));
  root.replaceChildren(...cards);
}

function modelCard(entry) {
  const rows = entry.versions.map((v) =>
    el(
      "tr",
      { "data-version": v.version },
      el("td", {}, v.version),
      el("td", {}, el("span", { className: "badge " + v.state }, v.state)),
      el("td", {}, v.role ? el("span", { className: "badge " + v.role }, roleText(v, entry)) : ""),
      el("td", { className: "error" }, v.error || ""),
      state.server.admin ? el("td", {}, versionActions(entry, v)) : null,
    ),
  );
  const head = ["version", "state", "role", "error"].concat(state.server.admin ? ["actions"] : []);
  const facts = [
    entry.platform ? `platform ${entry.platform}` : null,
    entry.live ? `live ${entry.live}` : "no live version",
    entry.pinned ? "pinned" : null,
    `${entry.swaps} swap(s)`,
    entry.failures ? `${entry.failures} failed load(s)` : null,
  ].filter(Boolean);
  const shadow = entry.shadow
    ? el(
        "p",
        {},
        `Shadow: ${entry.shadow.compared} compared, agreement ` +
          (entry.shadow.agreement === null ? "–" : fmt(entry.shadow.agreement * 100, 1) + "%") +
          `, ${entry.shadow.errors} error(s), mean ${fmt(entry.shadow.mean_ms, 2)} ms vs ` +
          `${fmt(entry.shadow.primary_mean_ms, 2)} ms live`,
      )
    : null;
  return el(
    "article",
    { className: "card", "data-model": entry.name },
    el("h2", {}, entry.name),
    entry.description ? el("p", { className: "muted" }, entry.description) : null,
    el("p", { className: "meta" }, facts.join(" · ")),
    entry.inputs
      ? el(
          "p",
          { className: "meta" },
          "inputs: ",
          el("code", {}, signatureText(entry.inputs)),
          " → outputs: ",
          el("code", {}, signatureText(entry.outputs)),
        )
      : null,
    el(
      "table",
      { className: "versions" },
      el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    ),
    shadow,
    state.server.admin ? modelActions(entry) : null,
    el("p", { className: "error", "data-error": entry.name }),
  );
}

async function admin(entry, action, body) {
  const message = document.querySelector(`[data-error="${CSS.escape(entry.name)}"]`);
  try {
    await getJSON(`admin/models/${enc(entry.name)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    await refreshModels(true);
  } catch (error) {
    if (message) message.textContent = `${action}: ${error.message}`;
  }
}

function versionActions(entry, v) {
  if (v.role === "live" || v.state === "failed") return "";
  const percent = el("input", {
    type: "number", min: "1", max: "100", value: "10", size: "3", "aria-label": "canary percent",
  });
  return el(
    "span",
    { className: "actions" },
    el("button", { className: "secondary", onclick: () => admin(entry, "pin", { version: v.version }) }, "make live (pin)"),
    el("button", {
      className: "secondary",
      onclick: () => admin(entry, "canary", { version: v.version, percent: Number(percent.value) }),
    }, "canary"),
    percent,
    "%",
    el("button", { className: "secondary", onclick: () => admin(entry, "shadow", { version: v.version }) }, "shadow"),
  );
}

function modelActions(entry) {
  const buttons = [];
  if (entry.policy) {
    buttons.push(el("button", { onclick: () => admin(entry, "promote") }, `promote ${entry.policy.kind} ${entry.policy.version}`));
    buttons.push(el("button", { className: "secondary", onclick: () => admin(entry, "clear") }, `stop ${entry.policy.kind}`));
  }
  if (entry.history && entry.history.length > 1) {
    buttons.push(el("button", { className: "secondary", onclick: () => admin(entry, "rollback") }, "roll back"));
  }
  if (entry.pinned) {
    buttons.push(el("button", { className: "secondary", onclick: () => admin(entry, "unpin") }, "unpin"));
  }
  return buttons.length ? el("div", { className: "actions" }, buttons) : null;
}

// -- live metrics ----------------------------------------------------------------------------

const PALETTE = ["#2f5fd0", "#d0542f", "#2e7d4f", "#8a3fc2", "#b28a00", "#0f8a9d", "#c2185b"];

async function refreshMetrics() {
  const span = $("window").value;
  const answer = await getJSON(`console/api/metrics?window=${enc(span)}`);
  const flights = Object.entries(answer.in_flight).map(([p, n]) => `${p} ${n}`).join(", ");
  $("in-flight").textContent = flights ? `in flight: ${flights}` : "";
  $("gpus").replaceChildren(...(answer.gpus || []).map(gpuLine));
  const rows = answer.versions.map((v) => {
    const w = v.window || {};
    const cells = [
      v.total.requests, v.total.errors, fmt(w.rps, 2), fmt(w.errors_per_s, 2),
      fmt(w.p50_ms, 2), fmt(w.p99_ms, 2), fmt(w.batch_mean, 2), v.queue_depth,
    ];
    return el(
      "tr",
      { "data-model": v.model, "data-version": v.version },
      el("td", {}, v.model),
      el("td", {}, v.version),
      el("td", {}, v.role ? el("span", { className: "badge " + v.role }, v.role === "canary" ? `canary ${v.percent}%` : v.role) : ""),
      cells.map((c, i) => el("td", { className: "num", "data-figure": FIGURES[i] }, c)),
    );
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "11", className: "muted" }, "No model version yet.")));
  document.querySelector("#metrics-table tbody").replaceChildren(...rows);
  drawCharts(answer.versions);
}

/** One GPU's reading: "GPU 0 (NVIDIA H100): 37 % busy, memory 3.0 of 80.0 GiB". */
function gpuLine(g) {
  const gib = (b) => (b == null ? "?" : (b / 2 ** 30).toFixed(1));
  const busy = g.utilization == null ? "?" : Math.round(g.utilization * 100);
  return el(
    "li",
    { "data-gpu": g.gpu },
    `GPU ${g.gpu} (${g.name}): ${busy} % busy, memory ${gib(g.memory_used_bytes)} of ${gib(g.memory_total_bytes)} GiB`,
  );
}

const FIGURES = ["requests", "errors", "rps", "errors_per_s", "p50_ms", "p99_ms", "batch_mean", "queue_depth"];

const SERIES_NAMES = { p50_ms: "p50", p99_ms: "p99", batch_mean: "mean batch", queue_depth: "queue" };

/** One x axis (every reading's time) and a column per series, null where one has no value. */
function align(versions, pick) {
  const times = [...new Set(versions.flatMap((v) => v.history.t))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const columns = [times];
  const series = [{}];
  versions.forEach((v, i) => {
    for (const [field, dash] of pick) {
      const column = new Array(times.length).fill(null);
      v.history.t.forEach((t, k) => (column[index.get(t)] = v.history[field][k]));
      columns.push(column);
      series.push({
        label: `${v.model} v${v.version}${pick.length > 1 ? " " + SERIES_NAMES[field] : ""}`,
        stroke: PALETTE[i % PALETTE.length],
        dash: dash ? [6, 4] : undefined,
        width: 1.5,
        spanGaps: false,
      });
    }
  });
  return { columns, series };
}

function drawChart(id, versions, pick) {
  const { columns, series } = align(versions, pick);
  const key = series.map((s) => s.label).join("|");
  const node = $(id);
  const width = Math.max(320, node.clientWidth || 480);
  let chart = state.charts[id];
  if (chart && chart.key !== key) {
    chart.plot.destroy();
    chart = null;
  }
  if (!chart) {
    const options = {
      width,
      height: 220,
      series,
      axes: [{}, { size: 60 }],
      scales: { x: { time: true } },
      legend: { live: false },
    };
    chart = state.charts[id] = { key, plot: new uPlot(options, columns, node) };
  } else {
    if (Math.abs(chart.plot.width - width) > 4) chart.plot.setSize({ width, height: 220 });
    chart.plot.setData(columns);
  }
  // At least a minute of time axis: uPlot spreads a single reading over years.
  const times = columns[0];
  const last = times[times.length - 1];
  if (times.length && last - times[0] < 60) chart.plot.setScale("x", { min: last - 60, max: last });
}

function drawCharts(versions) {
  const shown = versions.filter((v) => v.history.t.length);
  drawChart("chart-rps", shown, [["rps", false]]);
  drawChart("chart-latency", shown, [["p50_ms", false], ["p99_ms", true]]);
  drawChart("chart-batch", shown, [["batch_mean", false], ["queue_depth", true]]);
}

$("window").addEventListener("change", () => refreshMetrics().catch((e) => setStatus("error: " + e.message)));

// -- try it ----------------------------------------------------------------------------------

async function openTry() {
  try {
    if (!state.models.length) await loadModels();
  } catch (error) {
    return;
  }
  const select = $("try-model");
  const chosen = select.value;
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.name }, m.name)));
  if (chosen && model(chosen)) select.value = chosen;
  await chooseTryModel();
}

async function chooseTryModel() {
  const entry = model($("try-model").value);
  if (!entry) return;
  const versions = $("try-version");
  const live = el("option", { value: "" }, `live${entry.live ? " (" + entry.live + ")" : ""}`);
  const ready = entry.versions.filter((v) => v.state === "ready");
  versions.replaceChildren(live, ...ready.map((v) => el("option", { value: v.version }, v.version)));
  await chooseTryVersion();
}

async function chooseTryVersion() {
  const entry = model($("try-model").value);
  const version = $("try-version").value;
  let meta = entry;
  if (version) {
    meta = await getJSON(`v2/models/${enc(entry.name)}/versions/${enc(version)}`);
  }
  state.tryMeta = { ...meta, labels: entry.labels, name: entry.name, version };
  const base = tryPath();
  $("try-predict-path").textContent = "/" + base + "/predict";
  $("try-infer-path").textContent = "/" + base + "/infer";
  $("try-signature").textContent = meta.inputs
    ? `inputs ${signatureText(meta.inputs)} → outputs ${signatureText(meta.outputs)}`
    : "";
  buildFields(meta.inputs || []);
  $("try-json").value = JSON.stringify(exampleJSON(meta.inputs || []));
}

function tryPath() {
  const meta = state.tryMeta;
  return `v2/models/${enc(meta.name)}` + (meta.version ? `/versions/${enc(meta.version)}` : "");
}

const IMAGE_CHANNELS = new Set([1, 3, 4]);

/** How a form shows one input: numbers, text, an image, or a JSON array. */
function inputKind(spec) {
  const batched = spec.shape.length > 0 && spec.shape[0] === -1;
  const row = batched ? spec.shape.slice(1) : spec.shape.slice();
  if (spec.datatype === "BYTES") return { kind: "text", row, batched };
  const big = (d) => d === -1 || d >= 8;
  if (row.length === 3 && big(row[0]) && big(row[1]) && IMAGE_CHANNELS.has(row[2])) {
    return { kind: "image", layout: "HWC", row, batched };
  }
  if (row.length === 3 && IMAGE_CHANNELS.has(row[0]) && big(row[1]) && big(row[2])) {
    return { kind: "image", layout: "CHW", row, batched };
  }
  if (row.length === 2 && row[0] >= 8 && row[1] >= 8 && row[0] * row[1] > 64) {
    return { kind: "image", layout: "HW", row, batched };
  }
  const size = row.reduce((a, b) => a * b, 1);
  if (row.every((d) => d > 0) && size <= 64) return { kind: "numbers", row, batched, size };
  return { kind: "json", row, batched };
}

function exampleRow(row) {
  if (!row.length) return 0;
  return Array.from({ length: row[0] > 0 ? row[0] : 1 }, () => exampleRow(row.slice(1)));
}

function exampleJSON(inputs) {
  const out = {};
  for (const spec of inputs) {
    const { row } = inputKind(spec);
    out[spec.name] = spec.datatype === "BYTES" ? "example" : exampleRow(row);
  }
  return out;
}

function indexName(row, k) {
  const parts = [];
  for (let i = row.length - 1; i >= 0; i--) {
    parts.unshift(k % row[i]);
    k = Math.floor(k / row[i]);
  }
  return parts.map((p) => `[${p}]`).join("");
}

function buildFields(inputs) {
  state.tryFields = [];
  const groups = inputs.map((spec) => {
    const how = inputKind(spec);
    const field = { spec, how };
    state.tryFields.push(field);
    let body;
    if (how.kind === "numbers") {
      field.inputs = Array.from({ length: how.size }, (_, k) =>
        el("input", { type: "number", step: "any", value: "0", "data-input": spec.name, "data-index": k }),
      );
      body = el(
        "div",
        { className: "fields" },
        field.inputs.map((input, k) => el("label", {}, spec.name + (how.row.length ? indexName(how.row, k) : ""), input)),
      );
    } else if (how.kind === "text") {
      field.text = el("textarea", { rows: "3", "data-input": spec.name }, "");
      body = field.text;
    } else if (how.kind === "image") {
      field.file = el("input", { type: "file", accept: "image/*", "data-input": spec.name });
      field.preview = el("canvas", { className: "preview" });
      field.file.addEventListener("change", () => loadImage(field));
      body = el("div", {}, field.file, field.preview);
    } else {
      field.text = el("textarea", { rows: "4", "data-input": spec.name }, JSON.stringify(exampleRow(how.row)));
      body = el("div", {}, el("p", { className: "muted" }, "One row as a JSON array."), field.text);
    }
    return el(
      "div",
      { className: "field-group" },
      el("div", { className: "name" }, `${spec.name} `, el("span", { className: "muted" }, `${spec.datatype} [${spec.shape.join(", ")}]`)),
      body,
    );
  });
  if (!groups.length) groups.push(el("p", { className: "muted" }, "The model declares no inputs."));
  $("try-fields").replaceChildren(...groups);
}

function loadImage(field) {
  const file = field.file.files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    const { layout, row } = field.how;
    const dims = layout === "CHW" ? [row[1], row[2]] : [row[0], row[1]];
    const scale = Math.min(1, 1024 / Math.max(image.naturalWidth, image.naturalHeight));
    const height = dims[0] > 0 ? dims[0] : Math.round(image.naturalHeight * scale);
    const width = dims[1] > 0 ? dims[1] : Math.round(image.naturalWidth * scale);
    const canvas = field.preview;
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0, width, height);
    field.pixels = { data: context.getImageData(0, 0, width, height).data, width, height };
    URL.revokeObjectURL(url);
  };
  image.src = url;
}

function imageTensor(field) {
  if (!field.pixels) throw new Error(`choose an image for input ${field.spec.name}`);
  const { data, width, height } = field.pixels;
  const { layout, row } = field.how;
  const channels = layout === "HW" ? 1 : layout === "HWC" ? row[2] : row[0];
  const float = field.spec.datatype.startsWith("FP");
  const value = (p, c) => {
    let v;
    if (channels === 1) v = 0.299 * data[p * 4] + 0.587 * data[p * 4 + 1] + 0.114 * data[p * 4 + 2];
    else v = data[p * 4 + c];
    return float ? v / 255 : Math.round(v);
  };
  const out = [];
  if (layout === "CHW") {
    for (let c = 0; c < channels; c++) for (let p = 0; p < width * height; p++) out.push(value(p, c));
    return { shape: [channels, height, width], data: out };
  }
  for (let p = 0; p < width * height; p++) for (let c = 0; c < channels; c++) out.push(value(p, c));
  return { shape: layout === "HW" ? [height, width] : [height, width, channels], data: out };
}

function tensorOf(field) {
  const { spec, how } = field;
  let shape;
  let data;
  if (how.kind === "numbers") {
    data = field.inputs.map((input) => {
      if (input.value.trim() === "" || Number.isNaN(Number(input.value))) {
        throw new Error(`${spec.name}: "${input.value}" is not a number`);
      }
      return Number(input.value);
    });
    shape = how.row;
  } else if (how.kind === "text") {
    data = [field.text.value];
    shape = how.row.length ? [1] : [];
  } else if (how.kind === "image") {
    ({ shape, data } = imageTensor(field));
  } else {
    let value;
    try {
      value = JSON.parse(field.text.value);
    } catch (error) {
      throw new Error(`${spec.name}: not JSON: ${error.message}`);
    }
    const dims = [];
    for (let v = value; Array.isArray(v); v = v[0]) dims.push(v.length);
    shape = dims;
    data = [value].flat(Infinity);
  }
  if (spec.datatype === "BOOL") data = data.map(Boolean);
  return { name: spec.name, datatype: spec.datatype, shape: how.batched ? [1, ...shape] : shape, data };
}

async function send(kind, body) {
  const started = performance.now();
  const response = await api(`${tryPath()}/${kind}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body,
  });
  const text = await response.text();
  const ms = performance.now() - started;
  let shown = text;
  let parsed = null;
  try {
    parsed = JSON.parse(text);
    shown = JSON.stringify(parsed, null, 2);
  } catch {
    // not JSON: shown as it came
  }
  const id = response.headers.get("x-request-id");
  $("try-result").hidden = false;
  const status = $("try-status");
  status.className = response.ok ? "ok" : "bad";
  status.textContent =
    `${response.status} ${response.ok ? "OK" : "error"} from /${tryPath()}/${kind} in ${ms.toFixed(1)} ms` +
    (id ? ` · request id ${id}` : "");
  status.dataset.ms = ms.toFixed(3);
  $("try-answer").textContent = shown;
  $("try-labels").textContent = response.ok && kind === "infer" ? labelText(parsed) : "";
}

/** Class names for the first output of a V2 answer, where the model names its classes. */
function labelText(answer) {
  const labels = state.tryMeta.labels;
  if (!labels || !answer || !answer.outputs || !answer.outputs.length) return "";
  const first = answer.outputs[0];
  if (!/^U?INT/.test(first.datatype)) return "";
  const names = first.data.map((i) => labels[i] ?? `?${i}`);
  return `${first.name}: ${first.data.join(", ")} → ${names.join(", ")}`;
}

function tryFailed(error) {
  $("try-result").hidden = false;
  $("try-status").className = "bad";
  $("try-status").textContent = error.message;
  $("try-answer").textContent = "";
  $("try-labels").textContent = "";
}

$("try-model").addEventListener("change", () => chooseTryModel().catch(tryFailed));
$("try-version").addEventListener("change", () => chooseTryVersion().catch(tryFailed));

$("try-json-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    JSON.parse($("try-json").value);
  } catch (error) {
    tryFailed(new Error("not JSON: " + error.message));
    return;
  }
  await send("predict", $("try-json").value).catch(tryFailed);
});

$("try-v2-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  let body;
  try {
    body = JSON.stringify({ inputs: state.tryFields.map(tensorOf) });
  } catch (error) {
    tryFailed(error);
    return;
  }
  await send("infer", body).catch(tryFailed);
});

// -- report ----------------------------------------------------------------------------------

async function openReport() {
  try {
    if (!state.models.length) await loadModels();
  } catch (error) {
    return;
  }
  const select = $("report-model");
  const chosen = select.value;
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.name }, m.name)));
  if (chosen && model(chosen)) select.value = chosen;
  fillReferenceInput();
  if (state.server && !state.server.prediction_log) {
    $("report-status").textContent =
      "This server logs no predictions, so it has no report: start it with --log-predictions or --log-db.";
  }
}

function fillReferenceInput() {
  const entry = model($("report-model").value);
  const inputs = (entry && entry.inputs) || [];
  $("report-reference-input").value = inputs.length === 1 ? inputs[0].name : "";
}

$("report-model").addEventListener("change", fillReferenceInput);

$("report-range").addEventListener("change", () => {
  const custom = $("report-range").value === "custom";
  for (const label of document.querySelectorAll("#report-form .custom")) label.hidden = !custom;
});

function reportQuery() {
  const params = new URLSearchParams();
  const range = $("report-range").value;
  const now = Date.now() / 1000;
  if (range === "custom") {
    const since = $("report-since").value;
    const until = $("report-until").value;
    if (since) params.set("since", new Date(since).getTime() / 1000);
    if (until) params.set("until", new Date(until).getTime() / 1000);
  } else if (range !== "all") {
    params.set("since", now - Number(range));
  }
  if ($("report-window").value) params.set("window", $("report-window").value);
  const file = $("report-reference").files[0];
  if (file) {
    params.set("reference", file.name);
    if ($("report-reference-input").value.trim()) {
      params.set("reference_input", $("report-reference-input").value.trim());
    }
  }
  return { params, file };
}

$("report-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("report-model").value;
  const { params, file } = reportQuery();
  const status = $("report-status");
  status.textContent = "building the report…";
  const started = performance.now();
  try {
    const response = await api(`console/api/report/${enc(name)}?${params}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: file ? await file.arrayBuffer() : new ArrayBuffer(0),
    });
    if (!response.ok) throw new ApiError(response.status, await errorOf(response));
    const html = await response.text();
    const frame = $("report-frame");
    frame.srcdoc = html;
    frame.hidden = false;
    const link = $("report-download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([html], { type: "text/html" }));
    link.download = `report-${name}.html`;
    link.hidden = false;
    status.textContent = `report of ${name} built in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  } catch (error) {
    status.textContent = "";
    status.append(el("span", { className: "error" }, error.message));
  }
});

// -- API reference ---------------------------------------------------------------------------

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = el("script", { src });
    script.onload = resolve;
    script.onerror = () => reject(new Error("could not load " + src));
    document.body.append(script);
  });
}

async function openApi() {
  if (state.swagger) return;
  state.swagger = "loading";
  document.head.append(el("link", { rel: "stylesheet", href: "static/vendor/swagger-ui/swagger-ui.css" }));
  await loadScript("static/vendor/swagger-ui/swagger-ui-bundle.js");
  state.swagger = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger",
    validatorUrl: null, // else the document would be sent to validator.swagger.io
    requestInterceptor: (request) => {
      if (state.token) request.headers.Authorization = "Bearer " + state.token;
      return request;
    },
  });
}

// -- start -----------------------------------------------------------------------------------

(async () => {
  const auth = document.querySelector('meta[name="modelport-auth"]').content;
  if (auth === "required" && !state.token) {
    state.tab = location.hash.slice(1) || "models";
    showSignin("");
    return;
  }
  try {
    await loadModels();
  } catch (error) {
    if (error.status !== 401) setStatus("error: " + error.message);
    state.tab = location.hash.slice(1) || "models";
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.dataset.tab === state.tab);
    }
    return;
  }
  showTab(location.hash.slice(1) || "models", true);
})();
