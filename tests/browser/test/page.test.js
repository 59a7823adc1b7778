// The test page (static/index.html) in a real Chromium against the real host.
import assert from "node:assert/strict";
import { copyFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  ECHO_WASM,
  TESTBED_WASM,
  eventually,
  hostFor,
  launchBrowser,
  openPage,
  outDir,
  pluginsDir,
  removeDir,
  sha256,
  startHost,
} from "../lib/helpers.js";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Opens the test page once its plugin list has loaded. */
async function openTestPage(t, host, options) {
  const page = await openPage(t, browser, `${host.http}/`, options);
  // The plugin list has loaded once the picker has an option per plugin.
  await page.locator('#plugin option[value="echo"]').waitFor({ state: "attached" });
  return page;
}

const entry = (page, kind, text) => page.locator(`#log li[data-kind="${kind}"]`).filter({ hasText: text });
const status = (page) => page.locator("#status").textContent();

async function waitForStatus(page, pattern, timeout = 10000) {
  await eventually(async () => pattern.test(await status(page)), { timeout, message: `status ${pattern}` });
}

async function logEntries(page) {
  return page.$$eval("#log li", (items) =>
    items.map((li) => ({
      kind: li.dataset.kind,
      data: li.querySelector(".data").textContent,
      meta: li.querySelector(".meta")?.textContent ?? "",
    })),
  );
}

test("echo: connect, send text and binary, close with a code and reason", { timeout: 60000 }, async (t) => {
  const { host } = await hostFor(t);
  const page = await openTestPage(t, host, { viewport: { width: 1000, height: 900 } });

  // The ASP.NET-style layout: status first, URL from the page's origin.
  assert.equal(await status(page), "Ready to connect...");
  assert.equal(await page.inputValue("#url"), `${host.ws}/ws`);
  assert.equal(await page.locator("#status").getAttribute("role"), "status");
  for (const name of ["Connect", "Send", "Close Socket"]) {
    assert.equal(await page.getByRole("button", { name, exact: true }).count(), 1, `button ${name}`);
  }
  assert.equal(await page.getByRole("heading", { name: "Communication Log" }).count(), 1);
  assert.ok(await page.isDisabled("#send"), "Send is disabled until connected");
  // The picker knows the default plugin and shows its version.
  const echoHash = (await host.plugins()).find((p) => p.name === "echo").hash;
  assert.match(await page.locator("#plugin option:checked").textContent(), new RegExp(`^echo · ${echoHash.slice(0, 12)}`));

  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  await entry(page, "open", `${host.ws}/ws`).waitFor();
  assert.equal((await host.plugins()).find((p) => p.name === "echo").connections, 1);

  // Text, sent with Enter.
  await page.getByLabel("Message to send").fill("hello wasm ✓");
  await page.getByLabel("Message to send").press("Enter");
  await entry(page, "send", "hello wasm ✓").waitFor();
  const echoed = entry(page, "receive", "hello wasm ✓");
  await echoed.waitFor();
  assert.match(await echoed.locator(".meta").textContent(), /^text · 14 B · rtt \d+(\.\d+)? ms$/);

  // Binary, entered as hex.
  await page.getByLabel("Binary (hex)").check();
  await page.getByLabel("Bytes to send (hex)").fill("DE AD be ef 00 ff");
  await page.getByRole("button", { name: "Send", exact: true }).click();
  const binary = entry(page, "receive", "de ad be ef 00 ff");
  await binary.waitFor();
  assert.match(await binary.locator(".meta").textContent(), /^binary · 6 B · rtt /);

  // Bad hex is refused with a message, not sent.
  await page.getByLabel("Bytes to send (hex)").fill("xyz");
  await page.getByLabel("Bytes to send (hex)").press("Enter");
  assert.match(await page.locator("#message-error").textContent(), /hex/);

  // Binary, from a chosen file.
  await page.getByLabel("Binary (file)").check();
  await page.getByLabel("File to send").setInputFiles({
    name: "bytes.bin",
    mimeType: "application/octet-stream",
    buffer: Buffer.from([1, 2, 3, 250]),
  });
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await entry(page, "send", "bytes.bin: 01 02 03 fa").waitFor();
  const fromFile = entry(page, "receive", "01 02 03 fa");
  await fromFile.waitFor();
  assert.match(await fromFile.locator(".meta").textContent(), /^binary · 4 B · rtt /);
  await page.getByLabel("Binary (hex)").check();

  // Counters: 3 messages each way, 14 + 6 + 4 bytes.
  assert.equal(await page.textContent("#sent-messages"), "3");
  assert.equal(await page.textContent("#sent-bytes"), "24 B");
  assert.equal(await page.textContent("#received-messages"), "3");
  assert.equal(await page.textContent("#received-bytes"), "24 B");

  await page.screenshot({ path: join(await outDir(), "test-page.png"), fullPage: true });

  // Close with a chosen code and reason: the log and the status report them.
  await page.getByLabel("Close code").fill("4001");
  await page.getByLabel("Close reason").fill("done testing");
  await page.getByRole("button", { name: "Close Socket" }).click();
  const closed = entry(page, "close", 'code 4001, reason "done testing"');
  await closed.waitFor();
  assert.match(await closed.locator(".meta").textContent(), /^clean$/);
  await waitForStatus(page, /^Closed \(code 4001, reason "done testing"\)$/);
  assert.ok(await page.isEnabled("#connect"), "Connect is enabled again");

  const kinds = (await logEntries(page)).map((e) => e.kind);
  assert.deepEqual(kinds, ["open", "send", "receive", "send", "receive", "send", "receive", "close"]);

  // An invalid close code is refused by the browser and reported.
  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  await page.getByLabel("Close code").fill("1234");
  await page.getByRole("button", { name: "Close Socket" }).click();
  assert.match(await page.locator("#close-error").textContent(), /1000|3000/);
  assert.equal(await status(page), "Connected");

  // Clear log empties it.
  await page.getByRole("button", { name: "Clear log" }).click();
  assert.equal(await page.locator("#log li").count(), 0);
});

test("readable on a 375px-wide screen", { timeout: 60000 }, async (t) => {
  const { host } = await hostFor(t);
  const page = await openTestPage(t, host, { viewport: { width: 375, height: 812 }, isMobile: true, hasTouch: true });
  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  await page.getByLabel("Message to send").fill("a fairly long message ".repeat(8));
  await page.getByLabel("Message to send").press("Enter");
  await entry(page, "receive", "a fairly long message").waitFor();
  const widths = await page.evaluate(() => ({
    document: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
  }));
  assert.ok(widths.document <= widths.viewport, `no horizontal scrolling: ${JSON.stringify(widths)}`);
  // Every control stays inside the viewport.
  for (const id of ["url", "connect", "message", "send", "close", "plugin", "clear-log"]) {
    const box = await page.locator(`#${id}`).boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 375 + 0.5, `#${id} fits: ${JSON.stringify(box)}`);
  }
  // Every form control has a label.
  const unlabeled = await page.$$eval("input, select", (inputs) =>
    inputs.filter((i) => i.labels.length === 0 && !i.getAttribute("aria-label")).map((i) => i.id || i.name),
  );
  assert.deepEqual(unlabeled, []);
  await page.screenshot({ path: join(await outDir(), "test-page-375.png"), fullPage: true });
});

test("plugin picker: pick testbed, talk to it, see a server close reported", { timeout: 60000 }, async (t) => {
  const { host } = await hostFor(t);
  const page = await openTestPage(t, host);
  const testbedHash = await sha256(TESTBED_WASM);

  const option = page.locator('#plugin option[value="testbed"]');
  assert.equal(await option.textContent(), `testbed · ${testbedHash.slice(0, 12)} · ready`);
  await page.getByLabel("Plugin").selectOption("testbed");
  assert.equal(await page.inputValue("#url"), `${host.ws}/ws/testbed`);
  assert.match(await page.textContent("#plugin-info"), new RegExp(`route /ws/testbed · version ${testbedHash.slice(0, 12)}…`));

  // Typing another plugin's URL moves the picker along.
  await page.getByLabel("WebSocket Server URL").fill(`${host.ws}/ws`);
  assert.equal(await page.inputValue("#plugin"), "echo");
  await page.getByLabel("WebSocket Server URL").fill(`${host.ws}/ws/elsewhere`);
  assert.equal(await page.inputValue("#plugin"), "");
  await page.getByLabel("Plugin").selectOption("testbed");

  // Offer subprotocols: testbed accepts the first one offered.
  await page.getByLabel("Subprotocols").fill("chat.v1, chat.v2");
  await page.getByRole("button", { name: "Connect" }).click();
  await entry(page, "open", `${host.ws}/ws/testbed`).filter({ hasText: "subprotocol chat.v1" }).waitFor();

  await page.getByLabel("Message to send").fill("whoami");
  await page.getByLabel("Message to send").press("Enter");
  await eventually(async () => (await logEntries(page)).some((e) => e.kind === "receive"), { message: "a reply" });
  const reply = (await logEntries(page)).find((e) => e.kind === "receive");
  assert.notEqual(reply.data, "whoami", "testbed answers whoami with the connection id");
  assert.match(reply.data, /^\S+$/);
  assert.doesNotMatch(reply.meta, /rtt/, "a reply that is not an echo has no round-trip time");
  assert.equal((await host.plugins()).find((p) => p.name === "testbed").connections, 1);

  // The plugin closes the connection with a code and reason.
  await page.getByLabel("Message to send").fill("close 4000 some reason");
  await page.getByLabel("Message to send").press("Enter");
  await entry(page, "close", 'code 4000, reason "some reason"').waitFor();
  await waitForStatus(page, /^Closed \(code 4000, reason "some reason"\)$/);
});

test("a replaced plugin file is reported as reloaded; a broken one as an error", { timeout: 60000 }, async (t) => {
  const { host, dir } = await hostFor(t);
  const page = await openTestPage(t, host);
  const echoHash = await sha256(ECHO_WASM);
  await page.getByLabel("Plugin").selectOption("testbed");

  // Replace testbed.wasm with echo.wasm: the page notices within a few seconds.
  await copyFile(ECHO_WASM, join(dir, "testbed.wasm"));
  await entry(page, "plugin", `plugin testbed reloaded (version ${echoHash.slice(0, 12)}…)`).waitFor({ timeout: 15000 });
  const option = page.locator('#plugin option[value="testbed"]');
  assert.match(await option.textContent(), new RegExp(`^testbed · ${echoHash.slice(0, 12)} · ready · reloaded `));
  assert.match(await page.textContent("#plugin-info"), /^Reloaded at /);

  // The new version serves: whoami is now echoed back.
  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  await page.getByLabel("Message to send").fill("whoami");
  await page.getByLabel("Message to send").press("Enter");
  await entry(page, "receive", "whoami").waitFor();

  // A broken file: the error shows, the previous version keeps serving.
  await writeFile(join(dir, "testbed.wasm"), "this is not a wasm component");
  await entry(page, "error", "plugin testbed failed to load").waitFor({ timeout: 15000 });
  await eventually(async () => / · error\b/.test(await option.textContent()), { message: "error state in the picker" });
  assert.match(await page.textContent("#plugin-info"), new RegExp(`^Load error: .+ \\(version ${echoHash.slice(0, 12)}… keeps serving\\)`, "s"));
  await page.getByLabel("Message to send").fill("still here");
  await page.getByLabel("Message to send").press("Enter");
  await entry(page, "receive", "still here").waitFor();
});

test("reconnects by itself after the server restarts", { timeout: 90000 }, async (t) => {
  const dir = await pluginsDir();
  t.after(() => removeDir(dir));
  let host = await startHost({ plugins: dir });
  const port = host.port;
  t.after(() => host.stop());
  const page = await openTestPage(t, host);

  await page.getByLabel("Reconnect automatically").check();
  await page.getByRole("button", { name: "Connect" }).click();
  await waitForStatus(page, /^Connected$/);
  await page.getByLabel("Message to send").fill("before");
  await page.getByLabel("Message to send").press("Enter");
  await entry(page, "receive", "before").waitFor();

  // Crash the server: the page counts down to its next attempt.
  await host.kill();
  await waitForStatus(page, /^Reconnecting in \d+\.\d s \(attempt 1\)/);
  await entry(page, "close", "code 1006").waitFor();
  // Let at least one attempt fail against the dead port.
  await waitForStatus(page, /\(attempt [2-9]\)/, 15000);
  assert.equal(await page.getAttribute("#status", "data-state") === "open", false);
  await page.screenshot({ path: join(await outDir(), "test-page-reconnecting.png") });

  host = await startHost({ plugins: dir, port });
  await waitForStatus(page, /^Connected$/, 20000);
  await entry(page, "open", "reconnected on attempt").waitFor();
  await page.getByLabel("Message to send").fill("after");
  await page.getByLabel("Message to send").press("Enter");
  await entry(page, "receive", "after").waitFor();
  const reconnects = (await logEntries(page)).filter((e) => e.kind === "reconnect");
  assert.ok(reconnects.length >= 2, `reconnect attempts logged: ${JSON.stringify(reconnects)}`);
  assert.match(reconnects[0].data, /^attempt 1 in \d+\.\d s$/);

  // A user close afterwards does not reconnect.
  await page.getByRole("button", { name: "Close Socket" }).click();
  await waitForStatus(page, /^Closed \(code 1000/);
  await page.waitForTimeout(1500);
  assert.match(await status(page), /^Closed/);
  assert.equal((await logEntries(page)).filter((e) => e.kind === "reconnect").length, reconnects.length);
});
