// Example plugin in JavaScript: a counter per connection, kept in host state.
//
// Commands (text messages):
//   inc [n]  or  +      add n (default 1), reply the new count
//   dec [n]  or  -      subtract n (default 1), reply the new count
//   get                 reply the count
//   reset               set it to 0
//   stats               reply {"count":..,"ops":..} as JSON
// Anything else gets "error: ...". The count lives in the host's `state`
// interface as JSON, not in a JS global: the host may start a fresh instance
// at any event, and state survives that.

import { send } from "wasmsocket:plugin/connections@0.2.1";
import * as state from "wasmsocket:plugin/state@0.2.1";
import { log } from "wasmsocket:plugin/log@0.2.1";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function load(id) {
  const bytes = state.get(id); // option<list<u8>>: undefined or a Uint8Array
  if (!bytes) return { count: 0, ops: 0 };
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch {
    return { count: 0, ops: 0 };
  }
}

function save(id, value) {
  state.set(id, encoder.encode(JSON.stringify(value)));
}

function reply(id, text) {
  send(id, { tag: "text", val: text });
}

function amount(arg) {
  if (arg === undefined) return 1;
  if (!/^-?\d+$/.test(arg)) throw new Error(`not an integer: ${arg}`);
  return Number.parseInt(arg, 10);
}

function run(id, text) {
  const [cmd, arg, ...rest] = text.trim().split(/\s+/);
  if (rest.length) throw new Error("too many arguments");
  const s = load(id);
  switch (cmd) {
    case "inc":
    case "+":
      s.count += amount(arg);
      break;
    case "dec":
    case "-":
      s.count -= amount(arg);
      break;
    case "reset":
      s.count = 0;
      break;
    case "get":
      return String(s.count);
    case "stats":
      return JSON.stringify(s);
    default:
      throw new Error(`unknown command '${cmd ?? ""}' (try inc, dec, get, reset, stats)`);
  }
  s.ops += 1;
  save(id, s);
  return String(s.count);
}

export const handler = {
  onOpen(_id, _request) {
    return { tag: "accept", val: undefined };
  },

  onMessage(id, message) {
    if (message.tag !== "text") {
      reply(id, "error: send text commands");
      return;
    }
    let answer;
    try {
      answer = run(id, message.val);
    } catch (e) {
      answer = `error: ${e.message}`;
    }
    log("debug", `counter: ${message.val} -> ${answer}`);
    reply(id, answer);
  },

  onClose(_id, _close) {},

  // No timers here; the world requires the exports.
  onTimer(_id, _name) {},

  onRoomTimer(_room, _name) {},
};
