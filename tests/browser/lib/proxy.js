// A small forward HTTP proxy that refuses WebSockets, as a strict corporate
// proxy does: plain HTTP requests are forwarded (streaming responses chunk by
// chunk, unbuffered), while a CONNECT tunnel (how a browser takes a WebSocket
// through an HTTP proxy) or an `Upgrade` request is answered 403, or left
// hanging with `upgrades: "hang"`. Tests can cut the event streams it carries.
// It serves loopback only: the browser's own background requests to the
// internet are refused and not recorded.
import { createServer, request } from "node:http";

// Headers that belong to one hop, not forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

const LOOPBACK = /^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/i;

function forwardable(headers) {
  const out = { ...headers };
  for (const name of HOP_BY_HOP) delete out[name];
  return out;
}

/** A running proxy: its address, what it saw, and control over its streams. */
class Proxy {
  constructor(server, upgrades) {
    this.server = server;
    this.upgrades = upgrades;
    this.port = 0;
    /** Every request to loopback: {method, url, headers}, CONNECTs included. */
    this.requests = [];
    /** Event streams being forwarded: the browser's side and the host's. */
    this.streams = new Set();
    this.held = new Set(); // sockets of hanging CONNECTs
    /** While true, the host is out of reach: every request is answered 502. */
    this.offline = false;
  }

  /** Chromium's flags to send everything, loopback included, through this proxy. */
  get chromiumArgs() {
    return [`--proxy-server=http://127.0.0.1:${this.port}`, "--proxy-bypass-list=<-loopback>"];
  }

  /** Requests refused because they asked for a tunnel or an upgrade. */
  get refused() {
    return this.requests.filter((r) => r.method === "CONNECT" || r.headers.upgrade);
  }

  /**
   * Cuts every event stream it is forwarding, mid-way, as a proxy timeout or
   * a network change would. Returns the number cut.
   */
  cutStreams() {
    const cut = [...this.streams];
    for (const { client, upstream } of cut) {
      client.destroy();
      upstream.destroy();
    }
    this.streams.clear();
    return cut.length;
  }

  async close() {
    for (const socket of this.held) socket.destroy();
    this.cutStreams();
    this.server.closeAllConnections();
    await new Promise((ok) => this.server.close(ok));
  }
}

/**
 * Starts the proxy on a free loopback port.
 * @param {{upgrades?: "refuse" | "hang"}} [options]
 * @returns {Promise<Proxy>}
 */
export async function startProxy({ upgrades = "refuse" } = {}) {
  const server = createServer();
  const proxy = new Proxy(server, upgrades);

  server.on("request", (req, res) => {
    let target;
    try {
      target = new URL(req.url); // absolute-form, as browsers send to a proxy
    } catch {
      res.writeHead(400).end("not a proxy request\n");
      return;
    }
    if (!LOOPBACK.test(target.host)) {
      res.writeHead(403).end("loopback only\n");
      return;
    }
    proxy.requests.push({ method: req.method, url: req.url, headers: req.headers });
    if (proxy.offline) {
      res.writeHead(502).end("bad gateway\n");
      return;
    }
    const upstream = request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: target.pathname + target.search,
        headers: forwardable(req.headers),
      },
      (answer) => {
        res.writeHead(answer.statusCode, answer.statusMessage, forwardable(answer.headers));
        res.flushHeaders();
        if (/^text\/event-stream/i.test(answer.headers["content-type"] ?? "")) {
          const stream = { client: res, upstream };
          proxy.streams.add(stream);
          res.once("close", () => proxy.streams.delete(stream));
        }
        // Each chunk goes on as it comes: an event stream must not wait in a buffer.
        answer.on("data", (chunk) => res.write(chunk));
        answer.once("end", () => res.end());
        answer.once("error", () => res.destroy());
      },
    );
    upstream.once("error", () => {
      if (res.headersSent) res.destroy();
      else res.writeHead(502).end("bad gateway\n");
    });
    res.once("close", () => {
      if (!res.writableFinished) upstream.destroy(); // the browser went away: so does the host's side
    });
    req.pipe(upstream);
  });

  const refuse = (req, socket) => {
    const target = req.method === "CONNECT" ? req.url : req.headers.host;
    if (LOOPBACK.test(target ?? "")) proxy.requests.push({ method: req.method, url: req.url, headers: req.headers });
    else {
      socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    if (proxy.upgrades === "hang") {
      proxy.held.add(socket);
      socket.once("close", () => proxy.held.delete(socket));
      return;
    }
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 26\r\n\r\nWebSockets are not allowed");
  };
  server.on("connect", refuse);
  server.on("upgrade", refuse);

  await new Promise((ok, fail) => server.listen(0, "127.0.0.1", ok).once("error", fail));
  proxy.port = server.address().port;
  return proxy;
}
