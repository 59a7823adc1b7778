// The plugin console of the test page (static/console.js) in a real
// Chromium against the real host: the event stream, its marks and chart.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { eventually, hostFor, launchBrowser, openPage } from "../lib/helpers.js";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** The page against a host serving testbed, with testbed picked and watched. */
async function watchTestbed(t) {
  const { host, dir } = await hostFor(t);
  const page = await openPage(t, browser, `${host.http}/`);
  await page.locator('#plugin option[value="testbed"]').waitFor({ state: "attached" });
  await page.getByLabel("Plugin").selectOption("testbed");
  await line(page, "watch", "watching testbed").waitFor();
  return { page, dir };
}

const line = (page, kind, text) => page.locator(`#console-log li[data-kind="${kind}"]`).filter({ hasText: text });

async function connectAndSend(page, ...messages) {
  await page.getByRole("button", { name: "Connect" }).click();
  await eventually(async () => /^Connected$/.test(await page.locator("#status").textContent()), { message: "connected" });
  for (const message of messages) {
    await page.getByLabel("Message to send").fill(message);
    await page.getByLabel("Message to send").press("Enter");
  }
}

test("a plugin's log calls show in the console, its own connection marked", { timeout: 60000 }, async (t) => {
  const { page } = await watchTestbed(t);
  await connectAndSend(page, "logs 3");
  const logged = line(page, "log", "log line 2");
  await logged.waitFor();
  assert.equal(await logged.getAttribute("data-level"), "info");
  assert.ok(await logged.evaluate((li) => li.classList.contains("own")), "marked as this page's connection");
  assert.match(await logged.locator(".conn").textContent(), /\(this page\)$/);
});

test("a trap shows the fault, the panic message and the backtrace line by line", { timeout: 60000 }, async (t) => {
  const { page } = await watchTestbed(t);
  await connectAndSend(page, "trap");
  const fault = line(page, "fault", "trapped");
  await fault.waitFor();
  const text = await fault.locator(".data").innerText();
  assert.match(text, /during on-message, connection closed with 1011: plugin trapped: wasm trap: wasm `unreachable`/);
  assert.match(text, /\ntestbed asked to trap\n/, "the panic message, on its own line");
  assert.match(text, /\n\s+at .*testbed\/src\/lib\.rs:\d+:\d+/, "the plugin's source line");
  await line(page, "stderr", "testbed asked to trap").waitFor();
});

test("the chart shows the message rate while messages flow", { timeout: 60000 }, async (t) => {
  const { page } = await watchTestbed(t);
  await connectAndSend(page);
  const rate = page.locator('#console-charts .value[data-series="messages_per_s"]');
  const open = page.locator('#console-charts .value[data-series="connections"]');
  let sent = 0;
  await eventually(
    async () => {
      for (let i = 0; i < 5; i++) {
        await page.getByLabel("Message to send").fill(`m${sent++}`);
        await page.getByLabel("Message to send").press("Enter");
      }
      return Number(await rate.getAttribute("data-value")) > 0;
    },
    { timeout: 15000, message: "a non-zero message rate" },
  );
  assert.equal(Number(await open.getAttribute("data-value")), 1, "one open connection");
  const points = await page.locator('#console-charts polyline[data-series="messages_per_s"]').getAttribute("points");
  assert.ok(points.split(" ").length >= 2, points);
});

test("restoring a good plugin file clears the error shown in the page", { timeout: 60000 }, async (t) => {
  const { page, dir } = await watchTestbed(t);
  const file = join(dir, "testbed.wasm");
  const good = await readFile(file);
  await writeFile(file, good.subarray(0, good.length / 2));
  await line(page, "load_error", "failed to load").waitFor({ timeout: 15000 });
  await eventually(async () => /^Load error: /.test(await page.textContent("#plugin-info")), { message: "error shown" });

  await writeFile(file, good);
  await line(page, "restored", "load error is cleared").waitFor({ timeout: 15000 });
  await eventually(async () => !/Load error/.test(await page.textContent("#plugin-info")), { message: "error cleared" });
  assert.match(await page.locator('#plugin option[value="testbed"]').textContent(), / · ready/);
});

test("timer events and denied outbound requests show in the console", { timeout: 60000 }, async (t) => {
  const { page } = await watchTestbed(t);
  await connectAndSend(page, "timer soon once 50", "fetch http://127.0.0.1:9/x");
  const fired = line(page, "timer", 'timer "soon" fired');
  await fired.waitFor();
  assert.equal(await fired.getAttribute("data-level"), "fired");
  const denied = line(page, "outbound", "denied");
  await denied.waitFor();
  assert.equal(await denied.getAttribute("data-level"), "denied");
  assert.match(await denied.locator(".data").innerText(), /127\.0\.0\.1:9 is not in plugins\.testbed\.allowed_outbound_hosts/);
});
