// A rolling restart, seen by static/wasmsocket.js in a real Chromium: two
// hosts, A and B, on one Redis behind a round-robin TCP proxy (no sticky
// sessions); 500 resumable clients in room "lobby"; a publisher connected to
// B directly broadcasts a numbered stream. Host A is then stopped:
//
// - with SIGTERM, A stops accepting, closes its clients with 1012 (service
//   restart) and keeps their sessions until each client, reconnecting
//   through the proxy, resumes it on B: same id, rooms and state, and every
//   message sent meanwhile once, in order (docs/delivery.md);
// - with SIGKILL (a crash), A's sessions are recovered on B from the
//   checkpoints A wrote to Redis (room history is on): same id, rooms and
//   state; what was broadcast while they had no host comes from the room's
//   history; what they got again is only what reached them in the moments
//   before the crash. B's clients lose nothing.
//
// Chromium's limits shape the setup; a real client is alone in its browser,
// while 500 here share one, and must not wait for each other:
// - a browser context (profile) keeps at most 255 WebSockets: past it new
//   ones wait (several pages) or fail (one page);
// - in a context, WebSockets to one address (IP and port) complete their
//   opening handshakes one at a time (RFC 6455 section 4.1, Chromium's
//   per-endpoint lock);
// - a renderer process delays each new WebSocket more the more of its
//   others are still connecting (Chromium's per-process throttle: about
//   1-5 s past 15 at once).
// wasmsocket.js counts such waits against `fallbackAfter` (3 s; 12 s for a
// WebSocket that resumes a session), then falls back to HTTP and gives the
// session up. So the clients are spread over 50
// pages, each in a context (and so a process) of its own (openPage makes
// one per page), 10 clients each; the proxy listens on 10 ports, all alike,
// and each client of a page has a port of its own (the hosts allow the
// pages' origin on the others).
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  clientStaticDir,
  eventually,
  launchBrowser,
  openPage,
  pluginsDir,
  removeDir,
  runInPage,
  startHost,
} from "../lib/helpers.js";
import { startRedis } from "../lib/redis.js";
import { startTcpProxy } from "../lib/tcp_proxy.js";

const PAGES = 50;
const PER_PAGE = 10; // about 5 reconnect at once per page
const CLIENTS = PAGES * PER_PAGE;
/**
 * Milliseconds between two broadcasts of the publisher: 10 a second, 5,000
 * messages a second to the 500 clients, which two cores shared by 50
 * Chromium renderers, two hosts, Redis and the proxy keep up with while 250
 * sessions move.
 */
const PACE = 100;
/** Broadcasts published before host A is stopped. */
const BEFORE_STOP = 20;
/** Broadcasts published after every client of A is back. */
const TAIL = 20;
/** The stream pauses here if the clients of A are not back by then. */
const MAX_BEFORE_FINISH = 2000;
/** Clients of each host that also get directed sends (`send ID d K`). */
const DIRECTED_PER_HOST = 5;

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/**
 * A fresh Redis, hosts A and B on it (resume_grace 30 s), and the proxy in
 * front of both, on PER_PAGE ports; all stopped after the test `t`, failed
 * or not.
 */
async function cluster(t) {
  const redis = await startRedis();
  const staticDir = await clientStaticDir();
  const dirs = [await pluginsDir(), await pluginsDir()];
  const hosts = [];
  const proxy = await startTcpProxy([], { listeners: PER_PAGE });
  const cleanup = { pages: [] };
  t.after(async () => {
    await Promise.all(cleanup.pages.map((page) => page.context().close()));
    await proxy.close();
    await Promise.all(hosts.map((host) => host.stop()));
    await redis.stop();
    await Promise.all([staticDir, ...dirs].map(removeDir));
  });
  for (const dir of dirs) {
    const config = join(dir, "wasmsocket.toml");
    await writeFile(
      config,
      // The pages' origin is the proxy's first port; their clients use its others too.
      // 50 renderers on two cores can hold an instance's start past the
      // default 100 ms wall-clock deadline (a 500 at the handshake).
      `[websocket]\nallowed_origins = ["*"]\n\n[redis]\nurl = "${redis.url}"\n\n[plugins.testbed]\nresume_grace = "30s"\ndeadline = "2s"\nhistory_size = 5000\n`,
    );
    hosts.push(await startHost({ plugins: dir, staticDir, args: ["--config", config] }));
  }
  const [a, b] = hosts;
  // Both on Redis before any client comes; their ids prefix their connections'.
  const ids = await Promise.all(
    hosts.map((host) =>
      eventually(
        async () => {
          const health = await (await fetch(`${host.http}/healthz`)).json();
          return health.redis?.status === "up" && health.redis.host;
        },
        { timeout: 20000, message: `host on port ${host.port} up on Redis` },
      ),
    ),
  );
  a.id = ids[0];
  b.id = ids[1];
  proxy.targets = [a.port, b.port];
  return { redis, a, b, proxy, staticDir, cleanup };
}

const OPTIONS = {
  types: ["open", "close", "resumefailed", "fallback"],
  keys: ["code", "resumed", "session", "reason", "cause"],
};

/**
 * In each page: `arg.n` resumable clients through the proxy, client I on
 * its port `arg.urls[I]`; each asks `whoami`, stores `set TAG-I` in its
 * state and joins "lobby". Messages "n K" (broadcasts) and "d K" (directed
 * sends) are collected; any other message answers the oldest pending `ask`.
 */
const SETUP = `
  const clients = (window.clients = []);
  window.lastMessageAt = performance.now();
  // What the reconnects are held to: wasmsocket.js's default.
  const fallbackAfter = new WasmSocket(arg.urls[0]).fallbackAfter;
  const open = async (i, tries = 3) => {
    const ws = new WasmSocket(arg.urls[i] + "/ws/testbed", {
      reconnect: { initialDelay: 20, maxDelay: 200, jitter: 0.5 },
      resume: true,
      // The first open may take its time (500 of them on two cores): no fallback.
      fallbackAfter: 60000,
    });
    const c = { ws, tag: arg.tag + "-" + i, events: record(ws), seen: [], seenAt: [], direct: [], stray: [], ids: [], waiting: [], opens: 0 };
    clients[i] = c;
    // When each event came (wall clock, as in the publisher's page).
    for (const type of ["open", "close", "resumefailed", "fallback"]) {
      ws.addEventListener(type, () => (c.events[c.events.length - 1].t = Date.now()));
    }
    c.ask = (text) => new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error("no reply to " + text)), 30000);
      c.waiting.push((data) => (clearTimeout(timer), ok(data)));
      ws.send(text);
    });
    ws.addEventListener("message", (e) => {
      window.lastMessageAt = performance.now();
      const data = e.data;
      if (typeof data !== "string") c.stray.push("binary");
      else if (data.startsWith("n ")) c.seen.push(Number(data.slice(2))), c.seenAt.push(Date.now());
      else if (data.startsWith("d ")) c.direct.push(Number(data.slice(2)));
      else if (c.waiting.length) c.waiting.shift()(data);
      else c.stray.push(data);
    });
    ws.addEventListener("open", (e) => {
      c.opens += 1;
      if (c.opens === 1 || e.resumed) return;
      // A fresh session: what was asked of the old one gets no answer.
      c.waiting = [];
    });
    ws.connect();
    await next(ws, "open", 90000);
    if (!ws.resumable && tries > 1) {
      // A first WebSocket refused under the setup's load (the client then
      // falls back to HTTP, without a session): what is tested is what
      // follows a session, so start this client again.
      ws.close();
      return open(i, tries - 1);
    }
    ws.fallbackAfter = fallbackAfter;
    c.ids.push(await c.ask("whoami"));
    c.stored = await c.ask("set " + c.tag);
    c.joined = await c.ask("join lobby");
  };
  // Ten at a time: a first open is no storm.
  for (let i = 0; i < arg.n; i += 10) {
    await Promise.all(Array.from({ length: Math.min(10, arg.n - i) }, (_, j) => open(i + j)));
  }
  return clients.map((c) => ({ id: c.ids[0], stored: c.stored, joined: c.joined }));
`;

/**
 * The publisher, connected to host B directly: joins "lobby", then every
 * `arg.pace` ms broadcasts "n K" (K = 1, 2, ...) and sends "d K" to one of
 * `arg.targets` in turn, until `window.last` is set and reached (pausing at
 * `arg.max` until it is set). Returns the last K, every reply, when each K
 * was sent, and its close if it was closed.
 */
const PUBLISH = `
  const ws = new WasmSocket(arg.url);
  const replies = [];
  let closed = null;
  ws.addEventListener("message", (e) => replies.push(e.data));
  ws.addEventListener("close", (e) => (closed = { code: e.code, reason: e.reason, at: Date.now() }));
  ws.connect();
  await next(ws, "open");
  ws.send("join lobby");
  window.published = 0;
  const sentAt = [0];
  for (let k = 1; ; k++) {
    if (closed) {
      window.published = window.last = k - 1; // nothing more can be sent
      break;
    }
    sentAt[k] = Date.now();
    ws.send("bcast lobby n " + k);
    if (arg.targets.length) ws.send("send " + arg.targets[k % arg.targets.length] + " d " + k);
    window.published = k;
    if (window.last !== undefined && k >= window.last) break;
    await sleep(arg.pace);
    while (k >= arg.max && window.last === undefined && !closed) await sleep(50);
  }
  const expected = 1 + window.published * (arg.targets.length ? 2 : 1);
  const deadline = performance.now() + 30000;
  while (replies.length < expected && performance.now() < deadline && !closed) await sleep(20);
  return { last: window.published, replies, sentAt, closed };
`;

/**
 * What each client of a page got: waits until all saw broadcast `last`, or
 * nothing arrived for 5 s; then, with `ask`, asks each client `whoami`,
 * `get` and `rooms`.
 */
async function collect(page, { last, ask }) {
  return page.evaluate(
    async ({ last, ask }) => {
      const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
      const clients = window.clients;
      const start = performance.now();
      for (;;) {
        if (clients.every((c) => c.seen.length && c.seen[c.seen.length - 1] >= last)) break;
        if (performance.now() - window.lastMessageAt > 5000 || performance.now() - start > 90000) break;
        await sleep(50);
      }
      await sleep(500); // a repeat of the last one would show
      const answers = await Promise.all(
        clients.map(async (c) => {
          if (!ask) return null;
          try {
            return { whoami: await c.ask("whoami"), get: await c.ask("get"), rooms: await c.ask("rooms") };
          } catch (err) {
            return { error: String(err) };
          }
        }),
      );
      return clients.map((c, i) => ({
        tag: c.tag,
        ids: c.ids,
        stored: c.stored,
        joined: c.joined,
        seen: c.seen,
        seenAt: c.seenAt,
        direct: c.direct,
        stray: c.stray,
        events: c.events,
        state: c.ws.state,
        after: answers[i],
      }));
    },
    { last, ask },
  );
}

/** Sets up the pages and clients; returns them with each client's first id. */
async function clientsThrough(t, { proxy, cleanup }) {
  const pages = [];
  for (let p = 0; p < PAGES; p += 10) {
    const batch = Array.from({ length: Math.min(10, PAGES - p) }, () => openPage(t, browser, `${proxy.http}/blank.html`));
    pages.push(...(await Promise.all(batch)));
  }
  // Pages go first at the end, so that their clients do not reconnect to hosts going away.
  cleanup.pages.push(...pages);
  // What Chromium says of WebSockets that failed, for the diagnostics.
  const logged = [];
  for (const page of pages) {
    page.on("console", (message) => {
      if (/WebSocket/i.test(message.text())) logged.push(`${new Date().toISOString().slice(11, 23)} ${message.text()}`);
    });
  }
  // Ten pages at a time, ten clients at a time in each.
  const all = [];
  for (let p = 0; p < PAGES; p += 10) {
    const batch = pages.slice(p, p + 10).map((page, q) => {
      const arg = { urls: proxy.ports.map((_, i) => proxy.wsAt(i)), n: PER_PAGE, tag: `p${p + q}` };
      return runInPage(page, SETUP, arg, { ...OPTIONS, timeout: 90000 });
    });
    all.push(...(await Promise.all(batch)).flat());
  }
  assert.equal(all.length, CLIENTS);
  assert.deepEqual(tally(all.map((c) => `${c.stored} ${c.joined}`)), { "stored ok": CLIENTS }, "every client stored its state and joined");
  return { pages, ids: all.map((c) => c.id), logged };
}

/** Starts the publisher on host B; resolves when it has published `last`. */
async function publisher(t, b, targets) {
  const page = await openPage(t, browser, `${b.http}/blank.html`);
  const done = runInPage(page, PUBLISH, { url: `${b.ws}/ws/testbed`, pace: PACE, max: MAX_BEFORE_FINISH, targets }, { ...OPTIONS, timeout: 60000 });
  done.catch(() => {}); // awaited later; a failure must not go unhandled meanwhile
  const published = () => page.evaluate(() => window.published ?? 0);
  return {
    done,
    published,
    /** Waits until it has published `n`; fails at once if it stopped before. */
    flowing: async (n) => {
      const stopped = done.then((result) => {
        throw new Error(`the publisher stopped after ${result.last}: closed ${JSON.stringify(result.closed)}`);
      });
      const enough = eventually(async () => (await published()) >= n, { timeout: 60000, message: `the stream to flow (${n} published)` });
      for (const p of [stopped, enough]) p.catch(() => {}); // the race reports the first
      await Promise.race([enough, stopped]);
    },
    /** Lets it publish `tail` more, then stop; returns the last number. */
    finish: (tail) => page.evaluate((tail) => (window.last = window.published + tail), tail),
  };
}

/** Polls every page with `fn(clients, arg)` until `done(results)` holds, or `timeout` ms; returns whether it did. */
async function until(pages, fn, arg, done, timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const results = (await Promise.all(pages.map((page) => page.evaluate(fn, arg)))).flat();
    if (done(results)) return true;
    if (Date.now() > deadline) return false;
    await sleep(250);
  }
}

/** How many times each value occurs: a readable summary for deepEqual. */
function tally(values) {
  const counts = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}

/** Numbers as runs of consecutive ones: [1,2,3,5,5,6] is "1-3 5 5-6". */
function runs(numbers) {
  if (numbers.length === 0) return "none";
  const parts = [];
  let start = numbers[0];
  let prev = start;
  for (const n of [...numbers.slice(1), NaN]) {
    if (n === prev + 1) {
      prev = n;
      continue;
    }
    parts.push(start === prev ? `${start}` : `${start}-${prev}`);
    start = prev = n;
  }
  return parts.join(" ");
}

/** A client's events in short: "open:fresh close:1012 open:resumed" (a failed attempt is a close too). */
function story(events) {
  return events
    .map((e) => {
      if (e.type === "open") return `open:${e.resumed ? "resumed" : "fresh"}${e.session ? "" : ",no-session"}`;
      if (e.type === "close") return `close:${e.code}`;
      if (e.type === "fallback") return `fallback:${e.cause}`;
      return `resumefailed:${e.reason}`;
    })
    .join(" ");
}

/** Whether `got` is exactly `expected`; else what differs. */
function compare(got, expected) {
  if (got.length === expected.length && got.every((n, i) => n === expected[i])) return "all, in order";
  const want = new Set(expected);
  const have = new Set(got);
  const missing = expected.filter((n) => !have.has(n));
  const extra = got.filter((n, i) => !want.has(n) || got.indexOf(n) !== i);
  if (missing.length === 0 && extra.length === 0) return `out of order: ${runs(got)}`;
  return `missing [${missing.slice(0, 10)}${missing.length > 10 ? ",..." : ""}], extra or repeated [${extra.slice(0, 10)}]`;
}

/**
 * A client in detail, for a failure: its events and, around each gap or
 * repeat in its broadcasts, when they were sent and received (ms since `t0`).
 */
function detail(c, sentAt, t0) {
  const when = (t) => (t === undefined ? "?" : `${t - t0}`);
  const lines = [`${c.tag} ${c.ids.join(" ")}: ${c.events.map((e) => `${story([e])}@${when(e.t)}`).join(" ")}`];
  for (let i = 0; i < c.seen.length; i++) {
    const expected = i === 0 ? 1 : c.seen[i - 1] + 1;
    if (c.seen[i] === expected) continue;
    const from = i === 0 ? 1 : c.seen[i - 1];
    lines.push(
      `  after ${from} (sent @${when(sentAt[from])}, received @${when(c.seenAt[i - 1])}) came ${c.seen[i]}` +
        ` (sent @${when(sentAt[c.seen[i]])}, received @${when(c.seenAt[i])}); expected ${expected} was sent @${when(sentAt[expected])}`,
    );
  }
  return lines.join("\n");
}

/**
 * Runs every check, so that one run tells all that broke, then fails with
 * all of their messages.
 */
class Checks {
  failures = [];

  check(fn) {
    try {
      fn();
    } catch (err) {
      this.failures.push(err);
    }
  }

  done() {
    if (this.failures.length === 1) throw this.failures[0];
    if (this.failures.length > 1) {
      const all = this.failures.map((err, i) => `--- ${i + 1} of ${this.failures.length}: ${err.message}`).join("\n");
      throw new assert.AssertionError({ message: `${this.failures.length} checks failed\n${all}` });
    }
  }
}

/** Values as "min / median / max UNIT" (durations in ms by default). */
function spread(values, unit = "ms") {
  const v = values.filter(Number.isFinite).sort((x, y) => x - y);
  if (v.length === 0) return "none";
  return `${v[0]} / ${v[v.length >> 1]} / ${v[v.length - 1]}${unit ? ` ${unit}` : ""}`;
}

/** How long clients were away: from their first close to their last open. */
function away(clients) {
  return spread(
    clients.map((c) => {
      const close = c.events.find((e) => e.type === "close");
      const open = c.events.findLast((e) => e.type === "open");
      return close && open && open.t > close.t ? open.t - close.t : NaN;
    }),
  );
}

/** Chromium's WebSocket errors so far (the first few), as diagnostics. */
function diagnoseLogged(t, logged) {
  if (logged.length === 0) return;
  t.diagnostic(`Chromium logged ${logged.length} WebSocket errors; the first:`);
  for (const line of logged.slice(0, 8)) t.diagnostic(`  ${line}`);
}

/** Milliseconds since `t0`, for the test's diagnostics. */
const since = (t0) => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

/** The details of the first few clients that fail `ok`, as a message. */
function offenders(clients, ok, sentAt, t0) {
  const bad = clients.filter((c) => !ok(c));
  return bad.length ? `\n${bad.slice(0, 5).map((c) => detail(c, sentAt, t0)).join("\n")}` : "";
}

/**
 * Both hosts and the proxy (see `cluster`), and every client through it;
 * the clients' first ids, by the host that gave them out.
 */
async function spreadOverTwoHosts(t) {
  const t0 = Date.now();
  const env = await cluster(t);
  const { a, b } = env;
  const { pages, ids, logged } = await clientsThrough(t, env);
  const onA = ids.filter((id) => id.startsWith(`${a.id}-`));
  const onB = ids.filter((id) => id.startsWith(`${b.id}-`));
  assert.equal(onA.length + onB.length, CLIENTS, "every id names host A or B");
  assert.ok(onA.length >= CLIENTS / 4 && onB.length >= CLIENTS / 4, `the proxy spread the clients (A ${onA.length}, B ${onB.length})`);
  t.diagnostic(`${CLIENTS} clients joined (${onA.length} on A, ${onB.length} on B) after ${since(t0)}`);
  return { a, b, pages, logged, onA, onB };
}

test("SIGTERM: every client moves to the other host and misses nothing", { timeout: 300000 }, async (t) => {
  const { a, b, pages, logged, onA, onB } = await spreadOverTwoHosts(t);
  // Directed sends go to a few clients of each host, one in turn per broadcast.
  const targets = [...onA.slice(0, DIRECTED_PER_HOST), ...onB.slice(0, DIRECTED_PER_HOST)];
  const stream = await publisher(t, b, targets);
  await stream.flowing(BEFORE_STOP);

  const stopAt = Date.now();
  const stopped = a.stop("SIGTERM", 60000).then((exit) => ({ ...exit, ms: Date.now() - stopAt }));
  // Every client of A reconnects (through the proxy, so to B) while the stream flows.
  const back = await until(
    pages,
    (prefix) => window.clients.filter((c) => c.ids[0].startsWith(prefix)).map((c) => c.opens >= 2 && c.ws.state === "open"),
    `${a.id}-`,
    (results) => results.length === onA.length && results.every(Boolean),
    90000,
  );
  t.diagnostic(`A's clients ${back ? "all" : "not all"} open again ${since(stopAt)} after SIGTERM`);
  const last = await stream.finish(TAIL);
  const published = await stream.done;
  assert.equal(published.closed, null, `host B closed the publisher: ${JSON.stringify(published.closed)}\n${b.stderr.slice(-2000)}`);
  assert.equal(published.last, last);
  const exit = await stopped;
  t.diagnostic(`host A exited (${exit.code ?? exit.signal}) ${exit.ms} ms after SIGTERM; ${last} broadcasts`);
  const clients = (await Promise.all(pages.map((page) => collect(page, { last, ask: true })))).flat();
  const fromA = clients.filter((c) => c.ids[0].startsWith(`${a.id}-`));
  const fromB = clients.filter((c) => c.ids[0].startsWith(`${b.id}-`));
  t.diagnostic(`A's clients were away (min / median / max): ${away(fromA)}`);
  diagnoseLogged(t, logged);
  const checks = new Checks();

  // What each client saw of its connection.
  const moved = "open:fresh close:1012 open:resumed";
  checks.check(() =>
    assert.deepEqual(
      tally(fromA.map((c) => story(c.events))),
      { [moved]: onA.length },
      `A's clients: closed with 1012, then resumed (no resumefailed); ms since SIGTERM:` +
        offenders(fromA, (c) => story(c.events) === moved, published.sentAt, stopAt),
    ),
  );
  checks.check(() =>
    assert.deepEqual(
      tally(fromB.map((c) => story(c.events))),
      { "open:fresh": onB.length },
      `B's clients: never closed; ms since SIGTERM:${offenders(fromB, (c) => story(c.events) === "open:fresh", published.sentAt, stopAt)}`,
    ),
  );
  checks.check(() => assert.ok(back, "every client of A was open again within 90 s"));
  // The stream: every broadcast once, in order.
  const onHost = (c) => (c.ids[0].startsWith(`${a.id}-`) ? "A" : "B");
  checks.check(() =>
    assert.deepEqual(
      tally(clients.map((c) => `${onHost(c)}: ${runs(c.seen)}`)),
      { [`A: 1-${last}`]: onA.length, [`B: 1-${last}`]: onB.length },
      `broadcasts: no gap, no repeat; ms since SIGTERM:` +
        offenders(clients, (c) => runs(c.seen) === `1-${last}`, published.sentAt, stopAt),
    ),
  );
  // Directed sends, to clients of A and of B.
  const byId = new Map(clients.map((c) => [c.ids[0], c]));
  checks.check(() =>
    assert.deepEqual(
      Object.fromEntries(
        targets.map((id, j) => {
          const expected = Array.from({ length: last }, (_, k) => k + 1).filter((k) => k % targets.length === j);
          return [`${onHost(byId.get(id))} ${id}`, compare(byId.get(id).direct, expected)];
        }),
      ),
      Object.fromEntries(targets.map((id) => [`${onHost(byId.get(id))} ${id}`, "all, in order"])),
      "directed sends: each once, in order",
    ),
  );
  checks.check(() =>
    assert.deepEqual(
      tally(published.replies.filter((r) => r !== "ok" && !r.startsWith("delivered "))),
      { sent: last },
      "every directed send was accepted",
    ),
  );
  checks.check(() =>
    assert.deepEqual(
      tally(clients.map((c) => c.direct.length === 0 || targets.includes(c.ids[0]))),
      { true: CLIENTS },
      "directed sends reached their targets only",
    ),
  );
  // The session itself: same id, state and rooms after the move.
  checks.check(() =>
    assert.deepEqual(
      tally(
        clients.map((c) => {
          if (!c.after || c.after.error) return `${onHost(c)}: ${c.after?.error ?? "no answer"}`;
          const id = c.after.whoami === c.ids[0] ? "same id" : `new id (host ${c.after.whoami.split("-")[0]})`;
          const state = c.after.get === c.tag ? "same state" : `state ${c.after.get}`;
          return `${onHost(c)}: ${id}, ${state}, rooms ${c.after.rooms}`;
        }),
      ),
      { "A: same id, same state, rooms lobby": onA.length, "B: same id, same state, rooms lobby": onB.length },
      "each session kept its id, state and rooms",
    ),
  );
  checks.check(() =>
    assert.deepEqual(tally(clients.map((c) => c.stray.join(" | ") || "none")), { none: CLIENTS }, "no unexpected message"),
  );
  // Host A drained and exited by itself.
  checks.check(() =>
    assert.deepEqual(
      { code: exit.code, signal: exit.signal, within30s: exit.ms <= 30000 },
      { code: 0, signal: null, within30s: true },
      `host A's exit after SIGTERM (${exit.ms} ms)\n${a.stderr.slice(-3000)}`,
    ),
  );
  checks.done();
});

test("SIGKILL: A's sessions are recovered on B from their checkpoints and the room's history", { timeout: 300000 }, async (t) => {
  const { a, b, pages, logged, onA, onB } = await spreadOverTwoHosts(t);
  const stream = await publisher(t, b, []);
  await stream.flowing(BEFORE_STOP);
  // Long enough for A to have written every session's checkpoint since it joined.
  await sleep(2500);

  const killAt = Date.now();
  const exit = await a.kill();
  const back = await until(
    pages,
    (prefix) => window.clients.filter((c) => c.ids[0].startsWith(prefix)).map((c) => c.opens >= 2),
    `${a.id}-`,
    (results) => results.length === onA.length && results.every(Boolean),
    90000,
  );
  t.diagnostic(`A's clients ${back ? "all" : "not all"} open again ${since(killAt)} after SIGKILL`);
  const last = await stream.finish(TAIL);
  const published = await stream.done;
  assert.equal(published.closed, null, `host B closed the publisher: ${JSON.stringify(published.closed)}\n${b.stderr.slice(-2000)}`);
  assert.equal(published.last, last);
  const clients = (await Promise.all(pages.map((page) => collect(page, { last, ask: true })))).flat();
  const fromA = clients.filter((c) => c.ids[0].startsWith(`${a.id}-`));
  const fromB = clients.filter((c) => c.ids[0].startsWith(`${b.id}-`));
  t.diagnostic(`A's clients were away (min / median / max): ${away(fromA)}`);
  diagnoseLogged(t, logged);
  const checks = new Checks();

  checks.check(() => assert.equal(exit.signal, "SIGKILL"));
  // B's clients lose nothing.
  checks.check(() =>
    assert.deepEqual(
      tally(fromB.map((c) => story(c.events))),
      { "open:fresh": onB.length },
      `B's clients: never closed; ms since SIGKILL:${offenders(fromB, (c) => story(c.events) === "open:fresh", published.sentAt, killAt)}`,
    ),
  );
  checks.check(() =>
    assert.deepEqual(
      tally(fromB.map((c) => runs(c.seen))),
      { [`1-${last}`]: onB.length },
      `B's clients: no gap, no repeat; ms since SIGKILL:` +
        offenders(fromB, (c) => runs(c.seen) === `1-${last}`, published.sentAt, killAt),
    ),
  );
  // A's clients: dropped, and their sessions resumed on B.
  const recovered = "open:fresh close:1006 open:resumed";
  checks.check(() =>
    assert.deepEqual(
      tally(fromA.map((c) => story(c.events))),
      { [recovered]: onA.length },
      `A's clients: dropped, then resumed; ms since SIGKILL:` +
        offenders(fromA, (c) => story(c.events) === recovered, published.sentAt, killAt),
    ),
  );
  checks.check(() => assert.ok(back, "every client of A was open again within 90 s"));
  // Their stream: every number; a repeat only of what reached them in the
  // moments before the crash (received after the checkpoint recovered from).
  const whole = "every number, in order, repeats only from just before the crash";
  const repeated = (c) => {
    const parts = runs(c.seen).split(" ").map((part) => part.split("-").map(Number));
    return parts.length === 2 ? parts[0].at(-1) - parts[1][0] + 1 : 0;
  };
  const verdict = (c) => {
    const parts = runs(c.seen).split(" ").map((part) => part.split("-").map(Number));
    if (parts[0][0] !== 1 || parts.at(-1).at(-1) !== last || parts.length > 2) return `shape ${runs(c.seen)}`;
    if (parts.length === 1) return whole;
    const [lastBefore, firstAfter] = [parts[0].at(-1), parts[1][0]];
    if (firstAfter > lastBefore + 1) return `missed ${firstAfter - lastBefore - 1}`;
    const early = published.sentAt[firstAfter];
    if (early < killAt - 3000) return `repeated from ${firstAfter}, sent ${killAt - early} ms before the crash`;
    return whole;
  };
  checks.check(() =>
    assert.deepEqual(
      tally(fromA.map(verdict)),
      { [whole]: onA.length },
      "A's clients: the stream whole across the crash; ms since SIGKILL:" +
        offenders(fromA, (c) => verdict(c) === whole, published.sentAt, killAt),
    ),
  );
  const repeats = fromA.map(repeated);
  t.diagnostic(`broadcasts A's clients got twice (min / median / max): ${spread(repeats, "")}`);
  // The session itself: same id, state and rooms on B.
  checks.check(() =>
    assert.deepEqual(
      tally(
        fromA.map((c) => {
          if (!c.after || c.after.error) return c.after?.error ?? "no answer";
          const id = c.after.whoami === c.ids[0] ? "same id" : `new id (host ${c.after.whoami.split("-")[0]})`;
          const state = c.after.get === c.tag ? "same state" : `state ${c.after.get}`;
          return `${id}, ${state}, rooms ${c.after.rooms}`;
        }),
      ),
      { "same id, same state, rooms lobby": onA.length },
      "each session of A kept its id, state and rooms",
    ),
  );
  checks.check(() =>
    assert.deepEqual(tally(clients.map((c) => c.stray.join(" | ") || "none")), { none: CLIENTS }, "no unexpected message"),
  );
  checks.done();
});
