// Shared by the browser tests: start the real wasmsocket host, launch
// Debian's Chromium, and keep artifacts in <repo>/out/.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = fileURLToPath(new URL(".", import.meta.url)); // tests/browser/lib/
export const REPO = resolve(here, "../../..");
export const STATIC_DIR = join(REPO, "static");
export const OUT_DIR = join(REPO, "out");

const TARGET = "/root/.cache/wasmsocket/target";
export const BIN = process.env.WASMSOCKET_BIN || `${TARGET}/release/wasmsocket`;
export const ECHO_WASM = process.env.WASMSOCKET_ECHO_WASM || `${TARGET}/guests/wasm32-wasip2/release/echo.wasm`;
export const TESTBED_WASM =
  process.env.WASMSOCKET_TESTBED_WASM || `${TARGET}/guests/wasm32-wasip2/release/testbed.wasm`;
export const CHROMIUM = process.env.WASMSOCKET_CHROMIUM || "/usr/bin/chromium";

const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/** Every host still running, so none outlives the test process. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export async function sha256(path) {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

/** A temporary plugins directory holding a copy of testbed.wasm. */
export async function pluginsDir() {
  const dir = await mkdtemp(join(tmpdir(), "wasmsocket-plugins-"));
  await copyFile(TESTBED_WASM, join(dir, "testbed.wasm"));
  return dir;
}

/**
 * A temporary static dir with a copy of static/wasmsocket.js and a blank
 * page. (Chromium's Local Network Access checks block a page that is not
 * itself served from loopback, such as one made by page.route, from opening
 * a WebSocket to 127.0.0.1, so the blank page must come from the host.)
 */
export async function clientStaticDir() {
  const dir = await mkdtemp(join(tmpdir(), "wasmsocket-static-"));
  await copyFile(join(STATIC_DIR, "wasmsocket.js"), join(dir, "wasmsocket.js"));
  await writeFile(join(dir, "blank.html"), '<!doctype html><meta charset="utf-8"><title>blank</title>\n');
  return dir;
}

/** A loopback port nothing listens on (free a moment ago). */
export async function freePort() {
  const server = createServer();
  await new Promise((ok, fail) => server.listen(0, "127.0.0.1", ok).on("error", fail));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

/**
 * Starts the host binary and waits for its "listening" line.
 * @param {{plugins?: string, port?: number, staticDir?: string, args?: string[]}} options
 * @returns {Promise<Host>}
 */
export async function startHost({ plugins, port = 0, staticDir = STATIC_DIR, args = [] } = {}) {
  // The same port may still be held for a moment after a kill: retry.
  for (let tries = 0; ; tries++) {
    try {
      return await startOnce({ plugins, port, staticDir, args });
    } catch (err) {
      if (port === 0 || tries >= 20 || !/address|in use|bind/i.test(err.message)) throw err;
      await new Promise((ok) => setTimeout(ok, 250));
    }
  }
}

/** A running host: its address, output, and how to stop it. */
class Host {
  constructor(child, port) {
    this.child = child;
    this.port = port;
    this.http = `http://127.0.0.1:${port}`;
    this.ws = `ws://127.0.0.1:${port}`;
    this.stderr = "";
    this.exited = new Promise((ok) => child.once("exit", (code, signal) => ok({ code, signal })));
  }

  /**
   * Stops the host (SIGTERM, SIGKILL after `killAfterMs`, 5 s by default);
   * safe to call twice. Resolves to how it exited: `{code, signal}`.
   */
  async stop(signal = "SIGTERM", killAfterMs = 5000) {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), killAfterMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills the host at once, as a crash would. */
  kill() {
    return this.stop("SIGKILL");
  }

  async plugins() {
    const response = await fetch(`${this.http}/api/plugins`);
    if (!response.ok) throw new Error(`/api/plugins: HTTP ${response.status}`);
    return response.json();
  }
}

async function startOnce({ plugins, port, staticDir, args }) {
  const argv = ["--listen", `127.0.0.1:${port}`, "--static-dir", staticDir, ...args];
  if (plugins) argv.push("--plugins", plugins);
  const child = spawn(BIN, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, WASMSOCKET_LOG: process.env.WASMSOCKET_LOG || "warn" },
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-20000);
    if (host) host.stderr = stderr;
  });
  let host = null;
  const listening = await new Promise((ok, fail) => {
    let stdout = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`host did not start within 20 s\n${stderr}`));
    }, 20000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      const match = /listening on https?:\/\/([^\s]+):(\d+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        ok(Number(match[2]));
      }
    });
    child.once("error", (err) => {
      clearTimeout(timer);
      fail(err);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      fail(new Error(`host exited (${code ?? signal}) before listening\n${stderr}`));
    });
  });
  host = new Host(child, listening);
  host.stderr = stderr;
  child.stdout.resume();
  return host;
}

/** Launches Chromium with a fresh temporary profile (and `args`, e.g. a proxy's). */
export function launchBrowser(args = []) {
  return chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, ...args] });
}

export async function outDir() {
  await mkdir(OUT_DIR, { recursive: true });
  return OUT_DIR;
}

export async function removeDir(dir) {
  if (dir) await rm(dir, { recursive: true, force: true });
}

/**
 * A new page that records uncaught errors; `errors` must stay empty.
 * @param {import("playwright-core").Browser} browser
 */
export async function newPage(browser, options = {}) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (err) => page.errors.push(err));
  return page;
}

/** Polls `fn` until it returns a truthy value, or fails after `timeout` ms. */
export async function eventually(fn, { timeout = 10000, interval = 100, message = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${message} (last: ${last})`);
    await new Promise((ok) => setTimeout(ok, interval));
  }
}

/** A host with testbed.wasm in a temp plugins dir (and `options` of startHost); both gone after the test. */
export async function hostFor(t, options = {}) {
  const dir = await pluginsDir();
  t.after(() => removeDir(dir));
  const host = await startHost({ plugins: dir, ...options });
  t.after(() => host.stop());
  return { host, dir };
}

/** Opens `url` in a new page of `browser`; checks at the end of the test that the page threw nothing. */
export async function openPage(t, browser, url, options = {}) {
  const page = await newPage(browser, options);
  t.after(() => page.context().close());
  t.after(() => assert.deepEqual(page.errors.map(String), [], "uncaught errors in the page"));
  await page.goto(url);
  return page;
}

/**
 * Runs `body` in the page with `WasmSocket`, `record(socket)` (logs its
 * events of `types`, with the fields of `keys`, and with `at`, ms since the
 * page started, when `at` is set), `next(socket, type)` (waits for one,
 * within `timeout` ms) and `sleep(ms)`.
 */
export function runInPage(page, body, arg, { types, keys, timeout = 10000, at = false }) {
  return page.evaluate(
    async ({ body, arg, types, keys, timeout, at }) => {
      const { WasmSocket } = await import("/wasmsocket.js");
      const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
      const next = (socket, type, within = timeout) =>
        new Promise((ok, fail) => {
          const timer = setTimeout(() => fail(new Error(`no ${type} event within ${within} ms`)), within);
          socket.addEventListener(type, (e) => (clearTimeout(timer), ok(e)), { once: true });
        });
      const record = (socket) => {
        const events = [];
        for (const type of types) {
          socket.addEventListener(type, (e) => {
            const fields = at ? { type, at: Math.round(performance.now()) } : { type };
            for (const key of keys) {
              if (key in e) fields[key] = e[key];
            }
            events.push(fields);
          });
        }
        return events;
      };
      // eslint-disable-next-line no-new-func
      const fn = new Function("WasmSocket", "record", "next", "sleep", "arg", `return (async () => {${body}})();`);
      return fn(WasmSocket, record, next, sleep, arg);
    },
    { body, arg, types, keys, timeout, at },
  );
}
