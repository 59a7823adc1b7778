// A TCP proxy in front of one or more hosts, as a load balancer without
// sticky sessions: each new connection goes to the next host in turn (round
// robin), bytes pass untouched (HTTP, WebSocket upgrades, event streams),
// and a test can cut every connection it carries, as a network that blinks.
import { createServer, connect } from "node:net";

class TcpProxy {
  constructor(server, targets) {
    this.server = server;
    /** Ports of the hosts, on 127.0.0.1; may be changed at any time. */
    this.targets = targets;
    this.port = 0;
    this.next = 0;
    /** Pairs of sockets being forwarded. */
    this.pairs = new Set();
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** Cuts every connection it carries, without a close frame. Returns how many. */
  cut() {
    const pairs = [...this.pairs];
    for (const { client, upstream } of pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    return pairs.length;
  }

  async close() {
    this.cut();
    await new Promise((ok) => this.server.close(ok));
  }
}

/**
 * Starts a proxy on a free loopback port in front of the hosts at `targets`.
 * @param {number[]} targets
 * @returns {Promise<TcpProxy>}
 */
export async function startTcpProxy(targets) {
  const server = createServer();
  const proxy = new TcpProxy(server, [...targets]);
  server.on("connection", (client) => {
    const live = proxy.targets;
    if (live.length === 0) {
      client.destroy();
      return;
    }
    const port = live[proxy.next++ % live.length];
    const upstream = connect({ host: "127.0.0.1", port });
    const pair = { client, upstream };
    proxy.pairs.add(pair);
    const end = () => {
      proxy.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  proxy.port = server.address().port;
  return proxy;
}
