// static/wasmsocket.js in a real Chromium against the real host.
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";
import {
  STATIC_DIR,
  clientStaticDir,
  eventually,
  freePort,
  launchBrowser,
  openPage,
  pluginsDir,
  removeDir,
  runInPage,
  startHost,
} from "../lib/helpers.js";

let browser;
let host;
let dir;
let staticDir;
before(async () => {
  dir = await pluginsDir();
  staticDir = await clientStaticDir();
  host = await startHost({ plugins: dir, staticDir });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await host?.stop();
  await removeDir(dir);
  await removeDir(staticDir);
});

/** A blank page on the host's origin (so the same-origin check passes). */
async function blankPage(t) {
  return openPage(t, browser, `${host.http}/blank.html`);
}

/** `runInPage` with the events and fields of reconnection, timed. */
const run = (page, body, arg) =>
  runInPage(page, body, arg, {
    types: ["statechange", "open", "close", "reconnecting", "error"],
    keys: ["state", "code", "reason", "wasClean", "willReconnect", "attempt", "delay", "protocol"],
    at: true,
  });

const types = (events) => events.filter((e) => e.type !== "statechange").map((e) => e.type);
const states = (events) => events.filter((e) => e.type === "statechange").map((e) => e.state);

test("backoffDelay grows by factor, caps at maxDelay and jitters downwards", async () => {
  const { backoffDelay } = await import(pathToFileURL(join(STATIC_DIR, "wasmsocket.js")).href);
  const o = { initialDelay: 100, maxDelay: 1000, factor: 2, jitter: 0 };
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, o)), [100, 200, 400, 800, 1000, 1000]);
  const jittered = { ...o, jitter: 0.5 };
  assert.equal(backoffDelay(3, jittered, () => 0), 400);
  assert.equal(backoffDelay(3, jittered, () => 0.999999), 200);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(4, jittered);
    assert.ok(d >= 400 && d <= 800, `jittered delay ${d} within [400, 800]`);
  }
});

test("a user close never reconnects", { timeout: 30000 }, async (t) => {
  const page = await blankPage(t);
  const result = await run(
    page,
    `
    const ws = new WasmSocket(arg.url, { reconnect: { initialDelay: 50, maxDelay: 100 } });
    const events = record(ws);
    if (ws.state !== "closed") throw new Error("initial state " + ws.state);
    ws.connect();
    await next(ws, "open");
    ws.connect(); // already open: nothing happens
    ws.close(4002, "bye");
    const stateAfterClose = ws.state;
    await next(ws, "close");
    await sleep(1000); // several backoff periods
    // Closing while the handshake is still under way does not reconnect either.
    const early = new WasmSocket(arg.url, { reconnect: { initialDelay: 50 } });
    const earlyEvents = record(early);
    early.connect();
    early.close();
    await sleep(1000);
    return { events, state: ws.state, stateAfterClose, earlyEvents, earlyState: early.state };
  `,
    { url: `${host.ws}/ws` },
  );
  assert.equal(result.stateAfterClose, "closing");
  assert.deepEqual(types(result.events), ["open", "close"]);
  assert.deepEqual(states(result.events), ["connecting", "open", "closing", "closed"]);
  const close = result.events.find((e) => e.type === "close");
  assert.deepEqual(
    { code: close.code, reason: close.reason, wasClean: close.wasClean, willReconnect: close.willReconnect },
    { code: 4002, reason: "bye", wasClean: true, willReconnect: false },
  );
  assert.equal(result.state, "closed");
  assert.ok(!types(result.earlyEvents).includes("reconnecting"), JSON.stringify(result.earlyEvents));
  assert.ok(!types(result.earlyEvents).includes("open"), JSON.stringify(result.earlyEvents));
  assert.equal(result.earlyState, "closed");
  await eventually(async () => (await host.plugins()).find((p) => p.name === "echo").connections === 0, {
    message: "the server to see no connection left",
  });
});

test("reconnects after a server close and resets the backoff after each open", { timeout: 30000 }, async (t) => {
  const page = await blankPage(t);
  const result = await run(
    page,
    `
    const ws = new WasmSocket(arg.url, {
      protocols: ["chat.v1"],
      reconnect: { initialDelay: 100, factor: 3, jitter: 0 },
    });
    const events = record(ws);
    const ids = [];
    ws.connect();
    for (let round = 0; round < 3; round++) {
      await next(ws, "open");
      ws.send("whoami");
      ids.push((await next(ws, "message")).data);
      ws.send("close 4000 some reason");
      await next(ws, "reconnecting");
    }
    await next(ws, "open");
    const protocol = ws.protocol;
    ws.close(1000, "done");
    await next(ws, "close");
    await sleep(500);
    return { events, ids, protocol, state: ws.state };
  `,
    { url: `${host.ws}/ws/testbed` },
  );
  const closes = result.events.filter((e) => e.type === "close");
  assert.equal(closes.length, 4);
  for (const close of closes.slice(0, 3)) {
    assert.deepEqual(
      [close.code, close.reason, close.wasClean, close.willReconnect],
      [4000, "some reason", true, true],
    );
  }
  assert.deepEqual([closes[3].code, closes[3].willReconnect], [1000, false]);
  // Every reconnect is attempt 1 with the initial delay: each open reset the backoff.
  const reconnecting = result.events.filter((e) => e.type === "reconnecting");
  assert.deepEqual(
    reconnecting.map((e) => [e.attempt, e.delay]),
    [
      [1, 100],
      [1, 100],
      [1, 100],
    ],
  );
  assert.equal(result.events.filter((e) => e.type === "open").length, 4);
  assert.equal(new Set(result.ids).size, 3, `a new connection each time: ${result.ids}`);
  assert.equal(result.protocol, "chat.v1");
  assert.equal(result.state, "closed");
});

test("backoff grows while the server is down and stops after maxAttempts", { timeout: 30000 }, async (t) => {
  const page = await blankPage(t);
  const dead = await freePort();
  const result = await run(
    page,
    `
    const ws = new WasmSocket(arg.url);
    ws.reconnect = { initialDelay: 50, jitter: 0, maxAttempts: 3 }; // set later, factor left to its default (2)
    const events = record(ws);
    ws.connect();
    for (;;) {
      const close = await next(ws, "close");
      if (!close.willReconnect) break;
    }
    await sleep(500);
    return { events, state: ws.state, attempt: ws.attempt };
  `,
    { url: `ws://127.0.0.1:${dead}/ws` },
  );
  const reconnecting = result.events.filter((e) => e.type === "reconnecting");
  assert.deepEqual(
    reconnecting.map((e) => [e.attempt, e.delay]),
    [
      [1, 50],
      [2, 100],
      [3, 200],
    ],
  );
  const closes = result.events.filter((e) => e.type === "close");
  assert.equal(closes.length, 4, "the first try and three reconnects");
  assert.ok(closes.every((c) => c.code === 1006 && !c.wasClean));
  assert.deepEqual(
    closes.map((c) => c.willReconnect),
    [true, true, true, false],
  );
  // Each attempt waited at least its delay, counted from the state change
  // that comes right after the timer is set (the `reconnecting` event comes
  // after the close event's listeners, which a busy page may take a while
  // to run).
  for (const r of reconnecting) {
    const entered = result.events.findLast((e) => e.type === "statechange" && e.state === "reconnecting" && e.at <= r.at);
    const following = result.events.find((e) => e.type === "statechange" && e.state === "connecting" && e.at > r.at);
    assert.ok(entered && following, `attempt ${r.attempt}: its state changes`);
    assert.ok(following.at - entered.at >= r.delay - 5, `attempt ${r.attempt} waited ${following.at - entered.at} ms`);
  }
  assert.equal(result.state, "closed");
  assert.equal(result.attempt, 0);
});

test("close() during the backoff wait cancels the pending reconnect", { timeout: 30000 }, async (t) => {
  const page = await blankPage(t);
  const dead = await freePort();
  const result = await run(
    page,
    `
    const ws = new WasmSocket(arg.url, { reconnect: { initialDelay: 300, jitter: 0 } });
    const events = record(ws);
    ws.connect();
    await next(ws, "reconnecting");
    const waiting = ws.state;
    ws.close();
    const afterClose = ws.state;
    await sleep(1200);
    // connect() during a wait tries at once.
    const eager = new WasmSocket(arg.url, { reconnect: { initialDelay: 60000 } });
    eager.connect();
    await next(eager, "reconnecting");
    eager.connect();
    const eagerState = eager.state;
    eager.close();
    return { events, waiting, afterClose, state: ws.state, eagerState };
  `,
    { url: `ws://127.0.0.1:${dead}/ws` },
  );
  assert.equal(result.waiting, "reconnecting");
  assert.equal(result.afterClose, "closed");
  assert.equal(result.state, "closed");
  assert.equal(states(result.events).filter((s) => s === "connecting").length, 1, JSON.stringify(result.events));
  assert.equal(result.eagerState, "connecting");
});

test("send() takes strings, ArrayBuffers, typed arrays, DataViews and Blobs", { timeout: 30000 }, async (t) => {
  const page = await blankPage(t);
  const result = await run(
    page,
    `
    const ws = new WasmSocket(arg.url);
    let refused = "";
    try { ws.send("too early"); } catch (e) { refused = e.message; }
    ws.connect();
    await next(ws, "open");
    const received = [];
    ws.addEventListener("message", (e) => received.push(e.data));
    ws.send("héllo");
    ws.send(new Uint8Array([1, 2, 3]).buffer);
    ws.send(new Uint8Array([9, 4, 5, 6, 9]).subarray(1, 4));
    ws.send(new DataView(new Uint8Array([7, 8]).buffer));
    ws.send(new Blob([new Uint8Array([10, 11]), "AB"]));
    while (received.length < 5) await sleep(20);
    ws.close();
    await next(ws, "close");
    return {
      refused,
      received: received.map((d) => (typeof d === "string" ? d : { binary: Array.from(new Uint8Array(d)), isArrayBuffer: d instanceof ArrayBuffer })),
    };
  `,
    { url: `${host.ws}/ws` },
  );
  assert.match(result.refused, /not open/);
  assert.deepEqual(result.received, [
    "héllo",
    { binary: [1, 2, 3], isArrayBuffer: true },
    { binary: [4, 5, 6], isArrayBuffer: true },
    { binary: [7, 8], isArrayBuffer: true },
    { binary: [10, 11, 65, 66], isArrayBuffer: true },
  ]);
});
