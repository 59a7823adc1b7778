// The wasmsocket test page: connect to a plugin, send text or binary, watch
// the conversation and the plugins' live state. Built on ./wasmsocket.js.
import { WasmSocket } from "./wasmsocket.js";

/** Reconnection settings used when "Reconnect automatically" is ticked. */
const RECONNECT = { initialDelay: 500, maxDelay: 10000, factor: 2, jitter: 0.3 };
/** The transport picker's choices, as `WasmSocket` transports. */
const TRANSPORT_CHOICES = { auto: ["websocket", "http"], websocket: ["websocket"], http: ["http"] };
const TRANSPORT_NAMES = { websocket: "WebSocket", http: "HTTP fallback" };
const PLUGIN_POLL_MS = 1000;
const LOG_LIMIT = 1000; // entries kept in the log
const PENDING_LIMIT = 1000; // sent messages remembered to match echoes
const TEXT_PREVIEW = 1000; // characters of a message shown in the log
const BINARY_PREVIEW = 64; // bytes of a message shown in the log, as hex

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"),
  transport: $("transport"),
  transportChoice: $("transport-choice"),
  connectForm: $("connect-form"),
  plugin: $("plugin"),
  pluginInfo: $("plugin-info"),
  url: $("url"),
  protocols: $("protocols"),
  reconnect: $("reconnect"),
  resume: $("resume"),
  connect: $("connect"),
  sendForm: $("send-form"),
  messageField: $("message-field"),
  messageLabel: document.querySelector('label[for="message"]'),
  message: $("message"),
  fileField: $("file-field"),
  file: $("file"),
  send: $("send"),
  messageError: $("message-error"),
  closeForm: $("close-form"),
  closeCode: $("close-code"),
  closeReason: $("close-reason"),
  close: $("close"),
  closeError: $("close-error"),
  log: $("log"),
  clearLog: $("clear-log"),
  sentMessages: $("sent-messages"),
  sentBytes: $("sent-bytes"),
  receivedMessages: $("received-messages"),
  receivedBytes: $("received-bytes"),
};

const wsOrigin = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`;
el.url.value = `${wsOrigin}/ws`;

/** @type {WasmSocket | null} */
let client = null;
/** Sent messages not yet echoed: {text} or {bytes}, and when they left. */
let pending = [];
let lastClose = null;
let reconnect = { attempt: 0, deadline: 0, timer: null };
const counts = { sentMessages: 0, sentBytes: 0, receivedMessages: 0, receivedBytes: 0 };
const encoder = new TextEncoder();

// ---- formatting -------------------------------------------------------------

const pad = (n, width = 2) => String(n).padStart(width, "0");
function clock(date = new Date()) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const formatBytes = (n) => `${n.toLocaleString("en")} B`;
const shortHash = (hash) => (hash ? `${hash.slice(0, 12)}…` : "none");
function sizeLabel(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}
function hex(bytes, limit = BINARY_PREVIEW) {
  const shown = Array.from(bytes.subarray(0, limit), (b) => pad(b.toString(16)));
  return shown.join(" ") + (bytes.length > limit ? " …" : "");
}
function textPreview(text) {
  return text.length > TEXT_PREVIEW ? `${text.slice(0, TEXT_PREVIEW)}…` : text;
}
function closeDescription(code, reason) {
  return `code ${code}${reason ? `, reason "${reason}"` : ", no reason"}`;
}

/** Parses "de ad be ef", "deadbeef", "0xde,0xad" and the like. */
function parseHex(input) {
  const digits = input.replace(/0x/gi, "").replace(/[\s,:_-]/g, "");
  if (!/^[0-9a-f]*$/i.test(digits)) {
    throw new Error("A binary message is written in hex digits, e.g. de ad be ef.");
  }
  if (digits.length % 2 !== 0) throw new Error("Odd number of hex digits: each byte takes two.");
  const bytes = new Uint8Array(digits.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(digits.substr(i * 2, 2), 16);
  return bytes;
}

// ---- the log ----------------------------------------------------------------

/**
 * Adds an entry to the Communication Log.
 * @param {"open"|"send"|"receive"|"close"|"error"|"reconnect"|"plugin"|"info"} kind
 * @param {string} data
 * @param {string} [meta]
 */
function log(kind, data, meta = "") {
  const box = el.log;
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  const item = document.createElement("li");
  item.dataset.kind = kind;
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = clock(now);
  const label = document.createElement("span");
  label.className = "kind";
  label.textContent = kind;
  const body = document.createElement("span");
  body.className = "data";
  body.textContent = data;
  item.append(time, label, body);
  if (meta) {
    const extra = document.createElement("span");
    extra.className = "meta";
    extra.textContent = meta;
    item.append(extra);
  }
  box.append(item);
  while (box.childElementCount > LOG_LIMIT) box.firstElementChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function renderCounts() {
  el.sentMessages.textContent = counts.sentMessages.toLocaleString("en");
  el.sentBytes.textContent = formatBytes(counts.sentBytes);
  el.receivedMessages.textContent = counts.receivedMessages.toLocaleString("en");
  el.receivedBytes.textContent = formatBytes(counts.receivedBytes);
}

// ---- status and controls ----------------------------------------------------

function setStatus(state, text, spoken) {
  el.status.dataset.state = state;
  if (spoken === undefined) {
    el.status.textContent = text;
    return;
  }
  // A countdown changes ten times a second: show it, but let screen readers
  // announce only the steadier `spoken` text.
  const shown = document.createElement("span");
  shown.setAttribute("aria-hidden", "true");
  shown.textContent = text;
  const said = document.createElement("span");
  said.className = "visually-hidden";
  said.textContent = spoken;
  el.status.replaceChildren(shown, said);
}

function renderStatus() {
  const state = client?.state ?? "closed";
  if (state !== "reconnecting") stopCountdown();
  switch (state) {
    case "connecting":
      setStatus(state, reconnect.attempt > 0 ? `Connecting... (attempt ${reconnect.attempt})` : "Connecting...");
      break;
    case "open":
      setStatus(state, "Connected");
      break;
    case "closing":
      setStatus(state, "Closing...");
      break;
    case "reconnecting": {
      const left = Math.max(0, reconnect.deadline - performance.now()) / 1000;
      setStatus(
        state,
        `Reconnecting in ${left.toFixed(1)} s (attempt ${reconnect.attempt})`,
        `Connection lost. Reconnecting, attempt ${reconnect.attempt}.`,
      );
      break;
    }
    default:
      setStatus(
        "closed",
        lastClose ? `Closed (${closeDescription(lastClose.code, lastClose.reason)})` : "Ready to connect...",
      );
  }
}

function stopCountdown() {
  if (reconnect.timer !== null) {
    clearInterval(reconnect.timer);
    reconnect.timer = null;
  }
}

/** The transport in use, next to the status; hidden while closed. */
function renderTransport() {
  const state = client?.state ?? "closed";
  const transport = state === "closed" ? null : client.transport;
  el.transport.hidden = !transport;
  el.transport.dataset.transport = transport ?? "";
  el.transport.textContent = transport ? `via ${TRANSPORT_NAMES[transport]}` : "";
}

function renderControls() {
  const state = client?.state ?? "closed";
  const idle = state === "closed";
  el.connect.disabled = !idle;
  el.url.disabled = el.protocols.disabled = el.plugin.disabled = el.transportChoice.disabled = !idle;
  const open = state === "open";
  el.message.disabled = el.file.disabled = el.send.disabled = !open;
  el.close.disabled = idle || state === "closing";
}

function render() {
  renderStatus();
  renderTransport();
  renderControls();
}

// ---- connecting ---------------------------------------------------------------

function connect() {
  if (client && client.state !== "closed") return;
  const url = el.url.value.trim();
  const protocols = el.protocols.value
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
  let next;
  try {
    if (!/^wss?:\/\//i.test(url)) throw new SyntaxError(`Not a WebSocket URL: "${url}" (use ws:// or wss://)`);
    next = new WasmSocket(url, {
      protocols,
      reconnect: el.reconnect.checked ? RECONNECT : false,
      resume: el.resume.checked,
      transports: TRANSPORT_CHOICES[el.transportChoice.value],
    });
    watch(next);
    client = next;
    pending = [];
    reconnect.attempt = 0;
    next.connect();
  } catch (err) {
    client = null;
    log("error", `Cannot connect: ${err.message}`);
  }
  render();
}

/** Wires a client's events to the page. */
function watch(socket) {
  const current = () => socket === client;
  socket.addEventListener("statechange", () => current() && render());
  socket.addEventListener("open", (e) => {
    if (!current()) return;
    const notes = [TRANSPORT_NAMES[e.transport]];
    if (e.protocol) notes.push(`subprotocol ${e.protocol}`);
    if (reconnect.attempt > 0) notes.push(`reconnected on attempt ${reconnect.attempt}`);
    if (e.resumed) notes.push("session resumed: nothing lost");
    reconnect.attempt = 0;
    log("open", socket.url, notes.join(" · "));
    render();
  });
  socket.addEventListener("fallback", (e) => {
    if (!current()) return;
    const why = e.cause === "timeout" ? `did not open within ${socket.fallbackAfter / 1000} s` : "failed";
    log("info", `${TRANSPORT_NAMES[e.from]} ${why}; trying ${TRANSPORT_NAMES[e.transport]}`);
    render();
  });
  socket.addEventListener("resumefailed", (e) => {
    if (current()) log("info", `The session could not be resumed (${e.reason}); a new one begins`);
  });
  socket.addEventListener("message", (e) => current() && received(e.data));
  socket.addEventListener("error", () => {
    if (current()) log("error", `${TRANSPORT_NAMES[socket.transport]} error (the browser console may say more)`);
  });
  socket.addEventListener("close", (e) => {
    if (!current()) return;
    lastClose = { code: e.code, reason: e.reason };
    pending = [];
    log(
      "close",
      closeDescription(e.code, e.reason),
      [e.wasClean ? "clean" : "not clean", e.willReconnect ? "will reconnect" : ""].filter(Boolean).join(" · "),
    );
    render();
  });
  socket.addEventListener("reconnecting", (e) => {
    if (!current()) return;
    reconnect.attempt = e.attempt;
    reconnect.deadline = performance.now() + e.delay;
    log("reconnect", `attempt ${e.attempt} in ${(e.delay / 1000).toFixed(1)} s`);
    stopCountdown();
    reconnect.timer = setInterval(renderStatus, 100);
    render();
  });
}

el.connectForm.addEventListener("submit", (e) => {
  e.preventDefault();
  connect();
});

el.reconnect.addEventListener("change", () => {
  // Applies to the live connection too: unticking stops a pending reconnect
  // from being scheduled after the next close.
  if (client) client.reconnect = el.reconnect.checked ? RECONNECT : null;
});

// ---- sending and receiving --------------------------------------------------

function messageKind() {
  return el.sendForm.querySelector('input[name="kind"]:checked').value;
}

function renderKind() {
  const kind = messageKind();
  el.messageField.hidden = kind === "file";
  el.fileField.hidden = kind !== "file";
  el.messageLabel.textContent = kind === "hex" ? "Bytes to send (hex)" : "Message to send";
  el.message.placeholder = kind === "hex" ? "e.g. de ad be ef" : "";
  el.messageError.textContent = "";
}

el.sendForm.addEventListener("change", (e) => {
  if (e.target.name === "kind") renderKind();
});

function remember(entry) {
  pending.push({ ...entry, at: performance.now() });
  if (pending.length > PENDING_LIMIT) pending.shift();
}

function sent(size) {
  counts.sentMessages += 1;
  counts.sentBytes += size;
  renderCounts();
}

el.sendForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  el.messageError.textContent = "";
  if (!client || client.state !== "open") return;
  const socket = client;
  try {
    const kind = messageKind();
    if (kind === "text") {
      const text = el.message.value;
      const size = encoder.encode(text).length;
      remember({ text });
      socket.send(text);
      sent(size);
      log("send", textPreview(text), `text · ${sizeLabel(size)}`);
    } else {
      let bytes;
      let name = "";
      if (kind === "hex") {
        bytes = parseHex(el.message.value);
      } else {
        const file = el.file.files[0];
        if (!file) throw new Error("Choose a file to send.");
        name = `${file.name}: `;
        bytes = new Uint8Array(await file.arrayBuffer());
        if (socket !== client || socket.state !== "open") throw new Error("The connection closed while reading the file.");
      }
      remember({ bytes });
      socket.send(bytes);
      sent(bytes.length);
      log("send", name + hex(bytes), `binary · ${sizeLabel(bytes.length)}`);
    }
  } catch (err) {
    el.messageError.textContent = err.message;
  }
});

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The round-trip time if `message` echoes a pending sent message, else null. */
function matchEcho(message) {
  const now = performance.now();
  const i = pending.findIndex((p) =>
    message.text !== undefined ? p.text === message.text : p.bytes !== undefined && sameBytes(p.bytes, message.bytes),
  );
  if (i < 0) return null;
  const rtt = now - pending[i].at;
  pending.splice(0, i + 1); // an echo server answers in order
  return rtt;
}

const rttLabel = (rtt) => (rtt === null ? "" : ` · rtt ${rtt < 10 ? rtt.toFixed(2) : rtt.toFixed(1)} ms`);

async function received(data) {
  if (typeof data === "string") {
    const size = encoder.encode(data).length;
    const rtt = matchEcho({ text: data });
    counts.receivedMessages += 1;
    counts.receivedBytes += size;
    renderCounts();
    log("receive", textPreview(data), `text · ${sizeLabel(size)}${rttLabel(rtt)}`);
    return;
  }
  const bytes = new Uint8Array(data instanceof Blob ? await data.arrayBuffer() : data);
  const rtt = matchEcho({ bytes });
  counts.receivedMessages += 1;
  counts.receivedBytes += bytes.length;
  renderCounts();
  log("receive", hex(bytes), `binary · ${sizeLabel(bytes.length)}${rttLabel(rtt)}`);
}

// ---- closing ----------------------------------------------------------------

el.closeForm.addEventListener("submit", (e) => {
  e.preventDefault();
  el.closeError.textContent = "";
  if (!client) return;
  const wasReconnecting = client.state === "reconnecting";
  const code = el.closeCode.value.trim() === "" ? undefined : Number(el.closeCode.value);
  try {
    client.close(code, el.closeReason.value);
  } catch (err) {
    el.closeError.textContent = err.message;
    return;
  }
  if (wasReconnecting) log("info", "Stopped reconnecting");
  render();
});

el.clearLog.addEventListener("click", () => el.log.replaceChildren());

// ---- plugins ----------------------------------------------------------------

/** name -> the last `/api/plugins` entry seen, plus when it was last reloaded. */
const plugins = new Map();
let pluginsReachable = null;
let pluginsLoaded = false;

function optionText(p) {
  const parts = [p.name, p.state === "error" ? "error" : "ready"];
  if (p.hash) parts.splice(1, 0, p.hash.slice(0, 12));
  if (p.default) parts.push("default");
  if (p.reloadedAt) parts.push(`reloaded ${clock(p.reloadedAt).slice(0, 8)}`);
  return parts.join(" · ");
}

function renderPluginInfo() {
  const p = plugins.get(el.plugin.value);
  el.pluginInfo.classList.remove("bad", "fresh");
  if (pluginsReachable === false) {
    el.pluginInfo.textContent = "The plugin list is unavailable (retrying every second).";
    el.pluginInfo.classList.add("bad");
    return;
  }
  if (!p) {
    el.pluginInfo.textContent = plugins.size
      ? `${plural(plugins.size, "plugin")} available; pick one to set the URL.`
      : "No plugins loaded.";
    return;
  }
  const facts = [`route ${p.route}`];
  if (p.hash) facts.push(`version ${shortHash(p.hash)}`);
  if (p.loaded_at) facts.push(`loaded ${clock(new Date(p.loaded_at)).slice(0, 8)}`);
  if (p.size != null) facts.push(sizeLabel(p.size));
  facts.push(plural(p.connections ?? 0, "connection"));
  let text = facts.join(" · ");
  if (p.state === "error") {
    text = `Load error: ${p.error ?? "unknown"}${p.hash ? ` (version ${shortHash(p.hash)} keeps serving)` : ""}. ${text}`;
    el.pluginInfo.classList.add("bad");
  } else if (p.reloadedAt && Date.now() - p.reloadedAt.getTime() < 10000) {
    text = `Reloaded at ${clock(p.reloadedAt).slice(0, 8)}. ${text}`;
    el.pluginInfo.classList.add("fresh");
  }
  el.pluginInfo.textContent = text;
}

/** Selects the plugin whose route the URL field names, or "Custom URL". */
function syncPickerToUrl() {
  const url = el.url.value.trim();
  const match = [...plugins.values()].find((p) => `${wsOrigin}${p.route}` === url);
  el.plugin.value = match ? match.name : "";
  renderPluginInfo();
}

function applyPlugins(list, first) {
  const seen = new Set();
  for (const p of list) {
    seen.add(p.name);
    const old = plugins.get(p.name);
    const entry = { ...p, reloadedAt: old?.reloadedAt ?? null };
    if (!old) {
      if (!first) log("plugin", `plugin ${p.name} added (version ${shortHash(p.hash)})`, p.route);
    } else if (p.hash && (p.hash !== old.hash || p.loaded_at !== old.loaded_at)) {
      entry.reloadedAt = new Date();
      const same = p.hash === old.hash ? "same content as before" : `was ${shortHash(old.hash)}`;
      log("plugin", `plugin ${p.name} reloaded (version ${shortHash(p.hash)})`, same);
    }
    if (p.error && (!old || p.error_at !== old.error_at || p.error_hash !== old.error_hash)) {
      const serving = p.hash ? `version ${shortHash(p.hash)} keeps serving` : "nothing serves it";
      log("error", `plugin ${p.name} failed to load: ${p.error}`, serving);
    }
    plugins.set(p.name, entry);
  }
  for (const name of [...plugins.keys()]) {
    if (!seen.has(name)) {
      plugins.delete(name);
      log("plugin", `plugin ${name} removed`);
    }
  }
  renderPicker(first);
}

function renderPicker(first) {
  const selected = el.plugin.value;
  const options = new Map([...el.plugin.options].filter((o) => o.value).map((o) => [o.value, o]));
  let previous = el.plugin.options[0]; // "Custom URL"
  for (const p of plugins.values()) {
    let option = options.get(p.name);
    if (!option) {
      option = document.createElement("option");
      option.value = p.name;
    }
    options.delete(p.name);
    const text = optionText(p);
    if (option.textContent !== text) option.textContent = text;
    option.dataset.state = p.state;
    if (previous.nextElementSibling !== option) previous.after(option);
    previous = option;
  }
  for (const option of options.values()) option.remove();
  if (first) syncPickerToUrl();
  else {
    el.plugin.value = plugins.has(selected) ? selected : "";
    renderPluginInfo();
  }
}

async function pollPlugins() {
  try {
    const response = await fetch("/api/plugins", { cache: "no-store", signal: AbortSignal.timeout(3000) });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const list = await response.json();
    const first = !pluginsLoaded;
    if (pluginsReachable === false) log("info", "The plugin list is reachable again");
    pluginsReachable = pluginsLoaded = true;
    applyPlugins(Array.isArray(list) ? list : [], first);
  } catch (err) {
    if (pluginsReachable !== false) {
      pluginsReachable = false;
      log("info", `The plugin list is unavailable (${err.message}); retrying every second`);
      renderPluginInfo();
    }
  } finally {
    setTimeout(pollPlugins, PLUGIN_POLL_MS);
  }
}

el.plugin.addEventListener("change", () => {
  const p = plugins.get(el.plugin.value);
  if (p) el.url.value = `${wsOrigin}${p.route}`;
  renderPluginInfo();
});
el.url.addEventListener("input", syncPickerToUrl);

// ---- start ------------------------------------------------------------------

renderKind();
renderCounts();
render();
pollPlugins();
