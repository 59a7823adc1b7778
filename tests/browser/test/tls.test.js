// The test page over https:// and wss://, in a real Chromium that trusts one
// certificate made for the test (by its public key: --ignore-certificate-
// errors-spki-list), against the real host started with --tls-cert/--tls-key.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate, createHash } from "node:crypto";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { chromium } from "playwright-core";
import { CHROMIUM, eventually, pluginsDir, removeDir, startHost } from "../lib/helpers.js";

/** A self-signed certificate for 127.0.0.1, and the base64 SHA-256 of its SPKI. */
async function testCertificate(dir) {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
  ], { stdio: "ignore" });
  const spki = new X509Certificate(await readFile(cert)).publicKey.export({ type: "spki", format: "der" });
  return { cert, key, spki: createHash("sha256").update(spki).digest("base64") };
}

test("the page over https: served by HTTP/2, echoes over wss", { timeout: 60000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "wasmsocket-tls-"));
  t.after(() => removeDir(dir));
  const { cert, key, spki } = await testCertificate(dir);
  const plugins = await pluginsDir();
  t.after(() => removeDir(plugins));
  const host = await startHost({ plugins, args: ["--tls-cert", cert, "--tls-key", key] });
  t.after(() => host.stop());

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", `--ignore-certificate-errors-spki-list=${spki}`],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));

  const origin = `https://127.0.0.1:${host.port}`;
  await page.goto(`${origin}/`);
  const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  assert.equal(protocol, "h2", "the page came over HTTP/2");
  assert.equal(await page.inputValue("#url"), `wss://127.0.0.1:${host.port}/ws`);

  await page.getByRole("button", { name: "Connect" }).click();
  await eventually(async () => (await page.locator("#status").textContent()) === "Connected", {
    message: "Connected",
  });
  await page.getByLabel("Message to send").fill("hello over wss");
  await page.getByLabel("Message to send").press("Enter");
  await page.locator('#log li[data-kind="receive"]').filter({ hasText: "hello over wss" }).waitFor();
  await page.getByLabel("Binary (hex)").check();
  await page.getByLabel("Bytes to send (hex)").fill("00 01 fe ff");
  await page.getByLabel("Bytes to send (hex)").press("Enter");
  await page.locator('#log li[data-kind="receive"]').filter({ hasText: "00 01 fe ff" }).waitFor();

  // The API over HTTP/2 from the page: the open wss connection is counted.
  const health = await page.evaluate(async () => (await fetch("/healthz")).json());
  assert.equal(health.connections, 1);
  assert.deepEqual(errors, [], "uncaught errors in the page");
});
