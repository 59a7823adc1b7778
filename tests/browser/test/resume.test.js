// Resumable sessions with static/wasmsocket.js in a real Chromium: the
// network blinks (a proxy in front of the host cuts every connection) while
// a publisher broadcasts a numbered stream; the client resumes and shows
// each message once, in order.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { clientStaticDir, launchBrowser, openPage, pluginsDir, removeDir, runInPage, startHost } from "../lib/helpers.js";
import { startTcpProxy } from "../lib/tcp_proxy.js";

let browser;
let host;
let proxy;
let dir;
let staticDir;
before(async () => {
  dir = await pluginsDir();
  staticDir = await clientStaticDir();
  // A short grace, so a test can outwait it.
  const config = join(dir, "wasmsocket.toml");
  await writeFile(config, '[plugins.testbed]\nresume_grace = "1500ms"\n');
  host = await startHost({ plugins: dir, staticDir, args: ["--config", config] });
  proxy = await startTcpProxy([host.port]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await proxy?.close();
  await host?.stop();
  await removeDir(dir);
  await removeDir(staticDir);
});

const run = (page, body, arg, timeout = 20000) =>
  runInPage(page, body, arg, {
    types: ["open", "close", "resumefailed", "statechange"],
    keys: ["code", "resumed", "session", "reason", "unsent", "state"],
    timeout,
  });

/** A page whose origin is the proxy's, so its WebSocket goes through it. */
const proxiedPage = (t) => openPage(t, browser, `${proxy.http}/blank.html`);

test("a client that blinks twice sees every broadcast once, in order", { timeout: 60000 }, async (t) => {
  const subscriber = await proxiedPage(t);
  const publisher = await openPage(t, browser, `${host.http}/blank.html`);
  const COUNT = 300;
  const received = run(
    subscriber,
    `
    const ws = new WasmSocket(arg.url, { reconnect: { initialDelay: 20, maxDelay: 100, jitter: 0 }, resume: true });
    const events = record(ws);
    const seen = [];
    let echoes = [];
    ws.addEventListener("message", (e) => {
      if (e.data.startsWith("n ")) seen.push(Number(e.data.slice(2)));
      else if (e.data.startsWith("echo ")) echoes.push(e.data);
    });
    ws.connect();
    await next(ws, "open");
    ws.send("join lobby");
    window.ready = true;
    // Sent while the network is down: it waits, and goes after the resume.
    ws.addEventListener("close", () => ws.send("echo while away"));
    while (seen.length < arg.count || seen[seen.length - 1] !== arg.count) {
      await sleep(20);
      if (performance.now() > 50000) break;
    }
    await sleep(200);
    return { seen, echoes, events, resumable: ws.resumable };
    `,
    { url: `${proxy.ws}/ws/testbed`, count: COUNT },
    55000,
  );
  await subscriber.waitForFunction(() => window.ready === true);
  const published = run(
    publisher,
    `
    const ws = new WasmSocket(arg.url);
    ws.connect();
    await next(ws, "open");
    ws.send("join lobby");
    for (let n = 1; n <= arg.count; n++) {
      ws.send("bcast lobby n " + n);
      await sleep(5);
    }
    return "done";
    `,
    { url: `${host.ws}/ws/testbed`, count: COUNT },
    55000,
  );
  // Two blinks while the stream flows.
  await new Promise((ok) => setTimeout(ok, 400));
  assert.ok(proxy.cut() >= 1, "the subscriber's socket was cut");
  await new Promise((ok) => setTimeout(ok, 500));
  assert.ok(proxy.cut() >= 1);
  assert.equal(await published, "done");
  const { seen, echoes, events, resumable } = await received;
  assert.deepEqual(seen, Array.from({ length: COUNT }, (_, i) => i + 1), "no gap and no repeat");
  assert.deepEqual(echoes, ["echo while away", "echo while away"], "each send while away arrived once");
  const opens = events.filter((e) => e.type === "open");
  assert.deepEqual(opens.map((e) => e.resumed), [false, true, true]);
  assert.equal(events.filter((e) => e.type === "resumefailed").length, 0);
  assert.ok(resumable);
});

test("a resume after the grace falls back to a fresh session and says why", { timeout: 30000 }, async (t) => {
  const page = await proxiedPage(t);
  // The page cuts the network once it has its session; the reconnect
  // waits past the grace.
  await page.exposeFunction("cutNetwork", () => proxy.cut());
  const outcome = await run(
    page,
    `
    const ws = new WasmSocket(arg.url, { reconnect: { initialDelay: 2500, jitter: 0 }, resume: true });
    const events = record(ws);
    ws.connect();
    await next(ws, "open");
    ws.send("whoami");
    const first = (await next(ws, "message")).data;
    await window.cutNetwork();
    // resumefailed and open come one after the other.
    const reopened = next(ws, "open", 10000);
    const refused = await next(ws, "resumefailed", 10000);
    await reopened;
    ws.send("whoami");
    const second = (await next(ws, "message")).data;
    ws.close();
    return { first, second, reason: refused.reason, events };
    `,
    { url: `${proxy.ws}/ws/testbed` },
  );
  assert.equal(outcome.reason, "unknown");
  assert.notEqual(outcome.first, outcome.second, "a new connection id");
  const opens = outcome.events.filter((e) => e.type === "open");
  assert.deepEqual(opens.map((e) => [e.resumed, e.session]), [[false, true], [false, true]]);
});

test("the test page resumes its session across a blink and says so", { timeout: 30000 }, async (t) => {
  // The page itself, from static/, behind a proxy of its own.
  const pageHost = await startHost({ plugins: dir });
  const pageProxy = await startTcpProxy([pageHost.port]);
  t.after(async () => {
    await pageProxy.close();
    await pageHost.stop();
  });
  const page = await openPage(t, browser, `${pageProxy.http}/`);
  await page.locator('#plugin option[value="testbed"]').waitFor({ state: "attached" });
  await page.getByLabel("Plugin").selectOption("testbed");
  await page.getByLabel("Reconnect automatically").check();
  await page.getByLabel("Resume the session").check();
  await page.locator("#connect").click();
  const entry = (kind, text) => page.locator(`#log li[data-kind="${kind}"]`).filter({ hasText: text });
  await entry("open", "").first().waitFor();
  await page.getByLabel("Message to send").fill("whoami");
  await page.getByLabel("Message to send").press("Enter");
  const id = (await entry("receive", "-").first().locator(".data").textContent()).trim();
  assert.ok(pageProxy.cut() >= 1);
  await entry("open", "session resumed: nothing lost").waitFor({ timeout: 10000 });
  await page.getByLabel("Message to send").fill("whoami");
  await page.getByLabel("Message to send").press("Enter");
  await page.waitForFunction(
    (id) => [...document.querySelectorAll('#log li[data-kind="receive"]')].filter((li) => li.textContent.includes(id)).length === 2,
    id,
  );
});
