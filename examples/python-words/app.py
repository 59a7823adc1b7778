"""Example plugin in Python: a word counter per connection.

Every text message is split into words; the plugin replies with JSON:
{"words": words in this message, "total": words so far, "unique": distinct
words so far, "top": [[word, count], ...] (the 3 most frequent)}.
Commands: "/top" replies the 10 most frequent words, "/reset" forgets them.

The counts live in the host's `state` interface (JSON), not in a Python
global: the host may replace the instance at any event, state survives that.
"""

import heapq  # noqa: F401  Counter.most_common imports it lazily; componentize-py
# bundles only the modules it sees imported, so import it here.
import json
import re
from collections import Counter

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import connections, log, state
from wit_world.imports.types import (
    CloseFrame,
    Message,
    Message_Binary,
    Message_Text,
    OpenResponse,
    OpenResponse_Accept,
    Request,
)

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def load(conn: str) -> Counter:
    saved = state.get(conn)
    if not saved:
        return Counter()
    try:
        return Counter(json.loads(saved.decode("utf-8")))
    except ValueError:
        return Counter()


def reply(conn: str, value) -> None:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    connections.send(conn, Message_Text(text))


class Handler(exports.Handler):
    def on_open(self, id: str, request: Request) -> OpenResponse:
        return OpenResponse_Accept(None)

    def on_message(self, id: str, message: Message) -> None:
        if isinstance(message, Message_Binary):
            reply(id, {"error": "send text"})
            return
        text = message.value.strip()
        if text == "/reset":
            state.clear(id)
            reply(id, "reset")
            return
        counts = load(id)
        if text == "/top":
            reply(id, {"top": counts.most_common(10)})
            return
        words = [w.lower() for w in WORD.findall(text)]
        counts.update(words)
        try:
            state.set(id, json.dumps(counts, ensure_ascii=False).encode("utf-8"))
        except Err as e:
            # too-large: the state limit (64 KiB by default) was reached.
            log.log(log.Level.WARN, f"word counts not saved: {e.value}")
            reply(id, {"error": "too many distinct words to remember; send /reset"})
            return
        reply(
            id,
            {
                "words": len(words),
                "total": sum(counts.values()),
                "unique": len(counts),
                "top": counts.most_common(3),
            },
        )

    def on_close(self, id: str, close: CloseFrame | None) -> None:
        pass

    # No timers here; the world requires the exports.
    def on_timer(self, id: str, name: str) -> None:
        pass

    def on_room_timer(self, room: str, name: str) -> None:
        pass
