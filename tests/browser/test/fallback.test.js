// The HTTP fallback in a real Chromium against the real host: through a real
// proxy that refuses WebSockets (as a strict corporate proxy does), forced
// without one, and resumed after the proxy cuts the event stream.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  clientStaticDir,
  eventually,
  hostFor,
  launchBrowser,
  openPage,
  outDir,
  pluginsDir,
  removeDir,
  runInPage,
  startHost,
} from "../lib/helpers.js";
import { startProxy } from "../lib/proxy.js";

let direct; // Chromium without a proxy
let proxied; // Chromium sending everything, loopback included, through `proxy`
let proxy;
before(async () => {
  proxy = await startProxy();
  direct = await launchBrowser();
  proxied = await launchBrowser(proxy.chromiumArgs);
});
after(async () => {
  await proxied?.close();
  await direct?.close();
  await proxy?.close();
});

/** The test page, once its plugin list has loaded. */
async function testPage(t, browser, host) {
  const page = await openPage(t, browser, `${host.http}/`);
  await page.locator('#plugin option[value="echo"]').waitFor({ state: "attached" });
  return page;
}

const entry = (page, kind, text) => page.locator(`#log li[data-kind="${kind}"]`).filter({ hasText: text });
const status = (page) => page.locator("#status").textContent();
const transportShown = (page) => page.locator("#transport").textContent();

async function waitForStatus(page, pattern, timeout = 15000) {
  await eventually(async () => pattern.test(await status(page)), { timeout, message: `status ${pattern}` });
}

async function say(page, text) {
  await page.getByLabel("Message to send").fill(text);
  await page.getByLabel("Message to send").press("Enter");
}

async function echoCount(host) {
  return (await host.plugins()).find((p) => p.name === "echo").connections;
}

/** Requests the proxy forwarded to the fallback's routes, by kind. */
function fallbackRequests(since = 0) {
  const seen = proxy.requests.slice(since).filter((r) => r.method !== "CONNECT" && /\/ws\b/.test(r.url));
  return {
    opens: seen.filter((r) => r.method === "GET" && !/[?&]session=/.test(r.url)),
    resumes: seen.filter((r) => r.method === "GET" && /[?&]session=/.test(r.url)),
    posts: seen.filter((r) => r.method === "POST"),
  };
}

test("behind a proxy that refuses WebSockets, the page falls back to HTTP: echo, close", { timeout: 60000 }, async (t) => {
  const { host } = await hostFor(t);
  const since = proxy.requests.length;
  const page = await testPage(t, proxied, host);

  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  assert.equal(await transportShown(page), "via HTTP fallback");
  await entry(page, "info", "WebSocket failed; trying HTTP fallback").waitFor();
  assert.match(await entry(page, "open", `${host.ws}/ws`).locator(".meta").textContent(), /^HTTP fallback$/);
  assert.ok(proxy.refused.length > 0, "the browser did try a WebSocket, and the proxy refused it");
  assert.equal(await echoCount(host), 1, "the session counts as a connection");

  await say(page, "hello through the proxy ✓");
  const text = entry(page, "receive", "hello through the proxy ✓");
  await text.waitFor();
  assert.match(await text.locator(".meta").textContent(), /^text · 27 B · rtt /);

  await page.getByLabel("Binary (hex)").check();
  await page.getByLabel("Bytes to send (hex)").fill("de ad be ef 00 ff");
  await page.getByRole("button", { name: "Send", exact: true }).click();
  const binary = entry(page, "receive", "de ad be ef 00 ff");
  await binary.waitFor();
  assert.match(await binary.locator(".meta").textContent(), /^binary · 6 B · rtt /);
  await page.screenshot({ path: join(await outDir(), "test-page-fallback.png") });

  const { opens, posts } = fallbackRequests(since);
  assert.equal(opens.length, 1, "one session opened");
  assert.equal(opens[0].headers.accept, "text/event-stream");
  assert.ok(posts.length >= 2, `messages were posted through the proxy: ${posts.map((p) => p.url)}`);

  await page.getByLabel("Close code").fill("4001");
  await page.getByLabel("Close reason").fill("done testing");
  await page.getByRole("button", { name: "Close Socket" }).click();
  const closed = entry(page, "close", 'code 4001, reason "done testing"');
  await closed.waitFor();
  assert.equal(await closed.locator(".meta").textContent(), "clean");
  await waitForStatus(page, /^Closed \(code 4001, reason "done testing"\)$/);
  assert.ok(await page.locator("#transport").isHidden(), "no transport shown while closed");
  await eventually(async () => (await echoCount(host)) === 0, { message: "the host to end the session" });
});

test("without the proxy, the same page uses WebSocket", { timeout: 60000 }, async (t) => {
  const { host } = await hostFor(t);
  const page = await testPage(t, direct, host);
  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  assert.equal(await transportShown(page), "via WebSocket");
  assert.match(await entry(page, "open", `${host.ws}/ws`).locator(".meta").textContent(), /^WebSocket$/);
  await say(page, "hello directly");
  await entry(page, "receive", "hello directly").waitFor();
  assert.equal(await entry(page, "info", "trying").count(), 0, "no fallback");
  await page.getByRole("button", { name: "Close Socket" }).click();
  await waitForStatus(page, /^Closed \(code 1000/);
});

test("the page can force the HTTP fallback: subprotocol, a reply, a close by the plugin", { timeout: 60000 }, async (t) => {
  const { host } = await hostFor(t);
  const page = await testPage(t, direct, host);
  await page.getByLabel("Transport").selectOption("http");
  await page.getByLabel("Plugin").selectOption("testbed");
  await page.getByLabel("Subprotocols").fill("chat.v1, chat.v2");
  await page.getByRole("button", { name: "Connect" }).click();
  const open = entry(page, "open", `${host.ws}/ws/testbed`);
  await open.waitFor();
  assert.equal(await open.locator(".meta").textContent(), "HTTP fallback · subprotocol chat.v1");
  assert.equal(await transportShown(page), "via HTTP fallback");
  assert.ok(await page.isDisabled("#transport-choice"), "the transport is chosen before connecting");

  await say(page, "whoami");
  await eventually(async () => (await page.locator('#log li[data-kind="receive"]').count()) === 1, { message: "a reply" });
  assert.match(await page.locator('#log li[data-kind="receive"] .data').textContent(), /^\S+$/);

  await say(page, "close 4000 some reason");
  await entry(page, "close", 'code 4000, reason "some reason"').waitFor();
  await waitForStatus(page, /^Closed \(code 4000, reason "some reason"\)$/);
  assert.ok(await page.isEnabled("#transport-choice"));
});

/** `runInPage` with the events and fields of the transports. */
const run = (page, body, arg) =>
  runInPage(page, body, arg, {
    types: ["statechange", "open", "close", "reconnecting", "fallback", "error"],
    keys: ["state", "transport", "from", "cause", "code", "reason", "wasClean", "protocol"],
    timeout: 15000,
  });

/** A host serving a blank page and wasmsocket.js, and that page opened in `browser`. */
async function blankPage(t, browser) {
  const staticDir = await clientStaticDir();
  t.after(() => removeDir(staticDir));
  const { host } = await hostFor(t, { staticDir });
  const page = await openPage(t, browser, `${host.http}/blank.html`);
  return { host, page };
}

test("wasmsocket.js over a forced HTTP fallback: the API of the WebSocket path", { timeout: 60000 }, async (t) => {
  const { host, page } = await blankPage(t, direct);
  const result = await run(
    page,
    `
    const ws = new WasmSocket(arg.url, { transports: ["http"] });
    const events = record(ws);
    ws.connect();
    const transportWhileConnecting = ws.transport;
    await next(ws, "open");
    const received = [];
    ws.addEventListener("message", (e) => received.push(e.data));
    const text = "two\\nlines, a NUL \\u0000, quotes \\"'\\\\ and ✓ 😀";
    ws.send(text);
    ws.send("");
    ws.send(new Uint8Array([0, 1, 2, 255]).buffer);
    ws.send(new Uint8Array([9, 4, 5, 6, 9]).subarray(1, 4));
    ws.send(new DataView(new Uint8Array([7, 8]).buffer));
    ws.send(new Blob([new Uint8Array([10, 11]), "AB"]));
    ws.send(new Uint8Array(0));
    const big = new Uint8Array(100000).map((_, i) => (i * 7) % 256);
    ws.send(big);
    const bufferedWhileSending = ws.bufferedAmount;
    while (received.length < 8) await sleep(20);
    // A post counts until its response, which may come after the echo.
    for (let i = 0; ws.bufferedAmount > 0 && i < 500; i++) await sleep(20);
    const bufferedAfter = ws.bufferedAmount;
    ws.binaryType = "blob";
    ws.send(new Uint8Array([42]));
    while (received.length < 9) await sleep(20);
    const blob = received[8];
    const blobBytes = Array.from(new Uint8Array(await blob.arrayBuffer()));
    ws.close(4002, "bye ✓");
    const close = await next(ws, "close");
    const bigBack = new Uint8Array(received[7]);
    return {
      events, transportWhileConnecting, transport: ws.transport, bufferedWhileSending, bufferedAfter,
      textBack: received[0] === text, emptyBack: received[1],
      small: received.slice(2, 7).map((d) => ({ bytes: Array.from(new Uint8Array(d)), isArrayBuffer: d instanceof ArrayBuffer })),
      bigBack: bigBack.length === big.length && bigBack.every((b, i) => b === big[i]),
      blob: { isBlob: blob instanceof Blob, bytes: blobBytes },
    };
  `,
    { url: `${host.ws}/ws` },
  );
  assert.equal(result.transportWhileConnecting, "http");
  assert.equal(result.transport, "http");
  assert.deepEqual(
    result.events.map((e) => `${e.type}:${e.state ?? ""}:${e.transport ?? ""}`),
    ["statechange:connecting:http", "statechange:open:http", "open::http", "statechange:closing:http", "statechange:closed:http", "close::"],
  );
  const close = result.events.find((e) => e.type === "close");
  assert.deepEqual([close.code, close.reason, close.wasClean], [4002, "bye ✓", true]);
  assert.ok(result.textBack, "text with newlines, NUL, quotes and astral characters survives");
  assert.equal(result.emptyBack, "");
  assert.deepEqual(result.small, [
    { bytes: [0, 1, 2, 255], isArrayBuffer: true },
    { bytes: [4, 5, 6], isArrayBuffer: true },
    { bytes: [7, 8], isArrayBuffer: true },
    { bytes: [10, 11, 65, 66], isArrayBuffer: true },
    { bytes: [], isArrayBuffer: true },
  ]);
  assert.ok(result.bigBack, "100 kB of binary survives");
  assert.ok(result.bufferedWhileSending >= 100000, `bufferedAmount counts what is being posted: ${result.bufferedWhileSending}`);
  assert.equal(result.bufferedAfter, 0, "and drains");
  assert.deepEqual(result.blob, { isBlob: true, bytes: [42] });
  await eventually(async () => (await echoCount(host)) === 0, { message: "the host to end the session" });
});

test("a connection the plugin refuses closes with the HTTP status in the reason", { timeout: 60000 }, async (t) => {
  const { host, page } = await blankPage(t, direct);
  const result = await run(
    page,
    `
    const ws = new WasmSocket(arg.url);
    const events = record(ws);
    ws.connect();
    await next(ws, "close");
    return events.filter((e) => e.type !== "statechange");
  `,
    { url: `${host.ws}/ws/testbed?reject=403` },
  );
  // The WebSocket's refusal is hidden by the browser; the fallback's is not.
  assert.deepEqual(
    result.map((e) => [e.type, e.cause ?? e.code, e.reason]),
    [
      ["fallback", "failed", undefined],
      ["error", undefined, undefined],
      ["close", 1006, "HTTP 403: rejected by testbed: /ws/testbed"],
    ],
  );
});

test("a proxy that leaves the WebSocket hanging: the client falls back after fallbackAfter", { timeout: 60000 }, async (t) => {
  proxy.upgrades = "hang";
  t.after(() => (proxy.upgrades = "refuse"));
  const { host, page } = await blankPage(t, proxied);
  const result = await run(
    page,
    `
    const ws = new WasmSocket(arg.url, { fallbackAfter: 1000 });
    const events = record(ws);
    ws.connect();
    await next(ws, "open");
    ws.send("over http");
    const reply = (await next(ws, "message")).data;
    ws.close(1000, "done");
    await next(ws, "close");
    return { events, reply };
  `,
    { url: `${host.ws}/ws` },
  );
  assert.deepEqual(
    result.events.filter((e) => e.type !== "statechange").map((e) => [e.type, e.transport ?? e.code]),
    [["fallback", "http"], ["open", "http"], ["close", 1000]],
  );
  const fallback = result.events.find((e) => e.type === "fallback");
  assert.deepEqual([fallback.from, fallback.cause], ["websocket", "timeout"]);
  assert.equal(result.reply, "over http");
  assert.ok(!result.events.some((e) => e.type === "error"), "a transport given up is not an error");
});

test("an event stream cut by the proxy resumes: no message lost or repeated", { timeout: 90000 }, async (t) => {
  const { host, page } = await blankPage(t, proxied);
  const since = proxy.requests.length;
  await run(
    page,
    `
    const ws = new WasmSocket(arg.url);
    window.ws = ws;
    window.events = record(ws);
    window.got = [];
    ws.addEventListener("message", (e) => window.got.push(e.data));
    ws.connect();
    await next(ws, "open");
  `,
    { url: `${host.ws}/ws` },
  );
  assert.equal(await page.evaluate(() => window.ws.transport), "http");

  const total = 600;
  const received = () => page.evaluate(() => window.got.length);
  let sent = 0;
  for (let round = 0; round < 3; round++) {
    // A batch goes out; the stream is cut while its echoes are still coming.
    await page.evaluate(
      ({ from, to }) => {
        for (let i = from; i < to; i++) window.ws.send(`message ${i}`);
      },
      { from: sent, to: sent + total / 3 },
    );
    sent += total / 3;
    await eventually(async () => (await received()) > sent - total / 3 + 20, { message: "some echoes of the batch" });
    assert.equal(proxy.cutStreams(), 1, "one event stream to cut");
  }
  await eventually(async () => (await received()) >= total, { timeout: 30000, message: `${total} echoes` });
  await new Promise((ok) => setTimeout(ok, 500)); // a repeat would arrive now

  const got = await page.evaluate(() => window.got);
  assert.equal(got.length, total, "nothing repeated");
  assert.deepEqual(got, Array.from({ length: total }, (_, i) => `message ${i}`), "nothing lost, in order");
  const events = await page.evaluate(() => window.events);
  assert.deepEqual(
    events.filter((e) => ["open", "close", "reconnecting", "error"].includes(e.type)).map((e) => e.type),
    ["open"],
    "no close, no reconnect: the same session",
  );
  const { opens, resumes } = fallbackRequests(since);
  assert.equal(opens.length, 1);
  assert.ok(resumes.length >= 3, `a resume after each cut: ${resumes.length}`);
  assert.ok(resumes.every((r) => /^\d+$/.test(r.headers["last-event-id"])), "resumes name the last event seen");
  assert.equal(await echoCount(host), 1);
});

test("reconnection over the fallback: after a host restart the page is back on HTTP", { timeout: 90000 }, async (t) => {
  const dir = await pluginsDir();
  t.after(() => removeDir(dir));
  let host = await startHost({ plugins: dir });
  const port = host.port;
  t.after(() => host.stop());
  const page = await testPage(t, proxied, host);

  await page.getByLabel("Reconnect automatically").check();
  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  assert.equal(await transportShown(page), "via HTTP fallback");
  const refusedBefore = proxy.refused.length;

  await host.kill();
  host = await startHost({ plugins: dir, port });
  // The old session is gone with the old host: the stream cannot resume, the
  // connection closes, and the page reconnects on the transport that worked.
  await entry(page, "close", "code 1006").first().waitFor({ timeout: 30000 });
  await entry(page, "open", "reconnected on attempt").waitFor({ timeout: 30000 });
  await waitForStatus(page, /^Connected$/);
  assert.equal(await transportShown(page), "via HTTP fallback");
  assert.equal(proxy.refused.length, refusedBefore, "the reconnect went straight to HTTP");
  await say(page, "after the restart");
  await entry(page, "receive", "after the restart").waitFor();
  await page.getByRole("button", { name: "Close Socket" }).click();
  await waitForStatus(page, /^Closed \(code 1000/);
});

test("an outage longer than the grace period ends the session; the page reconnects over HTTP and says the session was lost", { timeout: 90000 }, async (t) => {
  const dir = await pluginsDir();
  t.after(() => removeDir(dir));
  const config = join(dir, "wasmsocket.toml");
  await writeFile(config, '[fallback]\ngrace = "2s"\n');
  const host = await startHost({ plugins: dir, args: ["--config", config] });
  t.after(() => host.stop());
  const page = await testPage(t, proxied, host);
  t.after(() => (proxy.offline = false));

  await page.getByLabel("Reconnect automatically").check();
  await page.getByLabel("Resume the session").check();
  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  assert.equal(await transportShown(page), "via HTTP fallback");

  // The network goes: the stream breaks and every resume fails until the
  // grace period (2 s, from the open event) runs out.
  proxy.offline = true;
  proxy.cutStreams();
  await entry(page, "close", "code 1006").first().waitFor({ timeout: 15000 });
  await eventually(async () => (await echoCount(host)) === 0, { message: "on-close after the grace period" });
  await waitForStatus(page, /^Reconnecting in /);

  proxy.offline = false;
  await entry(page, "open", "reconnected on attempt").waitFor({ timeout: 30000 });
  await entry(page, "info", "The session could not be resumed (unknown)").waitFor();
  assert.equal(await transportShown(page), "via HTTP fallback");
  await say(page, "back online");
  await entry(page, "receive", "back online").waitFor();
  assert.equal(await echoCount(host), 1);
});
