// Example plugin in JavaScript: outbound HTTP.
//
//   fetch PATH   GETs {base_url}{PATH} and replies "status CODE BODY", the
//                body cut to its first 200 bytes; "denied HOST" when the
//                host's allowed_outbound_hosts does not allow that
//                scheme, host and port; "error TEXT" for any other failure.
//
// `base_url` is a variable of the plugin's configuration, read through
// wasi:config/store. The request goes through wasi:http/outgoing-handler
// directly rather than `fetch`: componentize-js's `fetch` turns every
// failure into the same "TypeError: NetworkError when attempting to fetch
// resource", so a denied request could not be told from a refused
// connection. The calls here are synchronous (`pollable.block()` waits for
// the response), so the handler needs no promise for componentize-js to
// run to completion.
//
// Every resource is disposed explicitly, children before their parent (a
// body's stream, the body, the response): the component model refuses to
// drop a parent whose children are alive, and the garbage collector keeps
// no order.

import { send } from "wasmsocket:plugin/connections@0.2.1";
import { log } from "wasmsocket:plugin/log@0.2.1";
import { get } from "wasi:config/store@0.2.0-rc.1";
import { handle } from "wasi:http/outgoing-handler@0.2.12";
import { Fields, OutgoingRequest, RequestOptions } from "wasi:http/types@0.2.12";

const MAX_BODY = 200;
// wasi:http durations are nanoseconds (u64: BigInt). The host bounds the
// whole call (its wait_timeout, 5 s by default); these keep a slow server
// an "error" reply instead of a call past that bound.
const CONNECT_TIMEOUT = 2_000_000_000n;
const FIRST_BYTE_TIMEOUT = 2_000_000_000n;
const BETWEEN_BYTES_TIMEOUT = 500_000_000n;

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // not fatal: a cut character becomes U+FFFD

function reply(id, text) {
  send(id, { tag: "text", val: text });
}

// Imported functions throw a `result`'s error as a ComponentError whose
// `payload` is the WIT value; anything else is a JavaScript error.
function payload(e) {
  return e !== null && typeof e === "object" && "payload" in e ? e.payload : undefined;
}

// An error-code variant ({ tag, val }) as text: `connection-refused`,
// `DNS-error {"rcode":"NXDOMAIN"}`, `internal-error why`.
function describe(code) {
  if (code.val === undefined) return code.tag;
  if (typeof code.val === "string") return `${code.tag} ${code.val}`;
  return `${code.tag} ${JSON.stringify(code.val, (_k, v) => (typeof v === "bigint" ? Number(v) : v))}`;
}

// A failure with a reply of its own.
class Reply extends Error {}

function request(url) {
  const scheme = { "http:": { tag: "HTTP" }, "https:": { tag: "HTTPS" } }[url.protocol];
  if (!scheme) throw new Reply(`error unsupported scheme ${url.protocol}`);
  const req = new OutgoingRequest(Fields.fromList([["user-agent", encoder.encode("wasmsocket-js-fetch")]]));
  req.setMethod({ tag: "get" });
  req.setScheme(scheme);
  req.setAuthority(url.host);
  req.setPathWithQuery(url.pathname + url.search);
  return req;
}

function options() {
  const opts = new RequestOptions();
  try {
    opts.setConnectTimeout(CONNECT_TIMEOUT);
    opts.setFirstByteTimeout(FIRST_BYTE_TIMEOUT);
    opts.setBetweenBytesTimeout(BETWEEN_BYTES_TIMEOUT);
  } catch {
    // A host that does not support a timeout keeps its own.
  }
  return opts;
}

// Sends the request (handing it and the options to the host) and waits for
// the response head. Throws a Reply for a denied request or a failure.
function respond(url, req) {
  let future;
  try {
    future = handle(req, options());
  } catch (e) {
    throw failure(url, payload(e), e);
  }
  try {
    const ready = future.subscribe();
    try {
      ready.block();
    } finally {
      ready[Symbol.dispose]();
    }
    // option<result<result<incoming-response, error-code>>>: ready now, so
    // set; the outer result fails only when taken twice.
    const result = future.get().val;
    if (result.tag === "err") throw failure(url, result.val);
    return result.val;
  } finally {
    future[Symbol.dispose]();
  }
}

function failure(url, code, cause) {
  if (code?.tag === "HTTP-request-denied") return new Reply(`denied ${url.host}`);
  if (code?.tag) return new Reply(`error ${describe(code)}`);
  return new Reply(`error ${cause?.message ?? cause}`);
}

// The first MAX_BODY bytes of the response body.
function head(response) {
  const body = response.consume();
  const stream = body.stream();
  const chunks = [];
  let length = 0;
  try {
    while (length < MAX_BODY) {
      let chunk;
      try {
        chunk = stream.blockingRead(BigInt(MAX_BODY - length));
      } catch (e) {
        const err = payload(e);
        if (err?.tag === "closed") break;
        if (err?.tag === "last-operation-failed") {
          const text = err.val.toDebugString();
          err.val[Symbol.dispose]();
          throw new Reply(`error reading the body: ${text}`);
        }
        throw e;
      }
      chunks.push(chunk);
      length += chunk.length;
    }
  } finally {
    stream[Symbol.dispose]();
    body[Symbol.dispose]();
  }
  const bytes = new Uint8Array(Math.min(length, MAX_BODY));
  let at = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, bytes.length - at);
    bytes.set(part, at);
    at += part.length;
  }
  return decoder.decode(bytes);
}

function fetchText(path) {
  const base = get("base_url"); // option<string>: undefined when unset
  if (base === undefined) throw new Reply("error base_url is not set in the plugin's variables");
  let url;
  try {
    url = new URL(base + path);
  } catch {
    throw new Reply(`error not a URL: ${base}${path}`);
  }
  const started = Date.now();
  const response = respond(url, request(url));
  try {
    const status = response.status();
    const text = head(response);
    log("debug", `GET ${url} -> ${status} in ${Date.now() - started} ms`);
    return `status ${status} ${text}`;
  } finally {
    response[Symbol.dispose]();
  }
}

export const handler = {
  onOpen(_id, _request) {
    return { tag: "accept", val: undefined };
  },

  onMessage(id, message) {
    const text = message.tag === "text" ? message.val : "";
    if (!text.startsWith("fetch ")) {
      reply(id, "error send: fetch PATH");
      return;
    }
    let answer;
    try {
      answer = fetchText(text.slice("fetch ".length).trim());
    } catch (e) {
      if (!(e instanceof Reply)) log("warn", `fetch failed: ${e?.stack ?? e}`);
      answer = e instanceof Reply ? e.message : `error ${e?.message ?? e}`;
    }
    reply(id, answer);
  },

  onClose(_id, _close) {},

  // No timers here; the world requires the exports.
  onTimer(_id, _name) {},

  onRoomTimer(_room, _name) {},
};
