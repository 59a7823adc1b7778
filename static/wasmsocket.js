/**
 * wasmsocket.js: a small, dependency-free WebSocket client with optional
 * automatic reconnection (exponential backoff with jitter). It wraps the
 * browser's `WebSocket` and works with any WebSocket server; wasmsocket's
 * test page is built on it.
 *
 * @example
 * import { WasmSocket } from "/wasmsocket.js";
 * const ws = new WasmSocket("ws://localhost:5000/ws", { reconnect: { maxDelay: 10000 } });
 * ws.addEventListener("open", () => ws.send("hello"));
 * ws.addEventListener("message", (e) => console.log(e.data));
 * ws.addEventListener("reconnecting", (e) => console.log(`retry ${e.attempt} in ${e.delay} ms`));
 * ws.connect();
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
 * @typedef {object} WasmSocketOptions
 * @property {string | string[]} [protocols] Subprotocols to offer.
 * @property {"arraybuffer" | "blob"} [binaryType="arraybuffer"] Type of received binary data.
 * @property {boolean | ReconnectOptions} [reconnect=false] Reconnect after a
 *   close the user did not ask for; `true` uses the defaults.
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
 * A WebSocket client that can reconnect by itself.
 *
 * Events (all plain `Event`s with extra fields):
 * - `open`: connected; `protocol` is the negotiated subprotocol.
 * - `message`: `data` is a string or, for binary messages, an `ArrayBuffer`
 *   (or `Blob` with `binaryType: "blob"`).
 * - `close`: `code`, `reason`, `wasClean`, and `willReconnect` (whether a
 *   reconnect is scheduled; a `reconnecting` event follows if so).
 * - `reconnecting`: `attempt` (1-based) and `delay` (ms) of the next attempt.
 * - `error`: the underlying socket reported an error (a `close` follows).
 * - `statechange`: `state` changed (see {@link WasmSocketState}).
 */
export class WasmSocket extends EventTarget {
  /** @type {WebSocket | null} */
  #ws = null;
  /** @type {WasmSocketState} */
  #state = "closed";
  #timer = null;
  #attempt = 0;
  #userClosed = false;

  /**
   * @param {string | URL} url A `ws:` or `wss:` URL.
   * @param {WasmSocketOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    /** The URL this client connects to. */
    this.url = String(url);
    /** Subprotocols offered on each connection. */
    this.protocols = options.protocols ?? [];
    /** Type of received binary data. */
    this.binaryType = options.binaryType ?? "arraybuffer";
    const r = options.reconnect;
    /**
     * Reconnection settings, or null when off. May be changed at any time;
     * omitted fields take their defaults.
     * @type {ReconnectOptions | null}
     */
    this.reconnect = r ? { ...RECONNECT_DEFAULTS, ...(r === true ? {} : r) } : null;
  }

  /** @returns {WasmSocketState} The connection state. */
  get state() {
    return this.#state;
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
   * @throws {SyntaxError} If the URL or subprotocols are invalid.
   */
  connect() {
    if (this.#state === "open" || this.#state === "connecting" || this.#state === "closing") return;
    this.#userClosed = false;
    this.#clearTimer();
    const ws = new WebSocket(this.url, this.protocols);
    ws.binaryType = this.binaryType;
    this.#ws = ws;
    ws.addEventListener("open", () => {
      if (ws !== this.#ws) return;
      this.#attempt = 0; // a successful open resets the backoff
      this.#setState("open");
      this.dispatchEvent(event("open", { protocol: ws.protocol }));
    });
    ws.addEventListener("message", (e) => {
      if (ws === this.#ws) this.dispatchEvent(event("message", { data: e.data }));
    });
    ws.addEventListener("error", () => {
      if (ws === this.#ws) this.dispatchEvent(event("error"));
    });
    ws.addEventListener("close", (e) => {
      if (ws !== this.#ws) return;
      this.#ws = null;
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
    if (this.#state !== "open" || !this.#ws) {
      throw new Error(`WasmSocket is not open (state: ${this.#state})`);
    }
    this.#ws.send(data);
  }

  /**
   * Closes the connection and stops reconnecting: cancels a pending reconnect
   * and, if a socket is open or opening, starts its close handshake. A
   * `close` event follows when the socket closes.
   *
   * @param {number} [code] 1000 or 3000-4999.
   * @param {string} [reason] At most 123 bytes of UTF-8.
   * @throws {DOMException} If the code or reason is invalid (nothing changes then).
   */
  close(code, reason) {
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
    this.dispatchEvent(event("statechange", { state }));
  }
}
