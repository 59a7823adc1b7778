// The live plugin console of the test page: for the selected plugin, every
// `log` call, stdout and stderr line, fault, reload and load error, timer
// (fired or refused) and outbound HTTP request (its response, or denied,
// busy, failed) as the host streams them (GET /api/plugins/NAME/events),
// this page's own connections marked, and a chart of the host's figures
// each second. Every kind shows as a line; console.css colours them by
// kind and level.
import { LineChart } from "./charts.js";

const LIMIT = 500; // console lines kept
const picker = document.getElementById("plugin");

// The page names itself in a cookie, which the browser sends with its
// WebSocket handshake; the host reports it when the connection opens.
const pageId = sessionStorage.getItem("wasmsocket-page") ?? crypto.randomUUID();
sessionStorage.setItem("wasmsocket-page", pageId);
document.cookie = `wasmsocket-page=${pageId}; path=/; SameSite=Strict`;

const panel = document.createElement("section");
panel.id = "console-panel";
panel.className = "panel";
panel.setAttribute("aria-labelledby", "console-heading");
panel.innerHTML = `
  <div class="row console-head">
    <h2 id="console-heading">Live console <span id="console-plugin"></span></h2>
    <span id="console-state" class="hint"></span>
    <button type="button" id="console-clear">Clear console</button>
  </div>
  <div class="console-body">
    <ol id="console-log" role="log" aria-labelledby="console-heading" tabindex="0"></ol>
    <div id="console-charts"></div>
  </div>`;
(document.querySelector("#send-form") ?? document.querySelector("main")).after(panel);

const el = {
  plugin: panel.querySelector("#console-plugin"),
  state: panel.querySelector("#console-state"),
  log: panel.querySelector("#console-log"),
  charts: panel.querySelector("#console-charts"),
};
const traffic = new LineChart(el.charts, {
  title: "Traffic",
  unit: "",
  series: [
    { key: "messages_per_s", label: "msg/s", color: "#1a73e8" },
    { key: "connections", label: "open", color: "#188038" },
  ],
});
const latency = new LineChart(el.charts, {
  title: "Call latency",
  unit: " ms",
  series: [
    { key: "p50_ms", label: "p50", color: "#e37400" },
    { key: "p99_ms", label: "p99", color: "#b3261e" },
  ],
});
panel.querySelector("#console-clear").addEventListener("click", () => el.log.replaceChildren());

/** Connection ids this page opened, learnt from `open` events. */
const own = new Set();
let source = null;
let watching = "";

const pad = (n, width = 2) => String(n).padStart(width, "0");
function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function line(kind, text, { at = Date.now(), conn = "", level = "" } = {}) {
  const li = document.createElement("li");
  li.dataset.kind = kind;
  if (level) li.dataset.level = level;
  if (conn && own.has(conn)) li.classList.add("own");
  const time = document.createElement("time");
  time.textContent = clock(at);
  const tag = document.createElement("span");
  tag.className = "kind";
  tag.textContent = level && kind !== "log" ? `${kind} ${level}` : level || kind;
  const who = document.createElement("span");
  who.className = "conn";
  who.textContent = conn ? (own.has(conn) ? `${conn} (this page)` : conn) : "";
  const data = document.createElement("span");
  data.className = "data";
  data.textContent = text;
  li.append(time, tag, who, data);
  const atBottom = el.log.scrollTop + el.log.clientHeight >= el.log.scrollHeight - 4;
  el.log.append(li);
  while (el.log.childElementCount > LIMIT) el.log.firstElementChild.remove();
  if (atBottom) el.log.scrollTop = el.log.scrollHeight;
}

function watch(name) {
  if (name === watching) return;
  watching = name;
  source?.close();
  source = null;
  traffic.clear();
  latency.clear();
  el.plugin.textContent = name ? `· ${name}` : "";
  if (!name) {
    el.state.textContent = "Pick a plugin to watch it.";
    return;
  }
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  source = new EventSource(`/api/plugins/${encodeURIComponent(name)}/events${query}`);
  source.addEventListener("open", () => {
    el.state.textContent = "live";
    line("watch", `watching ${name}`);
  });
  const opened = source;
  opened.addEventListener("error", () => {
    if (opened.readyState === EventSource.CLOSED) {
      // Refused (429: the host's watchers are capped) or gone: EventSource
      // gives up, so the half-second check below opens it again.
      el.state.textContent = "not watching (refused by the host); retrying";
      if (source === opened) watching = null;
      return;
    }
    el.state.textContent = "disconnected; retrying";
  });
  source.addEventListener("console", (e) => {
    const event = JSON.parse(e.data);
    if (event.kind === "open" && event.page === pageId) own.add(event.conn);
    line(event.kind, event.message, event);
  });
  source.addEventListener("stats", (e) => {
    const stats = JSON.parse(e.data);
    traffic.push(stats);
    latency.push(stats);
  });
  source.addEventListener("closed", (e) => line("watch", `stream closed by the host: ${e.data}`));
}

// app.js sets the picker, also without a change event (it follows the URL
// field), so look at it each half second as well.
picker.addEventListener("change", () => watch(picker.value));
setInterval(() => watch(picker.value), 500);
watch(picker.value);
