// {{name}}: a wasmsocket plugin. It answers every text message with
// `NAME #N: TEXT`, counts messages in host-kept `state` (which survives
// reloads and new instances), and writes a `log` line for each.
//
// Imports are the WIT interfaces by their full versioned name; the export is
// an object named after the interface. Variants are `{ tag, val }`, an
// `option` is `undefined` or the value, `list<u8>` is a Uint8Array, and a
// `result` error is thrown.

import { send } from "wasmsocket:plugin/connections@{{wit_version}}";
import * as state from "wasmsocket:plugin/state@{{wit_version}}";
import { log } from "wasmsocket:plugin/log@{{wit_version}}";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Counts this message in the connection's host-kept state.
function count(id) {
  const saved = state.get(id);
  const n = (saved ? Number.parseInt(decoder.decode(saved), 10) || 0 : 0) + 1;
  state.set(id, encoder.encode(String(n)));
  return n;
}

export const handler = {
  onOpen(id, request) {
    log("info", `${id} opened ${request.path}`);
    return { tag: "accept", val: undefined };
  },

  onMessage(id, message) {
    const n = count(id);
    if (message.tag === "text") {
      log("info", `message ${n}: ${message.val}`);
      message = { tag: "text", val: `{{name}} #${n}: ${message.val}` };
    }
    send(id, message);
  },

  onClose(id, _close) {
    log("info", `${id} closed`);
  },

  // Timers this plugin set with the `timers` interface; it sets none.
  onTimer(_id, _name) {},

  onRoomTimer(_room, _name) {},
};
