// A real redis-server of the test's own on a free loopback port, for the
// tests of hosts scaled out on one Redis. Nothing is persisted.
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { freePort } from "./helpers.js";

/** The server binary: Debian's redis-server (scripts/test.sh installs it), or `WASMSOCKET_REDIS_SERVER`. */
export const REDIS_SERVER = process.env.WASMSOCKET_REDIS_SERVER || "redis-server";

/** How long one start may take before it counts as failed, ms. */
const STARTUP = 20000;

/** Every redis-server still running, so none outlives the test process. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A running redis-server: its port and URL, and how to stop it. */
class Redis {
  #output;

  constructor(child, port, output) {
    this.child = child;
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
    this.#output = output;
    this.exited = new Promise((ok) => {
      if (child.exitCode !== null || child.signalCode !== null) ok({ code: child.exitCode, signal: child.signalCode });
      else child.once("exit", (code, signal) => ok({ code, signal }));
    });
  }

  /** The end of what it logged (stdout and stderr). */
  get output() {
    return this.#output();
  }

  /** Stops it (SIGTERM, SIGKILL after 5 s); safe to call twice. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Starts redis-server on a free loopback port and waits until it answers
 * PING. A port taken between being found free and being bound makes it exit:
 * it is tried again on a new port, up to `tries` times.
 * @returns {Promise<Redis>}
 */
export async function startRedis({ tries = 5 } = {}) {
  let last;
  for (let i = 0; i < tries; i++) {
    const port = await freePort();
    try {
      return await startOnce(port);
    } catch (err) {
      last = err;
    }
  }
  throw new Error(`redis-server did not start in ${tries} tries: ${last?.message}`);
}

async function startOnce(port) {
  const child = spawn(
    REDIS_SERVER,
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  running.add(child);
  child.once("exit", () => running.delete(child));
  let output = "";
  const keep = (chunk) => {
    output = (output + chunk).slice(-4000);
  };
  child.stdout.setEncoding("utf8").on("data", keep);
  child.stderr.setEncoding("utf8").on("data", keep);
  let spawnError = null;
  child.once("error", (err) => {
    spawnError = err;
  });
  const gone = () => spawnError !== null || child.exitCode !== null || child.signalCode !== null;
  const deadline = Date.now() + STARTUP;
  for (;;) {
    // Another redis-server may answer on a port ours could not bind: an
    // answer counts only if ours is still running a moment later.
    const answered = await pings(port);
    await new Promise((ok) => setTimeout(ok, 20));
    if (gone()) {
      throw new Error(`redis-server on port ${port} exited: ${spawnError?.message ?? output.trim().split("\n").pop()}`);
    }
    if (answered) return new Redis(child, port, () => output);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`redis-server on port ${port} did not answer PING within ${STARTUP / 1000} s`);
    }
    await new Promise((ok) => setTimeout(ok, 30));
  }
}

/** Whether a server on `port` answers `PING` with `+PONG`. */
function pings(port) {
  return new Promise((ok) => {
    const socket = connect({ host: "127.0.0.1", port });
    let reply = "";
    const done = (result) => {
      clearTimeout(timer);
      socket.destroy();
      ok(result);
    };
    const timer = setTimeout(() => done(false), 1000);
    socket.setEncoding("utf8");
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk;
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG\r\n"));
    });
    socket.once("error", () => done(false));
    socket.once("close", () => done(false));
  });
}
