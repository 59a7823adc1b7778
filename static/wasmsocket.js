/**
 * wasmsocket.js: a small, dependency-free WebSocket client with optional
 * automatic reconnection (exponential backoff with jitter) and an HTTP
 * fallback for browsers whose WebSocket cannot open (a proxy or antivirus
 * that refuses `Upgrade`). It tries WebSocket first and falls back by itself;
 * the fallback speaks wasmsocket's protocol (docs/transports.md), while the
 * WebSocket transport works with any WebSocket server. wasmsocket's test page
 * is built on it.
 *
 * @example
 * import { WasmSocket } from "/wasmsocket.js";
 * const ws = new WasmSocket("ws://localhost:5000/ws", { reconnect: { maxDelay: 10000 } });
 * ws.addEventListener("open", () => ws.send("hello"));
 * ws.addEventListener("message", (e) => console.log(e.data));
 * ws.addEventListener("statechange", (e) => console.log(e.state, e.transport)); // "websocket" | "http"
 * ws.addEventListener("reconnecting", (e) => console.log(`retry ${e.attempt} in ${e.delay} ms`));
 * ws.connect();
 * // With `resume: true` a reconnect continues the session: the messages sent
 * // meanwhile arrive, once each, and the server kept rooms and state.
 * // later: ws.close(1000, "bye"); // a user close never reconnects
 *
 * @module wasmsocket
 */

/**
 * Reconnection settings. Delay before reconnect attempt `n` (1-based) is
 * `min(maxDelay, initialDelay * factor ** (n - 1))`, then reduced by a random
 * fraction of up to `jitter` (0 = exact, 1 = anywhere from 0 to the full delay),
 * so many clients dropped at once do not come back at once.
 *
 * @typedef {object} ReconnectOptions
 * @property {number} [initialDelay=500] Delay before the first attempt, ms.
 * @property {number} [maxDelay=30000] Upper bound of any delay, ms.
 * @property {number} [factor=2] Growth of the delay per failed attempt.
 * @property {number} [jitter=0.5] Random reduction of each delay, 0..1.
 * @property {number} [maxAttempts=Infinity] Consecutive failed attempts before giving up.
 * @property {(event: Event) => boolean} [shouldReconnect] Given the `close`
 *   event of a close the user did not ask for, whether to reconnect
 *   (default: always).
 */

/**
 * A transport: `"websocket"` (RFC 6455) or `"http"` (wasmsocket's HTTP
 * fallback: an event stream from the server, one `POST` per message).
 *
 * @typedef {"websocket" | "http"} Transport
 */

/**
 * @typedef {object} WasmSocketOptions
 * @property {string | string[]} [protocols] Subprotocols to offer.
 * @property {"arraybuffer" | "blob"} [binaryType="arraybuffer"] Type of received binary data.
 * @property {boolean | ReconnectOptions} [reconnect=false] Reconnect after a
 *   close the user did not ask for; `true` uses the defaults.
 * @property {Transport[]} [transports=["websocket", "http"]] Transports
 *   allowed, in the order they are tried; `["http"]` forces the fallback.
 * @property {number} [fallbackAfter=3000] How long, in ms, a transport may
 *   take to open before the next one is tried (a transport that fails sooner
 *   is given up at once). The last transport has no such limit. A WebSocket
 *   that resumes a session gets at least {@link RESUME_PATIENCE}.
 * @property {boolean | ResumeOptions} [resume=false] Ask a wasmsocket host
 *   for a resumable session (docs/delivery.md): a reconnect within the
 *   plugin's grace continues it, with every message sent meanwhile, once
 *   each and in order; messages sent while reconnecting wait and go out
 *   after it. `true` uses the defaults. Over the HTTP fallback the stream
 *   resumes by itself within the host's `fallback.grace`, with or without
 *   this option; with it, a fallback session lost past that is reported
 *   by `resumefailed` too.
 */

/**
 * @typedef {object} ResumeOptions
 * @property {number} [bufferBytes=1048576] Bytes of sent messages kept until
 *   the server has them (sent again after a resume); past it the oldest are
 *   forgotten and `send` while reconnecting throws.
 */

/**
 * Connection state:
 * - `closed`: not connected and no reconnect pending (the initial state);
 * - `connecting`: an opening handshake is under way;
 * - `open`: messages can be sent;
 * - `closing`: {@link WasmSocket#close} was called, waiting for the close handshake;
 * - `reconnecting`: waiting for the backoff timer before the next attempt.
 *
 * @typedef {"closed" | "connecting" | "open" | "closing" | "reconnecting"} WasmSocketState
 */

/** Defaults of {@link ReconnectOptions}. */
export const RECONNECT_DEFAULTS = Object.freeze({
  initialDelay: 500,
  maxDelay: 30000,
  factor: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
  shouldReconnect: () => true,
});

/** Defaults of {@link ResumeOptions}. */
export const RESUME_DEFAULTS = Object.freeze({ bufferBytes: 1 << 20 });

/** How long a server asked for a session may take to name it, ms. */
const HELLO_TIMEOUT = 3000;

/** Every transport, in the default order. */
export const TRANSPORTS = Object.freeze(["websocket", "http"]);

/** Default of {@link WasmSocketOptions}.fallbackAfter, ms. */
export const FALLBACK_AFTER = 3000;

/**
 * How long, in ms, a WebSocket that resumes a session may take to open
 * before the fallback is tried (at least `fallbackAfter`): the host may be
 * taking the session over from another host (docs/delivery.md), and the
 * fallback would start afresh.
 */
export const RESUME_PATIENCE = 12000;

/**
 * The backoff delay, in ms, before reconnect attempt `attempt` (1-based).
 *
 * @param {number} attempt
 * @param {ReconnectOptions} options
 * @param {() => number} [random=Math.random] A source of numbers in [0, 1).
 * @returns {number}
 */
export function backoffDelay(attempt, options, random = Math.random) {
  const o = { ...RECONNECT_DEFAULTS, ...options };
  const base = Math.min(o.maxDelay, o.initialDelay * o.factor ** Math.max(0, attempt - 1));
  const jitter = Math.min(1, Math.max(0, o.jitter));
  return Math.max(0, Math.round(base * (1 - jitter * random())));
}

/** An `Event` carrying extra read-only fields. */
function event(type, fields = {}) {
  const e = new Event(type);
  for (const [key, value] of Object.entries(fields)) {
    Object.defineProperty(e, key, { value, enumerable: true });
  }
  return e;
}

/**
 * A WebSocket client that can reconnect by itself and falls back to HTTP
 * when a WebSocket cannot open.
 *
 * Events (all plain `Event`s with extra fields):
 * - `open`: connected; `protocol` is the negotiated subprotocol, `transport`
 *   the transport that opened, `resumed` whether the session continued (see
 *   `resume`), `session` whether there is one to continue.
 * - `resumefailed`: a resume was refused and a fresh session began (the
 *   `open` event follows): `reason` is `"unknown"` (the grace ran out, or
 *   the server does not know it), `"overflow"` (more was sent while away
 *   than the server keeps), `"gap"`, `"closed"` (the server ended it while
 *   away) or `"transport"` (the reconnect opened over HTTP); `unsent` is the
 *   number of sent messages the old session may not have received.
 * - `message`: `data` is a string or, for binary messages, an `ArrayBuffer`
 *   (or `Blob` with `binaryType: "blob"`), on either transport.
 * - `close`: `code`, `reason`, `wasClean`, and `willReconnect` (whether a
 *   reconnect is scheduled; a `reconnecting` event follows if so). When the
 *   HTTP fallback was refused, `reason` names the HTTP status, e.g.
 *   `"HTTP 403: origin not allowed"`.
 * - `reconnecting`: `attempt` (1-based) and `delay` (ms) of the next attempt.
 * - `fallback`: transport `from` did not open, so `transport` is tried next;
 *   `cause` is `"failed"` (it failed) or `"timeout"` (not within
 *   `fallbackAfter`). The state stays `connecting`.
 * - `error`: the underlying connection reported an error (a `close` follows).
 * - `statechange`: `state` changed (see {@link WasmSocketState}); `transport`
 *   is the transport of the connection (or attempt) at that moment.
 *
 * Transports: each connection attempt tries the allowed `transports` in
 * order, except that the transport of the last successful open is tried
 * first (so a client that had to fall back does not wait `fallbackAfter` for
 * a WebSocket on every reconnect). WebSocket is tried again when that
 * transport fails to open, and by every new `WasmSocket`.
 */
export class WasmSocket extends EventTarget {
  /** @type {WebSocket | HttpSocket | null} */
  #ws = null;
  /** @type {WasmSocketState} */
  #state = "closed";
  /** @type {Transport | null} */
  #transport = null;
  /** @type {Transport | null} The transport of the last successful open. */
  #preferred = null;
  #timer = null;
  #attempt = 0;
  #userClosed = false;
  /** @type {"arraybuffer" | "blob"} */
  #binaryType;
  /** @type {ResumeOptions | null} */
  #resume = null;
  /** The session to continue (`ID.SECRET`), when there is one. */
  #session = null;
  /** Messages received in the session. */
  #received = 0;
  /** Messages sent in the session before `#unacked[0]`. */
  #sentBase = 0;
  /** Sent messages the server may not have yet: `{ data, size }`. */
  #unacked = [];
  #unackedBytes = 0;
  /** An HTTP fallback session was lost (its stream could not resume in time). */
  #lost = false;

  /**
   * @param {string | URL} url A `ws:` or `wss:` URL (the HTTP fallback uses
   *   the same URL with `http:` or `https:`).
   * @param {WasmSocketOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    /** The URL this client connects to. */
    this.url = String(url);
    /** Subprotocols offered on each connection. */
    this.protocols = options.protocols ?? [];
    this.#binaryType = options.binaryType ?? "arraybuffer";
    /**
     * Transports allowed, in order. May be changed at any time; applies from
     * the next connection attempt.
     * @type {Transport[]}
     */
    this.transports = [...(options.transports ?? TRANSPORTS)];
    /** How long a transport may take to open before the next is tried, ms. */
    this.fallbackAfter = options.fallbackAfter ?? FALLBACK_AFTER;
    const r = options.reconnect;
    /**
     * Reconnection settings, or null when off. May be changed at any time;
     * omitted fields take their defaults.
     * @type {ReconnectOptions | null}
     */
    this.reconnect = r ? { ...RECONNECT_DEFAULTS, ...(r === true ? {} : r) } : null;
    const resume = options.resume;
    this.#resume = resume ? { ...RESUME_DEFAULTS, ...(resume === true ? {} : resume) } : null;
  }

  /** @returns {boolean} Whether a session can be continued by a reconnect. */
  get resumable() {
    return this.#session !== null;
  }

  /** @returns {"arraybuffer" | "blob"} Type of received binary data; may be changed at any time. */
  get binaryType() {
    return this.#binaryType;
  }

  set binaryType(type) {
    this.#binaryType = type;
    if (this.#ws) this.#ws.binaryType = type;
  }

  /** @returns {WasmSocketState} The connection state. */
  get state() {
    return this.#state;
  }

  /**
   * @returns {Transport | null} The transport of the current connection or
   *   attempt, else of the last one; null before the first `connect()`.
   */
  get transport() {
    return this.#transport;
  }

  /** @returns {string} The subprotocol the server chose ("" if none or not open). */
  get protocol() {
    return this.#ws?.protocol ?? "";
  }

  /** @returns {number} Bytes queued by `send` but not yet sent. */
  get bufferedAmount() {
    return this.#ws?.bufferedAmount ?? 0;
  }

  /** @returns {number} Number of the current or next reconnect attempt (0 when none). */
  get attempt() {
    return this.#attempt;
  }

  /**
   * Opens the connection. Does nothing if it is already open or opening; when
   * a reconnect is pending, attempts it now.
   *
   * @throws {SyntaxError} If the URL, subprotocols or transports are invalid.
   */
  connect() {
    if (this.#state === "open" || this.#state === "connecting" || this.#state === "closing") return;
    const order = this.#order();
    this.#userClosed = false;
    this.#clearTimer();
    this.#try(order, 0);
  }

  /** The transports to try, the last one that opened first. */
  #order() {
    const allowed = [...new Set(this.transports)];
    const unknown = allowed.filter((t) => !TRANSPORTS.includes(t));
    if (unknown.length || allowed.length === 0) {
      throw new SyntaxError(`transports must name one or more of ${TRANSPORTS.join(", ")} (got ${JSON.stringify(this.transports)})`);
    }
    const preferred = this.#preferred;
    return preferred && allowed.includes(preferred) ? [preferred, ...allowed.filter((t) => t !== preferred)] : allowed;
  }

  /** Opens `order[i]`; if it does not open, and another follows, tries that. */
  #try(order, i) {
    const transport = order[i];
    const hasNext = i + 1 < order.length;
    let socket;
    try {
      socket =
        transport === "http" ? new HttpSocket(this.url, this.protocols) : new WebSocket(this.#socketUrl(), this.protocols);
    } catch (err) {
      if (i === 0) throw err; // connect() reports a bad URL at once
      // A URL one transport takes and the other refuses: the attempt fails.
      this.#ws = null;
      this.#closed(event("close", { code: 1006, reason: "", wasClean: false }));
      return;
    }
    socket.binaryType = this.binaryType;
    this.#ws = socket;
    this.#transport = transport;
    let opened = false;
    const giveUp = (cause) => {
      clearTimeout(timer);
      this.#ws = null;
      try {
        socket.close();
      } catch {
        // already closed
      }
      this.dispatchEvent(event("fallback", { from: transport, transport: order[i + 1], cause }));
      if (this.#state === "connecting") this.#try(order, i + 1);
    };
    const stillTrying = () => socket === this.#ws && !opened && hasNext && !this.#userClosed;
    const patience =
      transport === "websocket" && this.#session !== null
        ? Math.max(this.fallbackAfter, RESUME_PATIENCE)
        : this.fallbackAfter;
    const timer = hasNext ? setTimeout(() => stillTrying() && giveUp("timeout"), Math.max(0, patience)) : null;
    // A session asked for: the server's first message names it, and the
    // connection counts as open once it has.
    let hello = this.#resume && transport === "websocket";
    let helloTimer = null;
    const becameOpen = (session) => {
      clearTimeout(helloTimer);
      hello = false;
      opened = true;
      clearTimeout(timer);
      this.#preferred = transport;
      this.#attempt = 0; // a successful open resets the backoff
      const resumed = session?.resumed === true;
      if (resumed) this.#resent(session.received);
      else this.#fresh(session, transport);
      this.#setState("open");
      this.dispatchEvent(event("open", { protocol: socket.protocol, transport, resumed, session: this.#session !== null }));
      if (resumed) this.#flush();
    };
    socket.addEventListener("open", () => {
      if (socket !== this.#ws) return;
      if (hello) {
        // A server that does not know sessions sends none: open without.
        helloTimer = setTimeout(() => socket === this.#ws && hello && becameOpen(null), HELLO_TIMEOUT);
        return;
      }
      becameOpen(null);
    });
    socket.addEventListener("message", (e) => {
      if (socket !== this.#ws) return;
      if (hello) {
        const session = parseHello(e.data);
        becameOpen(session);
        if (session) return;
      }
      if (this.#session !== null) this.#received += 1;
      this.dispatchEvent(event("message", { data: e.data }));
    });
    socket.addEventListener("error", () => {
      // The error of a transport given up for the next is no error of ours.
      if (socket === this.#ws && !stillTrying()) this.dispatchEvent(event("error"));
    });
    socket.addEventListener("close", (e) => {
      if (socket !== this.#ws) return;
      clearTimeout(helloTimer);
      if (stillTrying()) {
        giveUp("failed");
        return;
      }
      clearTimeout(timer);
      this.#ws = null;
      // A close frame ends the session; a socket that dropped, or a server
      // restarting (1012), leaves it to resume. A fallback connection that
      // ends unclean has already failed to resume its stream.
      if (e.wasClean && e.code !== 1012) this.#forget();
      else if (this.#resume && opened && transport === "http") this.#lost = true;
      this.#closed(e);
    });
    this.#setState("connecting");
  }

  /**
   * Sends a message: a string as text; an `ArrayBuffer`, typed array,
   * `DataView` or `Blob` as binary.
   *
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   * @throws {Error} If the connection is not open.
   */
  send(data) {
    const open = this.#state === "open" && this.#ws;
    if (this.#session !== null && !this.#userClosed) {
      // Kept until the server has it; while reconnecting it waits.
      this.#keep(data);
      if (open) this.#ws.send(data);
      return;
    }
    if (!open) {
      throw new Error(`WasmSocket is not open (state: ${this.#state})`);
    }
    this.#ws.send(data);
  }

  /** The WebSocket URL of the next attempt: it asks for, or continues, a session. */
  #socketUrl() {
    if (!this.#resume) return this.url;
    const u = new URL(this.url, globalThis.location?.href);
    if (this.#session === null) u.searchParams.set("resume", "new");
    else {
      u.searchParams.set("resume", this.#session);
      u.searchParams.set("last", String(this.#received));
    }
    return u.href;
  }

  #keep(data) {
    const size = typeof data === "string" ? data.length * 3 : (data.byteLength ?? data.size ?? 0);
    const limit = this.#resume?.bufferBytes ?? RESUME_DEFAULTS.bufferBytes;
    if (this.#state !== "open" && this.#unackedBytes + size > limit) {
      throw new Error(`WasmSocket is reconnecting and holds ${this.#unackedBytes} bytes already (resume.bufferBytes)`);
    }
    this.#unacked.push({ data, size });
    this.#unackedBytes += size;
    while (this.#unackedBytes > limit && this.#unacked.length > 1) this.#dropFirst();
  }

  #dropFirst() {
    const first = this.#unacked.shift();
    this.#unackedBytes -= first.size;
    this.#sentBase += 1;
  }

  /** The server continued the session with `received` of our messages: the rest go again. */
  #resent(received) {
    while (this.#unacked.length && this.#sentBase < received) this.#dropFirst();
  }

  /** Sends what the server does not have yet, after a resume. */
  #flush() {
    for (const { data } of this.#unacked) this.#ws?.send(data);
  }

  /** A fresh session (or none): reports a refused resume, then starts counting again. */
  #fresh(hello, transport) {
    if (this.#session !== null || this.#lost) {
      const moved = this.#session !== null && transport !== "websocket";
      const reason = moved ? "transport" : (hello?.refused ?? "unknown");
      this.dispatchEvent(event("resumefailed", { reason, unsent: this.#unacked.length }));
    }
    this.#forget();
    this.#session = hello?.session ?? null;
  }

  #forget() {
    this.#lost = false;
    this.#session = null;
    this.#received = 0;
    this.#sentBase = 0;
    this.#unacked = [];
    this.#unackedBytes = 0;
  }

  /**
   * Closes the connection and stops reconnecting: cancels a pending reconnect
   * and, if a connection is open or opening, starts its close handshake. A
   * `close` event follows when it has closed.
   *
   * @param {number} [code] 1000 or 3000-4999.
   * @param {string} [reason] At most 123 bytes of UTF-8.
   * @throws {DOMException} If the code or reason is invalid (nothing changes then).
   */
  close(code, reason) {
    this.#forget();
    const ws = this.#ws;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      if (ws.readyState !== WebSocket.CLOSING) {
        if (reason === undefined) ws.close(code);
        else ws.close(code, reason);
      }
      this.#userClosed = true;
      this.#clearTimer();
      this.#setState("closing");
      return;
    }
    this.#userClosed = true;
    this.#clearTimer();
    this.#attempt = 0;
    this.#setState("closed");
  }

  #closed(e) {
    const r = this.reconnect ? { ...RECONNECT_DEFAULTS, ...this.reconnect } : null;
    const willReconnect =
      !this.#userClosed && r !== null && this.#attempt < r.maxAttempts && r.shouldReconnect(e) !== false;
    let delay = 0;
    if (willReconnect) {
      this.#attempt += 1;
      delay = backoffDelay(this.#attempt, r);
      this.#timer = setTimeout(() => {
        this.#timer = null;
        if (this.#state === "reconnecting") this.connect();
      }, delay);
      this.#setState("reconnecting");
    } else {
      this.#attempt = 0;
      this.#setState("closed");
    }
    this.dispatchEvent(event("close", { code: e.code, reason: e.reason, wasClean: e.wasClean, willReconnect }));
    if (willReconnect && this.#state === "reconnecting") {
      this.dispatchEvent(event("reconnecting", { attempt: this.#attempt, delay }));
    }
  }

  #clearTimer() {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.dispatchEvent(event("statechange", { state, transport: this.#transport }));
  }
}

/** The host's session message, if `data` is one. */
function parseHello(data) {
  if (typeof data !== "string" || !data.startsWith('{"wasmsocket":"session"')) return null;
  try {
    const hello = JSON.parse(data);
    return hello.wasmsocket === "session" ? hello : null;
  } catch {
    return null;
  }
}

// ---- the HTTP fallback --------------------------------------------------------

/** Posts in flight per session (the host takes up to 16 ahead of delivery). */
const POSTS_IN_FLIGHT = 8;
/** Waits before retrying a post or a resume, ms; the last one repeats. */
const RETRY_DELAYS = [100, 250, 500, 1000, 2000];
/** How long `close()` waits for the server's `close` event, ms. */
const CLOSE_TIMEOUT = 10000;
/** Grace period assumed until the `open` event names it, ms. */
const DEFAULT_GRACE = 10000;
/**
 * How long the `open` event may take, ms. A proxy that buffers responses
 * holds it back forever; without this limit the attempt would never end.
 */
const OPEN_TIMEOUT = 15000;
const TEXT_TYPE = "text/plain;charset=utf-8";
const BINARY_TYPE = "application/octet-stream";
const encoder = new TextEncoder();

/**
 * Splits a `text/event-stream` into events, fed text as it arrives in chunks
 * of any size (lines end with CRLF, LF or CR, as Server-Sent Events define).
 * Unlike `EventSource`, an event whose `data` is empty is kept: it is an
 * empty binary message.
 */
export class EventStreamParser {
  #rest = "";
  #skipLF = false; // the last chunk ended with CR: a leading LF belongs to it
  #type = "";
  #data = null;
  #id = null;

  /**
   * @param {string} chunk
   * @returns {{type: string, data: string, id: string | null}[]} The events completed by this chunk.
   */
  push(chunk) {
    const events = [];
    let text = this.#rest + chunk;
    let start = 0;
    if (this.#skipLF && text.startsWith("\n")) start = 1;
    this.#skipLF = false;
    for (let i = Math.max(start, this.#rest.length); i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.#line(text.slice(start, i), events);
      if (c === 13) {
        if (i + 1 === text.length) this.#skipLF = true;
        else if (text.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    this.#rest = text.slice(start);
    return events;
  }

  #line(line, events) {
    if (line === "") {
      if (this.#data !== null) events.push({ type: this.#type || "message", data: this.#data, id: this.#id });
      this.#type = "";
      this.#data = null;
      this.#id = null;
      return;
    }
    if (line.startsWith(":")) return; // a comment: keep-alive pings
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.#type = value;
    else if (field === "data") this.#data = this.#data === null ? value : `${this.#data}\n${value}`;
    else if (field === "id") this.#id = value;
  }
}

/** Standard base64 to bytes. */
function fromBase64(text) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
  const chars = atob(text);
  const bytes = new Uint8Array(chars.length);
  for (let i = 0; i < chars.length; i++) bytes[i] = chars.charCodeAt(i);
  return bytes;
}

/** The start of a refused response's body, for a close reason. */
async function refusal(response) {
  let body = "";
  try {
    body = (await response.text()).trim().replace(/\s+/g, " ");
  } catch {
    // the body is optional
  }
  const reason = `HTTP ${response.status}${body ? `: ${body}` : ""}`;
  return reason.length > 120 ? `${reason.slice(0, 119)}…` : reason;
}

const isEventStream = (response) =>
  /^text\/event-stream\b/i.test(response.headers.get("Content-Type") ?? "");

/**
 * One connection over wasmsocket's HTTP fallback (docs/transports.md), with
 * the interface of a browser `WebSocket` that {@link WasmSocket} uses:
 * `readyState`, `protocol`, `binaryType`, `bufferedAmount`, `send`, `close`,
 * and `open`, `message`, `error` and `close` events.
 * Built on `fetch`, not `EventSource` (docs/transports.md says why).
 */
export class HttpSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  /** 0 connecting, 1 open, 2 closing, 3 closed, as `WebSocket.readyState`. */
  readyState = HttpSocket.CONNECTING;
  /** The subprotocol the server chose, "" if none. */
  protocol = "";
  /** Type of received binary data. @type {"arraybuffer" | "blob"} */
  binaryType = "blob";
  /** The session id, once open. @type {string | null} */
  session = null;

  #openUrl;
  #route; // the plugin's route, without the query: where posts and resumes go
  #protocols;
  #graceMs = DEFAULT_GRACE;
  #lastId = 0;
  #stream = new AbortController(); // the current open or resume request
  #posting = new AbortController(); // every post of the session
  #queue = [];
  #inFlight = 0;
  #seq = 0;
  #buffered = 0;
  #graceTimer = null;
  #closeTimer = null;
  #openTimer = null;

  /**
   * @param {string | URL} url `ws:`, `wss:`, `http:` or `https:`; a WebSocket
   *   URL is reached over the matching HTTP scheme.
   * @param {string | string[]} [protocols]
   * @throws {SyntaxError} If the URL is invalid.
   */
  constructor(url, protocols = []) {
    super();
    let u;
    try {
      u = new URL(url, globalThis.location?.href);
    } catch {
      throw new SyntaxError(`Invalid URL: ${url}`);
    }
    const scheme = { "ws:": "http:", "wss:": "https:", "http:": "http:", "https:": "https:" }[u.protocol];
    if (!scheme) throw new SyntaxError(`Not a WebSocket or HTTP URL: ${url}`);
    u.protocol = scheme;
    u.hash = "";
    this.#openUrl = u.href;
    u.search = "";
    this.#route = u.href;
    this.#protocols = typeof protocols === "string" ? [protocols] : [...protocols];
    this.#openTimer = setTimeout(
      () => this.#finish(1006, `no open event within ${OPEN_TIMEOUT / 1000} s (a proxy buffering the stream?)`, false),
      OPEN_TIMEOUT,
    );
    this.#open();
  }

  /** @returns {number} Bytes passed to `send` whose post has not been answered. */
  get bufferedAmount() {
    return this.#buffered;
  }

  /**
   * Sends a message as its own `POST`: a string as text, anything else as
   * binary. Posts may overlap; the host delivers them in order.
   *
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   */
  send(data) {
    if (this.readyState === HttpSocket.CONNECTING) throw new DOMException("Still in CONNECTING state.", "InvalidStateError");
    if (this.readyState !== HttpSocket.OPEN) return; // as a WebSocket: dropped once closing
    let body;
    let type = BINARY_TYPE;
    // Copy what the caller may change after `send` returns, as WebSocket does.
    if (data instanceof Blob) body = data;
    else if (data instanceof ArrayBuffer) body = data.slice(0);
    else if (ArrayBuffer.isView(data)) body = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
    else {
      body = encoder.encode(String(data));
      type = TEXT_TYPE;
    }
    this.#enqueue({ body, type, size: body.size ?? body.byteLength });
  }

  /**
   * Closes the session: the close is posted after the messages sent before
   * it, and the connection closes when the server's `close` event echoes it.
   *
   * @param {number} [code] 1000 or 3000-4999; 1000 if omitted.
   * @param {string} [reason] At most 123 bytes of UTF-8.
   * @throws {DOMException} If the code or reason is invalid.
   */
  close(code, reason = "") {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new DOMException(`The close code must be either 1000, or between 3000 and 4999. ${code} is neither.`, "InvalidAccessError");
    }
    const bytes = encoder.encode(String(reason));
    if (bytes.byteLength > 123) throw new DOMException("The close reason must not be greater than 123 UTF-8 bytes.", "SyntaxError");
    if (this.readyState === HttpSocket.CONNECTING) {
      this.#finish(1006, "", false); // as a WebSocket closed before it opened
      return;
    }
    if (this.readyState !== HttpSocket.OPEN) return;
    this.readyState = HttpSocket.CLOSING;
    this.#enqueue({ body: bytes, type: TEXT_TYPE, size: 0, close: code ?? 1000 });
    this.#closeTimer = setTimeout(() => this.#finish(1006, "", false), CLOSE_TIMEOUT);
  }

  // -- the stream from the server --

  async #open() {
    const headers = { Accept: "text/event-stream" };
    if (this.#protocols.length) headers["X-WebSocket-Protocol"] = this.#protocols.join(", ");
    const stream = this.#stream;
    let response;
    try {
      response = await fetch(this.#openUrl, { headers, cache: "no-store", signal: stream.signal });
    } catch {
      this.#finish(1006, "", false);
      return;
    }
    if (!response.ok || !isEventStream(response)) {
      const reason = await refusal(response);
      this.#finish(1006, response.ok ? `${reason} (not an event stream)` : reason, false);
      return;
    }
    this.#read(response, stream);
  }

  /** Reads one stream until it ends; a stream that ends too early is resumed. */
  async #read(response, stream) {
    const parser = new EventStreamParser(); // a new stream starts clean: a cut-off event is dropped
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const current = () => stream === this.#stream && this.readyState !== HttpSocket.CLOSED;
    try {
      reading: for (;;) {
        const { value, done } = await reader.read();
        if (done || !current()) break;
        for (const e of parser.push(value)) {
          this.#event(e);
          if (!current()) break reading;
        }
      }
    } catch {
      // dropped: resumed below
    }
    reader.cancel().catch(() => {});
    if (current()) this.#dropped();
  }

  #event({ type, data, id }) {
    if (id !== null) {
      const n = Number(id);
      if (n <= this.#lastId) return; // seen before the stream was resumed
      this.#lastId = n;
    }
    try {
      if (type === "open") {
        const open = JSON.parse(data);
        if (Number.isFinite(open.grace_ms)) this.#graceMs = open.grace_ms;
        if (this.readyState !== HttpSocket.CONNECTING) return; // a resumed stream may repeat it
        this.session = String(open.session);
        this.protocol = open.protocol ?? "";
        this.readyState = HttpSocket.OPEN;
        clearTimeout(this.#openTimer);
        this.dispatchEvent(event("open"));
        return;
      }
      if (this.readyState === HttpSocket.CONNECTING) throw new Error(`"${type}" before "open"`);
      if (type === "text") {
        const text = JSON.parse(data);
        if (typeof text !== "string") throw new Error("a text event that is not a JSON string");
        this.dispatchEvent(event("message", { data: text }));
      } else if (type === "binary") {
        const bytes = fromBase64(data);
        this.dispatchEvent(event("message", { data: this.binaryType === "blob" ? new Blob([bytes]) : bytes.buffer }));
      } else if (type === "close") {
        const { code, reason } = JSON.parse(data);
        this.#finish(code ?? 1005, reason ?? "", true);
      }
      // Other event types are for later versions: ignored.
    } catch (err) {
      this.#finish(1002, `protocol error: ${err.message}`.slice(0, 120), false);
    }
  }

  /**
   * The stream ended without a `close` event: resume it within the grace
   * period, from the last event seen; after that the connection is lost.
   */
  #dropped() {
    if (this.readyState === HttpSocket.CONNECTING) {
      this.#finish(1006, "", false);
      return;
    }
    this.#graceTimer = setTimeout(() => this.#finish(1006, "", false), this.#graceMs);
    this.#resume(0);
  }

  async #resume(tries) {
    if (tries > 0) await sleep(RETRY_DELAYS[Math.min(tries - 1, RETRY_DELAYS.length - 1)]);
    if (this.readyState === HttpSocket.CLOSED) return;
    const stream = (this.#stream = new AbortController());
    const url = `${this.#route}?session=${encodeURIComponent(this.session)}`;
    let response;
    try {
      response = await fetch(url, {
        headers: { Accept: "text/event-stream", "Last-Event-ID": String(this.#lastId) },
        cache: "no-store",
        signal: stream.signal,
      });
    } catch {
      if (stream === this.#stream) this.#resume(tries + 1);
      return;
    }
    if (stream !== this.#stream || this.readyState === HttpSocket.CLOSED) return;
    if (response.ok && isEventStream(response)) {
      clearTimeout(this.#graceTimer);
      this.#graceTimer = null;
      this.#read(response, stream);
    } else if (response.status >= 500 || response.status === 408 || response.status === 429) {
      this.#resume(tries + 1); // a proxy or the host in trouble: try again while the grace lasts
    } else {
      this.#finish(1006, await refusal(response), false); // 404: the session is gone
    }
  }

  // -- posts to the server --

  #enqueue(post) {
    post.seq = ++this.#seq;
    this.#queue.push(post);
    this.#buffered += post.size;
    this.#pump();
  }

  #pump() {
    while (this.#inFlight < POSTS_IN_FLIGHT && this.#queue.length) {
      this.#inFlight++;
      this.#post(this.#queue.shift(), 0);
    }
  }

  /**
   * Posts one message. A post lost on the way is retried with the same `seq`
   * (the host takes it once) until it has failed for the grace period: the
   * host forgets a session it cannot reach for that long, too.
   */
  async #post(post, tries) {
    if (tries > 0) {
      post.failingSince ??= performance.now();
      if (performance.now() - post.failingSince > this.#graceMs) {
        this.#finish(1006, "", false);
        return;
      }
      await sleep(RETRY_DELAYS[Math.min(tries - 1, RETRY_DELAYS.length - 1)]);
    }
    if (this.readyState === HttpSocket.CLOSED) return;
    let url = `${this.#route}?session=${encodeURIComponent(this.session)}&seq=${post.seq}`;
    if (post.close !== undefined) url += `&close=${post.close}`;
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": post.type },
        body: post.body,
        cache: "no-store",
        signal: this.#posting.signal,
      });
    } catch {
      this.#post(post, tries + 1);
      return;
    }
    if (this.readyState === HttpSocket.CLOSED) return;
    if (response.ok) {
      this.#inFlight--;
      this.#buffered -= post.size;
      this.#pump();
    } else if (response.status >= 500 || [408, 409, 429].includes(response.status)) {
      this.#post(post, tries + 1);
    } else {
      // Refused (the session is gone, the message too large, ...): later
      // messages could never be delivered in order, so the connection ends.
      const reason = await refusal(response);
      this.#finish(response.status === 413 ? 1009 : 1006, reason, false);
    }
  }

  /** Ends the connection once: stops every request and timer, then reports. */
  #finish(code, reason, wasClean) {
    if (this.readyState === HttpSocket.CLOSED) return;
    this.readyState = HttpSocket.CLOSED;
    this.#stream.abort();
    this.#posting.abort();
    this.#queue = [];
    this.#buffered = 0;
    clearTimeout(this.#graceTimer);
    clearTimeout(this.#closeTimer);
    clearTimeout(this.#openTimer);
    // Reported from a task of its own, as a WebSocket does: never from inside close().
    setTimeout(() => {
      if (!wasClean) this.dispatchEvent(event("error"));
      this.dispatchEvent(event("close", { code, reason, wasClean }));
    }, 0);
  }
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
