// A TCP proxy in front of one or more hosts, as a load balancer without
// sticky sessions: each new connection goes to the next host in turn (round
// robin), bytes pass untouched (HTTP, WebSocket upgrades, event streams),
// and a test can cut every connection it carries, as a network that blinks.
// A host that refuses the connection (ECONNREFUSED: stopped, or no longer
// listening while it drains) is skipped: the connection goes to the next
// host, each tried at most once, as a load balancer's passive health check
// does; when every host refused, the client's connection is closed.
//
// It can listen on several ports, all alike (one turn for all): a browser
// opens WebSockets to one address one at a time (RFC 6455 section 4.1), so
// many clients in one page reconnect all at once only to several addresses.
import { createServer, connect } from "node:net";

class TcpProxy {
  constructor(servers, targets) {
    this.servers = servers;
    /** Ports of the hosts, on 127.0.0.1; may be changed at any time. */
    this.targets = targets;
    /** The port it listens on (the first, with several). */
    this.port = 0;
    /** Every port it listens on, `port` first. */
    this.ports = [];
    this.next = 0;
    /** Pairs of sockets being forwarded. */
    this.pairs = new Set();
  }

  /** The first server (with several, `servers` has them all). */
  get server() {
    return this.servers[0];
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** The WebSocket base URL of its `i`th port (modulo their number). */
  wsAt(i) {
    return `ws://127.0.0.1:${this.ports[i % this.ports.length]}`;
  }

  /** Cuts every connection it carries, without a close frame. Returns how many. */
  cut() {
    const pairs = [...this.pairs];
    for (const { client, upstream } of pairs) {
      client.destroy();
      upstream?.destroy();
    }
    this.pairs.clear();
    return pairs.length;
  }

  async close() {
    this.cut();
    await Promise.all(this.servers.map((server) => new Promise((ok) => server.close(ok))));
  }
}

/**
 * Starts a proxy on a free loopback port (on `listeners` of them) in front
 * of the hosts at `targets`.
 * @param {number[]} targets
 * @param {{listeners?: number}} [options]
 * @returns {Promise<TcpProxy>}
 */
export async function startTcpProxy(targets, { listeners = 1 } = {}) {
  const servers = Array.from({ length: Math.max(1, listeners) }, () => createServer());
  const proxy = new TcpProxy(servers, [...targets]);
  const forward = (client) => {
    const live = proxy.targets;
    if (live.length === 0) {
      client.destroy();
      return;
    }
    // The next host in turn first, then the others in order.
    const first = proxy.next++ % live.length;
    const order = [...new Set([...live.slice(first), ...live.slice(0, first)])];
    // Nothing is read from the client until a host took the connection, so
    // no byte is lost to a host that refused it.
    client.pause();
    const pair = { client, upstream: null, connected: false };
    proxy.pairs.add(pair);
    let ended = false;
    const end = () => {
      ended = true;
      proxy.pairs.delete(pair);
      client.destroy();
      pair.upstream?.destroy();
    };
    // One side closed (or was reset): the other still gets every byte that
    // came before (a close frame, say), then the connection is closed.
    const finish = (other) => {
      if (ended) return;
      ended = true;
      proxy.pairs.delete(pair);
      if (!other || other.destroyed) {
        end();
        return;
      }
      other.end();
      const timer = setTimeout(end, 2000);
      other.once("close", () => (clearTimeout(timer), end()));
    };
    const clientGone = () => (pair.connected ? finish(pair.upstream) : end());
    client.on("error", clientGone).on("close", clientGone);
    const attempt = (i) => {
      if (ended) return;
      if (i >= order.length) {
        end(); // every host refused
        return;
      }
      const upstream = connect({ host: "127.0.0.1", port: order[i] });
      pair.upstream = upstream;
      let connected = false;
      upstream.once("connect", () => {
        connected = true;
        pair.connected = true;
        if (ended) {
          upstream.destroy();
          return;
        }
        client.pipe(upstream);
        upstream.pipe(client);
      });
      upstream.on("error", (err) => {
        if (!connected && err.code === "ECONNREFUSED" && !ended) {
          pair.upstream = null;
          upstream.destroy();
          attempt(i + 1);
        } else if (!connected) end();
        else finish(client);
      });
      upstream.on("close", () => connected && finish(client));
    };
    attempt(0);
  };
  for (const server of servers) {
    server.on("connection", forward);
    await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
    proxy.ports.push(server.address().port);
  }
  proxy.port = proxy.ports[0];
  return proxy;
}
